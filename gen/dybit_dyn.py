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
`MacGrid` (R x C `FusedPE` and the accumulators) -> stream ``t`` of finished tiles -> `RowDrain` (the shadow
bank, drained row by row) -> ``c``. Every stage is a register that moves when its output is ready (the
whole pipeline advances together, as in `accelkit.gen.dybit_array`): it stalls only when a finished tile
meets a bank that has not drained, or ``c`` is not ready.

PE: four 4 x 4-bit unsigned sub-multipliers (shift-add logic, no DSP) on operand nibbles arranged at the
edge for the job's mode. 8 x 8: one MAC from the four nibble products (offsets 0, 4, 4, 8); 8 x 4 and
4 x 8: two MACs of two products each (product lanes 0 and 2); 4 x 4: four MACs (lanes 0..3). Each lane's
significand product is signed, shifted by its own residual shift (significands are normalised at the edge
to fill n bits, so shifts are short: at most 5 per 8-bit operand, 1 per 4-bit one), the lanes are summed
and accumulated. Stages: decode | sub-products | fuse + sign | shift | lane sum | accumulate.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.config.dybit_dyn import (
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


def decode_code(m: Module, code, n: int, fmt, name: str):
    """Combinational decode of one n-bit code under the job's format `fmt` (a FormatLayout view):
    (neg, n-bit normalised significand, residual shift / SHIFT_STEP) with |I| = significand << shift, as
    `decode_case`.

    DyBit: k = the body's leading ones, up to kmax; the body shifted left past the prefix (and its terminating
    zero when k < kmax) leaves the mantissa left-aligned, `rest`. The value's leading one is at bit k + n - 3,
    so k = 0: the body itself (m); k even: 1 rest, shift k - 2; k odd: 0 1 rest >> 1, shift k - 1 (the shift
    stays even). INT: the magnitude (up to 2^(n-1)), shift 0."""
    nb = n - 1
    body = code[:nb]
    lead = Const(nb, range(nb + 1))
    for i in reversed(range(nb)):  # the first zero from the top
        lead = Mux(~body[nb - 1 - i], i, lead)
    lead_s = Signal(range(nb + 1), name=f"{name}_lead")
    k = Signal(range(nb + 1), name=f"{name}_k")
    j = Signal(range(nb + 1), name=f"{name}_j")
    rest = Signal(nb, name=f"{name}_rest")
    below = Signal(name=f"{name}_below")
    m.d.comb += [
        lead_s.eq(lead),
        below.eq(lead_s < fmt.kmax),
        k.eq(Mux(below, lead_s, fmt.kmax)),
        # past the prefix and its terminator; one bit less for odd k, whose significand sits one bit lower
        j.eq(Mux(below, lead_s + 1, fmt.kmax) - k[0]),
        rest.eq((body << j)[:nb]),
    ]
    neg = Signal(name=f"{name}_neg")
    sig = Signal(n, name=f"{name}_sig")
    sh = Signal(_bits(shift_max(n) // SHIFT_STEP), name=f"{name}_sh")
    m.d.comb += neg.eq(code[n - 1])
    with m.If(fmt.is_int):
        m.d.comb += sig.eq(Mux(code[n - 1], -code.as_signed(), code))  # two's complement magnitude
    with m.Elif(k == 0):
        m.d.comb += sig.eq(body)
    with m.Else():
        # k even: 1 rest; k odd: 0 1 rest (rest one bit shorter)
        m.d.comb += [sig.eq(Cat(rest[:nb - 1], k[0] | rest[nb - 1], ~k[0])), sh.eq((k - 1) >> 1)]
    return neg, sig, sh


class OperandDecoder(wiring.Component):
    """One a lane (side "a", a row) or b lane (side "b", a column) of a data beat, decoded for the job's mode:
    the nibbles each sub-multiplier takes and each product lane's sign and shift. Combinational; `wide` flags
    nonzero bits above the job's P codes."""

    def __init__(self, cfg: DyBitDynConfig, side: str):
        self.cfg, self.side = cfg, side
        super().__init__({"lane": In(LANE_BITS), "fmt": In(FormatLayout()), "mode": In(ModeLayout()),
                          "dec": Out(side_layout(cfg, side)), "wide": Out(1)})

    def elaborate(self, platform):
        cfg, side = self.cfg, self.side
        m = Module()
        lane, dec = self.lane, self.dec
        own8 = self.mode.a8 if side == "a" else self.mode.b8
        other8 = self.mode.b8 if side == "a" else self.mode.a8
        # the lane holds 64 / n_other bits of codes (P codes of n_own bits): above that must be zero
        m.d.comb += self.wide.eq(other8 & lane[8:].any())
        d8 = [decode_code(m, lane[8 * p:8 * p + 8], 8, self.fmt, f"c8_{p}") for p in range(2)] \
            if 8 in cfg.widths else None
        d4 = [decode_code(m, lane[4 * p:4 * p + 4], 4, self.fmt, f"c4_{p}") for p in range(4)] \
            if 4 in cfg.widths else None

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


def mul4x4(m: Module, x, y, name: str):
    """x * y for 4-bit unsigned values as shifted partial products and two-operand adds (no DSP block)."""
    t = [Mux(y[b], x << b, 0) for b in range(len(y))]
    return kept(m, t[0] + t[1], f"{name}_lo") + kept(m, t[2] + t[3], f"{name}_hi")


class FusedPE(wiring.Component):
    """One PE: four sub-multipliers fused by the mode into 1, 2 or 4 signed, shifted products, summed.

    `a`, `b` are the decoded operands of the beat entering it; `mode` is the mode of the beat in its first
    register stage (the sub-products). Every register moves when `en`. `sum` (registered) plus `cin` is the
    sum of this cycle's products: a negative product leaves as its ones' complement (the XOR folds into the
    shifter's last level) and its + 1 as a carry-in of an adder, the last one as `cin`, the accumulator's."""

    def __init__(self, cfg: DyBitDynConfig):
        self.cfg = cfg
        super().__init__({"en": In(1), "a": In(side_layout(cfg, "a")), "b": In(side_layout(cfg, "b")),
                          "mode": In(ModeLayout()), "sum": Out(sum_shape(cfg)), "cin": Out(1)})

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        lanes = cfg.lanes_used
        # stage: sub-products, each lane's sign and shift
        prod = [Signal(2 * SUB_BITS, name=f"m{q}") for q in range(LANES)]
        neg2 = {ln: Signal(name=f"neg2_{ln}") for ln in lanes}
        sh2 = {ln: Signal(_bits(cfg.lane_shift_steps(ln)), name=f"sh2_{ln}") for ln in lanes}
        with m.If(self.en):
            for q in range(LANES):
                m.d.sync += prod[q].eq(mul4x4(m, getattr(self.a, f"x{q}"), getattr(self.b, f"x{q}"), f"mul{q}"))
            for ln in lanes:
                m.d.sync += [neg2[ln].eq(getattr(self.a, f"neg{ln}") ^ getattr(self.b, f"neg{ln}")),
                             sh2[ln].eq(getattr(self.a, f"sh{ln}") + getattr(self.b, f"sh{ln}"))]

        # stage: fuse the sub-products into the mode's lanes (offsets 0, 4, 4, 8); the low nibble adds nothing
        mode88 = self.mode.a8 & self.mode.b8
        mode44 = ~self.mode.a8 & ~self.mode.b8
        pair0 = Cat(prod[0][:SUB_BITS], kept(m, prod[0][SUB_BITS:] + prod[1], "pair0_hi"))
        pair1 = Cat(prod[2][:SUB_BITS], kept(m, prod[2][SUB_BITS:] + prod[3], "pair1_hi"))
        full = Cat(pair0[:SUB_BITS], kept(m, pair0[SUB_BITS:] + pair1, "full_hi"))
        fused = {
            0: Mux(mode44, prod[0], Mux(mode88, full, pair0)),
            1: Mux(mode44, prod[1], 0),
            2: Mux(mode44, prod[2], Mux(mode88, 0, pair1)),
            3: Mux(mode44, prod[3], 0),
        }
        mag3 = {ln: Signal(_bits(cfg.lane_fused_max(ln)), name=f"mag3_{ln}") for ln in lanes}
        neg3 = {ln: Signal(name=f"neg3_{ln}") for ln in lanes}
        sh3 = {ln: Signal.like(sh2[ln], name=f"sh3_{ln}") for ln in lanes}
        with m.If(self.en):
            for ln in lanes:
                m.d.sync += [mag3[ln].eq(fused[ln]), neg3[ln].eq(neg2[ln]), sh3[ln].eq(sh2[ln])]

        # stage: each lane's own shift, then its sign as a ones' complement (+ 1 later, as a carry-in)
        ones = {ln: Signal(signed(_bits(cfg.lane_product_max(ln)) + 1), name=f"l4_{ln}") for ln in lanes}
        neg4 = {ln: Signal(name=f"neg4_{ln}") for ln in lanes}
        with m.If(self.en):
            for ln in lanes:
                width = len(ones[ln])
                shifted = (mag3[ln] << Cat(Const(0, 1), sh3[ln]))[:width - 1]  # SHIFT_STEP = 2
                m.d.sync += [ones[ln].eq(Cat(shifted, Const(0, 1)) ^ neg3[ln].replicate(width)),
                             neg4[ln].eq(neg3[ln])]

        # stage: the lane sum, the + 1's as carry-ins (one left for the accumulator)
        vals = [(ones[ln], neg4[ln]) for ln in lanes]
        level = 0
        while len(vals) > 1:
            nxt = []
            for i in range(0, len(vals) - 1, 2):
                (x, cx), (y, cy) = vals[i], vals[i + 1]
                total = x + y + cx  # cx rides in the carry chain; cy moves on
                nxt.append((kept(m, total, f"sum{level}_{i}") if len(vals) > 2 else total, cy))
            if len(vals) % 2:
                nxt.append(vals[-1])
            vals, level = nxt, level + 1
        with m.If(self.en):
            m.d.sync += [self.sum.eq(vals[0][0]), self.cin.eq(vals[0][1])]
        return m


class FrontEnd(wiring.Component):
    """Headers, the join of a and b, and the edge decoders: a stream of decoded beats."""

    def __init__(self, cfg: DyBitDynConfig):
        self.cfg = cfg
        super().__init__({"a": In(stream.Signature(a_layout(cfg))), "b": In(stream.Signature(b_layout(cfg))),
                          "d": Out(stream.Signature(beat_layout(cfg)))})

    def elaborate(self, platform):
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        m = Module()
        a, b, d = self.a, self.b, self.d

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

        # ---- decoders at the edge, with the job's formats
        mode = Signal(ModeLayout())
        m.d.comb += [mode.a8.eq(fa.is8), mode.b8.eq(fb.is8)]
        wides = []
        a_dec, b_dec = [], []
        for side, lanes_in, fmt, out in (("a", [a.payload.data[i] for i in range(R)], fa, a_dec),
                                         ("b", [b.payload.data[j] for j in range(C)], fb, b_dec)):
            for idx, lane in enumerate(lanes_in):
                dec = OperandDecoder(cfg, side)
                m.submodules[f"dec_{side}{idx}"] = dec
                m.d.comb += [dec.lane.eq(lane), dec.fmt.eq(fmt), dec.mode.eq(mode)]
                out.append(dec.dec)
                wides.append(dec.wide)
        wide_now = Cat(*wides).any()

        # ---- handshakes: a header alone, a data beat with its b beat; the register moves when d is ready
        advance = d.ready
        is_hdr = a.payload.header
        fire_data = Signal()
        m.d.comb += [
            a.ready.eq(advance & (is_hdr | b.valid)),
            b.ready.eq(advance & a.valid & ~is_hdr),
            fire_data.eq(advance & a.valid & b.valid & ~is_hdr),
        ]
        with m.If(advance):
            m.d.sync += d.valid.eq(fire_data)
        with m.If(fire_data):
            m.d.sync += [d.payload.rows[i].eq(a_dec[i]) for i in range(R)]
            m.d.sync += [d.payload.cols[j].eq(b_dec[j]) for j in range(C)]
            m.d.sync += [d.payload.mode.eq(mode), d.payload.last.eq(a.payload.last),
                         d.payload.err.eq(hdr_err | job_wide | wide_now), job_wide.eq(job_wide | wide_now)]
        with m.If(advance & a.valid & is_hdr):
            (a8, ai, ak), (b8, bi, bk) = parsed
            m.d.sync += [fa.is8.eq(a8), fa.is_int.eq(ai), fa.kmax.eq(ak),
                         fb.is8.eq(b8), fb.is_int.eq(bi), fb.kmax.eq(bk),
                         hdr_err.eq(hdr_bad), job_wide.eq(0)]
        return m


class MacGrid(wiring.Component):
    """R x C FusedPEs fed by the decoded beats, their accumulators, and a stream of finished tiles."""

    def __init__(self, cfg: DyBitDynConfig):
        self.cfg = cfg
        super().__init__({"d": In(stream.Signature(beat_layout(cfg))), "t": Out(stream.Signature(tile_layout(cfg)))})

    def elaborate(self, platform):
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        m = Module()
        d, t = self.d, self.t
        advance = Signal()
        m.d.comb += [advance.eq(~(t.valid & ~t.ready)), d.ready.eq(advance)]

        # per-stage control: the beat's valid, last, error flag (and mode for the fuse stage)
        depth = cfg.pipeline_depth  # stage 1 is the front end's register (d); stages 2..depth are here
        v = [Signal(name=f"v{s}") for s in range(2, depth + 1)]
        last = [Signal(name=f"last{s}") for s in range(2, depth + 1)]
        err = [Signal(name=f"err{s}") for s in range(2, depth + 1)]
        mode2 = Signal(ModeLayout())
        with m.If(advance):
            m.d.sync += [v[0].eq(d.valid), last[0].eq(d.payload.last), err[0].eq(d.payload.err),
                         mode2.eq(d.payload.mode)]
            for s in range(1, len(v)):
                m.d.sync += [v[s].eq(v[s - 1]), last[s].eq(last[s - 1]), err[s].eq(err[s - 1])]

        sums = [[None] * C for _ in range(R)]
        for i in range(R):
            for j in range(C):
                pe = FusedPE(cfg)
                m.submodules[f"pe_{i}_{j}"] = pe
                m.d.comb += [pe.en.eq(advance), pe.a.eq(d.payload.rows[i]), pe.b.eq(d.payload.cols[j]),
                             pe.mode.eq(mode2)]
                sums[i][j] = pe

        # accumulate; a finished tile leaves on t and the accumulators restart from zero (the flip-flops'
        # synchronous reset, no gating in front of the adders)
        vN, lastN, errN = v[-1], last[-1], err[-1]
        acc_shape = signed(cfg.acc_bits)
        tile_err = Signal()
        step = Signal()
        m.d.comb += [t.valid.eq(vN & lastN), t.payload.err.eq(tile_err | errN), step.eq(advance & vN)]
        for i in range(R):
            for j in range(C):
                acc = Signal(acc_shape, name=f"acc_{i}_{j}")
                total = acc + sums[i][j].sum + sums[i][j].cin
                m.d.comb += t.payload.data[i][j].eq(total)
                with m.If(step & lastN):  # written this way, yosys maps it to the flip-flops' reset
                    m.d.sync += acc.eq(0)
                with m.Elif(step):
                    m.d.sync += acc.eq(total)
        with m.If(step):
            m.d.sync += tile_err.eq(~lastN & (tile_err | errN))
        return m


class RowDrain(wiring.Component):
    """The shadow bank: takes a finished tile when empty and sends it row by row."""

    def __init__(self, cfg: DyBitDynConfig):
        self.cfg = cfg
        super().__init__({"t": In(stream.Signature(tile_layout(cfg))), "c": Out(stream.Signature(c_layout(cfg)))})

    def elaborate(self, platform):
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        m = Module()
        t, c = self.t, self.c
        bank = [[Signal(signed(cfg.acc_bits), name=f"bank_{i}_{j}") for j in range(C)] for i in range(R)]
        bank_valid, bank_err = Signal(), Signal()
        row = Signal(range(R), name="drain_row") if R > 1 else Const(0, 1)
        m.d.comb += [
            t.ready.eq(~bank_valid),
            c.valid.eq(bank_valid),
            c.payload.last.eq(row == R - 1),
            c.payload.error.eq(bank_err),
        ]
        m.d.comb += [c.payload.data[j].eq(bank[0][j]) for j in range(C)]
        with m.If(t.valid & t.ready):
            m.d.sync += [bank[i][j].eq(t.payload.data[i][j]) for i in range(R) for j in range(C)]
            m.d.sync += [bank_valid.eq(1), bank_err.eq(t.payload.err)]
        with m.If(c.valid & c.ready):
            for i in range(R - 1):
                m.d.sync += [bank[i][j].eq(bank[i + 1][j]) for j in range(C)]
            with m.If(row == R - 1):
                m.d.sync += bank_valid.eq(0)
                if R > 1:
                    m.d.sync += row.eq(0)
            if R > 1:
                with m.Else():
                    m.d.sync += row.eq(row + 1)
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
        wiring.connect(m, wiring.flipped(self.a), front.a)
        wiring.connect(m, wiring.flipped(self.b), front.b)
        wiring.connect(m, front.d, grid.d)
        wiring.connect(m, grid.t, drain.t)
        wiring.connect(m, drain.c, wiring.flipped(self.c))
        return m


__all__ = ["DyBitDynArray", "FrontEnd", "FusedPE", "MacGrid", "OperandDecoder", "RowDrain", "decode_code"]
