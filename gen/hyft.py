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

Microarchitecture: a ring of ``cfg.banks`` vector buffer banks (amaranth.lib.memory,
one element word per lane, max_len/L deep) and three phases, each working on
its own bank and handing the bank on to the next phase when done, so three
vectors are in flight at once:

- A, fill: writes each accepted beat into its bank and reduces the max (a float
  compare on order-preserving integer keys) and the special-value flags.
- B, sum: reads the bank, computes d, t, p per element, writes the element's
  live flag and |t| back in place of its input, and sums p exactly; then
  log2(sum) once per vector.
- C, output: reads |t| back, y = 2^(t - log2 sum) rounded to the format, and
  drives ``y``; its pipeline stalls as a whole when ``y`` is not ready.

Each phase moves to the next bank on the cycle after its last read, so back to
back vectors keep every phase busy; ``golden/hyft_cycles.py`` is the exact
cycle model. ``cfg.arch == "float"`` keeps the ring, the A phase and the
stream format and swaps the B and C datapaths for floating-point ones (see
``gen/float_softmax.py``).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from accelkit.config.hyft import HYFT_PIPELINE, SoftmaxConfig

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
    """Index of the most significant one of v (0 when v == 0): a priority encoder."""
    k = Signal(range(max(len(v), 2)), name=name)
    for i in range(len(v)):
        with m.If(v[i]):
            m.d.comb += k.eq(i)
    return k


# ---- the Hyft datapaths ---------------------------------------------------------------------------------

