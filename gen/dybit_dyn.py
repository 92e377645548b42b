"""The runtime-format DyBit array (`dybit-dyn`): per-job operand formats, MACs per cycle that scale with precision.

Streams (amaranth.lib.stream, valid/ready; docs/dybit-dyn.md has the bit positions):

- ``a`` in: ``data`` is R lanes of 16 bits, ``last``, ``header``. A job starts with one header beat
  (``header`` = 1, lane 0 = the formats of A and B, `accelkit.config.dybit_dyn.header_word`), consumed alone.
  Then its tiles: each tile is ceil(K / P) data beats, consumed together with the ``b`` beats, ``last`` on the
  tile's final beat. A lane holds P consecutive k's of its row: code p at bits p * na.
- ``b`` in: ``data`` is C lanes of 16 bits, P codes of nb bits each.
- ``c`` out: one row of the finished R x C tile per beat (``data`` C signed accumulators in units of
  2^-(fa + fb), ``last`` on row R - 1, ``error`` when the job's header was invalid or one of the tile's (or an
  earlier tile of the job's) data beats had nonzero bits above its P codes).

Structure: `FrontEnd` (header, join, the edge decoders `OperandDecoder`) -> stream ``d`` of decoded beats ->
`MacGrid` (the broadcast registers, R x C `FusedPE` and the accumulators) -> stream ``t`` of finished tiles ->
`RowDrain` (the shadow bank, drained row by row) -> `OutputSlice` (``cfg.output_stages`` register slices) ->
``c``. Every stage is a register that moves when its output is ready (the whole pipeline advances together, as
in `accelkit.gen.dybit_array`): it stalls only when a finished tile meets a bank that has not drained, or the
output slice is full (``c`` not ready).

PE: four 4 x 4-bit unsigned sub-multipliers (shift-add logic, no DSP) on operand nibbles arranged at the
edge for the job's mode. 8 x 8: one MAC from the four nibble products (offsets 0, 4, 4, 8); 8 x 4 and
4 x 8: two MACs of two products each (product lanes 0 and 2); 4 x 4: four MACs (lanes 0..3). Each lane's
significand product is signed, shifted by its own residual shift (significands are normalised at the edge
to fill n bits, so shifts are short: at most 6 per 8-bit operand, 2 per 4-bit one), the lanes are summed
and accumulated.

Pipeline (`cfg.pipeline_depth` registers before the accumulators; docs/dybit-dyn.md): decode prefix | decoded
operands (d) | broadcast tree (`cfg.broadcast_stages`, none up to 4 x 4) | partial-product pairs | sub-products |
pairs | 8 x 8 sum | shift + sign | lane sum (`cfg.lane_sum_stages`) | accumulate. No stage has more than one
carry chain and a select behind its register, and the operand broadcast is followed by one carry chain only.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.config.base import require
from accelkit.config.dybit_dyn import (
    BROADCAST_FANOUT,
    FMT_KIND_BITS,
    FMT_KMAX_BITS,
    FMT_N_BITS,
    KIND_CODES,
    LANE_BITS,
    SHIFT_STEP,
    SUB_BITS,
    DyBitDynConfig,
    shift_max,
)
from accelkit.gen.stream_slice import StreamSlice

LANES = 4  # product lanes per PE (= sub-multipliers)


def _bits(v: int) -> int:
    return max(int(v).bit_length(), 1)


class FormatLayout(data.StructLayout):
    """One operand's job format as the decoders read it."""

    def __init__(self):
        super().__init__({"is8": 1, "is_int": 1, "kmax": 3})


class ModeLayout(data.StructLayout):
    def __init__(self):
        super().__init__({"a8": 1, "b8": 1})


def side_layout(cfg: DyBitDynConfig, side: str) -> data.StructLayout:
    """A decoded row (side "a") or column ("b") of one beat: the sub-multipliers' nibbles, each lane's sign
    and residual shift."""
    fields = {f"x{q}": SUB_BITS for q in range(LANES)}
    for lane in cfg.lanes_used:
        fields[f"neg{lane}"] = 1
        fields[f"sh{lane}"] = _bits(cfg.side_shift_max(lane, side) // SHIFT_STEP)  # in units of SHIFT_STEP
    return data.StructLayout(fields)


def a_layout(cfg: DyBitDynConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(unsigned(LANE_BITS), cfg.rows), "last": 1, "header": 1})


def b_layout(cfg: DyBitDynConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(unsigned(LANE_BITS), cfg.cols)})


def c_layout(cfg: DyBitDynConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(signed(cfg.acc_bits), cfg.cols), "last": 1, "error": 1})


def beat_layout(cfg: DyBitDynConfig) -> data.StructLayout:
    """A decoded beat, the front end's output."""
    return data.StructLayout({"rows": data.ArrayLayout(side_layout(cfg, "a"), cfg.rows),
                              "cols": data.ArrayLayout(side_layout(cfg, "b"), cfg.cols),
                              "mode": ModeLayout(), "last": 1, "err": 1})


def tile_layout(cfg: DyBitDynConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(data.ArrayLayout(signed(cfg.acc_bits), cfg.cols), cfg.rows),
                              "err": 1})


