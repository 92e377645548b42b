"""The conventional floating-point softmax datapaths (cfg.arch = "float"), driven by gen/hyft.py's ring.

accelkit/config/float_softmax.py fixes the widths and the pipeline depths;
golden/hyft_cycles.py counts cycles from the same depths.
Working floats are packed as ``Cat(mantissa with hidden one (P+1), exponent
(signed, unbiased), zero)``; every value in B and C is non-negative except
d = x - max, which is computed as the magnitude max - x.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned

from accelkit.config import float_softmax as fs
from accelkit.config.hyft import SoftmaxConfig

from .hyft import Pipe, leading_one, smax, smin


class WorkFloat:
    """Slices of a packed working float."""

    def __init__(self, cfg: SoftmaxConfig, value):
        P, X = fs.work_bits(cfg), fs.exp_field_bits(cfg)
        self.mant = value[:P + 1]
        self.exp = value[P + 1:P + 1 + X].as_signed()
        self.zero = value[P + 1 + X]


def pack(cfg: SoftmaxConfig, mant, exp, zero):
    return Cat(mant[:fs.work_bits(cfg) + 1], exp[:fs.exp_field_bits(cfg)], zero)


class FloatDatapath:
    """B: d = max - x, e = 2^(-d log2 e), written back and summed by a float adder tree and accumulator.
    C: y = e / sum by a restoring divider, rounded to the format."""

    def __init__(self, cfg: SoftmaxConfig):
        self.cfg = cfg
        st = fs.float_pipeline(cfg)
        self.B_WB, self.B_P, self.B_BEAT, self.FIN, self.C_OUT = (st["b_wb"], st["b_p"], st["b_beat"], st["fin"],
                                                                  st["c_out"])
        self.P = fs.work_bits(cfg)
        self.X = fs.exp_field_bits(cfg)

    @property
    def acc_shape(self):
        return unsigned(fs.working_float_bits(self.cfg))

    @property
    def vec_shape(self):
        return self.acc_shape

    # --- B
    def b_lane(self, m: Module, p: Pipe, word, lane_ok, max_bits, lane: int):
        cfg, P = self.cfg, self.P
        M, E, bias = cfg.man_bits, cfg.exp_bits, cfg.bias
        G = P - M + 2
        x = word[:cfg.width]
        sx, ex, fx = x[cfg.width - 1], x[M:M + E], x[:M]
        sm, em, fm = max_bits[cfg.width - 1], max_bits[M:M + E], max_bits[:M]
        special = ex == cfg.float_format.exp_max
        finite = lane_ok & ~special
        ex_ = Mux(special, 0, ex)
        mx_ = Mux((ex == 0) | special, 0, Cat(fx, Const(1, 1)))
        mm_ = Mux(em == 0, 0, Cat(fm, Const(1, 1)))

        # subtract, stage 1: max + (-x): order the magnitudes, align the smaller one (truncated)
        x_big = Cat(mx_, ex_) > Cat(mm_, em)
        eb, es = Mux(x_big, ex_, em), Mux(x_big, em, ex_)
        mb, ms = Mux(x_big, mx_, mm_), Mux(x_big, mm_, mx_)
        ww = M + 1 + G
        sh = smin(eb - es, ww).as_unsigned()[:ww.bit_length()]
        aw = p.reg(mb << G, unsigned(ww), name=f"aw{lane}")
        bw = p.reg((ms << G) >> sh, unsigned(ww), name=f"bw{lane}")
        sub = p.reg(sm == sx, name=f"sub{lane}")  # max + (-x): the magnitudes subtract when the signs agree
        e1 = p.reg(eb, name=f"e1_{lane}")
        fin1 = p.reg(finite, name=f"fin1_{lane}")
        # stage 2: add or subtract
        r2 = p.reg(Mux(sub, aw - bw, aw + bw), unsigned(ww + 1), name=f"r{lane}")
        e2, fin2 = p.reg(e1, name=f"e2_{lane}"), p.reg(fin1, name=f"fin2_{lane}")
        # stage 3: normalise to P+1 bits (truncated)
        rw = ww + 1
        lead = leading_one(m, r2, f"dlead{lane}")
        up = Signal(range(rw), name=f"dup{lane}")
        norm = Signal(rw, name=f"dnorm{lane}")
        m.d.comb += [up.eq(rw - 1 - lead), norm.eq(r2 << up)]
        xs = signed(self.X + 2)
        d_m = p.reg(norm[rw - P - 1:rw], name=f"dm{lane}")
        d_e = p.reg(e2 - bias - M - G + lead, xs, name=f"de{lane}")
        d_z = p.reg(r2 == 0, name=f"dz{lane}")
        fin3 = p.reg(fin2, name=f"fin3_{lane}")

        # stage 4: |t| = |d| * log2(e), the mantissa product
        prod = p.reg(d_m * fs.log2e_mantissa(cfg), name=f"tp{lane}")
        t_e, t_z, fin4 = p.reg(d_e, name=f"te{lane}"), p.reg(d_z, name=f"tz{lane}"), p.reg(fin3, name=f"fin4_{lane}")
        # stage 5: normalise and convert to fixed point with FB fraction bits: k = floor(t), f = t - k
        FB = fs.fixed_bits(cfg)
        hi = prod[2 * P + 2]
        tm = Mux(hi, prod[P + 2:2 * P + 3], prod[P + 1:2 * P + 2])
        te = t_e + hi
        kb = (fs.flush_exp(cfg) + 1).bit_length()
        flush = ~t_z & (te >= kb)
        s = te - P + FB  # |t| * 2^FB = tm * 2^s
        lmax, rmax = kb + FB - P, P + 2
        lsh = smin(smax(s, 0), lmax).as_unsigned()[:lmax.bit_length()]
        rsh = smin(smax(-s, 0), rmax).as_unsigned()[:rmax.bit_length()]
        tf = Mux(t_z, 0, Mux(s >= 0, tm << lsh, tm >> rsh))
        tfix = Signal(signed(kb + FB + 2), name=f"tfix{lane}")
        m.d.comb += tfix.eq(-tf)
        k = tfix >> FB
        f5 = p.reg(tfix[:FB], name=f"f{lane}")
        k5 = p.reg(k, signed(kb + 2), name=f"k{lane}")
        dead5 = p.reg(~fin4 | flush | (k < -fs.flush_exp(cfg)), name=f"dead{lane}")

        # Horner: one multiply-add per stage
        coeffs = fs.poly_coeffs(cfg)
        acc = Const(coeffs[-1], signed(FB + 3))
        f, kk, dead = f5, k5, dead5
        for i in range(len(coeffs) - 2, -1, -1):
            acc = p.reg(((acc * f) >> FB) + coeffs[i], signed(FB + 3), name=f"h{i}_{lane}")
            f, kk, dead = p.reg(f, name=f"hf{lane}"), p.reg(kk, name=f"hk{lane}"), p.reg(dead, name=f"hd{lane}")
        # pack: e = 2^f * 2^k, the polynomial clamped to [1, 2) and truncated to P fraction bits
        one, top = 1 << FB, (2 << FB) - 1
        pv = Mux(acc < one, one, Mux(acc > top, top, acc)).as_unsigned()[:FB + 1]
        e_packed = p.reg(pack(cfg, pv[FB - P:FB + 1], kk.as_unsigned(), dead), self.acc_shape, name=f"e{lane}")
        return e_packed, e_packed

    def fadd(self, m: Module, a, b, name: str, pipe: Pipe | None = None):
        """a + b for non-negative working floats; two register stages with `pipe`, none without (truncated)."""
        P = self.P
        A, B = WorkFloat(self.cfg, a), WorkFloat(self.cfg, b)
        a_big = B.zero | (~A.zero & (A.exp >= B.exp))
        eb = Mux(a_big, A.exp, B.exp)
        mb = Mux(a_big, Mux(A.zero, 0, A.mant), Mux(B.zero, 0, B.mant))
        ms = Mux(a_big, Mux(B.zero, 0, B.mant), Mux(A.zero, 0, A.mant))
        diff = Signal(signed(self.X + 2), name=f"{name}_diff")
        m.d.comb += diff.eq(Mux(a_big, A.exp - B.exp, B.exp - A.exp))
        sh = smin(diff, P + 2).as_unsigned()[:(P + 2).bit_length()]
        total = mb + (ms >> sh)
        both_zero = A.zero & B.zero
        if pipe is not None:
            total, eb, both_zero = (pipe.reg(total, unsigned(P + 2), name=f"{name}_s"), pipe.reg(eb, name=f"{name}_e"),
                                    pipe.reg(both_zero, name=f"{name}_z"))
        hi = total[P + 1]
        out = pack(self.cfg, Mux(hi, total[1:P + 2], total[:P + 1]), (eb + hi).as_unsigned(), both_zero)
        if pipe is not None:
            return pipe.reg(out, self.acc_shape, name=f"{name}_o")
        o = Signal(self.acc_shape, name=f"{name}_o")
        m.d.comb += o.eq(out)
        return o

    def b_beat(self, m: Module, p: Pipe, lanes_e: list):
        """The float adder tree over the lanes (two stages per level)."""
        level = 0
        while len(lanes_e) > 1:
            nxt = [self.fadd(m, lanes_e[i], lanes_e[i + 1], f"tree{level}_{i // 2}", p)
                   for i in range(0, len(lanes_e) - 1, 2)]
            if len(lanes_e) % 2:
                nxt.append(p.delay(lanes_e[-1], 2, name=f"tree{level}_pass"))
            lanes_e, level = nxt, level + 1
        return lanes_e[0]

    def acc_add(self, m: Module, acc, beat):
        return self.fadd(m, acc, beat, "acc")

    def finalize(self, m: Module, p: Pipe, total):
        return total

    # --- C: y = e / sum
    def c_lane(self, m: Module, p: Pipe, word, vec, lane: int):
        cfg, P = self.cfg, self.P
        M = cfg.man_bits
        e, s = WorkFloat(cfg, word), WorkFloat(cfg, vec)
        ms = s.mant
        rem = e.mant.as_unsigned() + Const(0, P + 2)
        q = Const(0, 1)
        qexp = e.exp - s.exp
        live = ~e.zero
        stages = fs.div_stages(cfg)
        for st in range(stages):
            for _ in range(fs.DIV_BITS_PER_STAGE):
                ge = rem >= ms
                q = Cat(ge, q)
                rem = (Mux(ge, rem - ms, rem) << 1)[:P + 2]
            qb = 1 + fs.DIV_BITS_PER_STAGE * (st + 1)
            rem = p.reg(rem, unsigned(P + 2), name=f"rem{st}_{lane}")
            q = p.reg(q[:qb], unsigned(qb), name=f"q{st}_{lane}")
            ms = p.reg(ms, name=f"ms{st}_{lane}")
            qexp = p.reg(qexp, signed(self.X + 2), name=f"qe{st}_{lane}")
            live = p.reg(live, name=f"dl{st}_{lane}")
        QB = fs.DIV_BITS_PER_STAGE * stages
        Q = q[:QB]  # = floor(me / ms * 2^(QB - 1)), in (2^(QB-2), 2^QB)
        sticky_div = rem != 0
        hi = Q[QB - 1]
        qn = Mux(hi, Q, Q << 1)[:QB]
        eb = Signal(signed(self.X + 4), name=f"ye{lane}")
        m.d.comb += eb.eq(qexp - 1 + hi + cfg.bias)
        h = Signal(signed(self.X + 5), name=f"yh{lane}")
        m.d.comb += h.eq(smin(QB - 1 - M + smax(1 - eb, 0), QB + 1))
        hu = h.as_unsigned()[:(QB + 1).bit_length()]
        keep = (qn >> hu)[:M + 2]
        h1 = (hu - 1)[:len(hu)]
        rbit = (qn >> h1)[0]
        sticky = (((qn >> h1) << h1)[:QB] != qn) | sticky_div
        up = rbit & (sticky | keep[0])
        out = (smax(eb, 1).as_unsigned() << M) + keep + up - (1 << M)
        return live, out[:cfg.width]


__all__ = ["FloatDatapath", "WorkFloat", "pack"]