class HyftDatapath:
    """Steps 2 to 7 of the spec, bit-exact to golden/hyft.py, as pipelines the ring drives.

    B: per lane, the word read from the bank -> (live, |T|) written back after `B_WB` register stages,
    and p on the sum's grid after `B_P`; the lane sum after one more. `finalize`: the exact sum ->
    Lsum in `FIN` stages. C: (live, |T|) and Lsum -> the output float, `C_OUT` stages before the
    output register.
    """

    # register stages, as the config says (golden/hyft_cycles.py counts cycles from the same table)
    B_WB = HYFT_PIPELINE["b_wb"]  # align (k, z), shift, ceil, *log2e
    B_P = HYFT_PIPELINE["b_p"]  # then 2^r and the sum grid shift
    FIN = HYFT_PIPELINE["fin"]  # leading one, then table and bias
    B_BEAT = HYFT_PIPELINE["b_beat"]  # the lane sum
    C_OUT = HYFT_PIPELINE["c_out"]  # U = T - Lsum and split, then 2^r; the rounding feeds the output register

    def __init__(self, cfg: SoftmaxConfig):
        self.cfg = cfg

    @property
    def acc_shape(self):
        return unsigned(self.cfg.sum_bits)

    @property
    def vec_shape(self):
        return unsigned(self.lsum_bits)

    @property
    def lsum_bits(self) -> int:
        cfg = self.cfg
        return cfg.log2_sum_int_bits + cfg.frac_bits + 2

    # --- B: per lane
    def b_lane(self, m: Module, p: Pipe, word, lane_ok, max_bits, lane: int):
        cfg = self.cfg
        M, F, I, bias = cfg.man_bits, cfg.frac_bits, cfg.int_bits, cfg.bias
        bits = word[:cfg.width]
        sx, ex, fx = float_fields(bits, cfg)
        sm, em, fm = float_fields(max_bits, cfg)
        special = ex == cfg.float_format.exp_max
        normal = (ex != 0) & ~special
        finite = lane_ok & ~special
        ex_eff = Mux(normal, ex, 0)
        mant_x = Mux(normal, Cat(fx, Const(1, 1)), 0)
        mant_m = Mux(em != 0, Cat(fm, Const(1, 1)), 0)  # the max is canonical: em == 0 means zero
        equal = Mux(normal, bits, 0) == max_bits
        ev = smax(ex_eff, em)
        too_big = ev >= cfg.align_exp_limit + bias
        # grid g = min(Ev - M, -F): both cases give k = e_o - base and z = 1 - F - g
        small = ev <= bias + M - F
        base = Mux(small, ev, bias + M - F)
        k_shape = signed(cfg.exp_bits + 3)
        kx = p.reg(ex_eff - base, k_shape, name=f"kx{lane}")
        km = p.reg(em - base, k_shape, name=f"km{lane}")
        z = p.reg(Mux(small, smin(bias + M + 1 - F - ev, M + 3), 1), unsigned((M + 3).bit_length()), name=f"z{lane}")
        mx1 = p.reg(mant_x, name=f"mx{lane}")
        mm1 = p.reg(mant_m, name=f"mm{lane}")
        sx1, sm1 = p.reg(sx, name=f"sx{lane}"), p.reg(sm, name=f"sm{lane}")
        eq1, big1, fin1 = p.reg(equal, name=f"eq{lane}"), p.reg(too_big, name=f"big{lane}"), \
            p.reg(finite, name=f"fin{lane}")

        # stage 2: both operands on the grid, in half units with a sticky bit; A2 = max - x
        lmax = I + F + 1

        def on_grid(mant, k):
            left = mant << smin(smax(k, 0), lmax).as_unsigned()[:lmax.bit_length()]
            rs = smin(smax(-k, 0), M + 2).as_unsigned()[:(M + 2).bit_length()]
            right = mant >> rs
            sticky = (right << rs)[:M + 1] != mant
            return Mux(k >= 0, left << 1, Cat(sticky, right))

        a_shape = signed(cfg.align_bits + 3)
        vx, vm = on_grid(mx1, kx), on_grid(mm1, km)
        a2 = Mux(sm1, -vm, vm) - Mux(sx1, -vx, vx)
        a2r = p.reg(a2, a_shape, name=f"a2_{lane}")
        z2 = p.reg(z, name=f"z2_{lane}")
        eq2, big2, fin2 = p.reg(eq1, name=f"eq2_{lane}"), p.reg(big1, name=f"big2_{lane}"), \
            p.reg(fin1, name=f"fin2_{lane}")

        # stage 3: C = ceil(A2 / 2^z), D = -min(C, 2^(I+F))
        c = (a2r + (Const(1, 1) << z2) - 1) >> z2
        dmag = Mux(eq2, 0, Mux(big2 | (c > cfg.d_sat), cfg.d_sat, c))
        d3 = p.reg(dmag, unsigned(cfg.d_mag_bits), name=f"d{lane}")
        fin3 = p.reg(fin2, name=f"fin3_{lane}")

        # stage 4: |T| = ceil(|D| * log2e / 2^K); live while T >= -2^(I+F)
        K = cfg.log2e_frac_bits
        tmag = (d3 * cfg.log2e_const + (1 << K) - 1) >> K
        live = fin3 & (tmag <= cfg.d_sat)
        t4 = p.reg(Mux(live, tmag, 0), unsigned(cfg.t_mag_bits), name=f"t{lane}")
        live4 = p.reg(live, name=f"live{lane}")
        wb = Cat(t4, live4)  # B_WB = 4 stages

        # stage 5: q = T >> F, r = T mod 2^F, P = 2^r from the table
        tneg = Signal(signed(cfg.t_mag_bits + 1), name=f"tneg{lane}")
        m.d.comb += tneg.eq(-t4)
        P = interpolate(m, cfg.exp2_table, tneg[:F], cfg.seg_bits, cfg.interp_bits, f"e2b{lane}")
        P5 = p.reg(P, unsigned(cfg.mant_bits + 1), name=f"P{lane}")
        q5 = p.reg(tneg >> F, signed(cfg.q_bits + 1), name=f"q{lane}")
        live5 = p.reg(live4, name=f"live5_{lane}")

        # stage 6: p on the sum's grid 2^-B, truncated
        W, B = cfg.table_bits, cfg.sum_frac_bits
        s = q5 - W + B
        lsh = smin(smax(s, 0), max(B - W, 0)).as_unsigned()[:max(B - W, 1).bit_length()]
        rsh = smin(smax(-s, 0), W + 2).as_unsigned()[:(W + 2).bit_length()]
        pv = Mux(s >= 0, P5 << lsh, P5 >> rsh)
        p6 = p.reg(Mux(live5, pv, 0), unsigned(B + 2), name=f"p{lane}")  # B_P = 6 stages
        return wb, p6

    def b_beat(self, m: Module, p: Pipe, lanes_p: list):
        """The beat's sum of p over the lanes (B_BEAT = 1 register stage)."""
        return p.reg(add_tree(m, lanes_p, "psum"), self.acc_shape, name="beat")

    def vector_value(self, m: Module, p: Pipe, beat, bt: dict):
        """The beat sums of a vector (tags bt: v, first, last, bank) -> (Lsum, its valid, its bank), 1 + FIN cycles
        after the last beat sum: the exact accumulator, then `finalize`."""
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
        """Step 6: Lsum = log2(Sum) with F fraction bits, plus the centring bias (FIN = 2 stages)."""
        cfg = self.cfg
        F, B = cfg.frac_bits, cfg.sum_frac_bits
        nw = max(cfg.sum_bits, F + 1)
        k = leading_one(m, total, "sum_lead")
        norm = Signal(nw, name="sum_norm")
        up = Signal(range(nw), name="sum_up")
        m.d.comb += [up.eq(nw - 1 - k), norm.eq(total << up)]
        k1 = p.reg(k, name="lead")
        rs1 = p.reg(norm[nw - 1 - F:nw - 1], name="lrs")
        pow2 = p.reg(norm[:nw - 1] == 0, name="pow2")
        lg = interpolate(m, cfg.log2_table, rs1, cfg.seg_bits, cfg.interp_bits, "lg2")
        lsum = ((k1 - B) << F) + lg + Mux(pow2, 0, cfg.log2_bias)
        return p.reg(lsum, self.vec_shape, name="lsum")

    # --- C: per lane
    def c_lane(self, m: Module, p: Pipe, word, lsum, lane: int):
        """(live, output bits before the output register) from the stored (live, |T|) and Lsum."""
        cfg = self.cfg
        F, W, M = cfg.frac_bits, cfg.table_bits, cfg.man_bits
        tmag = word[:cfg.t_mag_bits]
        live = word[cfg.t_mag_bits]
        u_bits = max(cfg.t_mag_bits, self.lsum_bits) + 2
        u = Signal(signed(u_bits), name=f"u{lane}")
        m.d.comb += u.eq(-(tmag + lsum))
        ry = p.reg(u[:F], name=f"ry{lane}")
        qy = p.reg(u >> F, signed(u_bits - F + 1), name=f"qy{lane}")
        live1 = p.reg(live, name=f"clive{lane}")
        P = interpolate(m, cfg.exp2_table, ry, cfg.seg_bits, cfg.interp_bits, f"e2c{lane}")
        P2 = p.reg(P, unsigned(cfg.mant_bits + 1), name=f"Py{lane}")
        q2 = p.reg(qy, name=f"qy2_{lane}")
        live2 = p.reg(live1, name=f"clive2_{lane}")  # C_OUT = 2 stages

        # round P * 2^(q - W) to the format, nearest even, gradual underflow (golden round_to_format)
        e = Signal(signed(len(q2) + 2), name=f"ye{lane}")
        m.d.comb += e.eq(q2 + cfg.bias)
        sh = Signal(signed(max(len(e), (W + 2).bit_length()) + 3), name=f"ysh{lane}")
        m.d.comb += sh.eq(smin(W - M + smax(1 - e, 0), W + 2))
        shr = smax(sh, 0).as_unsigned()[:(W + 2).bit_length()]
        left_max = max(M - W, 0)
        shl = smin(smax(-sh, 0), left_max).as_unsigned()[:max(left_max, 1).bit_length()]
        keep = Signal(M + 2, name=f"ykeep{lane}")
        m.d.comb += keep.eq(Mux(sh >= 0, P2 >> shr, P2 << shl))
        shr1 = (shr - 1)[:len(shr)]
        rbit = (P2 >> shr1)[0]
        sticky = ((P2 >> shr1) << shr1)[:len(P2)] != P2
        up = (sh > 0) & rbit & (sticky | keep[0])
        out = (smax(e, 1).as_unsigned() << M) + keep + up - (1 << M)
        return live2, out[:cfg.width]


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
        L, NB, WB, DEPTH = cfg.lanes, cfg.banks, cfg.word_bits, cfg.depth
        m = Module()
        bank_bits = max((NB - 1).bit_length(), 1)

        # ---- banks and their per-vector metadata
        mems = []
        for i in range(NB):
            mem = Memory(shape=unsigned(L * WB), depth=DEPTH, init=[])
            m.submodules[f"bank{i}"] = mem
            mems.append((mem.write_port(), mem.read_port()))
        state = [Signal(range(6), name=f"state{i}") for i in range(NB)]
        meta_key = [Signal(cfg.width, name=f"max_key{i}") for i in range(NB)]
        meta_nan = [Signal(name=f"nan{i}") for i in range(NB)]
        meta_err = [Signal(name=f"err{i}") for i in range(NB)]
        meta_beats = [Signal(range(DEPTH + 1), name=f"beats{i}") for i in range(NB)]
        meta_nlast = [Signal(range(L + 1), name=f"nlast{i}") for i in range(NB)]
        meta_vec = [Signal(dp.vec_shape, name=f"vecval{i}") for i in range(NB)]

        def sel(signals, idx):
            return Array(signals)[idx]

        # ================= A: fill =================
        pa = Signal(bank_bits)
        a_addr = Signal(range(DEPTH + 1))
        a_busy = Signal()
        st_pa = sel(state, pa)
        m.d.comb += self.x.ready.eq(a_busy | (st_pa == FREE))
        a_fire = self.x.valid & self.x.ready
        xin = self.x.payload
        in_room = a_addr < DEPTH
        for i, (wp, _) in enumerate(mems):
            m.d.comb += [
                wp.addr.eq(a_addr),
                wp.en.eq(a_fire & in_room & (pa == i)),
                wp.data.eq(Cat(*[Cat(xin.data[k], Const(0, WB - cfg.width)) if WB > cfg.width else xin.data[k]
                                 for k in range(L)])),
            ]
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
        a2_v, a2_last, a2_over, a2_bad, a2_alive = Signal(), Signal(), Signal(), Signal(), Signal()
        a2_key = Signal(cfg.width)
        a2_bank = Signal(bank_bits)
        a2_beats = Signal(range(DEPTH + 1))
        a2_n = Signal(range(L + 1))
        m.d.sync += [a2_v.eq(a1_v), a2_last.eq(a1_last), a2_over.eq(a1_over), a2_bad.eq(Cat(*bad).any()),
                     a2_alive.eq(Cat(*alive).any()), a2_key.eq(max_tree(m, keys, "akey")), a2_bank.eq(a1_bank),
                     a2_beats.eq(a1_beats), a2_n.eq(a1_n)]
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
                                     meta_err[i].eq(n_over), meta_beats[i].eq(a2_beats), meta_nlast[i].eq(a2_n),
                                     state[i].eq(FULL)]

        # ================= B: sum =================
        pb = Signal(bank_bits)
        b_addr = Signal(range(DEPTH))
        b_busy = Signal()
        st_pb = sel(state, pb)
        b_beats = sel(meta_beats, pb)
        b_start = ~b_busy & (st_pb == FULL)
        b_skip = b_start & sel(meta_err, pb)
        b_issue = (b_busy | b_start) & ~b_skip
        b_last = b_addr == b_beats - 1
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

        bp = Pipe(m, "b")
        b0_v = bp.reg(b_issue, name="v")
        b0_bank = bp.reg(pb, name="bank")
        b0_addr = bp.reg(b_addr, name="addr")
        b0_first = bp.reg(b_addr == 0, name="first")
        b0_last = bp.reg(b_last, name="last")
        b0_n = bp.reg(Mux(b_last, sel(meta_nlast, pb), L), unsigned(cfg.count_bits), name="n")
        b_word = Signal(L * WB)
        c1_hold = Signal()  # C's first stage holds read data of bank c1_bank: that port must not move
        c1_bank = Signal(bank_bits)
        c_addr_sig = Signal(range(DEPTH))
        pc = Signal(bank_bits)
        for i, (_, rp) in enumerate(mems):
            m.d.comb += [
                rp.addr.eq(Mux(b_issue & (pb == i), b_addr, c_addr_sig)),
                rp.en.eq(~(c1_hold & (c1_bank == i))),
            ]
        m.d.comb += b_word.eq(sel([rp.data for _, rp in mems], b0_bank))
        max_bits = sel(meta_key, b0_bank)
        wbs, ps = [], []
        for k in range(L):
            wb, pk = dp.b_lane(m, bp, b_word[k * WB:(k + 1) * WB], k < b0_n, max_bits, k)
            wbs.append(wb)
            ps.append(pk)
        tags = {"v": b0_v, "bank": b0_bank, "addr": b0_addr, "first": b0_first, "last": b0_last}
        wb_tags = {n: Pipe(m, f"bwb_{n}").delay(t, dp.B_WB) for n, t in tags.items()}
        for i, (wp, _) in enumerate(mems):
            with m.If(wb_tags["v"] & (wb_tags["bank"] == i)):
                m.d.comb += [wp.addr.eq(wb_tags["addr"]), wp.en.eq(1),
                             wp.data.eq(Cat(*[Cat(w, Const(0, WB - len(w))) if len(w) < WB else w[:WB]
                                              for w in wbs]))]
        beat = dp.b_beat(m, bp, ps)
        bt = {n: Pipe(m, f"bbt_{n}").delay(t, dp.B_P + dp.B_BEAT) for n, t in tags.items()}
        vecval, fin_v, fin_bank = dp.vector_value(m, Pipe(m, "fin"), beat, bt)
        with m.If(fin_v):
            for i in range(NB):
                with m.If(fin_bank == i):
                    m.d.sync += [meta_vec[i].eq(vecval), state[i].eq(SUMMED)]

        # ================= C: output =================
        advance = Signal()
        y_v = Signal()
        m.d.comb += advance.eq(~y_v | self.y.ready)
        c_busy = Signal()
        st_pc = sel(state, pc)
        c_beats = sel(meta_beats, pc)
        c_err = sel(meta_err, pc)
        c_start = ~c_busy & (st_pc == SUMMED)
        c_issue = advance & (c_busy | c_start)
        c_last = c_err | (c_addr_sig == c_beats - 1)
        with m.If(c_issue):
            for i in range(NB):
                with m.If(pc == i):
                    m.d.sync += state[i].eq(DRAIN)
            with m.If(c_last):
                m.d.sync += [c_addr_sig.eq(0), c_busy.eq(0), pc.eq(Mux(pc == NB - 1, 0, pc + 1))]
            with m.Else():
                m.d.sync += [c_addr_sig.eq(c_addr_sig + 1), c_busy.eq(1)]
        cp = Pipe(m, "c", en=advance)
        c1_v = cp.reg(c_issue, name="v")
        m.d.comb += c1_bank.eq(cp.reg(pc, name="bank"))
        c1_last = cp.reg(c_last, name="last")
        c1_err = cp.reg(c_err, name="err")
        c1_nan = cp.reg(sel(meta_nan, pc), name="nan")
        c1_n = cp.reg(Mux(c_err, 0, Mux(c_last, sel(meta_nlast, pc), L)), unsigned(cfg.count_bits), name="n")
        c1_vec = cp.reg(sel(meta_vec, pc), name="vec")
        m.d.comb += c1_hold.eq(c1_v & ~advance)
        # C's first stage leaving with the vector's last beat frees the bank for A
        with m.If(advance & c1_v & c1_last):
            for i in range(NB):
                with m.If(c1_bank == i):
                    m.d.sync += state[i].eq(FREE)
        c_word = Signal(L * WB)
        m.d.comb += c_word.eq(sel([rp.data for _, rp in mems], c1_bank))
        outs = []
        for k in range(L):
            live, bits = dp.c_lane(m, cp, c_word[k * WB:(k + 1) * WB], c1_vec, k)
            outs.append((live, bits))
        ct = {n: Pipe(m, f"ct_{n}", en=advance).delay(t, dp.C_OUT)
              for n, t in (("v", c1_v), ("last", c1_last), ("err", c1_err), ("nan", c1_nan), ("n", c1_n))}
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


__all__ = ["FREE", "FILL", "FULL", "SUM", "SUMMED", "DRAIN", "HyftDatapath", "Pipe", "SoftmaxUnit",
           "build_softmax", "in_layout", "out_layout", "softmax_signature"]
