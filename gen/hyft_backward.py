"""The Hyft softmax backward (training) pass as small pipelined components (docs/specs/hyft.md, "Backward
(training) mode" and "Backward RTL"), each bit-exact to one step function of golden/hyft.py:

- `BackwardDecode`: a beat of L (y, dy) pairs -> decoded operands (sign, exponent field, m' with Mt fraction
  bits, NaN / inf / zero), and the beat's reductions for the fill phase: any NaN product, infinite products of
  each sign, "every product is a zero of sign 1", a y out of range, the largest exponent field of a non-zero dy
  (golden `backward_decode`, reduced as `backward_vector` does).
- `BackwardProduct`: decoded pairs and the vector's largest dy exponent -> P_j = y_j dy_j on the block grid
  (exponent add, exact (Mt+1) x (Mt+1) product, round-shift) and Yj = y_j on the grid 2^-B (`backward_products`).
- `BackwardFinalise`: (S, Y) -> S' = S / (Y 2^-B) by two Newton steps and one product on one (split)
  multiplier, sequential, once per vector (`normalised_sum`).
- `BackwardOutput`: decoded pairs and the vector's values (largest dy exponent, S', the special-value flags)
  -> dx bits: DY, G = DY - S', the leading one and normalising shift of |G|, Z = m'_y * Pg, the rounding to
  the format with sign, overflow and the special cases (`backward_g`, `backward_normalise`, `round_float`,
  `backward_special_bits`).

Every per-element component is a pipeline whose registers advance together when its output is free or taken
(``advance = ~out.valid | out.ready``; ``in.ready = advance``): full throughput, any valid gaps and ready
stalls. No stage holds more than one carry chain, one half of a barrel shift, or a registered MULT18X18D
(with ``platform="ecp5"`` the multipliers are MULT18X18D with their own registers, clock-enabled by the
pipeline's advance). Exponents travel as the biased field clamped at 1 (subnormals are not normalised; the
spec allows either). Rows whose y is out of range (y >= 2 or y < 0) give don't-care P, Yj and G: the vector's
outputs are all NaN then (step 0.4), whatever they are.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from accelkit.config.hyft import SoftmaxConfig

from .hyft import Pipe
from .memory import RegisteredRam
from .pipeline import LIMB, adder_tree, registered_multiply, split_multiply

__all__ = ["decode_latency", "product_latency", "finalise_cycles", "output_latency", "BackwardZip",
           "BackwardUnit", "unit_out_layout", "operand_stream_layout", "raw_layout", "operand_layout",
           "pair_layout", "decoded_layout", "product_in_layout", "product_out_layout",
           "vector_layout", "output_in_layout", "output_out_layout", "BackwardDecode", "BackwardProduct",
           "BackwardFinalise", "BackwardOutput", "backward_dims"]


# ---- widths ------------------------------------------------------------------------------------------------

class backward_dims:  # noqa: N801 (a namespace of derived widths, read like a config)
    """The widths the components use (the spec's width table, golden `backward_widths`)."""

    def __init__(self, cfg: SoftmaxConfig):
        self.cfg = cfg
        self.M, self.W, self.B = cfg.man_bits, cfg.table_bits, cfg.sum_frac_bits
        self.Mt = min(self.M, self.W)
        self.EB, self.bias, self.L = cfg.exp_bits, cfg.bias, cfg.lanes
        self.SB = cfg.sum_bits                   # Y (unsigned); S and S' are SB + 1 signed
        self.R = min(self.B + 2, 28)
        self.GW = self.SB + 2                    # G, two's complement
        self.ZW = self.Mt + self.W + 2           # Z = m'_y * Pg
        self.P_BITS = self.B + 3                 # P, signed (|P| <= 2^(B+1))
        self.Y_BITS = self.B + 2                 # Yj, unsigned (Yj <= 2^(B+1))


def operand_layout(cfg: SoftmaxConfig) -> data.StructLayout:
    d = backward_dims(cfg)
    return data.StructLayout({"s": 1, "e": unsigned(d.EB), "m": unsigned(d.Mt + 1), "nan": 1, "inf": 1, "zero": 1})


def pair_layout(cfg: SoftmaxConfig) -> data.StructLayout:
    return data.StructLayout({"y": operand_layout(cfg), "dy": operand_layout(cfg)})


def raw_layout(cfg: SoftmaxConfig) -> data.StructLayout:
    """A beat of the backward input: L (y, dy) raw bit pairs, count and last as the forward's ``x``."""
    return data.StructLayout({"y": data.ArrayLayout(unsigned(cfg.width), cfg.lanes),
                              "dy": data.ArrayLayout(unsigned(cfg.width), cfg.lanes),
                              "count": unsigned(cfg.count_bits), "last": 1})


def decoded_layout(cfg: SoftmaxConfig) -> data.StructLayout:
    """Decoded pairs, count, last, and the beat's fill-phase reductions over its valid lanes."""
    return data.StructLayout({"data": data.ArrayLayout(pair_layout(cfg), cfg.lanes),
                              "count": unsigned(cfg.count_bits), "last": 1,
                              "p_nan": 1, "pos": 1, "neg": 1, "negzero": 1, "bad_y": 1,
                              "ed": unsigned(cfg.exp_bits)})


def product_in_layout(cfg: SoftmaxConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(pair_layout(cfg), cfg.lanes),
                              "count": unsigned(cfg.count_bits), "last": 1, "ed": unsigned(cfg.exp_bits)})


def product_out_layout(cfg: SoftmaxConfig) -> data.StructLayout:
    d = backward_dims(cfg)
    return data.StructLayout({"p": data.ArrayLayout(signed(d.P_BITS), cfg.lanes),
                              "yj": data.ArrayLayout(unsigned(d.Y_BITS), cfg.lanes), "last": 1})


def vector_layout(cfg: SoftmaxConfig) -> data.StructLayout:
    """What the output phase needs of its vector: the largest dy exponent field, S', the special-value flags."""
    d = backward_dims(cfg)
    return data.StructLayout({"ed": unsigned(d.EB), "sn": signed(d.SB + 1), "s_negzero": 1, "s_special": 1,
                              "s_nan": 1, "s_inf_sign": 1, "out_of_range": 1})


def output_in_layout(cfg: SoftmaxConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(pair_layout(cfg), cfg.lanes),
                              "count": unsigned(cfg.count_bits), "last": 1, "vec": vector_layout(cfg)})


def output_out_layout(cfg: SoftmaxConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(unsigned(cfg.width), cfg.lanes),
                              "count": unsigned(cfg.count_bits), "last": 1})


