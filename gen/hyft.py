"""The Hyft softmax unit (docs/specs/hyft.md), and the conventional floating-point baseline.

Streams (amaranth.lib.stream, valid/ready), L = cfg.lanes, W = the format's width:

- ``x`` in: ``data`` L raw floats (element k of the vector in lane k mod L of beat
  k div L), ``count`` the number of valid lanes, ``last`` on the vector's final
  beat. A vector of N elements takes ceil(N/L) beats; ``count`` is read on the
  last beat only (1..L; 0 or more than L there means L) and ignored elsewhere.
- ``y`` out: the same beats: ``data`` the softmax bits (lanes at or above
  ``count`` are 0), ``count`` (L on every beat but a partial last one),
  ``last`` on the vector's final beat, and ``error``. A vector longer than
  ``max_len`` is read to its ``last`` beat and answered by a single beat with
  ``error`` = 1, ``last`` = 1, ``count`` = 0 and all-zero data.

Microarchitecture: a ring of ``cfg.banks`` vector buffer banks (gen/memory.py
`RegisteredRam`, one element word per lane, max_len/L deep) and three phases, each
working on its own bank and handing the bank on to the next phase when done, so
three vectors are in flight at once. Every bank port is registered: the writes (A's
beats, B's write-back) in a register before the block RAM's own, the read address
(B's or C's) in a register, the block RAM's output register, and the bank select
after it: a read takes RING_READ = 4 cycles from its issue to the word in a
register (C's reads stall with C's pipeline through the RAM's read enable).

- A, fill: writes each accepted beat into its bank and reduces the max (a float
  compare on order-preserving integer keys) and the special-value flags.
- B, sum: reads the bank, computes d, t, p per element, writes the element's
  live flag and |t| back in place of its input, and sums p exactly; then
  log2(sum) once per vector.
- C, output: reads |t| back, y = 2^(t - log2 sum) rounded to the format, and
  drives ``y``; its pipeline stalls as a whole when ``y`` is not ready.

Each phase moves to the next bank on the cycle after its last read, so back to
back vectors keep every phase busy; ``golden/hyft_cycles.py`` is the exact
cycle model, from the stage counts of accelkit/config/hyft.py (HYFT_STAGES,
RING_READ, a_full, b_done, c_fire), which the generator builds. The datapaths'
pieces are also components simulated and timed alone (Exp2Unit, LeadingOne,
Log2Unit, RoundUnit, BLane; tests/test_hyft_units.py); the timing closure is
in docs/timing.md. ``cfg.arch == "float"`` keeps the ring, the A phase and the
stream format and swaps the B and C datapaths for floating-point ones (see
``gen/float_softmax.py``).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.config.hyft import HYFT_STAGES, RING_READ, SoftmaxConfig

from .memory import READ_LATENCY, RegisteredRam
from .pipeline import LIMB, MULTIPLY_LATENCY, registered_multiply, split_multiply

# bank states: each bank is owned by one phase at a time and moves around the ring in this order
FREE, FILL, FULL, SUM, SUMMED, DRAIN = range(6)


def in_layout(cfg: SoftmaxConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(unsigned(cfg.width), cfg.lanes),
                              "count": unsigned(cfg.count_bits), "last": 1})


def out_layout(cfg: SoftmaxConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(unsigned(cfg.width), cfg.lanes),
                              "count": unsigned(cfg.count_bits), "last": 1, "error": 1})


def softmax_signature(cfg: SoftmaxConfig) -> wiring.Signature:
    return wiring.Signature({"x": In(stream.Signature(in_layout(cfg))), "y": Out(stream.Signature(out_layout(cfg)))})


class Pipe:
    """Pipeline registers of one phase; they all advance when `en` is high (always when `en` is None)."""

    def __init__(self, m: Module, prefix: str, en=None):
        self.m, self.prefix, self.en = m, prefix, en
        self._n = 0

    def reg(self, value, shape=None, name: str = "r"):
        value = Const.cast(value) if isinstance(value, int) else value
        self._n += 1
        sig = Signal(shape if shape is not None else value.shape(), name=f"{self.prefix}_{name}_{self._n}")
        if self.en is None:
            self.m.d.sync += sig.eq(value)
        else:
            with self.m.If(self.en):
                self.m.d.sync += sig.eq(value)
        return sig

    def delay(self, value, n: int, name: str = "d"):
        for _ in range(n):
            value = self.reg(value, name=name)
        return value


def smin(a, b):
    return Mux(a < b, a, b)


def smax(a, b):
    return Mux(a > b, a, b)


def clamp0(v, hi: int):
    """min(max(v, 0), hi) of a signed v, as unsigned: the sign bit and one compare side by side, then the mux
    (not a compare after a mux)."""
    return Mux(v[-1], 0, Mux(v > hi, hi, v.as_unsigned()))


def table_lookup(values: tuple[int, ...], index, name: str, m: Module):
    """A small constant table as a mux (a few LUTs, not a memory)."""
    width = max(max(values).bit_length(), 1)
    out = Signal(width, name=name)
    with m.Switch(index):
        for i, v in enumerate(values):
            with m.Case(i):
                m.d.comb += out.eq(v)
    return out


def interpolate(m: Module, table: tuple[int, ...], r, seg_bits: int, interp_bits: int, name: str):
    """table[j] + ((table[j+1] - table[j]) * w) >> interp_bits, j the top seg_bits of r, w the rest."""
    j = r[interp_bits:interp_bits + seg_bits] if seg_bits else Const(0, 1)
    w = r[:interp_bits]
    base = table_lookup(table[:-1], j, f"{name}_base", m)
    step = table_lookup(tuple(table[i + 1] - table[i] for i in range(len(table) - 1)), j, f"{name}_step", m)
    return base + ((step * w) >> interp_bits)


def float_fields(bits, cfg: SoftmaxConfig):
    """(sign, biased exponent, stored fraction) of raw bits in cfg's format."""
    M, E = cfg.man_bits, cfg.exp_bits
    return bits[cfg.width - 1], bits[M:M + E], bits[:M]