def sum_shape(cfg: DyBitDynConfig):
    return signed(_bits(cfg.sum_max) + 1)


def code_layout(n: int) -> data.StructLayout:
    """One n-bit code after the decoder's first stage: `val` is INT's magnitude or DyBit's body, `j` how far the
    body shifts left to leave its mantissa left-aligned, `odd` k odd, `plain` the significand is `val` itself
    (INT, or DyBit with k = 0), `sh` the residual shift / SHIFT_STEP, `neg` the sign."""
    nb = n - 1
    return data.StructLayout({"val": n, "j": range(nb + 1), "odd": 1, "plain": 1,
                              "sh": _bits(shift_max(n) // SHIFT_STEP), "neg": 1})


def decode_prefix(m: Module, code, n: int, fmt, name: str) -> dict:
    """The first half of a code's decode under the job's format `fmt` (a FormatLayout view), combinational: the
    fields of `code_layout(n)`.

    DyBit: k = the body's leading ones, up to kmax; the body shifted left past the prefix (and its terminating
    zero when k < kmax) leaves the mantissa left-aligned, `rest` (`decode_place`). The value's leading one is at
    bit k + n - 3, so k = 0: the body itself (m); k even: 1 rest, shift k - 2; k odd: 0 1 rest >> 1, shift
    k - 1 (the shift stays even). INT: the magnitude (up to 2^(n-1)), shift 0."""
    nb = n - 1
    body = code[:nb]
    lead = Const(nb, range(nb + 1))
    for i in reversed(range(nb)):  # the first zero from the top
        lead = Mux(~body[nb - 1 - i], i, lead)
    lead_s = Signal(range(nb + 1), name=f"{name}_lead")
    k = Signal(range(nb + 1), name=f"{name}_k")
    j = Signal(range(nb + 1), name=f"{name}_j")
    below = Signal(name=f"{name}_below")
    m.d.comb += [
        lead_s.eq(lead),
        below.eq(lead_s < fmt.kmax),
        k.eq(Mux(below, lead_s, fmt.kmax)),
        # past the prefix and its terminator; one bit less for odd k, whose significand sits one bit lower
        j.eq(Mux(below, lead_s + 1, fmt.kmax) - k[0]),
    ]
    plain = fmt.is_int | (k == 0)
    return {"val": Mux(fmt.is_int, Mux(code[n - 1], -code.as_signed(), code), body),  # INT: two's complement
            "j": j, "odd": k[0], "plain": plain, "sh": Mux(plain, 0, (k - 1) >> 1), "neg": code[n - 1]}


def decode_place(c, n: int):
    """The second half, from a `code_layout(n)` value: (neg, n-bit normalised significand, residual shift /
    SHIFT_STEP) with |I| = significand << shift, as `decode_case`."""
    nb = n - 1
    rest = (c.val[:nb] << c.j)[:nb]
    # k even: 1 rest; k odd: 0 1 rest (rest one bit shorter)
    sig = Mux(c.plain, c.val, Cat(rest[:nb - 1], c.odd | rest[nb - 1], ~c.odd))
    return c.neg, sig, c.sh


def decode_code(m: Module, code, n: int, fmt, name: str):
    """Combinational decode of one n-bit code (both halves, unregistered): (neg, significand, shift / step)."""
    first = Signal(code_layout(n), name=f"{name}_pre")
    m.d.comb += [getattr(first, f).eq(v) for f, v in decode_prefix(m, code, n, fmt, name).items()]
    return decode_place(first, n)


class OperandDecoder(wiring.Component):
    """One a lane (side "a", a row) or b lane (side "b", a column) of a data beat, decoded for the job's mode in
    two register stages: `lane`, `fmt` and `mode` of the beat entering; the first stage (registered here when
    `en`) holds each code's prefix decode (`decode_prefix`) and the beat's mode, `dec` (combinational from it,
    for the front end's output register) is the nibbles each sub-multiplier takes and each product lane's sign
    and shift. `wide` (registered in the first stage, beside the prefix decode) flags nonzero bits above the job's
    P codes in the lane of the beat in that stage."""

    def __init__(self, cfg: DyBitDynConfig, side: str):
        self.cfg, self.side = cfg, side
        super().__init__({"en": In(1), "lane": In(LANE_BITS), "fmt": In(FormatLayout()), "mode": In(ModeLayout()),
                          "dec": Out(side_layout(cfg, side)), "wide": Out(1)})

    def elaborate(self, platform):
        cfg, side = self.cfg, self.side
        m = Module()
        lane, dec = self.lane, self.dec
        other8 = self.mode.b8 if side == "a" else self.mode.a8
        # the lane holds 64 / n_other bits of codes (P codes of n_own bits): above that must be zero. Registered
        # (no reset: the front end reads it beside its stage-1 valid), so the OR over the lanes starts at flip-flops
        wide = Signal(name="wide1", reset_less=True)
        m.d.comb += self.wide.eq(wide)
        with m.If(self.en):
            m.d.sync += wide.eq(other8 & lane[8:].any())

        def stage1(n, count):
            regs = []
            for p in range(count):
                r = Signal(code_layout(n), name=f"c{n}_{p}", reset_less=True)
                with m.If(self.en):
                    m.d.sync += [getattr(r, f).eq(v) for f, v in
                                 decode_prefix(m, lane[n * p:n * p + n], n, self.fmt, f"c{n}_{p}").items()]
                regs.append(decode_place(r, n))
            return regs

        mode1 = Signal(ModeLayout(), name="mode1", reset_less=True)
        with m.If(self.en):
            m.d.sync += mode1.eq(self.mode)
        d8 = stage1(8, 2) if 8 in cfg.widths else None
        d4 = stage1(4, 4) if 4 in cfg.widths else None
        own8 = mode1.a8 if side == "a" else mode1.b8
        other8 = mode1.b8 if side == "a" else mode1.a8

        def lo(s):
            return s[:4]

        def hi(s):
            return s[4:8]

        def assign(nibbles, lanes):
            stmts = [getattr(dec, f"x{q}").eq(v) for q, v in enumerate(nibbles)]
            for lane_i in cfg.lanes_used:
                neg, _, sh = lanes.get(lane_i, (0, None, 0))
                stmts += [getattr(dec, f"neg{lane_i}").eq(neg), getattr(dec, f"sh{lane_i}").eq(sh)]
            return stmts

        cases = {}
        if d8 is not None:
            s0 = d8[0][1]
            # 8 x 8: A's nibbles L H L H against B's L L H H: products aL bL, aH bL, aL bH, aH bH
            cases[(1, 1)] = assign([lo(s0), hi(s0), lo(s0), hi(s0)] if side == "a" else
                                   [lo(s0), lo(s0), hi(s0), hi(s0)], {0: d8[0]})
        if d8 is not None and d4 is not None:
            # two MACs: the 8-bit operand's nibbles against the 4-bit operand twice
            cases[(1, 0)] = assign([lo(d8[0][1]), hi(d8[0][1]), lo(d8[1][1]), hi(d8[1][1])], {0: d8[0], 2: d8[1]})
            cases[(0, 1)] = assign([d4[0][1], d4[0][1], d4[1][1], d4[1][1]], {0: d4[0], 2: d4[1]})
        if d4 is not None:
            cases[(0, 0)] = assign([d[1] for d in d4], dict(enumerate(d4)))
        if len(cases) == 1:
            m.d.comb += next(iter(cases.values()))
        else:
            with m.Switch(Cat(other8, own8)):
                for (own, other), stmts in cases.items():  # keyed (own operand 8-bit, other operand 8-bit)
                    with m.Case(other | (own << 1)):
                        m.d.comb += stmts
        return m


def kept(m: Module, value, name: str):
    """`value` through a signal yosys keeps: two-operand adds then map to carry chains each, where a tree of
    adds would be merged into one multi-operand sum built as a carry-save tree of LUTs (about twice the area)."""
    sig = Signal.like(value, name=name, attrs={"keep": 1})
    m.d.comb += sig.eq(value)
    return sig


def fanout_tree(m: Module, value, levels: int, en, name: str) -> list:
    """2 ** levels copies of `value` (raw bits), each behind `levels` registers that move when `en`: a binary tree
    of registers, so that no register drives more than its share of the loads. Two siblings (same input) start
    from different values (0 and all ones): yosys merges flip-flops with the same input and the same initial
    value (opt_merge), which would make the tree one register again; the initial value is never used (the beat's
    valid travels beside it). The registers have no reset (payload: the valid has one); their initial values
    still differ, which is what keeps opt_merge from merging them."""
    nodes = [Value.cast(value)]
    for lv in range(levels):
        nxt = []
        for idx, node in enumerate(nodes):
            for side in (0, 1):
                width = len(node)
                r = Signal(width, init=((1 << width) - 1) * side, name=f"{name}_t{lv}_{2 * idx + side}",
                           reset_less=True)
                with m.If(en):
                    m.d.sync += r.eq(node)
                nxt.append(r)
        nodes = nxt
    return nodes


def stage(m: Module, en, value, name: str, **kw):
    """`value` registered (when `en`) in a new signal `name`, without a reset (a payload register: the valid
    that travels beside it has one)."""
    r = Signal.like(value, name=name, reset_less=True, **kw) if not isinstance(value, int) else \
        Signal(name=name, reset_less=True)
    with m.If(en):
        m.d.sync += r.eq(value)
    return r


class FusedPE(wiring.Component):
    """One PE: four sub-multipliers fused by the mode into 1, 2 or 4 signed, shifted products, summed.

    `a`, `b` are the decoded operands of the beat entering it; `mode` is the mode of the beat in its second
    register stage (entering the fuse). Every register moves when `en`; `cfg.pe_stages` of them from the
    operands to `sum`. `sum` (registered) plus `cin` is the sum of the beat's products: a negative product
    leaves as its ones' complement (the XOR folds into the shifter's last level) and its + 1 as a carry-in of an
    adder, the last one as `cin`, the accumulator's.

    Stages (each at most one carry chain and a select after the previous register):

    1. each sub-multiplier's two partial-product pairs (x y0 + 2 x y1, x y2 + 2 x y3: the AND in the carry
       chain's LUTs), the lanes' signs (XOR) and shifts (sum);
    2. each sub-product (pairs summed);
    3. the pairs of sub-products of 8 x 4 and 4 x 8 (m0 + m1 << 4, m2 + m3 << 4) or, 4 x 4, the four alone;
    4. 8 x 8's sum of the two pairs (lane 0), the other modes' lanes as they are;
    5. each lane's residual shift and sign (ones' complement);
    6.. the lane sum, one level of two-operand adds per stage.
    """

    def __init__(self, cfg: DyBitDynConfig):
        self.cfg = cfg
        super().__init__({"en": In(1), "a": In(side_layout(cfg, "a")), "b": In(side_layout(cfg, "b")),
                          "mode": In(ModeLayout()), "sum": Out(sum_shape(cfg)), "cin": Out(1)})

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        en = self.en
        lanes = cfg.lanes_used
        built = 0

        def side_stage(values: dict, tag: str) -> dict:
            return {k: stage(m, en, v, f"{k}{tag}") for k, v in values.items()}

        # 1: partial-product pairs; each lane's sign and shift
        pairs = []
        for q in range(LANES):
            x, y = getattr(self.a, f"x{q}"), getattr(self.b, f"x{q}")
            lo = Mux(y[0], x, 0) + Mux(y[1], x << 1, 0)  # x (y mod 4), 6 bits
            hi = Mux(y[2], x, 0) + Mux(y[3], x << 1, 0)  # x (y >> 2)
            pairs.append((stage(m, en, kept(m, lo, f"pp{q}_lo"), f"pp{q}_lo1"),
                          stage(m, en, kept(m, hi, f"pp{q}_hi"), f"pp{q}_hi1")))
        neg = {ln: stage(m, en, getattr(self.a, f"neg{ln}") ^ getattr(self.b, f"neg{ln}"), f"neg1_{ln}")
               for ln in lanes}
        sh = {ln: stage(m, en, (getattr(self.a, f"sh{ln}") + getattr(self.b, f"sh{ln}"))[:_bits(
            cfg.lane_shift_steps(ln))], f"sh1_{ln}") for ln in lanes}
        built += 1

        # 2: sub-products
        prod = [stage(m, en, (lo + (hi << 2))[:2 * SUB_BITS], f"m{q}") for q, (lo, hi) in enumerate(pairs)]
        neg, sh = side_stage(neg, "_2"), side_stage(sh, "_2")
        built += 1

        # 3: pairs of sub-products (offsets 0 and 4), or the four alone in 4 x 4
        mode44 = ~self.mode.a8 & ~self.mode.b8
        # m0 + m1 << 4 <= 225 * 17: the high part fits 8 bits
        pair0 = Cat(prod[0][:SUB_BITS], kept(m, (prod[0][SUB_BITS:] + prod[1])[:8], "pair0_hi"))
        pair1 = Cat(prod[2][:SUB_BITS], kept(m, (prod[2][SUB_BITS:] + prod[3])[:8], "pair1_hi"))
        l3 = {0: stage(m, en, Mux(mode44, prod[0], pair0), "f3_0"), 1: stage(m, en, Mux(mode44, prod[1], 0), "f3_1"),
              2: stage(m, en, Mux(mode44, prod[2], pair1), "f3_2"), 3: stage(m, en, Mux(mode44, prod[3], 0), "f3_3")}
        mode88 = stage(m, en, self.mode.a8 & self.mode.b8, "mode88_3")
        neg, sh = side_stage(neg, "_3"), side_stage(sh, "_3")
        built += 1

        # 4: 8 x 8 sums the pairs (offsets 0 and 4) into lane 0, lane 2 then holds nothing
        full = Cat(l3[0][:SUB_BITS], kept(m, (l3[0][SUB_BITS:] + l3[2])[:12], "full_hi"))  # <= 255 * 255: 16 bits
        fused = {0: Mux(mode88, full, l3[0]), 1: l3[1], 2: Mux(mode88, 0, l3[2]), 3: l3[3]}
        mag = {ln: Signal(_bits(cfg.lane_fused_max(ln)), name=f"mag4_{ln}", reset_less=True) for ln in lanes}
        with m.If(en):
            m.d.sync += [mag[ln].eq(fused[ln]) for ln in lanes]
        neg, sh = side_stage(neg, "_4"), side_stage(sh, "_4")
        built += 1

        # 5: each lane's own shift, then its sign as a ones' complement (+ 1 later, as a carry-in)
        ones = {ln: Signal(signed(_bits(cfg.lane_product_max(ln)) + 1), name=f"l5_{ln}", reset_less=True)
                for ln in lanes}
        with m.If(en):
            for ln in lanes:
                width = len(ones[ln])
                shifted = (mag[ln] << Cat(Const(0, 1), sh[ln]))[:width - 1]  # SHIFT_STEP = 2
                m.d.sync += ones[ln].eq(Cat(shifted, Const(0, 1)) ^ neg[ln].replicate(width))
        neg = side_stage(neg, "_5")
        built += 1

        # 6..: the lane sum, one level per stage, the + 1's as carry-ins (one left for the accumulator)
        vals = [(ones[ln], neg[ln]) for ln in lanes]
        level = 0
        while True:
            nxt = []
            for i in range(0, len(vals) - 1, 2):
                (x, cx), (y, cy) = vals[i], vals[i + 1]
                width = max(len(x), len(y)) + 1
                total = Signal(signed(min(width, len(self.sum))), name=f"sum{level}_{i}", reset_less=True)
                with m.If(en):
                    m.d.sync += total.eq(x + y + cx)  # cx rides in the carry chain; cy moves on
                nxt.append((total, stage(m, en, cy, f"sum{level}_{i}_c")))
            if len(vals) % 2:
                x, cx = vals[-1]
                nxt.append((stage(m, en, x, f"sum{level}_{len(vals) - 1}"), stage(m, en, cx, f"sum{level}_c")))
            vals, level = nxt, level + 1
            built += 1
            if len(vals) == 1:
                break
        m.d.comb += [self.sum.eq(vals[0][0]), self.cin.eq(vals[0][1])]
        require(built == cfg.pe_stages, "pe_stages", f"{built}: gen/dybit_dyn.py's FusedPE builds {built} stages",
                cfg.pe_stages)
        return m


class FrontEnd(wiring.Component):
    """Headers, the join of a and b, and the edge decoders (two register stages, `cfg.front_stages`): a stream of
    decoded beats. Every register moves when `d` is ready."""

    def __init__(self, cfg: DyBitDynConfig):
        self.cfg = cfg
        super().__init__({"a": In(stream.Signature(a_layout(cfg))), "b": In(stream.Signature(b_layout(cfg))),
                          "d": Out(stream.Signature(beat_layout(cfg))), "lane_en": In(cfg.rows + cfg.cols),
                          "ctl_en": In(1)})

    def elaborate(self, platform):
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        m = Module()
        a, b, d = self.a, self.b, self.d
        # `lane_en`: R + C copies of d.ready (rows, then columns), each moving one decoder and its lane of d: the
        # grid keeps them (`MacGrid.enable_copy`) so that no one net enables every register of the front end.
        # `ctl_en`: one more copy, for the front end's control (handshakes, formats, flags, the valids), so that
        # the stall (the drain's bank valid -> t.ready -> d.ready) does not reach the front end as logic

        # ---- the job's formats, from its header
        fa, fb = Signal(FormatLayout()), Signal(FormatLayout())
        hdr_err = Signal(init=1)  # no job before the first header: its beats are answered with the error flag
        job_wide = Signal()  # a data beat of this job had bits above its codes
        word = a.payload.data[0]
        parsed, bad = [], []
        for byte in (word[:8], word[8:16]):
            nf = byte[FMT_N_BITS[0]:FMT_N_BITS[1]]
            kmax = byte[FMT_KMAX_BITS[0]:FMT_KMAX_BITS[1]]
            kind = byte[FMT_KIND_BITS[0]:FMT_KIND_BITS[1]]
            n_ok = Cat(*[nf == w - 1 for w in cfg.widths]).any()
            is8 = (nf == 7) if 8 in cfg.widths and 4 in cfg.widths else Const(int(8 in cfg.widths), 1)
            kmax_top = Mux(nf == 7, 7, 3)  # n - 1 for the widths there are
            ok = n_ok & Mux(kind == KIND_CODES["int"], kmax == 0,
                            (kind == KIND_CODES["dybit"]) & (kmax >= 1) & (kmax <= kmax_top))
            parsed.append((is8, kind == KIND_CODES["int"], kmax))
            bad.append(~ok)
        others = Cat(*[a.payload.data[i] for i in range(1, R)]).any() if R > 1 else Const(0, 1)
        hdr_bad = Cat(*bad).any() | others

        # ---- handshakes: a header alone, a data beat with its b beat; the registers move when d is ready
        advance = self.ctl_en  # = d.ready in every cycle
        is_hdr = a.payload.header
        fire_data = Signal()
        m.d.comb += [
            a.ready.eq(advance & (is_hdr | b.valid)),
            b.ready.eq(advance & a.valid & ~is_hdr),
            fire_data.eq(advance & a.valid & b.valid & ~is_hdr),
        ]

        # ---- decoders at the edge, with the job's formats; their first stage registers inside them
        mode = Signal(ModeLayout())
        m.d.comb += [mode.a8.eq(fa.is8), mode.b8.eq(fb.is8)]
        wides = []
        a_dec, b_dec = [], []
        for side, lanes_in, fmt, out in (("a", [a.payload.data[i] for i in range(R)], fa, a_dec),
                                         ("b", [b.payload.data[j] for j in range(C)], fb, b_dec)):
            for idx, lane in enumerate(lanes_in):
                dec = OperandDecoder(cfg, side)
                m.submodules[f"dec_{side}{idx}"] = dec
                m.d.comb += [dec.en.eq(self.lane_en[len(wides)]), dec.lane.eq(lane), dec.fmt.eq(fmt),
                             dec.mode.eq(mode)]
                out.append(dec.dec)
                wides.append(dec.wide)
        # stage 1: the beat's control beside the decoders' first stage. `wide1`: the beat in stage 1 has a lane
        # with bits above its codes (each decoder registers its lane's flag). A beat's error flag is the header's,
        # the job's earlier beats' (`job_wide`, set from stage 1, so the beat just ahead, in stage 1 as this one
        # enters, is counted apart) and its own (added entering d).
        v1, last1, err1 = Signal(), Signal(), Signal()
        wide1 = Signal()
        m.d.comb += wide1.eq(v1 & Cat(*wides).any())
        mode1 = Signal(ModeLayout(), reset_less=True)
        with m.If(advance):
            m.d.sync += [v1.eq(fire_data), last1.eq(a.payload.last), err1.eq(hdr_err | job_wide | wide1),
                         mode1.eq(mode)]
        with m.If(wide1):  # the beat in stage 1 is of the current job: no header enters between two data beats
            m.d.sync += job_wide.eq(1)
        with m.If(advance & a.valid & is_hdr):  # a header entering: stage 1's beat (if any) is of the job before
            (a8, ai, ak), (b8, bi, bk) = parsed
            m.d.sync += [fa.is8.eq(a8), fa.is_int.eq(ai), fa.kmax.eq(ak),
                         fb.is8.eq(b8), fb.is_int.eq(bi), fb.kmax.eq(bk),
                         hdr_err.eq(hdr_bad), job_wide.eq(0)]
        # stage 2: the decoded beat, d; its operands and mode without a reset (d.valid has one)
        rows = [Signal.like(d.payload.rows[i], name=f"d_row{i}", reset_less=True) for i in range(R)]
        cols = [Signal.like(d.payload.cols[j], name=f"d_col{j}", reset_less=True) for j in range(C)]
        mode2 = Signal(ModeLayout(), name="d_mode", reset_less=True)
        m.d.comb += [d.payload.mode.eq(mode2)]
        m.d.comb += [d.payload.rows[i].eq(rows[i]) for i in range(R)]
        m.d.comb += [d.payload.cols[j].eq(cols[j]) for j in range(C)]
        with m.If(advance):
            m.d.sync += [d.valid.eq(v1), mode2.eq(mode1), d.payload.last.eq(last1),
                         d.payload.err.eq(err1 | wide1)]
        for i in range(R):
            with m.If(self.lane_en[i]):
                m.d.sync += rows[i].eq(a_dec[i])
        for j in range(C):
            with m.If(self.lane_en[R + j]):
                m.d.sync += cols[j].eq(b_dec[j])
        require(cfg.front_stages == 2, "front_stages", "2: gen/dybit_dyn.py's FrontEnd builds 2 stages",
                cfg.front_stages)
        return m


class MacGrid(wiring.Component):
    """R x C FusedPEs fed by the decoded beats through the broadcast registers, their accumulators, and a stream
    of finished tiles."""

    def __init__(self, cfg: DyBitDynConfig):
        self.cfg = cfg
        super().__init__({"d": In(stream.Signature(beat_layout(cfg))), "t": Out(stream.Signature(tile_layout(cfg))),
                          "freed_next": In(1), "lane_en": Out(cfg.rows + cfg.cols), "ctl_en": Out(1)})

    def elaborate(self, platform):
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        m = Module()
        d, t = self.d, self.t
        advance = Signal()
        m.d.comb += [advance.eq(~(t.valid & ~t.ready)), d.ready.eq(advance)]

        # per-stage control: the beat's valid, last, error flag, from d (the front end's last stage) to the PEs'
        # last stage
        nb = cfg.broadcast_stages
        stages = nb + cfg.pe_stages
        v = [Signal(name=f"v{s}") for s in range(stages)]
        last = [Signal(name=f"last{s}") for s in range(stages)]
        err = [Signal(name=f"err{s}") for s in range(stages)]
        with m.If(advance):
            m.d.sync += [v[0].eq(d.valid), last[0].eq(d.payload.last), err[0].eq(d.payload.err)]
            for s in range(1, stages):
                m.d.sync += [v[s].eq(v[s - 1]), last[s].eq(last[s - 1]), err[s].eq(err[s - 1])]

        # the drain's `freed` (its bank's last row leaves: the bank is empty from the next cycle), one register per
        # row of the grid: the drain hands `freed_next`, the value `freed` will have in the next cycle, so each
        # register holds this cycle's `freed` and clears the busy flags of its group of enable copies only (no
        # net from the drain to the whole array). `freed` is never 1 in two cycles running (the bank refills
        # after a cycle empty at least), so `& ~q` changes nothing but makes each register's next state depend
        # on itself: yosys cannot merge them.
        freed_q = [Signal(name=f"freed_q{g}") for g in range(R)]
        for q in freed_q:
            m.d.sync += q.eq(self.freed_next & ~q)
        self.freed_copies = freed_q  # for the tests: each equals the drain's `freed` in every cycle

        def enable_copy(name: str, group: int):
            """A copy of `advance` (= d.ready, "the pipeline moves") from its own copy of the state that decides it:
            the last stage's valid and last flags and the bank's busy flag (set when t fires, cleared by its
            group's copy of the drain's `freed`, as in RowDrain). Each copy enables one group of registers (a PE,
            a decoder, a broadcast row), so that no net drives the enables of the whole array. The copies' next
            states depend on themselves, so yosys cannot merge them (nor needs to: they are equal in every
            cycle)."""
            vq, lq, bq = Signal(name=f"{name}_v"), Signal(name=f"{name}_last"), Signal(name=f"{name}_bank")
            en = Signal(name=f"{name}_en")
            m.d.comb += en.eq(~(vq & lq & bq))
            with m.If(en):
                m.d.sync += [vq.eq(v[-2]), lq.eq(last[-2])]
            with m.If(vq & lq & ~bq):
                m.d.sync += bq.eq(1)
            with m.If(freed_q[group]):
                m.d.sync += bq.eq(0)
            self.enable_copies.append(en)
            return en, vq, lq

        def col_group(j: int) -> int:  # a column's copies go with a row's freed register, spread evenly
            return j * R // C

        self.enable_copies = []  # for the tests: each equals `advance` in every cycle

        m.d.comb += [self.lane_en[k].eq(enable_copy(f"en_dec{k}", k if k < R else col_group(k - R))[0])
                     for k in range(R + C)]
        m.d.comb += self.ctl_en.eq(enable_copy("en_front", 0)[0])

        # the operand broadcast: a tree of registers per row (and per column), each driving at most
        # BROADCAST_FANOUT PEs
        groups = 1 << nb
        require(groups * BROADCAST_FANOUT >= max(R, C), "broadcast_stages",
                f"enough for {max(R, C)} PEs per row or column at {BROADCAST_FANOUT} per register", nb)
        a_lay, b_lay = side_layout(cfg, "a"), side_layout(cfg, "b")
        rows = [[a_lay(x) for x in fanout_tree(m, d.payload.rows[i], nb, enable_copy(f"en_bcr{i}", i)[0],
                                                f"bc_row{i}")] for i in range(R)] if nb else \
            [[d.payload.rows[i]] for i in range(R)]
        cols = [[b_lay(x) for x in fanout_tree(m, d.payload.cols[j], nb, enable_copy(f"en_bcc{j}", col_group(j))[0],
                                                f"bc_col{j}")] for j in range(C)] if nb else \
            [[d.payload.cols[j]] for j in range(C)]
        # the mode, wanted by the PEs' third stage: a tree over the stages before it, one register per
        # BROADCAST_FANOUT PEs at most
        mode_stages = nb + 2
        mode_levels = min(mode_stages, (-(-R * C // BROADCAST_FANOUT) - 1).bit_length())
        mode_leaves = fanout_tree(m, d.payload.mode, mode_levels, advance, "bc_mode")
        modes = []
        for k, leaf in enumerate(mode_leaves):
            for s in range(mode_stages - mode_levels):
                leaf = stage(m, advance, leaf, f"bc_mode{k}_d{s}")
            modes.append(ModeLayout()(leaf))

        sums = [[None] * C for _ in range(R)]
        pe_en = [[None] * C for _ in range(R)]
        for i in range(R):
            for j in range(C):
                pe = FusedPE(cfg)
                m.submodules[f"pe_{i}_{j}"] = pe
                pe_en[i][j] = en = enable_copy(f"en_pe_{i}_{j}", i)
                m.d.comb += [pe.en.eq(en[0]), pe.a.eq(rows[i][j * groups // C]),
                             pe.b.eq(cols[j][i * groups // R]),
                             pe.mode.eq(modes[(i * C + j) * len(modes) // (R * C)])]
                sums[i][j] = pe

        # accumulate; a finished tile leaves on t and the accumulators restart from zero (the flip-flops'
        # synchronous reset input, no gating in front of the adders). The accumulators are not reset with the
        # design: each PE's `fresh` flag (reset to 1, then 0) clears its accumulator in the cycle after a reset,
        # before any beat can reach it (the valids take `stages` cycles to get there), so the design's reset net
        # goes to the control flip-flops only and each accumulator's clear is a local net of its PE.
        vN, lastN, errN = v[-1], last[-1], err[-1]
        acc_shape = signed(cfg.acc_bits)
        tile_err = Signal()
        step = Signal()
        m.d.comb += [t.valid.eq(vN & lastN), t.payload.err.eq(tile_err | errN), step.eq(advance & vN)]
        for i in range(R):
            for j in range(C):
                acc = Signal(acc_shape, name=f"acc_{i}_{j}", reset_less=True)
                fresh = Signal(init=1, name=f"fresh_{i}_{j}")
                m.d.sync += fresh.eq(0)
                total = acc + sums[i][j].sum + sums[i][j].cin
                m.d.comb += t.payload.data[i][j].eq(total)
                en, vq, lq = pe_en[i][j]  # the PE's copies of advance, vN and lastN
                with m.If(fresh | (en & vq & lq)):  # written this way, yosys maps it to the flip-flops' reset
                    m.d.sync += acc.eq(0)
                with m.Elif(en & vq):
                    m.d.sync += acc.eq(total)
        with m.If(step):
            m.d.sync += tile_err.eq(~lastN & (tile_err | errN))
        return m


class RowDrain(wiring.Component):
    """The shadow bank: takes a finished tile when empty and sends it row by row. `c_ready_next` is the value
    ``c.ready`` will have in the next cycle (the output slice's `StreamSlice.ready_next`); from it and the drain's
    flip-flops, `freed_next` is the value `freed` (the last row leaves, the bank is empty from the next cycle) will
    have in the next cycle, for the grid to register near its loads."""

    def __init__(self, cfg: DyBitDynConfig):
        self.cfg = cfg
        super().__init__({"t": In(stream.Signature(tile_layout(cfg))), "c": Out(stream.Signature(c_layout(cfg))),
                          "c_ready_next": In(1), "freed": Out(1), "freed_next": Out(1)})

    def elaborate(self, platform):
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        m = Module()
        t, c = self.t, self.c
        bank = [[Signal(signed(cfg.acc_bits), name=f"bank_{i}_{j}", reset_less=True) for j in range(C)]
                for i in range(R)]  # payload: bank_valid has the reset
        bank_valid, bank_err = Signal(), Signal()
        row = Signal(range(R), name="drain_row") if R > 1 else Const(0, 1)
        # row == R - 1 as a flip-flop
        last_row = Signal(init=R == 1)
        m.d.comb += [
            t.ready.eq(~bank_valid),
            c.valid.eq(bank_valid),
            c.payload.last.eq(last_row),
            c.payload.error.eq(bank_err),
            self.freed.eq(c.valid & c.ready & last_row),  # the bank is empty from the next cycle
        ]
        # freed's next value: the bank valid, on its last row and c ready, all in the next cycle. R > 1: a bank
        # that is not valid now is not on its last row next cycle (a tile enters at row 0), so the bank's valid
        # next cycle is its valid now unless its last row leaves now, and the last-row flag moves when a row
        # leaves. R = 1: a tile taken now is on its last row next cycle.
        if R > 1:
            last_next = Mux(c.ready, ~last_row & (row == R - 2), last_row)
            m.d.comb += self.freed_next.eq(bank_valid & last_next & self.c_ready_next)
        else:
            valid_next = Mux(bank_valid, ~c.ready, t.valid)
            m.d.comb += self.freed_next.eq(valid_next & self.c_ready_next)
        m.d.comb += [c.payload.data[j].eq(bank[0][j]) for j in range(C)]
        with m.If(t.valid & t.ready):
            m.d.sync += [bank[i][j].eq(t.payload.data[i][j]) for i in range(R) for j in range(C)]
            m.d.sync += [bank_valid.eq(1), bank_err.eq(t.payload.err)]
        with m.If(c.valid & c.ready):
            for i in range(R - 1):
                m.d.sync += [bank[i][j].eq(bank[i + 1][j]) for j in range(C)]
            if R > 1:
                with m.If(last_row):
                    m.d.sync += [bank_valid.eq(0), row.eq(0), last_row.eq(0)]
                with m.Else():
                    m.d.sync += [row.eq(row + 1), last_row.eq(row == R - 2)]
            else:
                m.d.sync += bank_valid.eq(0)
        return m


class OutputSlice(wiring.Component):
    """``cfg.output_stages`` register slices between the drain and ``c``."""

    def __init__(self, cfg: DyBitDynConfig):
        self.cfg = cfg
        super().__init__({"i": In(stream.Signature(c_layout(cfg))), "o": Out(stream.Signature(c_layout(cfg))),
                          "i_ready_next": Out(1)})

    def elaborate(self, platform):
        m = Module()
        require(self.cfg.output_stages >= 1, "output_stages",
                "at least 1: the drain's freed_next needs the next cycle's i.ready (StreamSlice.ready_next)",
                self.cfg.output_stages)
        src = wiring.flipped(self.i)
        for k in range(self.cfg.output_stages):
            m.submodules[f"slice{k}"] = sl = StreamSlice(c_layout(self.cfg))
            if k == 0:
                m.d.comb += self.i_ready_next.eq(sl.ready_next)
            wiring.connect(m, src, sl.i)
            src = sl.o
        wiring.connect(m, src, wiring.flipped(self.o))
        return m


class DyBitDynArray(wiring.Component):
    def __init__(self, cfg: DyBitDynConfig):
        self.cfg = cfg
        super().__init__({"a": In(stream.Signature(a_layout(cfg))), "b": In(stream.Signature(b_layout(cfg))),
                          "c": Out(stream.Signature(c_layout(cfg)))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.front = front = FrontEnd(self.cfg)
        m.submodules.grid = grid = MacGrid(self.cfg)
        m.submodules.drain = drain = RowDrain(self.cfg)
        m.submodules.out = out = OutputSlice(self.cfg)
        self.grid, self.drain = grid, drain  # for the tests (the enable and freed copies)
        wiring.connect(m, wiring.flipped(self.a), front.a)
        wiring.connect(m, wiring.flipped(self.b), front.b)
        wiring.connect(m, front.d, grid.d)
        wiring.connect(m, grid.t, drain.t)
        m.d.comb += [grid.freed_next.eq(drain.freed_next), drain.c_ready_next.eq(out.i_ready_next),
                     front.lane_en.eq(grid.lane_en), front.ctl_en.eq(grid.ctl_en)]
        wiring.connect(m, drain.c, out.i)
        wiring.connect(m, out.o, wiring.flipped(self.c))
        return m


__all__ = ["DyBitDynArray", "FrontEnd", "FusedPE", "MacGrid", "OperandDecoder", "OutputSlice", "RowDrain",
           "decode_code"]