def _limbs(bits: int) -> int:
    return -(-bits // LIMB)


def decode_latency(cfg: SoftmaxConfig) -> int:
    """`BackwardDecode`'s register stages: the beat, the decode, one per level of the lanes' reduction tree."""
    return 2 + max(0, (cfg.lanes - 1).bit_length())


def product_latency(cfg: SoftmaxConfig) -> int:
    """`BackwardProduct`'s: the beat, the multiplier (2, more when split into limbs), round-shift (3), sign."""
    mt = backward_dims(cfg).Mt
    return 5 + 2 + max(0, (_limbs(mt + 1) ** 2 - 1).bit_length())


def finalise_cycles(cfg: SoftmaxConfig) -> int:
    """`BackwardFinalise`'s cycles from an input taken to its output offered."""
    d = backward_dims(cfg)
    lat = 2 + max(0, (_limbs(max(d.SB + 1, d.R + 2)) * _limbs(d.R + 2) - 1).bit_length())
    return 2 + 5 * (lat + 1)


def output_latency(cfg: SoftmaxConfig) -> int:
    """`BackwardOutput`'s register stages (21 and the multiplier's, then the skid buffer's first entry)."""
    d = backward_dims(cfg)
    return 22 + 2 + max(0, (_limbs(d.Mt + 1) * _limbs(d.W + 1) - 1).bit_length())


# ---- pipeline helpers --------------------------------------------------------------------------------------

def _clamp(v, lo: int, hi: int, bits: int):
    """v (signed) clamped to [lo, hi], as `bits` unsigned bits (lo >= 0)."""
    return Mux(v < lo, lo, Mux(v > hi, hi, v)).as_unsigned()[:bits]


def _shift_right_2(p: Pipe, v, sh, name: str):
    """v >> sh over two register stages: by the high bits of sh (multiples of 8), then by the low three."""
    a = p.reg(v >> Cat(Const(0, 3), sh[3:]) if len(sh) > 3 else v, unsigned(len(v)), name=f"{name}_hi")
    lo = p.reg(sh[:3], name=f"{name}_lo")
    return p.reg(a >> lo, unsigned(len(v)), name=f"{name}_sh")


def _shift_left_2(p: Pipe, v, sh, width: int, name: str):
    """(v << sh)[:width] over two register stages (high bits of sh, then the low three)."""
    a = p.reg((v << Cat(Const(0, 3), sh[3:]) if len(sh) > 3 else v)[:width], unsigned(width), name=f"{name}_hi")
    lo = p.reg(sh[:3], name=f"{name}_lo")
    return p.reg((a << lo)[:width], unsigned(width), name=f"{name}_sh")


def _leading_one_2(m: Module, p: Pipe, v, name: str):
    """(index of the leading one of v, v == 0) over two register stages: per 8-bit group its any-bit and local
    index, then the highest non-empty group (the index is Cat(local, group): no adder)."""
    groups = [v[i:min(i + 8, len(v))] for i in range(0, len(v), 8)]
    nz, loc = [], []
    for g, bits in enumerate(groups):
        k = Signal(3, name=f"{name}_loc{g}")
        for i in range(len(bits)):
            with m.If(bits[i]):
                m.d.comb += k.eq(i)
        nz.append(p.reg(bits.any(), name=f"{name}_nz{g}"))
        loc.append(p.reg(k, name=f"{name}_l{g}"))
    gbits = max(1, (len(groups) - 1).bit_length())
    gi = Signal(gbits, name=f"{name}_g")
    li = Signal(3, name=f"{name}_li")
    for g in range(len(groups)):
        with m.If(nz[g]):
            m.d.comb += [gi.eq(g), li.eq(loc[g])]
    idx = p.reg(Cat(li, gi) if len(groups) > 1 else li, unsigned(3 + (gbits if len(groups) > 1 else 0)),
                name=f"{name}_idx")
    zero = p.reg(~Cat(*nz).any(), name=f"{name}_zero")
    return idx, zero


def _multiply_en(m: Module, p: Pipe, a, b, name: str, platform):
    """a * b (unsigned, any widths) as 17-bit limb products (gen/pipeline.py `registered_multiply`, unsigned,
    advancing with the pipe's enable) summed in registered pairs.

    Returns (product, register stages): 2 for a single limb product, plus one per level of the sum."""
    def limbs(v):
        return [(lo, v[lo:min(len(v), lo + LIMB)]) for lo in range(0, len(v), LIMB)]

    width = len(a) + len(b)
    terms = [(la + lb, registered_multiply(m, pa, pb, f"{name}_pp{i}{j}", platform, en=p.en,
                                           signed_ops=False)[:len(pa) + len(pb)])
             for i, (la, pa) in enumerate(limbs(a)) for j, (lb, pb) in enumerate(limbs(b))]
    vals = [(t << s)[:width] if s else t for s, t in terms]
    stages = 2
    while len(vals) > 1:
        vals = [p.reg(vals[k] + vals[k + 1], unsigned(width), name=f"{name}_t") if k + 1 < len(vals)
                else p.reg(vals[k], unsigned(width), name=f"{name}_t") for k in range(0, len(vals), 2)]
        stages += 1
    return vals[0], stages


def _round_shift(m: Module, p: Pipe, v, sh, kl: int, name: str):
    """round-shift(v, k) with sh = KL - k clamped to [0, len(v) + KL + 1] already: ((v << (KL+1)) >> sh + 1) >> 1.

    Three register stages (the shift in two, then the rounding add). k >= 0 gives v << k exactly; k < 0 rounds
    to nearest, ties up; a shift beyond v's width gives 0."""
    t = Signal(len(v) + kl + 1, name=f"{name}_t")
    m.d.comb += t.eq(v << (kl + 1))
    s = _shift_right_2(p, t, sh, name)
    return p.reg((s + 1) >> 1, unsigned(len(v) + kl + 1), name=f"{name}_r")


def _stream_pipe(comp, m: Module, name: str) -> Pipe:
    """The pipe of a per-element component: advance when the output is empty or taken; in.ready = advance."""
    adv = Signal(name=f"{name}_advance")
    m.d.comb += [adv.eq(~comp.o.valid | comp.o.ready), comp.i.ready.eq(adv)]
    return Pipe(m, name, adv)


def _lane_ok(cfg: SoftmaxConfig, count, last, k: int):
    """Lane k holds an element: every lane but on the last beat, where count (1..L; 0 or > L means L) says."""
    L = cfg.lanes
    return ~last | (count == 0) | (count > L) | (k < count)


# ---- (a) decode and classify --------------------------------------------------------------------------------

class BackwardDecode(wiring.Component):
    """Raw (y, dy) pairs -> decoded pairs and the beat's fill reductions. Latency `latency` (register stages)."""

    def __init__(self, cfg: SoftmaxConfig):
        self.cfg = cfg
        self.tree = max(0, (cfg.lanes - 1).bit_length())
        self.latency = decode_latency(cfg)
        super().__init__({"i": In(stream.Signature(raw_layout(cfg))), "o": Out(stream.Signature(decoded_layout(cfg)))})

    def decode(self, bits):
        """(s, e, m', nan, inf, zero, m != 0) of raw bits: subnormals at their value, e clamped at 1."""
        cfg, d = self.cfg, backward_dims(self.cfg)
        M = d.M
        s, e, f = bits[cfg.width - 1], bits[M:M + d.EB], bits[:M]
        special = e == cfg.float_format.exp_max
        full = Mux(special, 0, Mux(e == 0, f, Cat(f, Const(1, 1))))
        return {"s": s, "e": Mux(e == 0, 1, e), "m": (full >> (M - d.Mt))[:d.Mt + 1], "nan": special & (f != 0),
                "inf": special & (f == 0), "zero": ~special & (e == 0) & (f == 0)}

    def elaborate(self, platform):
        cfg, L = self.cfg, self.cfg.lanes
        m = Module()
        p = _stream_pipe(self, m, "dec")
        x = self.i.payload
        # stage 1: the beat as it comes
        v1 = p.reg(self.i.valid, name="v")
        ys = [p.reg(x.y[k], name=f"y{k}") for k in range(L)]
        ds = [p.reg(x.dy[k], name=f"dy{k}") for k in range(L)]
        cnt, last = p.reg(x.count, name="count"), p.reg(x.last, name="last")
        ok = [p.reg(_lane_ok(cfg, x.count, x.last, k), name=f"ok{k}") for k in range(L)]
        # stage 2: decode, the product class, and the lane's share of the reductions
        pairs, flags = [], []
        for k in range(L):
            dy_, dd = self.decode(ys[k]), self.decode(ds[k])
            ps = dy_["s"] ^ dd["s"]
            p_nan = dy_["nan"] | dd["nan"] | (dy_["inf"] & dd["zero"]) | (dd["inf"] & dy_["zero"])
            p_inf = (dy_["inf"] | dd["inf"]) & ~p_nan
            bad_y = ~(dy_["nan"] | dy_["inf"] | dy_["zero"]) & ((dy_["e"] > cfg.bias) | dy_["s"])
            e_dy = Mux(dd["zero"] | dd["nan"] | dd["inf"], 0, dd["e"])
            pair = Signal(pair_layout(cfg), name=f"pair{k}")
            for op, dec in (("y", dy_), ("dy", dd)):
                for f in ("s", "e", "m", "nan", "inf", "zero"):
                    m.d.comb += pair[op][f].eq(dec[f])
            pairs.append(p.reg(pair, name=f"pair{k}"))
            okk = ok[k]
            flags.append({"p_nan": p.reg(okk & p_nan, name=f"pn{k}"), "pos": p.reg(okk & p_inf & ~ps, name=f"pp{k}"),
                          "neg": p.reg(okk & p_inf & ps, name=f"pm{k}"),
                          "negzero": p.reg(~okk | ((dy_["zero"] | dd["zero"]) & ps), name=f"nz{k}"),
                          "bad_y": p.reg(okk & bad_y, name=f"by{k}"),
                          "ed": p.reg(Mux(okk, e_dy, 0), unsigned(cfg.exp_bits), name=f"ed{k}")})
        v2, cnt2, last2 = p.reg(v1, name="v2"), p.reg(cnt, name="count2"), p.reg(last, name="last2")
        # stages 3..: the reductions as a registered tree over the lanes (one level a stage)
        while len(flags) > 1:
            nxt = []
            for k in range(0, len(flags), 2):
                if k + 1 == len(flags):
                    nxt.append({n: p.reg(v, name=f"t{n}") for n, v in flags[k].items()})
                    continue
                a, b = flags[k], flags[k + 1]
                nxt.append({"p_nan": p.reg(a["p_nan"] | b["p_nan"], name="tpn"),
                            "pos": p.reg(a["pos"] | b["pos"], name="tpp"),
                            "neg": p.reg(a["neg"] | b["neg"], name="tpm"),
                            "negzero": p.reg(a["negzero"] & b["negzero"], name="tnz"),
                            "bad_y": p.reg(a["bad_y"] | b["bad_y"], name="tby"),
                            "ed": p.reg(Mux(a["ed"] > b["ed"], a["ed"], b["ed"]), name="ted")})
            flags = nxt
        out = self.o.payload
        m.d.comb += self.o.valid.eq(p.delay(v2, self.tree, "vt"))
        m.d.comb += [out.count.eq(p.delay(cnt2, self.tree, "ct")), out.last.eq(p.delay(last2, self.tree, "lt"))]
        for k in range(L):
            m.d.comb += out.data[k].eq(p.delay(pairs[k], self.tree, f"pt{k}"))
        for n, v in flags[0].items():
            m.d.comb += out[n].eq(v)
        return m


# ---- (b) the products on the block grid -----------------------------------------------------------------------

class BackwardProduct(wiring.Component):
    """Decoded pairs and the vector's largest dy exponent field `ed` -> per lane P (signed, on the block grid
    2^(ed - bias + 1 - B)) and Yj (y on 2^-B); lanes beyond count give 0. Latency `latency`."""

    def __init__(self, cfg: SoftmaxConfig):
        self.cfg = cfg
        d = backward_dims(cfg)
        n_limbs = (-(-(d.Mt + 1) // LIMB)) ** 2
        self.mul_stages = 2 + max(0, (n_limbs - 1).bit_length())  # one MULT18 (2) unless Mt + 1 > 17
        self.latency = 5 + self.mul_stages
        assert self.latency == product_latency(cfg)
        super().__init__({"i": In(stream.Signature(product_in_layout(cfg))),
                          "o": Out(stream.Signature(product_out_layout(cfg)))})

    def elaborate(self, platform):
        cfg, d = self.cfg, backward_dims(self.cfg)
        L, Mt, B, bias = d.L, d.Mt, d.B, d.bias
        m = Module()
        p = _stream_pipe(self, m, "prod")
        x = self.i.payload
        es = signed(d.EB + 5)
        kl = max(B - 1 - 2 * Mt, 0)   # the largest left shift of a product (E_y <= 0, E_dy <= Ed)
        kly = max(B - Mt, 0)          # of y onto 2^-B
        pw, yw = 2 * Mt + 2, Mt + 1
        sh_p_max, sh_y_max = pw + kl + 1, yw + kly + 1
        # stage 1: the beat; k' = e_y + e_dy - ed (then sh = KL - k with k = k' + B - 1 - 2 Mt - bias)
        v1 = p.reg(self.i.valid, name="v")
        last1 = p.reg(x.last, name="last")
        lanes = []
        for k in range(L):
            pr = x.data[k]
            ok = _lane_ok(cfg, x.count, x.last, k)
            lanes.append({"my": p.reg(Mux(ok, pr.y.m, 0), name=f"my{k}"),
                          "md": p.reg(Mux(ok, pr.dy.m, 0), name=f"md{k}"),
                          "ps": p.reg(pr.y.s ^ pr.dy.s, name=f"ps{k}"),
                          "kp": p.reg(pr.y.e + pr.dy.e - x.ed, es, name=f"kp{k}"),
                          "ey": p.reg(pr.y.e, name=f"ey{k}")})
        # stage 2: the shift amounts (clamped); the operands wait on the multiplier's input registers
        outs = []
        for k, ln in enumerate(lanes):
            shp = Signal(es, name=f"shp{k}")
            shy = Signal(es, name=f"shy{k}")
            m.d.comb += [shp.eq((kl - (B - 1 - 2 * Mt - bias)) - ln["kp"]),
                         shy.eq((kly - (B - Mt - bias)) - ln["ey"])]
            sp2 = p.reg(_clamp(shp, 0, sh_p_max, sh_p_max.bit_length()), name=f"shp{k}")
            sy2 = p.reg(_clamp(shy, 0, sh_y_max, sh_y_max.bit_length()), name=f"shy{k}")
            # stages 2-3: the exact mantissa product (registered MULT18 operands and product; more stages when
            # split into limbs, fp32 with table_bits > 16)
            prod, st = _multiply_en(m, p, ln["my"], ln["md"], f"mul{k}", platform)
            assert st == self.mul_stages
            sp3 = p.delay(sp2, st - 1, name=f"shp3_{k}")
            ps3 = p.delay(ln["ps"], st, name=f"ps{k}")
            # y's own grid shift runs beside the product, delayed to leave with it
            my3 = p.delay(ln["my"], st, name=f"myd{k}")
            sy3 = p.delay(sy2, st - 1, name=f"shy3_{k}")
            # the next three: round-shift onto the grid (two shift stages, then + 1 >> 1)
            pm = _round_shift(m, p, prod, sp3, kl, f"rp{k}")
            yj = _round_shift(m, p, my3, sy3, kly, f"ry{k}")
            ps6 = p.delay(ps3, 3, name=f"ps6_{k}")
            # stage 7: the sign
            pv = Signal(signed(d.P_BITS), name=f"pv{k}")
            m.d.comb += pv.eq(pm)
            outs.append((p.reg(Mux(ps6, -pv, pv), signed(d.P_BITS), name=f"p{k}"),
                         p.reg(yj, unsigned(d.Y_BITS), name=f"yj{k}")))
        out = self.o.payload
        m.d.comb += [self.o.valid.eq(p.delay(v1, self.latency - 1, "vd")),
                     out.last.eq(p.delay(last1, self.latency - 1, "ld"))]
        for k, (pk, yk) in enumerate(outs):
            m.d.comb += [out.p[k].eq(pk), out.yj[k].eq(yk)]
        return m


# ---- (c) finalise: S' = S / sum(y) ----------------------------------------------------------------------------

class BackwardFinalise(wiring.Component):
    """(S, Y) -> S' (golden `normalised_sum`), sequential on one split multiplier: five products in turn
    (t = Yr r, r = (r e) >> R with e = 2^(R+1) - (t >> R), twice; then (|S| r + 2^(R-1)) >> R).

    ``i``: S (signed, sum_bits + 1) and Y (unsigned, sum_bits); ``o``: S'. One vector at a time: an input is
    taken when the unit is idle and its S' is offered `cycles` cycles later, held until taken."""

    def __init__(self, cfg: SoftmaxConfig):
        self.cfg = cfg
        d = backward_dims(cfg)
        self.AW = max(d.SB + 1, d.R + 2)  # |S| <= 2^SB; Yr, r, e < 2^(R+2)
        self.BW = d.R + 2
        n_a, n_b = -(-self.AW // LIMB), -(-self.BW // LIMB)
        self.mul_stages = 2 + max(0, (n_a * n_b - 1).bit_length())
        self.cycles = 2 + 5 * (self.mul_stages + 1)
        assert self.cycles == finalise_cycles(cfg)
        super().__init__({"i": In(stream.Signature(data.StructLayout({"s": signed(d.SB + 1), "y": unsigned(d.SB)}))),
                          "o": Out(stream.Signature(data.StructLayout({"sn": signed(d.SB + 1)})))})

    def elaborate(self, platform):
        d = backward_dims(self.cfg)
        R, B, SB = d.R, d.B, d.SB
        one = 1 << R
        LAT = self.mul_stages
        m = Module()
        yrw = max(SB + R - B, R + 2) + 1
        yfull, diff = Signal(yrw), Signal(yrw)
        yr, r, e = Signal(R + 2), Signal(R + 2), Signal(R + 2)
        smag, sneg = Signal(self.AW), Signal()
        sn, ov = Signal(signed(SB + 1)), Signal()
        state = Signal(range(4))  # 0 idle, 1 |Yr - 1|, 2 r0, 3 the products
        st = Signal(range(5))     # which product
        wait = Signal(range(LAT + 2))
        opa, opb = Signal(self.AW), Signal(self.BW)
        with m.Switch(st):
            for k, (a, b) in enumerate(((yr, r), (r, e), (yr, r), (r, e), (smag, r))):
                with m.Case(k):
                    m.d.comb += [opa.eq(a), opb.eq(b)]
        prod, stages = split_multiply(m, opa, opb, self.AW + self.BW + 1, "fin_mul", platform)
        assert stages == LAT
        pu = prod.as_unsigned()[:self.AW + self.BW]
        m.d.comb += [self.i.ready.eq((state == 0) & ~ov), self.o.valid.eq(ov), self.o.payload.sn.eq(sn)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += ov.eq(0)
        with m.Switch(state):
            with m.Case(0):
                with m.If(self.i.valid & self.i.ready):
                    s, y = self.i.payload.s, self.i.payload.y
                    m.d.sync += [state.eq(1), sneg.eq(s < 0), smag.eq(Mux(s < 0, -s, s)),
                                 yfull.eq(y << (R - B) if R >= B else y >> (B - R))]
            with m.Case(1):
                m.d.sync += [diff.eq(Mux(yfull >= one, yfull - one, one - yfull)), state.eq(2)]
            with m.Case(2):  # near 1: r0 = 2 - Yr; else r = 1 (Yr taken as 1, so r stays 1)
                near = diff <= (one >> 3)
                m.d.sync += [yr.eq(Mux(near, yfull, one)), r.eq(Mux(near, 2 * one - yfull, one)),
                             state.eq(3), st.eq(0), wait.eq(0)]
            with m.Case(3):
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == LAT):
                    m.d.sync += [wait.eq(0), st.eq(st + 1)]
                    with m.Switch(st):
                        with m.Case(0, 2):
                            m.d.sync += e.eq(2 * one - (pu >> R))
                        with m.Case(1, 3):
                            m.d.sync += r.eq(pu >> R)
                        with m.Case(4):
                            mag = (pu + (one >> 1)) >> R
                            m.d.sync += [sn.eq(Mux(sneg, -mag, mag)), ov.eq(1), state.eq(0), st.eq(0)]
        return m


# ---- (d) the output: g = dy - s', normalise, times y, round -----------------------------------------------------

class BackwardOutput(wiring.Component):
    """Decoded pairs and their vector's values -> dx bits per lane (lanes beyond count give 0). Latency `latency`.

    Stages (one carry chain, one half barrel shift or a registered multiplier each): the exponent sums and the
    special-value result; DY's shift amount; DY's round-shift (3); its sign; G = DY - S'; |G| and the sign of g;
    the leading one of |G| (2); the normalising shift's amount and the output exponent's partial sum; the shift
    (2); Z = m'_y * Pg (2 for one MULT18, more when split); the leading one of Z (2); e and the rounding shift's
    bounds; the rounding shift (2, with the dropped bits' OR); round and add to the exponent field; overflow,
    zero, sign and the special cases into the output register."""

    def __init__(self, cfg: SoftmaxConfig):
        self.cfg = cfg
        d = backward_dims(cfg)
        n_limbs = -(-(d.Mt + 1) // LIMB) * -(-(d.W + 1) // LIMB)
        self.mul_stages = 2 + max(0, (n_limbs - 1).bit_length())
        self.latency = 22 + self.mul_stages  # the pipeline and the skid buffer's first entry
        assert self.latency == output_latency(cfg)
        super().__init__({"i": In(stream.Signature(output_in_layout(cfg))),
                          "o": Out(stream.Signature(output_out_layout(cfg)))})

    def elaborate(self, platform):
        cfg, d = self.cfg, backward_dims(self.cfg)
        L, Mt, M, W, B, bias = d.L, d.Mt, d.M, d.W, d.B, d.bias
        fmt = cfg.float_format
        m = Module()
        adv = Signal(name="out_advance")  # the skid buffer below has room: a register's complement, not o.ready
        m.d.comb += self.i.ready.eq(adv)
        p = Pipe(m, "out", adv)
        x = self.i.payload
        vec = x.vec
        es = signed(d.EB + 5)
        c2 = 1 - bias - Mt - W - B   # e = n + kg + e_y + ed + c2
        # output exponents: |e|, |kg + e_y + ed + c2| and |1 - that| stay below this bound
        xs = signed((2 * (1 << d.EB) + abs(c2) + d.GW + d.ZW + M + 8).bit_length() + 1)
        kd_l = max(B - 1 - Mt, 0)   # DY's largest left shift
        dw = Mt + 1
        sh_d_max = dw + kd_l + 1
        NW = max(d.GW, W + 1)        # the normalising shift's width

        # stage 1: exponent sums, the special-value result, the lane's validity
        v1, last1, cnt1 = p.reg(self.i.valid, name="v"), p.reg(x.last, name="last"), p.reg(x.count, name="count")
        # the vector's values travel once for all lanes (only as far as they are needed)
        force1 = p.reg(vec.s_special | vec.out_of_range, name="force")
        special1 = p.reg(vec.s_special, name="special")
        snz1, sn1 = p.reg(vec.s_negzero, name="snz"), p.reg(vec.sn, name="sn")
        sn6 = p.delay(sn1, 5, name="sn")
        snz7 = p.delay(snz1, 6, name="snz7")
        lanes = []
        for k in range(L):
            pr = x.data[k]
            g_nan = vec.s_nan | (pr.dy.inf & (pr.dy.s == vec.s_inf_sign))
            lanes.append({
                "ok": p.reg(_lane_ok(cfg, x.count, x.last, k), name=f"ok{k}"),
                "kd": p.reg(pr.dy.e - vec.ed, es, name=f"kd{k}"),
                "ex": p.reg(pr.y.e + vec.ed, es, name=f"ex{k}"),
                # the result when s is not finite: NaN, or infinite with sign s_y xor s_g (s_g = not s's sign)
                "spec_nan": p.reg(g_nan | pr.y.zero, name=f"spn{k}"),
                "spec_sign": p.reg(pr.y.s ^ ~vec.s_inf_sign, name=f"sps{k}"),
                "my": p.reg(pr.y.m, name=f"my{k}"), "md": p.reg(pr.dy.m, name=f"md{k}"),
                "sy": p.reg(pr.y.s, name=f"sy{k}"), "sd": p.reg(pr.dy.s, name=f"sd{k}"),
                "zd": p.reg(pr.dy.zero, name=f"zd{k}")})
        results = []
        for k, ln in enumerate(lanes):
            # stage 2: DY's shift (sh = KD - kd, kd = e_dy - ed + B - 1 - Mt); e's constant part
            shd = Signal(es, name=f"shd{k}")
            m.d.comb += shd.eq((kd_l - (B - 1 - Mt)) - ln["kd"])
            sh2 = p.reg(_clamp(shd, 0, sh_d_max, sh_d_max.bit_length()), name=f"shd{k}")
            md2 = p.reg(ln["md"], name=f"md2_{k}")
            ex2 = p.reg(ln["ex"] + c2, xs, name=f"ex2_{k}")
            # stages 3-5: |DY|
            dym = _round_shift(m, p, md2, sh2, kd_l, f"dy{k}")
            sd5 = p.delay(ln["sd"], 4, name=f"sd{k}")
            # stage 6: DY signed
            dys = Signal(signed(B + 3), name=f"dys{k}")
            m.d.comb += dys.eq(dym)
            dy6 = p.reg(Mux(sd5, -dys, dys), signed(B + 3), name=f"dy6_{k}")
            dyz6 = p.reg(dym == 0, name=f"dyz6_{k}")
            # stage 7: G = DY - S'
            g7 = p.reg(dy6 - sn6, signed(d.GW), name=f"g7_{k}")
            dyz7 = p.reg(dyz6, name=f"dyz7_{k}")
            sd7 = p.delay(sd5, 2, name=f"sd7_{k}")
            zd7 = p.delay(ln["zd"], 6, name=f"zd7_{k}")
            # stage 8: |G| and the sign of g (G = 0: IEEE's sign of DY - S', spec step 3)
            gm8 = p.reg(Mux(g7 < 0, -g7, g7), unsigned(d.GW), name=f"gm8_{k}")
            sg_zero = Mux(dyz7, sd7 & ~(zd7 & snz7), 0)
            sg8 = p.reg(Mux(g7 != 0, g7 < 0, sg_zero), name=f"sg8_{k}")
            # stages 9-10: the leading one of |G| (kg)
            kg10, gz10 = _leading_one_2(m, p, gm8, f"lg{k}")
            gm10 = p.delay(gm8, 2, name=f"gm10_{k}")
            # stage 11: the normalising shift's amount; ek = kg + e_y + ed + c2 (e = n + ek)
            ex10 = p.delay(ex2, 8, name=f"ex10_{k}")
            up11 = p.reg(NW - 1 - kg10, unsigned(NW.bit_length()), name=f"up11_{k}")
            ek11 = p.reg(ex10 + kg10, xs, name=f"ek11_{k}")
            gm11 = p.reg(gm10, unsigned(NW), name=f"gm11_{k}")
            # stages 12-13: the leading one to the top; Pg = its W + 1 bits (truncated)
            norm = _shift_left_2(p, gm11, up11, NW, f"nm{k}")
            pg13 = norm[NW - 1 - W:NW]
            my13 = p.delay(ln["my"], 12, name=f"my13_{k}")
            # Z = m'_y * Pg
            z, mst = _multiply_en(m, p, my13, pg13, f"z{k}", platform)
            assert mst == self.mul_stages
            t = 13 + mst   # z's stage
            ek_t = p.delay(ek11, t - 11, name=f"ekt{k}")
            # leading one of Z (two stages): n
            n2, zz2 = _leading_one_2(m, p, z, f"lz{k}")
            z2 = p.delay(z, 2, name=f"zt{k}")
            ek2 = p.delay(ek_t, 2, name=f"ek2_{k}")
            # e = n + ek; the rounding shift's bounds (shm = h + M = min(max(n, 1 - ek), n + M + 2))
            e_a = p.reg(n2 + ek2, xs, name=f"e_{k}")
            lo_a = p.reg(Mux(n2 > (1 - ek2), n2, 1 - ek2), xs, name=f"hlo{k}")
            hi_a = p.reg(n2 + M + 2, xs, name=f"hhi{k}")
            z_a, zz_a = p.reg(z2, name=f"za{k}"), p.reg(zz2, name=f"zza{k}")
            shm_max = d.ZW + M + 2
            shm = p.reg(Mux(lo_a < hi_a, lo_a, hi_a).as_unsigned()[:shm_max.bit_length()], name=f"shm{k}")
            em1 = p.reg(Mux(e_a < 1, 0, e_a - 1), xs, name=f"em1_{k}")   # max(e, 1) - 1
            z_b, zz_b = p.reg(z_a, name=f"zb{k}"), p.reg(zz_a, name=f"zzb{k}")
            # the rounding shift: V2 = Z << (M + 1); K2 = V2 >> shm = keep and the round bit; sticky below
            vw = d.ZW + M + 1
            v2 = Signal(vw, name=f"v2_{k}")
            m.d.comb += v2.eq(z_b << (M + 1))
            mask = Signal(vw, name=f"mask{k}")
            m.d.comb += [mask[i].eq(shm > i) for i in range(vw)]
            masked = p.reg(v2 & mask, name=f"masked{k}")
            k2 = _shift_right_2(p, v2, shm, f"rs{k}")  # two stages
            sticky = p.reg(masked.any(), name=f"sticky{k}")
            em1_c = p.delay(em1, 2, name=f"em1c{k}")
            zz_c = p.delay(zz_b, 2, name=f"zzc{k}")
            # round: mag = ((max(e, 1) - 1) << M) + keep + up
            keep = k2[1:]
            up = k2[0] & (sticky | keep[0])
            mag_w = xs.width + M + 1
            mag = p.reg((em1_c.as_unsigned() << M) + keep + up, unsigned(mag_w), name=f"mag{k}")
            zz_d = p.reg(zz_c, name=f"zzd{k}")
            results.append((mag, zz_d, sg8, ln))
        # the pipeline's last register: overflow, zero, sign, special cases, lanes beyond count
        t_out = self.latency - 2
        out = Signal(output_out_layout(cfg), name="out_last_stage")
        vf = p.delay(v1, t_out, "vd")
        cnt_o, last_o = p.delay(cnt1, t_out - 1, "cd"), p.delay(last1, t_out - 1, "ld")
        last_r = p.reg(last_o, name="last_o")
        cnt_r = p.reg(cnt_o, name="cnt_o")
        m.d.comb += [out.last.eq(last_r), out.count.eq(cnt_r)]
        st = self.latency - 2  # mag's stage
        force_o = p.delay(force1, st - 1, name="force_o")
        special_o = p.delay(special1, st - 1, name="special_o")
        for k, (mag, zz, sg8, ln) in enumerate(results):
            sdx = Signal(name=f"sdx{k}")
            m.d.comb += sdx.eq(p.delay(ln["sy"], st - 1, name=f"sy_o{k}") ^ p.delay(sg8, st - 8, name=f"sg_o{k}"))
            inf = fmt.exp_max << M
            magc = Mux(zz, 0, Mux(mag >= inf, inf, mag))
            spec_nan = p.delay(ln["spec_nan"], st - 1, name=f"spn_o{k}")
            spec_sign = p.delay(ln["spec_sign"], st - 1, name=f"sps_o{k}")
            forced = Mux(special_o & ~spec_nan, Cat(Const(inf, cfg.width - 1), spec_sign), fmt.nan_bits)
            bits = Mux(force_o, forced, Cat(magc[:cfg.width - 1], sdx))
            okk = p.delay(ln["ok"], st - 1, name=f"okd{k}")
            m.d.comb += out.data[k].eq(p.reg(Mux(okk, bits, 0), unsigned(cfg.width), name=f"dx{k}"))
        # a two-entry skid buffer: the pipeline advances while its second entry is free, so that the enable of
        # every register above comes from one flip-flop, not from o.ready through logic
        a_v, b_v = Signal(name="skid_a_v"), Signal(name="skid_b_v")
        a_d, b_d = Signal(output_out_layout(cfg), name="skid_a"), Signal(output_out_layout(cfg), name="skid_b")
        m.d.comb += [adv.eq(~b_v), self.o.valid.eq(a_v), self.o.payload.eq(a_d)]
        push = adv & vf
        pop = a_v & self.o.ready
        with m.If(b_v):
            with m.If(pop):
                m.d.sync += [a_d.eq(b_d), b_v.eq(0)]
        with m.Elif(a_v & ~pop):
            with m.If(push):
                m.d.sync += [b_d.eq(out), b_v.eq(1)]
        with m.Else():
            m.d.sync += [a_v.eq(push), a_d.eq(out)]
        return m


# ---- malformed input: y and dy on streams of their own ----------------------------------------------------------

def unit_out_layout(cfg: SoftmaxConfig) -> data.StructLayout:
    """The output beats: the forward unit's (data, count, last, error)."""
    return data.StructLayout({"data": data.ArrayLayout(unsigned(cfg.width), cfg.lanes),
                              "count": unsigned(cfg.count_bits), "last": 1, "error": 1})


def operand_stream_layout(cfg: SoftmaxConfig) -> data.StructLayout:
    """A beat of y or dy alone: the forward's ``x`` beat (data, count, last)."""
    return data.StructLayout({"data": data.ArrayLayout(unsigned(cfg.width), cfg.lanes),
                              "count": unsigned(cfg.count_bits), "last": 1})


class BackwardZip(wiring.Component):
    """Pairs a ``y`` stream and a ``dy`` stream beat by beat into (y, dy) beats (`raw_layout`).

    The vector is y's: its length and its end are y's ``last`` and ``count``. A ``dy`` of another length is
    malformed and becomes a NaN in dy, which the arithmetic answers with every dx NaN and the error flag (spec
    step 0): a dy that ends first gives NaN dy lanes (the rest of its final beat and every later beat of y); a dy
    that goes on after y's last beat has the last beat's dy lanes replaced by NaN and its remaining beats
    consumed up to its own ``last`` and dropped; equal beat counts with other counts on the final beat give NaN
    dy lanes on that beat. No register on the data path (the decoder registers the beat as it comes)."""

    def __init__(self, cfg: SoftmaxConfig):
        self.cfg = cfg
        super().__init__({"y": In(stream.Signature(operand_stream_layout(cfg))),
                          "dy": In(stream.Signature(operand_stream_layout(cfg))),
                          "o": Out(stream.Signature(raw_layout(cfg)))})

    def elaborate(self, platform):
        cfg, L = self.cfg, self.cfg.lanes
        nan = cfg.float_format.nan_bits
        m = Module()
        dy_done = Signal()   # dy ended before y: y beats go on alone, with NaN dy
        drain = Signal()     # y ended before dy: dy beats are consumed and dropped
        y, dy, o = self.y.payload, self.dy.payload, self.o.payload

        def norm(c):
            return Mux((c == 0) | (c > L), L, c)

        pair = ~dy_done & ~drain
        m.d.comb += [o.count.eq(y.count), o.last.eq(y.last), [o.y[k].eq(y.data[k]) for k in range(L)]]
        # a beat goes out when y is there and (dy is there or dy has ended); draining outputs nothing
        m.d.comb += [self.o.valid.eq(~drain & self.y.valid & (dy_done | self.dy.valid)),
                     self.y.ready.eq(~drain & self.o.ready & (dy_done | self.dy.valid)),
                     self.dy.ready.eq(drain | (pair & self.y.valid & self.o.ready))]
        mism_last = y.last & dy.last & (norm(y.count) != norm(dy.count))
        dy_short = dy.last & ~y.last
        dy_long = y.last & ~dy.last
        for k in range(L):
            in_dy = Mux(dy.last, k < norm(dy.count), 1)
            bad = dy_done | ((mism_last | dy_long) & (k < norm(y.count))) | ~in_dy
            m.d.comb += o.dy[k].eq(Mux(bad, nan, dy.data[k]))
        with m.If(self.o.valid & self.o.ready):
            with m.If(y.last):
                m.d.sync += dy_done.eq(0)
                with m.If(pair & dy_long):
                    m.d.sync += drain.eq(1)
            with m.Elif(pair & dy_short):
                m.d.sync += dy_done.eq(1)
        with m.If(drain & self.dy.valid & dy.last):
            m.d.sync += drain.eq(0)
        return m


# ---- a standalone backward unit -----------------------------------------------------------------------------------

class BackwardUnit(wiring.Component):
    """The backward pass alone: ``y`` and ``dy`` streams in (`BackwardZip`), dx out (`unit_out_layout`).

    One vector at a time, in three phases on one buffer (a `RegisteredRam` of decoded pairs, max_len / L deep):

    - fill: `BackwardZip` -> `BackwardDecode` -> the buffer, and the vector's reductions (special-value flags,
      the largest dy exponent);
    - sum: the buffer read out through `BackwardProduct`, the lane sums of P and Yj (registered trees) and two
      exact accumulators, then `BackwardFinalise` (S');
    - output: the buffer read again (through an 8-deep FIFO that absorbs the read latency under stalls)
      into `BackwardOutput`, to ``o``.

    ``error`` is the vector's flag on each of its beats: any NaN or infinity in y or dy, a y out of range, or a
    dy of another length (which `BackwardZip` turns into a NaN in dy). A vector longer than ``max_len`` is read
    to its last beat and answered by one beat with ``error`` = 1, ``last`` = 1, ``count`` = 0 and zero data,
    as the forward unit does. The phases do not overlap (the reconfigurable unit runs them on the forward's
    bank ring); `golden.hyft_backward_cycles.backward_unit_cycles` is the exact cycle model."""

    READ_LATENCY = 2
    FIFO_DEPTH = 8

    def __init__(self, cfg: SoftmaxConfig):
        self.cfg = cfg
        self.zip = BackwardZip(cfg)
        self.dec = BackwardDecode(cfg)
        self.prod = BackwardProduct(cfg)
        self.fin = BackwardFinalise(cfg)
        self.outc = BackwardOutput(cfg)
        super().__init__({"y": In(stream.Signature(operand_stream_layout(cfg))),
                          "dy": In(stream.Signature(operand_stream_layout(cfg))),
                          "o": Out(stream.Signature(unit_out_layout(cfg)))})

    def elaborate(self, platform):
        cfg, d = self.cfg, backward_dims(self.cfg)
        L, DEPTH = cfg.lanes, cfg.depth
        m = Module()
        m.submodules.zip, m.submodules.dec = zp, dec = self.zip, self.dec
        m.submodules.prod, m.submodules.fin, m.submodules.outc = prod, fin, outc = self.prod, self.fin, self.outc
        PW = pair_layout(cfg).size
        m.submodules.ram = ram = RegisteredRam(L * PW, DEPTH)
        FILL, SUM, FIN, OUT, ERR = range(5)
        state = Signal(range(5))
        a_open = Signal(init=1)  # the fill phase takes a new vector

        # ---- fill
        wiring.connect(m, wiring.flipped(self.y), zp.y)
        wiring.connect(m, wiring.flipped(self.dy), zp.dy)
        m.d.comb += [dec.i.payload.eq(zp.o.payload), dec.i.valid.eq(zp.o.valid & a_open),
                     zp.o.ready.eq(dec.i.ready & a_open), dec.o.ready.eq(1)]
        with m.If(zp.o.valid & zp.o.ready & zp.o.payload.last):
            m.d.sync += a_open.eq(0)
        waddr = Signal(range(DEPTH + 1))
        first = Signal(init=1)
        r_pnan, r_pos, r_neg, r_nz, r_bad, r_over = (Signal(name=n) for n in ("r_pnan", "r_pos", "r_neg", "r_nz",
                                                                               "r_bad", "r_over"))
        r_ed = Signal(d.EB)
        beats = Signal(range(DEPTH + 1))
        nlast = Signal(cfg.count_bits)
        do = dec.o.payload
        in_room = waddr < DEPTH
        m.d.comb += [ram.w_addr.eq(waddr), ram.w_data.eq(Cat(*[do.data[k].as_value() for k in range(L)])),
                     ram.w_en.eq(dec.o.valid & in_room)]
        with m.If(dec.o.valid):
            n_ed = Mux(first | (do.ed > r_ed), do.ed, r_ed)
            n_over = ~in_room | (r_over & ~first)
            m.d.sync += [r_pnan.eq(do.p_nan | (r_pnan & ~first)), r_pos.eq(do.pos | (r_pos & ~first)),
                         r_neg.eq(do.neg | (r_neg & ~first)), r_nz.eq(do.negzero & (r_nz | first)),
                         r_bad.eq(do.bad_y | (r_bad & ~first)), r_over.eq(n_over), r_ed.eq(n_ed)]
            m.d.sync += [first.eq(do.last), waddr.eq(Mux(in_room, waddr + 1, waddr))]
            with m.If(do.last):
                m.d.sync += [waddr.eq(0), beats.eq(Mux(in_room, waddr + 1, waddr)),
                             nlast.eq(Mux((do.count == 0) | (do.count > L), L, do.count)),
                             state.eq(Mux(n_over, ERR, SUM))]
        s_nan = r_pnan | (r_pos & r_neg)
        s_special = s_nan | r_pos | r_neg
        out_of_range = r_bad & ~s_special

        # ---- sum: read every beat once into the product unit (always ready: its output meets the accumulators)
        raddr = Signal(range(DEPTH))
        b_issue = Signal()
        b_last = raddr == beats - 1
        m.d.comb += b_issue.eq(state == SUM)
        rd_v = [Signal(name=f"rd_v{i}") for i in range(self.READ_LATENCY)]
        rd_last = [Signal(name=f"rd_last{i}") for i in range(self.READ_LATENCY)]
        rd_cnt = [Signal(cfg.count_bits, name=f"rd_cnt{i}") for i in range(self.READ_LATENCY)]
        c_issue = Signal()
        issue = Signal()
        m.d.comb += issue.eq(b_issue | c_issue)
        m.d.comb += ram.r_addr.eq(raddr)
        with m.If(issue):
            m.d.sync += raddr.eq(Mux(b_last, 0, raddr + 1))
            with m.If(b_last & b_issue):
                m.d.sync += state.eq(FIN)
        m.d.sync += [rd_v[0].eq(issue), rd_last[0].eq(b_last), rd_cnt[0].eq(Mux(b_last, nlast, L))]
        for i in range(1, self.READ_LATENCY):
            m.d.sync += [rd_v[i].eq(rd_v[i - 1]), rd_last[i].eq(rd_last[i - 1]), rd_cnt[i].eq(rd_cnt[i - 1])]
        rv, rl, rc = rd_v[-1], rd_last[-1], rd_cnt[-1]
        in_sum = Signal()  # the read data belongs to the sum phase (else to the output phase)
        m.d.sync += in_sum.eq(Mux(rv & rl, 0, in_sum))
        with m.If(b_issue & (raddr == 0)):
            m.d.sync += in_sum.eq(1)
        words = [data.View(pair_layout(cfg), ram.r_data[k * PW:(k + 1) * PW]) for k in range(L)]
        pi = prod.i.payload
        m.d.comb += [prod.i.valid.eq(rv & in_sum), pi.count.eq(rc), pi.last.eq(rl), pi.ed.eq(r_ed),
                     [pi.data[k].eq(words[k]) for k in range(L)], prod.o.ready.eq(1)]
        sw, yw = d.SB + 2, d.SB + 1
        po = prod.o.payload
        s_beat, s_st = adder_tree(m, [po.p[k] for k in range(L)], sw, "psum")
        y_beat, _ = adder_tree(m, [Cat(po.yj[k], Const(0, 1)).as_signed() for k in range(L)], yw + 1, "ysum")
        t_v, t_last = Signal(), Signal()
        tv, tl = prod.o.valid, po.last
        for k in range(s_st):
            nv_, nl_ = Signal(name=f"tv{k}"), Signal(name=f"tl{k}")
            m.d.sync += [nv_.eq(tv), nl_.eq(tl)]
            tv, tl = nv_, nl_
        m.d.comb += [t_v.eq(tv), t_last.eq(tl)]
        acc_s, acc_y = Signal(signed(d.SB + 1)), Signal(unsigned(d.SB))
        acc_first = Signal(init=1)
        fin_v = Signal()
        new_s = Mux(acc_first, s_beat, acc_s + s_beat)
        new_y = Mux(acc_first, y_beat, acc_y + y_beat)
        m.d.sync += fin_v.eq(0)
        with m.If(t_v):
            m.d.sync += [acc_s.eq(new_s), acc_y.eq(new_y), acc_first.eq(t_last)]
            with m.If(t_last):
                m.d.sync += fin_v.eq(1)
        m.d.comb += [fin.i.valid.eq(fin_v), fin.i.payload.s.eq(acc_s), fin.i.payload.y.eq(acc_y),
                     fin.o.ready.eq(state == FIN)]
        r_sn = Signal(signed(d.SB + 1))
        with m.If(fin.o.valid & (state == FIN)):
            m.d.sync += [r_sn.eq(fin.o.payload.sn), state.eq(OUT)]

        # ---- output: read again, through a FIFO (room for every read in flight) into the output stage
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=L * PW + cfg.count_bits + 1, depth=self.FIFO_DEPTH)
        in_flight = Signal(range(self.READ_LATENCY + 2))
        m.d.comb += in_flight.eq(sum(rd_v[i] & ~in_sum for i in range(self.READ_LATENCY - 1)) + (rv & ~in_sum))
        c_busy = Signal()
        m.d.comb += c_issue.eq((state == OUT) & c_busy & (fifo.level + in_flight < self.FIFO_DEPTH))
        with m.If((state == FIN) & fin.o.valid):
            m.d.sync += c_busy.eq(1)
        with m.If(c_issue & b_last):
            m.d.sync += c_busy.eq(0)
        m.d.comb += [fifo.w_en.eq(rv & ~in_sum), fifo.w_data.eq(Cat(ram.r_data, rc, rl))]
        oi = outc.i.payload
        m.d.comb += [outc.i.valid.eq(fifo.r_rdy), fifo.r_en.eq(outc.i.ready),
                     [oi.data[k].eq(data.View(pair_layout(cfg), fifo.r_data[k * PW:(k + 1) * PW]))
                      for k in range(L)],
                     oi.count.eq(fifo.r_data[L * PW:L * PW + cfg.count_bits]), oi.last.eq(fifo.r_data[-1]),
                     oi.vec.ed.eq(r_ed), oi.vec.sn.eq(r_sn), oi.vec.s_negzero.eq(r_nz),
                     oi.vec.s_special.eq(s_special), oi.vec.s_nan.eq(s_nan), oi.vec.s_inf_sign.eq(r_neg),
                     oi.vec.out_of_range.eq(out_of_range)]
        o = self.o.payload
        err = s_special | out_of_range
        # the output stage's ready is o's alone (not muxed by the state: it enables every register of that
        # pipeline); in ERR the pipeline is empty, so nothing leaves it meanwhile
        m.d.comb += outc.o.ready.eq(self.o.ready)
        with m.If(state == ERR):
            m.d.comb += [self.o.valid.eq(1), o.error.eq(1), o.last.eq(1), o.count.eq(0)]
            with m.If(self.o.ready):
                m.d.sync += [state.eq(FILL), a_open.eq(1)]
        with m.Else():
            m.d.comb += [self.o.valid.eq(outc.o.valid), o.error.eq(err),
                         o.last.eq(outc.o.payload.last), o.count.eq(Mux(outc.o.payload.last, outc.o.payload.count, L)),
                         [o.data[k].eq(outc.o.payload.data[k]) for k in range(L)]]
            with m.If(outc.o.valid & self.o.ready & outc.o.payload.last):
                m.d.sync += [state.eq(FILL), a_open.eq(1)]
        return m