def order_key(bits, cfg: SoftmaxConfig):
    """An unsigned key that orders finite floats as their values; zeros and subnormals all map to +0's key."""
    sign, e, _ = float_fields(bits, cfg)
    canon = Mux(e == 0, 0, bits)
    top = 1 << (cfg.width - 1)
    return Mux(sign & (e != 0), ~canon, canon | top)[:cfg.width]


def key_to_bits(key, cfg: SoftmaxConfig):
    """Inverse of `order_key` (giving the canonical bits: +0 for every zero)."""
    top = 1 << (cfg.width - 1)
    return Mux(key[cfg.width - 1], key ^ top, ~key)[:cfg.width]


def max_tree(m: Module, keys: list, name: str):
    """The largest of `keys` through a balanced tree of compare-and-select nodes."""
    level = 0
    while len(keys) > 1:
        nxt = []
        for i in range(0, len(keys) - 1, 2):
            s = Signal.like(keys[i], name=f"{name}_l{level}_{i // 2}")
            m.d.comb += s.eq(smax(keys[i], keys[i + 1]))
            nxt.append(s)
        if len(keys) % 2:
            nxt.append(keys[-1])
        keys, level = nxt, level + 1
    return keys[0]


def add_tree(m: Module, values: list, name: str):
    level = 0
    while len(values) > 1:
        nxt = [values[i] + values[i + 1] for i in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            nxt.append(values[-1])
        values, level = nxt, level + 1
    return values[0]


def leading_one(m: Module, v, name: str):
    """Index of the most significant one of v (0 when v == 0): a priority encoder as a tree over halves (the
    upper half's index when it has a one, else the lower's), log2(len(v)) multiplexer levels, no chain."""
    def enc(bits):  # (any one, index bits LSB first)
        if len(bits) == 1:
            return bits[0], []
        half = 1 << ((len(bits) - 1).bit_length() - 1)  # the largest power of two below len(bits)
        lo_any, lo_idx = enc(bits[:half])
        hi_any, hi_idx = enc(bits[half:])
        w = (half - 1).bit_length()
        idx = [Mux(hi_any, hi_idx[i] if i < len(hi_idx) else 0, lo_idx[i] if i < len(lo_idx) else 0)
               for i in range(w)]
        return lo_any | hi_any, idx + [hi_any]

    k = Signal(range(max(len(v), 2)), name=name)
    _, idx = enc([v[i] for i in range(len(v))])
    m.d.comb += k.eq(Cat(*idx) if idx else 0)
    return k


# ---- the Hyft datapaths ---------------------------------------------------------------------------------

def low_bits_any(m: Module, v, sh, name: str):
    """Whether v >> sh drops a one: v AND a thermometer mask of sh ones (beside the shifter, not after it)."""
    mask = Signal(len(v), name=f"{name}_mask")
    m.d.comb += [mask[i].eq(sh > i) for i in range(len(v))]
    return (v & mask).any()


def lead_one_split(m: Module, p: Pipe, v, name: str, top: int | None = None):
    """`leading_one` in two register stages: each group of 8 bits' own leading one and whether it has one, then
    the highest group that has one. Returns the registered index (0 when v == 0); with `top`, also top - index
    registered beside it."""
    groups = [(lo, v[lo:min(lo + 8, len(v))]) for lo in range(0, len(v), 8)]
    any_ = [p.reg(g != 0, name=f"{name}_any{lo}") for lo, g in groups]
    idx = [p.reg(leading_one(m, g, f"{name}_g{lo}"), name=f"{name}_idx{lo}") for lo, g in groups]
    k = Signal(range(max(len(v), 2)), name=f"{name}_k")
    for (lo, _), a, i in zip(groups, any_, idx, strict=True):
        with m.If(a):
            m.d.comb += k.eq(lo + i)
    if top is not None:
        return p.reg(k, name=f"{name}_lead"), p.reg(top - k, unsigned(max(top, 1).bit_length()), name=f"{name}_up")
    return p.reg(k, name=f"{name}_lead")


def interp_stages(m: Module, p: Pipe, table: tuple[int, ...], r, seg_bits: int, interp_bits: int, shape, name: str,
                  platform=None):
    """`interpolate` in INTERP_STAGES = 3 register stages: the segment's base and step into the multiplier's
    operand registers, the product, base + (step * w) >> interp_bits."""
    j = r[interp_bits:interp_bits + seg_bits] if seg_bits else Const(0, 1)
    w = r[:interp_bits]
    base = table_lookup(table[:-1], j, f"{name}_base", m)
    step = table_lookup(tuple(table[i + 1] - table[i] for i in range(len(table) - 1)), j, f"{name}_step", m)
    fits = len(step) <= LIMB and len(w) <= LIMB
    prod = registered_multiply(m, step, w, f"{name}_mul", platform if fits else None, en=p.en)
    base2 = p.delay(base, MULTIPLY_LATENCY, name=f"{name}_b")
    return p.reg(base2 + (prod >> interp_bits), shape, name=f"{name}_P")


INTERP_STAGES = MULTIPLY_LATENCY + 1


class HyftDatapath:
    """Steps 2 to 7 of the spec, bit-exact to golden/hyft.py, as pipelines the ring drives.

    B: per lane, the registered word read from the bank -> (live, |T|) written back after `B_WB` register
    stages, and p on the sum's grid after `B_P`; the beat's sum after `B_BEAT` more. `finalize`: the exact sum
    -> -Lsum in `FIN` stages. C: (live, |T|) and -Lsum -> the output float, `C_OUT` stages before the output
    register. Stage counts: accelkit/config/hyft.py (HYFT_STAGES, hyft_pipeline), which the cycle model reads.
    """

    def __init__(self, cfg: SoftmaxConfig, platform=None):
        self.cfg = cfg
        self.platform = platform
        st = cfg.pipeline
        self.B_WB, self.B_P, self.B_BEAT, self.FIN, self.C_OUT = (st["b_wb"], st["b_p"], st["b_beat"], st["fin"],
                                                                  st["c_out"])
        assert HYFT_STAGES["exp2"] == INTERP_STAGES

    @property
    def acc_shape(self):
        return unsigned(self.cfg.sum_bits)

    @property
    def vec_shape(self):
        return signed(self.lsum_bits + 1)  # -Lsum

    @property
    def lsum_bits(self) -> int:
        cfg = self.cfg
        return cfg.log2_sum_int_bits + cfg.frac_bits + 2

    # --- B: per lane
    def b_lane(self, m: Module, p: Pipe, word, lane_ok, max_bits, lane: int):
        cfg = self.cfg
        M, F, I, bias = cfg.man_bits, cfg.frac_bits, cfg.int_bits, cfg.bias
        # decode 1: the fields, the larger exponent (compared beside the normal test), equal to the max
        bits = word[:cfg.width]
        sx, ex, fx = float_fields(bits, cfg)
        sm, em, fm = float_fields(max_bits, cfg)
        special = ex == cfg.float_format.exp_max
        normal = (ex != 0) & ~special
        exe = p.reg(Mux(normal, ex, 0), unsigned(cfg.exp_bits), name=f"exe{lane}")
        em1 = p.reg(em, name=f"em{lane}")
        ev = p.reg(Mux(normal & (ex > em), ex, em), unsigned(cfg.exp_bits), name=f"ev{lane}")
        mx = p.reg(Mux(normal, Cat(fx, Const(1, 1)), 0), unsigned(M + 1), name=f"mx{lane}")
        mm = p.reg(Mux(em != 0, Cat(fm, Const(1, 1)), 0), unsigned(M + 1), name=f"mm{lane}")
        sx1, sm1 = p.reg(sx, name=f"sx{lane}"), p.reg(sm, name=f"sm{lane}")
        eq1 = p.reg(Mux(normal, bits == max_bits, max_bits == 0), name=f"eq{lane}")
        fin1 = p.reg(lane_ok & ~special, name=f"fin{lane}")
        # decode 2: the grid g = min(Ev - M, -F): both cases give k = e_o - base and z = 1 - F - g
        small = p.reg(ev <= bias + M - F, name=f"small{lane}")
        big2 = p.reg(ev >= cfg.align_exp_limit + bias, name=f"big{lane}")
        base = p.reg(Mux(ev <= bias + M - F, ev, bias + M - F), name=f"base{lane}")
        zc = p.reg(bias + M + 1 - F - ev, name=f"zc{lane}")
        exe, em1, mx, mm, sx1, sm1, eq1, fin1 = (p.reg(v, name=f"dc{lane}") for v in
                                                 (exe, em1, mx, mm, sx1, sm1, eq1, fin1))
        # decode 3: k for both operands, z
        k_shape = signed(cfg.exp_bits + 3)
        kx = p.reg(exe - base, k_shape, name=f"kx{lane}")
        km = p.reg(em1 - base, k_shape, name=f"km{lane}")
        nkx = p.reg(base - exe, k_shape, name=f"nkx{lane}")  # -k beside k
        nkm = p.reg(base - em1, k_shape, name=f"nkm{lane}")
        z = p.reg(Mux(small, smin(zc, M + 3), 1), unsigned((M + 3).bit_length()), name=f"z{lane}")
        mx, mm, sx1, sm1, eq1, big2, fin1 = (p.reg(v, name=f"dk{lane}") for v in (mx, mm, sx1, sm1, eq1, big2, fin1))

        # align 1: the shift amounts, clamped
        lmax = I + F + 1
        lb, rb = lmax.bit_length(), (M + 2).bit_length()

        def amounts(k, nk, tag):
            return (p.reg(clamp0(k, lmax)[:lb], name=f"l{tag}{lane}"),
                    p.reg(clamp0(nk, M + 2)[:rb], name=f"r{tag}{lane}"),
                    p.reg(k >= 0, name=f"p{tag}{lane}"))

        lx, rx, px = amounts(kx, nkx, "x")
        lm, rm, pm = amounts(km, nkm, "m")
        mx, mm, sx1, sm1, z, eq1, big2, fin1 = (p.reg(v, name=f"da{lane}") for v in
                                                (mx, mm, sx1, sm1, z, eq1, big2, fin1))

        # align 2: both operands on the grid, in half units with a sticky bit
        def on_grid(mant, ls, rs, pos, tag):
            sticky = low_bits_any(m, mant, rs, f"st{tag}{lane}")
            return p.reg(Mux(pos, (mant << ls) << 1, Cat(sticky, mant >> rs)), name=f"v{tag}{lane}")

        vx, vm = on_grid(mx, lx, rx, px, "x"), on_grid(mm, lm, rm, pm, "m")
        sx1, sm1, z, eq1, big2, fin1 = (p.reg(v, name=f"dg{lane}") for v in (sx1, sm1, z, eq1, big2, fin1))
        # align 3: the signs; align 4: A2 = max - x
        a_shape = signed(cfg.align_bits + 3)
        svx = p.reg(Mux(sx1, -vx, vx), a_shape, name=f"svx{lane}")
        svm = p.reg(Mux(sm1, -vm, vm), a_shape, name=f"svm{lane}")
        z, eq1, big2, fin1 = (p.reg(v, name=f"ds{lane}") for v in (z, eq1, big2, fin1))
        a2 = p.reg(svm - svx, a_shape, name=f"a2_{lane}")
        zmask = p.reg((Const(1, 1) << z) - 1, name=f"zmask{lane}")  # 2^z - 1, beside the subtraction
        z, eq1, big2, fin1 = (p.reg(v, name=f"dd{lane}") for v in (z, eq1, big2, fin1))

        # ceil: C = ceil(A2 / 2^z) as (A2 + 2^z - 1) >> z, then D = -min(C, 2^(I+F))
        pre = p.reg(a2 + zmask, name=f"cpre{lane}")
        z, eq1, big2, fin1 = (p.reg(v, name=f"dp{lane}") for v in (z, eq1, big2, fin1))
        c = p.reg(pre >> z, name=f"c{lane}")
        eq1, big2, fin1 = (p.reg(v, name=f"dq{lane}") for v in (eq1, big2, fin1))
        d3 = p.reg(Mux(eq1, 0, Mux(big2 | (c > cfg.d_sat), cfg.d_sat, c)), unsigned(cfg.d_mag_bits), name=f"d{lane}")
        fin1 = p.reg(fin1, name=f"dr{lane}")

        # |T| = ceil(|D| * log2e / 2^K); live while T >= -2^(I+F)
        K = cfg.log2e_frac_bits
        kbits = cfg.log2e_const.bit_length()
        prod, mst = split_multiply(m, d3, Const(cfg.log2e_const, unsigned(kbits)), cfg.d_mag_bits + kbits + 2,
                                   f"l2e{lane}", self.platform)
        fin1 = p.delay(fin1, mst, name=f"dm{lane}")
        tq = p.reg((prod + (1 << K) - 1) >> K, name=f"tq{lane}")
        fin1 = p.reg(fin1, name=f"dt{lane}")
        live = fin1 & (tq <= cfg.d_sat)
        t4 = p.reg(Mux(live, tq, 0), unsigned(cfg.t_mag_bits), name=f"t{lane}")
        live4 = p.reg(live, name=f"live{lane}")
        wb = Cat(t4, live4)

        # -|T|, then 2^r by the table (q = T >> F, r = T mod 2^F)
        tneg = p.reg(-t4, signed(cfg.t_mag_bits + 1), name=f"tneg{lane}")
        live5 = p.reg(live4, name=f"live5_{lane}")
        P6 = interp_stages(m, p, cfg.exp2_table, tneg[:F], cfg.seg_bits, cfg.interp_bits, unsigned(cfg.mant_bits + 1),
                           f"e2b{lane}", self.platform)
        live6 = p.delay(live5, INTERP_STAGES, name=f"ld{lane}")
        # p on the sum's grid 2^-B, truncated: the shift amounts from q beside the table (s = q - W + B, then
        # its clamped parts), then the shift (`grid`)
        W, B = cfg.table_bits, cfg.sum_frac_bits
        q5 = p.reg(tneg >> F, signed(cfg.q_bits + 1), name=f"q{lane}")
        s = p.reg(q5 - W + B, signed(cfg.q_bits + 3), name=f"gs{lane}")
        ns = p.reg(W - B - q5, signed(cfg.q_bits + 3), name=f"gns{lane}")
        assert INTERP_STAGES == 3
        lsh = p.reg(clamp0(s, max(B - W, 0))[:max(B - W, 1).bit_length()], name=f"glsh{lane}")
        rsh = p.reg(clamp0(ns, W + 2)[:(W + 2).bit_length()], name=f"grsh{lane}")
        sge = p.reg(s >= 0, name=f"gsge{lane}")
        pv = Mux(sge, P6 << lsh, P6 >> rsh)
        p6 = p.reg(Mux(live6, pv, 0), unsigned(B + 2), name=f"p{lane}")
        return wb, p6

    def b_beat(self, m: Module, p: Pipe, lanes_p: list):
        """The beat's sum of p over the lanes: a tree of adds with a register after each level (B_BEAT stages)."""
        vals, level = list(lanes_p), 0
        while True:
            nxt = [vals[i] + vals[i + 1] for i in range(0, len(vals) - 1, 2)]
            if len(vals) % 2:
                nxt.append(vals[-1])
            vals = [p.reg(v, self.acc_shape, name=f"beat{level}_{i}") for i, v in enumerate(nxt)]
            level += 1
            if len(vals) == 1:
                break
        assert level == self.B_BEAT
        return vals[0]

    def vector_value(self, m: Module, p: Pipe, beat, bt: dict):
        """The beat sums of a vector (tags bt: v, first, last, bank) -> (-Lsum, its valid, its bank), 1 + FIN
        cycles after the last beat sum: the exact accumulator, then `finalize`."""
        acc = Signal(self.acc_shape)
        total = Signal(self.acc_shape)
        tot_v = Signal()
        tot_bank = Signal(len(bt["bank"]))
        new_acc = Signal(self.acc_shape)
        m.d.comb += new_acc.eq(Mux(bt["first"], beat, acc + beat))
        m.d.sync += tot_v.eq(bt["v"] & bt["last"])
        with m.If(bt["v"]):
            m.d.sync += acc.eq(new_acc)
            with m.If(bt["last"]):
                m.d.sync += [total.eq(new_acc), tot_bank.eq(bt["bank"])]
        vecval = self.finalize(m, p, total)
        return vecval, Pipe(m, "finv").delay(tot_v, self.FIN), Pipe(m, "finb").delay(tot_bank, self.FIN)

    # --- B: once per vector
    def finalize(self, m: Module, p: Pipe, total):
        """Step 6: -Lsum, Lsum = log2(Sum) with F fraction bits plus the centring bias (FIN stages): the leading
        one (2 stages), normalise, the table's index, the table (INTERP_STAGES), Lsum, its negation."""
        cfg = self.cfg
        F, B = cfg.frac_bits, cfg.sum_frac_bits
        nw = max(cfg.sum_bits, F + 1)
        k, up = lead_one_split(m, p, total, "sum", top=nw - 1)
        tot2 = p.delay(total, 2, name="sum_tot")
        norm = p.reg((tot2 << up)[:nw], unsigned(nw), name="sum_norm")
        k1 = p.reg(k, name="lead1")
        rs1 = p.reg(norm[nw - 1 - F:nw - 1], name="lrs")
        pow2 = p.reg(norm[:nw - 1] == 0, name="pow2")
        k2 = p.reg(k1, name="lead2")
        lg = interp_stages(m, p, cfg.log2_table, rs1, cfg.seg_bits, cfg.interp_bits,
                           unsigned(max(cfg.log2_table).bit_length() + 1), "lg2", self.platform)
        kb = p.delay(p.reg(((k2 - B) << F) + Mux(pow2, 0, cfg.log2_bias), name="lkb"), INTERP_STAGES - 1, name="lkbd")
        lsum = p.reg(kb + lg, unsigned(self.lsum_bits), name="lsum")
        return p.reg(-lsum, self.vec_shape, name="nlsum")

    # --- C: per lane
    def c_lane(self, m: Module, p: Pipe, word, nlsum, lane: int):
        """(live, output bits before the output register) from the stored (live, |T|) and -Lsum, C_OUT stages."""
        cfg = self.cfg
        F = cfg.frac_bits
        tmag = word[:cfg.t_mag_bits]
        u_bits = max(cfg.t_mag_bits, self.lsum_bits) + 2
        u = p.reg(nlsum - tmag, signed(u_bits), name=f"u{lane}")
        live = p.delay(word[cfg.t_mag_bits], 1 + INTERP_STAGES + 1, name=f"clive{lane}")
        P2 = interp_stages(m, p, cfg.exp2_table, u[:F], cfg.seg_bits, cfg.interp_bits, unsigned(cfg.mant_bits + 1),
                           f"e2c{lane}", self.platform)
        q = Signal(signed(u_bits - F + 1), name=f"qy{lane}")
        m.d.comb += q.eq(u >> F)
        amounts = round_amounts(m, p, cfg, q, f"y{lane}")  # beside the table's INTERP_STAGES
        return live, round_finish(m, p, cfg, amounts, P2, f"y{lane}")


ROUND_AMOUNT_STAGES = 3  # e and 1 - e; the shift; its clamped parts (beside the exp2 table's INTERP_STAGES)


def round_amounts(m: Module, p: Pipe, cfg: SoftmaxConfig, q, name: str) -> dict:
    """The output rounding's shift amounts from the exponent q alone (golden round_to_format), registered
    ROUND_AMOUNT_STAGES times: e = q + bias and 1 - e; sh = min(W - M + max(1 - e, 0), W + 2) and max(e, 1);
    its right and left parts, its sign, max(e, 1) - 1."""
    W, M = cfg.table_bits, cfg.man_bits
    e = p.reg(q + cfg.bias, signed(len(q) + 2), name=f"{name}e")
    ome = p.reg(1 - cfg.bias - q, signed(len(q) + 2), name=f"{name}ome")
    shw = signed(max(len(e), (W + 2).bit_length()) + 3)
    sh = p.reg(smin(W - M + smax(ome, 0), W + 2), shw, name=f"{name}sh")
    eb = p.reg(smax(e, 1).as_unsigned(), name=f"{name}eb")
    left_max = max(M - W, 0)
    shr = smax(sh, 0).as_unsigned()[:(W + 2).bit_length()]
    return {"shr": p.reg(shr, name=f"{name}shr"), "shr1": p.reg((shr - 1)[:len(shr)], name=f"{name}shr1"),
            "shl": p.reg(clamp0(-sh, left_max)[:max(left_max, 1).bit_length()],
                         name=f"{name}shl"),
            "sge": p.reg(sh >= 0, name=f"{name}sge"), "sgt": p.reg(sh > 0, name=f"{name}sgt"),
            "em1": p.reg(eb - 1, name=f"{name}em1")}


def round_finish(m: Module, p: Pipe, cfg: SoftmaxConfig, a: dict, P, name: str):
    """P * 2^(q - W) rounded to the format, nearest even, gradual underflow, from `round_amounts` and P (both
    registered, in the same stage): the shift, the round bit and the sticky bit (one register stage, `round`), then
    the add, left for the caller's output register. Returns the output bits."""
    M = cfg.man_bits
    shr1 = a["shr1"]
    keep = Signal(M + 2, name=f"{name}keep")
    m.d.comb += keep.eq(Mux(a["sge"], P >> a["shr"], P << a["shl"]))
    keep4 = p.reg(keep, name=f"{name}keep4")
    rbit = p.reg((P >> shr1)[0], name=f"{name}rbit")
    sticky = p.reg(low_bits_any(m, P, shr1, f"{name}sticky"), name=f"{name}stk")
    sgt4, em14 = p.reg(a["sgt"], name=f"{name}sgt4"), p.reg(a["em1"], name=f"{name}em14")
    up = sgt4 & rbit & (sticky | keep4[0])
    return ((em14 << M) + keep4 + up)[:cfg.width]


# ---- the pieces as components, each simulated and timed alone (tests/test_hyft_units.py) ----------------------

class Exp2Unit(wiring.Component):
    """u <= 0 (F fraction bits) -> (q, P), 2^(u 2^-F) ~ P 2^(q - W) (golden exp2_fixed), INTERP_STAGES later."""

    def __init__(self, cfg: SoftmaxConfig, u_bits: int = 24):
        self.cfg = cfg
        self.latency = INTERP_STAGES
        super().__init__({"u": In(signed(u_bits)), "en": In(1, init=1),
                          "q": Out(signed(u_bits - cfg.frac_bits + 1)), "P": Out(cfg.mant_bits + 1)})

    def elaborate(self, platform):
        m, cfg = Module(), self.cfg
        p = Pipe(m, "u", en=self.en)
        F = cfg.frac_bits
        m.d.comb += [self.P.eq(interp_stages(m, p, cfg.exp2_table, self.u[:F], cfg.seg_bits, cfg.interp_bits,
                                             unsigned(cfg.mant_bits + 1), "e2", platform)),
                     self.q.eq(p.delay(self.u >> F, INTERP_STAGES, name="q"))]
        return m


class LeadingOne(wiring.Component):
    """The index of v's most significant one (0 for v == 0), 2 stages (`lead_one_split`)."""

    def __init__(self, width: int):
        self.latency = 2
        super().__init__({"v": In(width), "k": Out(range(max(width, 2)))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.k.eq(lead_one_split(m, Pipe(m, "u"), self.v, "u"))
        return m


class Log2Unit(wiring.Component):
    """The exact sum -> -Lsum (golden -log2_fixed), FIN stages later (`HyftDatapath.finalize`)."""

    def __init__(self, cfg: SoftmaxConfig):
        self.cfg = cfg
        self.dp = HyftDatapath(cfg)
        self.latency = self.dp.FIN
        super().__init__({"total": In(cfg.sum_bits), "nlsum": Out(self.dp.vec_shape)})

    def elaborate(self, platform):
        m = Module()
        self.dp.platform = platform
        m.d.comb += self.nlsum.eq(self.dp.finalize(m, Pipe(m, "u"), self.total))
        return m


class RoundUnit(wiring.Component):
    """(q, P) -> the output bits (golden round_to_format) in a register, ROUND_AMOUNT_STAGES + 2 cycles later
    (P waits beside the amounts, as it does for the exp2 table in C)."""

    def __init__(self, cfg: SoftmaxConfig, q_bits: int = 14):
        self.cfg = cfg
        self.latency = ROUND_AMOUNT_STAGES + 2
        super().__init__({"q": In(signed(q_bits)), "P": In(cfg.mant_bits + 1), "en": In(1, init=1),
                          "y": Out(cfg.width)})

    def elaborate(self, platform):
        m, cfg = Module(), self.cfg
        p = Pipe(m, "u", en=self.en)
        a = round_amounts(m, p, cfg, self.q, "r")
        bits = round_finish(m, p, cfg, a, p.delay(self.P, ROUND_AMOUNT_STAGES, name="P"), "r")
        with m.If(self.en):
            m.d.sync += self.y.eq(bits)
        return m


class BLane(wiring.Component):
    """One lane of B: the bank's word and the vector's max -> (live, |T|) to write back, B_WB stages later, and
    p on the sum's grid, B_P stages later."""

    def __init__(self, cfg: SoftmaxConfig):
        self.cfg = cfg
        self.dp = HyftDatapath(cfg)
        super().__init__({"word": In(cfg.word_bits), "max": In(cfg.width), "ok": In(1),
                          "wb": Out(cfg.t_mag_bits + 1), "p": Out(cfg.sum_frac_bits + 2)})

    def elaborate(self, platform):
        m = Module()
        self.dp.platform = platform
        wb, pk = self.dp.b_lane(m, Pipe(m, "u"), self.word, self.ok, self.max, 0)
        m.d.comb += [self.wb.eq(wb), self.p.eq(pk)]
        return m


# ---- the ring: banks, phases and their hand-over --------------------------------------------------------

class SoftmaxUnit(wiring.Component):
    """A softmax over vectors streamed L elements per beat; `cfg.arch` picks the B and C datapaths."""

    def __init__(self, cfg: SoftmaxConfig):
        self.cfg = cfg
        if cfg.arch == "float":
            from accelkit.gen.float_softmax import FloatDatapath

            self.dp = FloatDatapath(cfg)
        else:
            self.dp = HyftDatapath(cfg)
        super().__init__(softmax_signature(cfg))

    def elaborate(self, platform):
        cfg, dp = self.cfg, self.dp
        dp.platform = platform
        L, NB, WB, DEPTH = cfg.lanes, cfg.banks, cfg.word_bits, cfg.depth
        m = Module()
        bank_bits = max((NB - 1).bit_length(), 1)
        assert RING_READ == 2 + READ_LATENCY  # the address register, the block RAM's two, the bank select

        # ---- banks and their per-vector metadata. Every port of a bank is registered: its write port (A's beats
        # and B's write-back, a register before the block RAM's own), its read address (B's or C's), the block
        # RAM's output register, and the bank select after it; so no control logic reaches a block RAM pin and no
        # block RAM output reaches logic.
        rams = []
        for i in range(NB):
            ram = RegisteredRam(L * WB, DEPTH, read_enable=True)
            m.submodules[f"bank{i}"] = ram
            rams.append(ram)
        state = [Signal(range(6), name=f"state{i}") for i in range(NB)]
        meta_key = [Signal(cfg.width, name=f"max_key{i}") for i in range(NB)]
        meta_nan = [Signal(name=f"nan{i}") for i in range(NB)]
        meta_err = [Signal(name=f"err{i}") for i in range(NB)]
        meta_lastaddr = [Signal(range(DEPTH + 1), name=f"last_addr{i}") for i in range(NB)]  # beats - 1
        meta_nlast = [Signal(range(L + 1), name=f"nlast{i}") for i in range(NB)]
        meta_vec = [Signal(dp.vec_shape, name=f"vecval{i}") for i in range(NB)]

        def sel(signals, idx):
            return Array(signals)[idx]

        # ================= A: fill =================
        pa = Signal(bank_bits)
        a_addr = Signal(range(DEPTH + 1))
        a_busy = Signal()
        # each phase starts on a bank from a registered flag of that bank (FREE for A, FULL for B, SUMMED for C: one
        # cycle after the state, config RING_FLAG), so no state compare sits in front of an issue
        free_r = [Signal(init=1, name=f"free_r{i}") for i in range(NB)]
        full_r = [Signal(name=f"full_r{i}") for i in range(NB)]  # FULL and not oversize: B reads it
        skip_r = [Signal(name=f"skip_r{i}") for i in range(NB)]  # FULL and oversize: B skips it
        summed_r = [Signal(name=f"summed_r{i}") for i in range(NB)]
        m.d.comb += self.x.ready.eq(a_busy | sel(free_r, pa))
        a_fire = self.x.valid & self.x.ready
        xin = self.x.payload
        in_room = a_addr < DEPTH
        a_word = Cat(*[Cat(xin.data[k], Const(0, WB - cfg.width)) if WB > cfg.width else xin.data[k]
                       for k in range(L)])
        with m.If(a_fire):
            with m.If(in_room):
                m.d.sync += a_addr.eq(a_addr + 1)
            with m.If(xin.last):
                m.d.sync += [a_addr.eq(0), a_busy.eq(0), pa.eq(Mux(pa == NB - 1, 0, pa + 1))]
            with m.Else():
                m.d.sync += a_busy.eq(1)
            for i in range(NB):
                with m.If(pa == i):
                    m.d.sync += state[i].eq(FILL)
        nvalid_in = Mux(xin.last & (xin.count != 0) & (xin.count < L), xin.count, L)
        # A1: the accepted beat
        a1_v = Signal()
        m.d.sync += a1_v.eq(a_fire)
        a1_data = [Signal(cfg.width, name=f"a1_x{k}") for k in range(L)]
        a1_n = Signal(range(L + 1))
        a1_last, a1_over, a1_bank = Signal(), Signal(), Signal(bank_bits)
        a1_beats = Signal(range(DEPTH + 1))
        with m.If(a_fire):
            m.d.sync += [a1_data[k].eq(xin.data[k]) for k in range(L)]
            m.d.sync += [a1_n.eq(nvalid_in), a1_last.eq(xin.last), a1_over.eq(~in_room), a1_bank.eq(pa),
                         a1_beats.eq(Mux(in_room, a_addr + 1, a_addr))]
        # A1 -> A2: the beat's max key and special-value flags
        keys, bad, alive = [], [], []
        for k in range(L):
            s, e, f = float_fields(a1_data[k], cfg)
            ok = k < a1_n
            special = e == cfg.float_format.exp_max
            keys.append(Mux(ok & ~special, order_key(a1_data[k], cfg), 0))
            bad.append(ok & special & ((f != 0) | ~s))  # NaN or +inf
            alive.append(ok & ~(special & (f == 0) & s))  # anything but -inf
        # the keys registered, then the max tree with a register after each level (a_full counts them)
        ap = Pipe(m, "a")
        keys = [ap.reg(kv, unsigned(cfg.width), name=f"key{k}") for k, kv in enumerate(keys)]
        at = {"v": a1_v, "last": a1_last, "over": a1_over, "bank": a1_bank, "beats": a1_beats, "n": a1_n,
              "bad": Cat(*bad).any(), "alive": Cat(*alive).any()}
        at = {n: ap.reg(v, name=n) for n, v in at.items()}
        while len(keys) > 1:
            keys = [ap.reg(smax(keys[i], keys[i + 1]) if i + 1 < len(keys) else keys[i], name="kmax")
                    for i in range(0, len(keys), 2)]
            at = {n: ap.reg(v, name=n) for n, v in at.items()}
        a2_v, a2_last, a2_over, a2_bad, a2_alive = at["v"], at["last"], at["over"], at["bad"], at["alive"]
        a2_key, a2_bank, a2_beats, a2_n = keys[0], at["bank"], at["beats"], at["n"]
        # A2: merge into the running vector values; the last beat hands the bank to B
        r_first = Signal(init=1)
        r_key, r_bad, r_alive, r_over = Signal(cfg.width), Signal(), Signal(), Signal()
        n_key = Mux(r_first | (a2_key > r_key), a2_key, r_key)
        n_bad = a2_bad | (r_bad & ~r_first)
        n_alive = a2_alive | (r_alive & ~r_first)
        n_over = a2_over | (r_over & ~r_first)
        with m.If(a2_v):
            m.d.sync += [r_key.eq(n_key), r_bad.eq(n_bad), r_alive.eq(n_alive), r_over.eq(n_over),
                         r_first.eq(a2_last)]
            with m.If(a2_last):
                for i in range(NB):
                    with m.If(a2_bank == i):
                        m.d.sync += [meta_key[i].eq(key_to_bits(n_key, cfg)), meta_nan[i].eq(n_bad | ~n_alive),
                                     meta_err[i].eq(n_over), meta_lastaddr[i].eq(a2_beats - 1), meta_nlast[i].eq(a2_n),
                                     state[i].eq(FULL)]

        # ================= B: sum =================
        pb = Signal(bank_bits)
        b_addr = Signal(range(DEPTH))
        b_busy = Signal()
        for i in range(NB):
            m.d.sync += [free_r[i].eq(state[i] == FREE), full_r[i].eq((state[i] == FULL) & ~meta_err[i]),
                         skip_r[i].eq((state[i] == FULL) & meta_err[i]), summed_r[i].eq(state[i] == SUMMED)]
        b_skip = ~b_busy & sel(skip_r, pb)
        b_issue = b_busy | sel(full_r, pb)
        b_last = b_addr == sel(meta_lastaddr, pb)
        with m.If(b_issue):
            for i in range(NB):
                with m.If(pb == i):
                    m.d.sync += state[i].eq(SUM)
            with m.If(b_last):
                m.d.sync += [b_addr.eq(0), b_busy.eq(0), pb.eq(Mux(pb == NB - 1, 0, pb + 1))]
            with m.Else():
                m.d.sync += [b_addr.eq(b_addr + 1), b_busy.eq(1)]
        with m.If(b_skip):
            for i in range(NB):
                with m.If(pb == i):
                    m.d.sync += state[i].eq(SUMMED)
            m.d.sync += pb.eq(Mux(pb == NB - 1, 0, pb + 1))

        # the reads: C's side of the ring first (its address and the stall of its reads)
        advance = Signal()
        y_v = Signal()
        m.d.comb += advance.eq(~y_v | self.y.ready)
        c_busy = Signal()
        c_addr_sig = Signal(range(DEPTH))
        pc = Signal(bank_bits)
        c_issue = advance & (c_busy | sel(summed_r, pc))
        for i, ram in enumerate(rams):
            # a bank's read address register: B's address when B reads it (B never stalls), else C's, held while C
            # stalls; the block RAM's registers hold while C stalls on a bank C read last
            b_sel = b_issue & (pb == i)
            ra = Signal(range(max(DEPTH, 2)), name=f"r_addr{i}")
            c_own = Signal(name=f"c_own{i}")
            with m.If(b_sel | advance):
                m.d.sync += ra.eq(Mux(b_sel, b_addr, c_addr_sig))
            with m.If(b_sel):
                m.d.sync += c_own.eq(0)
            with m.Elif(c_issue & (pc == i)):
                m.d.sync += c_own.eq(1)
            m.d.comb += [ram.r_addr.eq(ra), ram.r_en.eq(~c_own | advance)]

        bp = Pipe(m, "b")
        b0 = {"v": bp.reg(b_issue, name="v"), "bank": bp.reg(pb, name="bank"), "addr": bp.reg(b_addr, name="addr"),
              "first": bp.reg(b_addr == 0, name="first"), "last": bp.reg(b_last, name="last"),
              "nl": bp.reg(sel(meta_nlast, pb), name="nlast"),
              "max": bp.reg(sel(meta_key, pb), name="max")}
        # the block RAMs' data, then the bank select into a register: RING_READ cycles after the issue
        b_sel_bank = bp.delay(b0["bank"], READ_LATENCY, name="rsel")
        b_word = bp.reg(sel([r.r_data for r in rams], b_sel_bank), unsigned(L * WB), name="word")
        # the lane count a stage after the issue (the bank's own count on its last beat)
        b0["n"] = bp.reg(Mux(b0["last"], b0.pop("nl"), L), unsigned(cfg.count_bits), name="n")
        b_at = {n: Pipe(m, f"bw_{n}").delay(t, RING_READ - (2 if n == "n" else 1)) for n, t in b0.items()}
        wbs, ps = [], []
        for k in range(L):
            wb, pk = dp.b_lane(m, bp, b_word[k * WB:(k + 1) * WB], k < b_at["n"], b_at["max"], k)
            wbs.append(wb)
            ps.append(pk)
        tags = {n: b_at[n] for n in ("v", "bank", "addr", "first", "last")}
        wb_tags = {n: Pipe(m, f"bwb_{n}").delay(t, dp.B_WB) for n, t in tags.items()}
        wb_word = Cat(*[Cat(w, Const(0, WB - len(w))) if len(w) < WB else w[:WB] for w in wbs])
        for i, ram in enumerate(rams):
            a_hit = a_fire & in_room & (pa == i)
            b_hit = wb_tags["v"] & (wb_tags["bank"] == i)
            w_en, w_addr = Signal(name=f"w_en{i}"), Signal(range(max(DEPTH, 2)), name=f"w_addr{i}")
            w_data = Signal(L * WB, name=f"w_data{i}")
            m.d.sync += [w_en.eq(a_hit | b_hit), w_addr.eq(Mux(b_hit, wb_tags["addr"], a_addr)),
                         w_data.eq(Mux(b_hit, wb_word, a_word))]
            m.d.comb += [ram.w_en.eq(w_en), ram.w_addr.eq(w_addr), ram.w_data.eq(w_data)]
        beat = dp.b_beat(m, bp, ps)
        bt = {n: Pipe(m, f"bbt_{n}").delay(t, dp.B_P + dp.B_BEAT) for n, t in tags.items()}
        vecval, fin_v, fin_bank = dp.vector_value(m, Pipe(m, "fin"), beat, bt)
        with m.If(fin_v):
            for i in range(NB):
                with m.If(fin_bank == i):
                    m.d.sync += [meta_vec[i].eq(vecval), state[i].eq(SUMMED)]

        # ================= C: output =================
        c_err = sel(meta_err, pc)
        c_last = c_err | (c_addr_sig == sel(meta_lastaddr, pc))
        with m.If(c_issue):
            for i in range(NB):
                with m.If(pc == i):
                    m.d.sync += state[i].eq(DRAIN)
            with m.If(c_last):
                m.d.sync += [c_addr_sig.eq(0), c_busy.eq(0), pc.eq(Mux(pc == NB - 1, 0, pc + 1))]
            with m.Else():
                m.d.sync += [c_addr_sig.eq(c_addr_sig + 1), c_busy.eq(1)]
        cp = Pipe(m, "c", en=advance)
        c1 = {"v": cp.reg(c_issue, name="v"), "bank": cp.reg(pc, name="bank"), "last": cp.reg(c_last, name="last"),
              "err": cp.reg(c_err, name="err"), "nan": cp.reg(sel(meta_nan, pc), name="nan"),
              "n": cp.reg(Mux(c_err, 0, Mux(c_last, sel(meta_nlast, pc), L)), unsigned(cfg.count_bits), name="n"),
              "vec": cp.reg(sel(meta_vec, pc), name="vec")}
        c_sel_bank = cp.delay(c1["bank"], READ_LATENCY, name="rsel")
        c_word = cp.reg(sel([r.r_data for r in rams], c_sel_bank), unsigned(L * WB), name="word")
        cw = {n: Pipe(m, f"cw_{n}", en=advance).delay(t, RING_READ - 1) for n, t in c1.items()}
        # the vector's last word leaving the bank select register frees the bank for A
        with m.If(advance & cw["v"] & cw["last"]):
            for i in range(NB):
                with m.If(cw["bank"] == i):
                    m.d.sync += state[i].eq(FREE)
        outs = []
        for k in range(L):
            live, bits = dp.c_lane(m, cp, c_word[k * WB:(k + 1) * WB], cw["vec"], k)
            outs.append((live, bits))
        ct = {n: Pipe(m, f"ct_{n}", en=advance).delay(cw[n], dp.C_OUT) for n in ("v", "last", "err", "nan", "n")}
        y = self.y.payload
        with m.If(advance):
            m.d.sync += [y_v.eq(ct["v"]), y.last.eq(ct["last"]), y.error.eq(ct["err"]), y.count.eq(ct["n"])]
            for k, (live, bits) in enumerate(outs):
                ok = (k < ct["n"]) & ~ct["err"]
                m.d.sync += y.data[k].eq(Mux(ok & ct["nan"], cfg.float_format.nan_bits, Mux(ok & live, bits, 0)))
        m.d.comb += self.y.valid.eq(y_v)
        return m


def build_softmax(cfg: SoftmaxConfig) -> SoftmaxUnit:
    """The block registry's generator: the config's `arch` selects the datapaths."""
    if not isinstance(cfg, SoftmaxConfig):
        raise TypeError(f"build_softmax takes a SoftmaxConfig, got {type(cfg).__name__}")
    return SoftmaxUnit(cfg)


__all__ = ["FREE", "FILL", "FULL", "SUM", "SUMMED", "DRAIN", "BLane", "Exp2Unit", "HyftDatapath", "LeadingOne",
           "Log2Unit", "Pipe", "RoundUnit", "SoftmaxUnit",
           "build_softmax", "in_layout", "out_layout", "softmax_signature"]
