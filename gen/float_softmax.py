"""The conventional floating-point softmax (cfg.arch = "float"): datapaths driven by gen/hyft.py's ring.

docs/float-baseline.md is the design, golden/float_softmax.py its bit-exact definition, and
accelkit/config/float_softmax.py (`baseline(cfg)`) every width, table and stage count, which
golden/hyft_cycles.py reads too. The pieces are functions that add registered stages to a `Pipe`
(`subtract`, `to_fixed`, `exp2`, `fadd`, `reciprocal`, `round_output`), each also wrapped in a small
`wiring.Component` (`FloatAdder`, `ExpUnit`, `Reciprocal`, `OutputRound`) that tests drive alone.

Working floats inside are `WF(m, E, z)`: significand m (P + 1 bits, its leading one included),
signed unbiased exponent E, zero flag z. In the buffer, e is packed as (fraction P bits, -E, z).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from accelkit.config.float_softmax import ADD_STAGES, C_STAGES, FloatBaseline, baseline
from accelkit.config.hyft import SoftmaxConfig

from .hyft import Pipe, clamp0, float_fields, leading_one
from .pipeline import registered_multiply


class WF:
    """A working float: m (P + 1 bits), E (signed), z."""

    def __init__(self, m, E, z):
        self.m, self.E, self.z = m, E, z

    def reg(self, p: Pipe, fb: FloatBaseline, name: str) -> WF:
        return WF(p.reg(self.m, unsigned(fb.P + 1), name=f"{name}_m"), p.reg(self.E, signed(fb.sum_exp_bits),
                  name=f"{name}_E"), p.reg(self.z, name=f"{name}_z"))

    def delay(self, p: Pipe, fb: FloatBaseline, n: int, name: str) -> WF:
        v = self
        for _ in range(n):
            v = v.reg(p, fb, name)
        return v


def zero_wf(fb: FloatBaseline) -> WF:
    return WF(Const(1 << fb.P, fb.P + 1), Const(0, signed(fb.sum_exp_bits)), Const(1, 1))


def pack_e(fb: FloatBaseline, m, E, z):
    """The buffer word of e: fraction (P bits), -E (e_exp_bits, E <= 0), zero flag."""
    return Cat(m[:fb.P], (-E)[:fb.e_exp_bits], z)


def dropped_any(m: Module, v, sh, name: str):
    """Whether v >> sh drops a one: v AND a thermometer mask of sh ones, beside the shifter rather than after it."""
    mask = Signal(len(v), name=f"{name}_mask")
    m.d.comb += [mask[i].eq(sh > i) for i in range(len(v))]
    return (v & mask).any()


def _rom(m: Module, name: str, values: list[int], width: int, addr):
    """A constant table read through a registered port: data the cycle after addr (one register stage)."""
    mem = Memory(shape=unsigned(width), depth=len(values), init=values)
    m.submodules[name] = mem
    rp = mem.read_port()
    m.d.comb += rp.addr.eq(addr)
    return rp.data


# ---- d = max - x ------------------------------------------------------------------------------------------

def subtract(m: Module, p: Pipe, fb: FloatBaseline, cfg: SoftmaxConfig, x_bits, max_bits, ok, name: str):
    """|d| = max - x rounded to nearest even at P + 1 bits (golden `subtract`), SUB_STAGES = 7 stages.

    Returns (dm, dE, dz, finite): finite = ok and x is neither inf nor NaN."""
    M, X, P, bias, EB = fb.M, fb.sub_extra, fb.P, fb.bias, cfg.exp_bits
    # stage 0: the bank's word (an EBR read, slow to leave the block RAM) and the max, registered as they are
    xr, mr, okr = p.reg(x_bits, name=f"{name}_xr"), p.reg(max_bits, name=f"{name}_mr"), p.reg(ok, name=f"{name}_ok")
    # stage 0b: decode, and both exponent differences
    sx, ex0, fx = float_fields(xr, cfg)
    sm, em0, fm = float_fields(mr, cfg)
    special = ex0 == cfg.float_format.exp_max
    normal = (ex0 != 0) & ~special
    exd = Mux(normal, ex0, 0)
    mx = p.reg(Mux(normal, Cat(fx, Const(1, 1)), 0), unsigned(M + 1), name=f"{name}_mx")
    ex_ = p.reg(exd, unsigned(EB), name=f"{name}_ex")
    mm = p.reg(Mux(em0 != 0, Cat(fm, Const(1, 1)), 0), unsigned(M + 1), name=f"{name}_mm")
    em = p.reg(em0, unsigned(EB), name=f"{name}_em")
    sub0 = p.reg(sm == sx, name=f"{name}_sub0")
    fin0 = p.reg(okr & ~special, name=f"{name}_fin0")
    dxm = p.reg(exd - em0, signed(EB + 2), name=f"{name}_dxm")
    dmx = p.reg(em0 - exd, signed(EB + 2), name=f"{name}_dmx")
    # the larger magnitude, by one compare of (exponent, mantissa); both exponent differences clamped beside it
    # (exponent, mantissa) compared as two compares side by side, not one chain over both
    x_big = (mx != 0) & ((ex_ > em) | ((ex_ == em) & (mx > mm)) | (mm == 0))
    eb = Mux(x_big, ex_, em)
    mb, ms = Mux(x_big, mx, mm), Mux(x_big, mm, mx)
    shmax = M + X + 2
    shb = shmax.bit_length()
    shx = Mux(mm == 0, 0, clamp0(dxm, shmax))[:shb]
    shm = Mux(mx == 0, 0, clamp0(dmx, shmax))[:shb]
    sh = Mux(x_big, shx, shm)
    # stage 1: compare and swap
    mb1, ms1 = p.reg(mb, unsigned(M + 1), name=f"{name}_mb"), p.reg(ms, unsigned(M + 1), name=f"{name}_ms")
    sh1 = p.reg(sh, unsigned(shmax.bit_length()), name=f"{name}_sh")
    eb1 = p.reg(eb, unsigned(cfg.exp_bits), name=f"{name}_eb")
    sub1 = p.reg(sub0, name=f"{name}_sub")
    fin1 = p.reg(fin0, name=f"{name}_fin")
    # stage 2: align the smaller one, its lost bits jammed into a sticky bit
    W = M + 1 + X
    bw = Signal(W, name=f"{name}_bw")
    m.d.comb += bw.eq(ms1 << X)
    bt = bw >> sh1
    sticky = dropped_any(m, bw, sh1, f"{name}_al")
    a2 = p.reg(mb1 << X, unsigned(W), name=f"{name}_a")
    b2 = p.reg(bt | sticky, unsigned(W), name=f"{name}_b")
    sub2, eb2, fin2 = p.reg(sub1, name=f"{name}_sub2"), p.reg(eb1, name=f"{name}_eb2"), p.reg(fin1, name=f"{name}_fin2")
    # stage 3: add or subtract the magnitudes
    RW = W + 1
    r3 = p.reg(Mux(sub2, a2 - b2, a2 + b2), unsigned(RW), name=f"{name}_r")
    eb3, fin3 = p.reg(eb2, name=f"{name}_eb3"), p.reg(fin2, name=f"{name}_fin3")
    # stage 4: leading one
    lead = leading_one(m, r3, f"{name}_lead")
    lead4 = p.reg(lead, name=f"{name}_lead4")
    r4, eb4, fin4 = p.reg(r3, name=f"{name}_r4"), p.reg(eb3, name=f"{name}_eb4"), p.reg(fin3, name=f"{name}_fin4")
    z4 = p.reg(r3 == 0, name=f"{name}_z4")
    # stage 5: normalise (the leading one to the top), keep P + 1 bits, a round bit and a sticky bit
    rn = Signal(RW, name=f"{name}_rn")
    m.d.comb += rn.eq(r4 << (RW - 1 - lead4)[:(RW - 1).bit_length()])
    keep5 = p.reg(rn[RW - 1 - P:RW], name=f"{name}_keep")
    rb5 = p.reg(rn[RW - 2 - P], name=f"{name}_rb")
    st5 = p.reg(rn[:RW - 2 - P] != 0, name=f"{name}_st")
    xs = signed(fb.d_exp_bits + 1)
    e5 = p.reg(eb4 - bias - M - X + lead4, xs, name=f"{name}_e5")
    e5p = p.reg(eb4 - bias - M - X + 1 + lead4, xs, name=f"{name}_e5p")
    z5, fin5 = p.reg(z4, name=f"{name}_z5"), p.reg(fin4, name=f"{name}_fin5")
    # stage 6: round to nearest even; a carry out moves into the exponent
    up = rb5 & (st5 | keep5[0])
    kr = Signal(P + 2, name=f"{name}_kr")
    m.d.comb += kr.eq(keep5 + up)
    carry = up & keep5.all()  # an all-ones significand rounded up: beside the increment, not after it
    dm = p.reg(Cat(kr[:P], kr[P] | carry), unsigned(P + 1), name=f"{name}_dm")
    dE = p.reg(Mux(carry, e5p, e5), xs, name=f"{name}_dE")
    dz, fin = p.reg(z5, name=f"{name}_dz"), p.reg(fin5, name=f"{name}_fin6")
    return dm, dE, dz, fin


# ---- t = |d| log2(e) on the fixed-point grid, n and f --------------------------------------------------------

def to_fixed(m: Module, p: Pipe, fb: FloatBaseline, dm, dE, dz, fin, name: str, platform=None):
    """MUL_STAGES + FIX_STAGES = 6 stages: (n, f, ez) with -|t| = n + f * 2^-FB, ez = e is zero."""
    P, FB = fb.P, fb.fix_bits
    # the product with its operands and itself registered (a MULT18X18D with its registers when it fits)
    c = Const(fb.log2e, unsigned(fb.log2e.bit_length()))
    fits = len(dm) <= 18 and len(c) <= 18
    q = registered_multiply(m, dm, c, f"{name}_q", platform if fits else None, en=p.en, signed_ops=False)
    q = q.as_unsigned()[:2 * P + 4]
    # shift right by s - 1, s = P - dE clamped to 1..2P+8 (beside the product); |d| >= 2^n_bits is dead anyway
    # s - 1 = P - 1 - dE clamped to 0..smax - 1: both limits compared on dE beside the subtraction
    sm1 = Signal(signed(len(dE) + 2), name=f"{name}_sm1")
    m.d.comb += sm1.eq(P - 1 - dE)
    smax_ = 2 * P + 8
    s1 = p.reg(Mux(dE >= P, 0, Mux(dE < P - smax_, smax_ - 1, sm1.as_unsigned()))[:smax_.bit_length()],
               unsigned(smax_.bit_length()), name=f"{name}_s1")
    big1 = p.reg(dE >= fb.n_bits, name=f"{name}_big1")
    z1, f1 = p.reg(dz, name=f"{name}_qz"), p.reg(fin, name=f"{name}_qf")
    s1, big1, z1, f1 = (p.reg(v, name=f"{name}_m{k}") for k, v in enumerate((s1, big1, z1, f1)))
    # the floor shift in two stages (floors compose): by s1's high bits (multiples of 4), then by its low two
    t0 = p.reg(q >> Cat(Const(0, 2), s1[2:]), unsigned(2 * P + 4), name=f"{name}_t0")
    s0 = p.reg(s1[:2], name=f"{name}_s0")
    big1, z1, f1 = p.reg(big1, name=f"{name}_big0"), p.reg(z1, name=f"{name}_z0"), p.reg(f1, name=f"{name}_f0")
    t1 = p.reg(t0 >> s0, unsigned(2 * P + 4), name=f"{name}_t1")
    big = p.reg(big1, name=f"{name}_big")
    z2, f2 = p.reg(z1, name=f"{name}_z2"), p.reg(f1, name=f"{name}_f2")
    tr = Signal(2 * P + 4, name=f"{name}_tr")
    m.d.comb += tr.eq((t1 + 1) >> 1)
    # (t1 + 1) >> 1 >= flush 2^FB exactly when t1 >= 2 flush 2^FB - 1: beside the increment, not after it
    dead = ~z2 & (big | (t1 >= (2 * fb.flush << FB) - 1))
    TB = FB + fb.n_bits
    tfix = p.reg(Mux(dead | z2, 0, tr[:TB]), unsigned(TB), name=f"{name}_tfix")
    ez = p.reg(dead | ~f2, name=f"{name}_ez")
    tneg = Signal(signed(TB + 1), name=f"{name}_tneg")
    m.d.comb += tneg.eq(-tfix)
    f = p.reg(tneg[:FB], unsigned(FB), name=f"{name}_f")
    nneg = p.reg((tfix + (1 << FB) - 1) >> FB, unsigned(fb.e_exp_bits), name=f"{name}_nneg")  # -n = ceil(|t|)
    ez3 = p.reg(ez, name=f"{name}_ez3")
    return nneg, f, ez3


# ---- 2^f ---------------------------------------------------------------------------------------------------

def exp2(m: Module, p: Pipe, fb: FloatBaseline, nneg, f, ez, name: str, platform=None):
    """e = 2^f * 2^n (nneg = -n), 3 degree + 3 stages: the table's read and its data registered, per degree
    (Horner) a registered multiply (2 stages) and an add, the rounding to P fraction bits. Returns the packed e."""
    P, Q, wb, D = fb.P, fb.coef_frac, fb.w_bits, fb.degree
    k, _, table = fb.exp_table
    widths = [max(max(c[i] for c in table).bit_length(), 1) for i in range(D + 1)]
    packed = []
    for c in table:
        v, sh = 0, 0
        for i in range(D + 1):
            v |= c[i] << sh
            sh += widths[i]
        packed.append(v)
    rom = _rom(m, f"{name}_rom", packed, sum(widths), f[wb:])
    w = p.reg(f[:wb], name=f"{name}_w")
    nn, zz = p.reg(nneg, name=f"{name}_n1"), p.reg(ez, name=f"{name}_z1")
    nn1 = p.reg(nneg - 1, unsigned(fb.e_exp_bits), name=f"{name}_n1m")
    # the ROM's data registered before any logic (an EBR's clock-to-out is most of a cycle)
    rom = p.reg(rom, name=f"{name}_romq")
    w, nn, nn1, zz = (p.reg(v, name=f"{name}_q{k}") for k, v in enumerate((w, nn, nn1, zz)))
    coef, sh = [], 0
    for i in range(D + 1):
        coef.append(rom[sh:sh + widths[i]])
        sh += widths[i]
    acc = coef[D]
    later = {i: coef[i] for i in range(D)}
    for i in range(D - 1, -1, -1):
        # the product with its operands and itself registered (a MULT18X18D with its registers when it fits)
        fits = len(acc) <= 18 and len(w) <= 18
        prod = registered_multiply(m, acc, w, f"{name}_p{i}", platform if fits else None, en=p.en,
                                   signed_ops=False).as_unsigned()[:len(acc) + wb]
        for stage in ("a", "b"):
            later = {j: p.reg(c, name=f"{name}_c{j}_{i}{stage}") for j, c in later.items()}
            w = p.reg(w, name=f"{name}_w{i}{stage}")
            nn, nn1 = p.reg(nn, name=f"{name}_nn{i}{stage}"), p.reg(nn1, name=f"{name}_nm{i}{stage}")
            zz = p.reg(zz, name=f"{name}_zz{i}{stage}")
        acc = p.reg(later.pop(i) + (prod >> wb), unsigned(Q + 2), name=f"{name}_a{i}")
        later = {j: p.reg(c, name=f"{name}_d{j}_{i}") for j, c in later.items()}
        w = p.reg(w, name=f"{name}_v{i}")
        nn, nn1, zz = p.reg(nn, name=f"{name}_mm{i}"), p.reg(nn1, name=f"{name}_ml{i}"), p.reg(zz, name=f"{name}_yy{i}")
    mr = Signal(P + 2, name=f"{name}_mr")
    m.d.comb += mr.eq((acc + (1 << (Q - P - 1))) >> (Q - P))
    carry = mr[P + 1]  # 2^f rounded up to 2: e = 2^(n+1), -E = nneg - 1 (n < 0 whenever f > 0)
    frac = Mux(carry, mr[1:P + 1], mr[:P])
    return p.reg(Cat(frac, Mux(carry, nn1, nn), zz), unsigned(fb.e_bits), name=f"{name}_e")


def exp_lane(m: Module, p: Pipe, fb: FloatBaseline, cfg: SoftmaxConfig, x_bits, max_bits, ok, name: str,
             platform=None):
    """The whole per-element B datapath: x, max -> packed e (b_wb stages)."""
    dm, dE, dz, fin = subtract(m, p, fb, cfg, x_bits, max_bits, ok, f"{name}s")
    nneg, f, ez = to_fixed(m, p, fb, dm, dE, dz, fin, f"{name}t", platform)
    return exp2(m, p, fb, nneg, f, ez, f"{name}x", platform)


# ---- the float adder ---------------------------------------------------------------------------------------

def fadd(m: Module, p: Pipe, fb: FloatBaseline, a: WF, b: WF, name: str) -> WF:
    """a + b of non-negative working floats, round to nearest even at P + 1 bits: ADD_STAGES = 5 stages."""
    P = fb.P
    XB = fb.sum_exp_bits

    def ekey(v: WF):  # the exponent as an unsigned number: the sign bit flipped
        return Cat(v.E[:XB - 1], ~v.E[XB - 1])

    # stage 0: the operands registered beside the carry chains that decide the swap: both exponent differences
    # and the (exponent, significand) compares, each on the operands, side by side
    dab = p.reg(a.E - b.E, signed(XB + 1), name=f"{name}_dab")
    dba = p.reg(b.E - a.E, signed(XB + 1), name=f"{name}_dba")
    e_gt = p.reg(ekey(a) > ekey(b), name=f"{name}_egt")
    e_eq = p.reg(ekey(a) == ekey(b), name=f"{name}_eeq")
    m_ge = p.reg(a.m >= b.m, name=f"{name}_mge")
    a0, b0 = a.reg(p, fb, f"{name}_a0"), b.reg(p, fb, f"{name}_b0")
    # stage 1: compare and swap; a difference beyond the significand saturates to all ones (its top bits, no
    # compare): a shift of P + 4 or more leaves only the sticky bit, as the clamp at P + 4 does. A negative one
    # only reaches the shifter with a zero smaller operand, which is replaced by 0.
    a_big = b0.z | (~a0.z & (e_gt | (e_eq & m_ge)))
    shw = (P + 4).bit_length()

    def sat(d):
        return Mux(d[shw:].any(), (1 << shw) - 1, d[:shw])

    sh = Mux(a_big, sat(dab), sat(dba))
    mb1 = p.reg(Mux(a_big, a0.m, b0.m), unsigned(P + 1), name=f"{name}_mb")
    ms1 = p.reg(Mux(a_big, b0.m, a0.m), unsigned(P + 1), name=f"{name}_ms")
    zs1 = p.reg(Mux(a_big, b0.z, a0.z), name=f"{name}_zs")
    e1 = p.reg(Mux(a_big, a0.E, b0.E), signed(fb.sum_exp_bits), name=f"{name}_e1")
    sh1 = p.reg(sh, unsigned(shw), name=f"{name}_sh")
    z1 = p.reg(a0.z & b0.z, name=f"{name}_z1")
    # stage 2: align with a jammed sticky bit
    W = P + 4
    bw = Signal(W, name=f"{name}_bw")
    m.d.comb += bw.eq(ms1 << 3)
    bt = bw >> sh1
    sticky = dropped_any(m, bw, sh1, f"{name}_al")
    a2 = p.reg(mb1 << 3, unsigned(W), name=f"{name}_a2")
    b2 = p.reg(Mux(zs1, 0, bt | sticky), unsigned(W), name=f"{name}_b2")
    e2, z2 = p.reg(e1, name=f"{name}_e2"), p.reg(z1, name=f"{name}_z2")
    # stage 3: add
    s3 = p.reg(a2 + b2, unsigned(W + 1), name=f"{name}_s3")
    e3, z3 = p.reg(e2, name=f"{name}_e3"), p.reg(z2, name=f"{name}_z3")
    e3p1 = p.reg(e2 + 1, signed(XB), name=f"{name}_e3p1")
    e3p2 = p.reg(e2 + 2, signed(XB), name=f"{name}_e3p2")
    # stage 4: a carry shifts right by one (jammed), round to nearest even, a carry out of the rounding
    hi = s3[W]
    sn = Mux(hi, Cat(s3[1] | s3[0], s3[2:W + 1]), s3[:W])
    up = sn[2] & (sn[1] | sn[0] | sn[3])
    kr = Signal(P + 2, name=f"{name}_kr")
    m.d.comb += kr.eq(sn[3:] + up)
    # the rounding carries out exactly when it rounds up an all-ones significand: an AND tree on s3 for either
    # place of the leading one, beside the increment (the exponent's select does not wait for the carry chain);
    # the significand is then 2^(P+1) >> 1 = 2^P, kr's top bit moved down
    carry = up & Mux(hi, s3[4:W + 1].all(), s3[3:W].all())
    E = Mux(hi & carry, e3p2, Mux(hi | carry, e3p1, e3))
    out = WF(Mux(z3, 1 << P, Cat(kr[:P], kr[P] | carry)), Mux(z3, 0, E), z3)
    return out.reg(p, fb, f"{name}_o")


def add_tree(m: Module, p: Pipe, fb: FloatBaseline, vals: list[WF], name: str) -> WF:
    """Pairwise tree: (0+1), (2+3), ... per level; an odd one out goes up a level unchanged (delayed as an adder),
    ceil(log2(len(vals))) levels (golden `_tree`)."""
    level = 0
    while len(vals) > 1:
        nxt = [fadd(m, p, fb, vals[i], vals[i + 1], f"{name}{level}_{i // 2}") for i in range(0, len(vals) - 1, 2)]
        if len(vals) % 2:
            nxt.append(vals[-1].delay(p, fb, ADD_STAGES, f"{name}{level}_odd"))
        vals = nxt
        level += 1
    return vals[0]


# ---- 1/sum -------------------------------------------------------------------------------------------------

def reciprocal(m: Module, p: Pipe, fb: FloatBaseline, Sm, name: str, platform=None):
    """r ~ 2^(R+P) / Sm (golden `reciprocal`): the table's registered read, then NR_STAGES per Newton-Raphson step,
    each multiply a `registered_multiply` (a MULT18X18D with its registers when it fits, as for bf16 and fp16)."""
    P, R = fb.P, fb.R
    kr, steps, table = fb.recip_table
    r = _rom(m, f"{name}_rom", list(table), R + 1, Sm[P - kr:P])
    sm = p.reg(Sm, name=f"{name}_sm")
    pow2 = p.reg(Sm[:P] == 0, name=f"{name}_pow2")
    r, sm, pow2 = p.reg(r, name=f"{name}_romq"), p.reg(sm, name=f"{name}_smq"), p.reg(pow2, name=f"{name}_p2q")
    def carry(tag: str):
        return p.reg(r, name=f"{name}_r{tag}"), p.reg(sm, name=f"{name}_sm{tag}"), p.reg(pow2, name=f"{name}_p{tag}")

    for i in range(steps):
        fits = len(sm) <= 18 and len(r) <= 18
        prod = registered_multiply(m, sm, r, f"{name}_prod{i}", platform if fits else None, en=p.en,
                                   signed_ops=False).as_unsigned()[:P + R + 2]
        r, sm, pow2 = carry(f"{i}a")
        r, sm, pow2 = carry(f"{i}m")
        # |2^R - Sm r / 2^P| < 2^(R-kr) after the table (and smaller after a step): R - kr + 2 bits signed
        delta = p.reg((1 << R) - (prod >> P), signed(R - kr + 2), name=f"{name}_delta{i}")
        r, sm, pow2 = carry(f"{i}b")
        # r < 2^R until a power-of-two sum, whose r is replaced by 2^R at the end: R bits into the multiplier
        rs = Cat(r[:R], Const(0, 1)).as_signed()
        fits = len(rs) <= 18 and len(delta) <= 18
        rd = registered_multiply(m, rs, delta, f"{name}_rd{i}", platform if fits else None, en=p.en)
        r, sm, pow2 = carry(f"{i}c")
        r, sm, pow2 = carry(f"{i}n")
        nr = r + (rd >> R)
        if i == steps - 1:
            nr = Mux(pow2, 1 << R, nr)
        r = p.reg(nr, unsigned(R + 1), name=f"{name}_r{i}")
        sm, pow2 = p.reg(sm, name=f"{name}_sm{i}"), p.reg(pow2, name=f"{name}_p{i}")
    return r


# ---- y = e r, rounded to the format ---------------------------------------------------------------------------

def round_output(m: Module, p: Pipe, fb: FloatBaseline, cfg: SoftmaxConfig, em, nE, r, SE, name: str,
                 platform=None):
    """y = em * r * 2^(-nE - P - R - SE) rounded to nearest even with gradual underflow (golden `output`): 3
    registered stages, then the rounding's add, which feeds the caller's output register. Returns the bits.

    em * r is a `registered_multiply` (its operands and product registered: on ECP5 one MULT18X18D with its own
    registers when both fit 18 bits unsigned, as for bf16 and fp16); em, nE, r and SE should come from
    registers (in the ring: the bank select register and the vector's value). Z's leading one is at P + R or
    P + R - 1; normalised to P + R, the bits dropped are K + u, K = P + R - M and u = min(max(0, 1 - e), M + 2)
    (e the biased exponent): a fixed shift by K - 2 (its bits into a sticky bit), then a variable one of at most
    M + 2 on M + 3 bits."""
    P, R, M, bias = fb.P, fb.R, cfg.man_bits, cfg.bias
    K = P + R - M
    ZB = P + R + 2
    XB = fb.sum_exp_bits + 4
    fits = len(em) <= 18 and len(r) <= 18
    z1 = registered_multiply(m, em, r, f"{name}_mul", platform if fits else None, en=p.en, signed_ops=False)
    z1 = z1.as_unsigned()[:ZB]
    # beside the multiplier's two stages: bias - 1 - SE, then the biased exponent when Z < 2^(P+R)
    kse = p.reg((bias - 1) - SE, signed(XB), name=f"{name}_kse")
    ne1 = p.reg(nE, name=f"{name}_ne")
    e0 = p.reg(kse - ne1, signed(XB), name=f"{name}_e0")
    # stage 2: normalise; the exponent and u for both places of the leading one, chosen by it
    hi = z1[P + R]
    zn = Mux(hi, z1, z1 << 1)[:ZB - 1]
    ub = (M + 2).bit_length()

    def under(c: int):  # min(max(0, c - e0), M + 2): both limits compared on e0, beside the few bits of c - e0
        return Mux(e0 > c - 1, 0, Mux(e0 < c - (M + 2), M + 2, (c - e0[:ub])[:ub]))

    e0p = Signal(signed(XB), name=f"{name}_e0p")
    m.d.comb += e0p.eq(e0 + 1)
    kw = p.reg(zn[K - 2:], unsigned(M + 3), name=f"{name}_kw")
    st0 = p.reg(zn[:K - 2] != 0, name=f"{name}_st0")
    u2 = p.reg(Mux(hi, under(0), under(1)), unsigned(ub), name=f"{name}_u")  # 1 - e for e = e0 + 1 or e0
    eo = p.reg(Mux(hi, Mux(e0 >= 0, e0p, 1), Mux(e0 >= 1, e0, 1)).as_unsigned()[:XB - 1], unsigned(XB - 1),
               name=f"{name}_eo")
    # stage 3: the variable shift, the round bit and a sticky bit
    sh = kw >> u2
    lost = dropped_any(m, kw, u2, f"{name}_lo")
    keep3 = p.reg(sh[2:], unsigned(M + 1), name=f"{name}_keep")
    up3 = p.reg(sh[1] & (sh[0] | lost | st0 | sh[2]), name=f"{name}_up")
    e3 = p.reg(eo, name=f"{name}_e3")
    mag = (e3 << M) + keep3 + up3 - (1 << M)
    return mag[:cfg.width]


# ---- the datapath the ring drives ------------------------------------------------------------------------------

class FloatDatapath:
    """B: e = exp(x - max) per lane (written back, then summed by the adder tree); the vector's sum by
    ADD_STAGES interleaved partial sums and a combine tree, then 1/sum. C: y = e * (1/sum), rounded."""

    def __init__(self, cfg: SoftmaxConfig, platform=None):
        self.cfg = cfg
        self.platform = platform  # the ring sets it at elaboration: "ecp5" maps C's multiplies to MULT18X18D
        self.fb = fb = baseline(cfg)
        st = fb.pipeline()
        self.B_WB, self.B_P, self.B_BEAT, self.FIN, self.C_OUT = (st["b_wb"], st["b_p"], st["b_beat"], st["fin"],
                                                                  st["c_out"])

    @property
    def vec_shape(self):
        return unsigned(self.fb.vec_bits)

    def unpack(self, word) -> WF:
        fb = self.fb
        P, XB = fb.P, fb.e_exp_bits
        return WF(Cat(word[:P], Const(1, 1)), -(word[P:P + XB].as_unsigned()), word[P + XB])

    def b_lane(self, m: Module, p: Pipe, word, lane_ok, max_bits, lane: int):
        e = exp_lane(m, p, self.fb, self.cfg, word[:self.cfg.width], max_bits, lane_ok, f"l{lane}", self.platform)
        return e, e

    def b_beat(self, m: Module, p: Pipe, lanes_e: list):
        fb = self.fb
        return add_tree(m, p, fb, [self.unpack(e) for e in lanes_e], "tree")

    def vector_value(self, m: Module, p: Pipe, beat: WF, tags: dict):
        """The beat sums of a vector (one a cycle, from its first to its last) -> (r, SE) packed, its valid and
        bank, 1 + FIN cycles after the last beat sum."""
        fb = self.fb
        A = fb.partials
        sb = max((A - 1).bit_length(), 1)
        # the beat's place: partial slot (beat index mod A), and whether that slot already holds a partial
        slot, full = Signal(sb, name="acc_slot"), Signal(name="acc_full")
        cur_slot = Mux(tags["first"] | (slot == A - 1), 0, (slot + 1)[:sb]) if A > 1 else Const(0, sb)
        cur_full = ~tags["first"] & (full | (slot == A - 1))
        with m.If(tags["v"]):
            m.d.sync += [slot.eq(cur_slot), full.eq(cur_full)]
        out = Signal(fb.P + 1, name="acc_out_m"), Signal(signed(fb.sum_exp_bits), name="acc_out_E"), \
            Signal(name="acc_out_z")
        fed = WF(*out)
        zero = zero_wf(fb)
        other = WF(Mux(cur_full, fed.m, zero.m), Mux(cur_full, fed.E, zero.E), Mux(cur_full, fed.z, zero.z))
        res = fadd(m, p, fb, beat, other, "acc")
        m.d.comb += [out[0].eq(res.m), out[1].eq(res.E), out[2].eq(res.z)]
        dly = {n: p.delay(tags[n], ADD_STAGES, name=f"acc_{n}") for n in ("v", "first", "last", "bank")}
        oslot = p.delay(cur_slot, ADD_STAGES, name="acc_oslot")
        parts = [WF(Signal(fb.P + 1, name=f"part{s}_m"), Signal(signed(fb.sum_exp_bits), name=f"part{s}_E"),
                    Signal(name=f"part{s}_z")) for s in range(A)]
        snap = []
        for s, pt in enumerate(parts):
            mine = oslot == s
            keep_old = ~dly["first"]
            vm = Mux(mine, res.m, Mux(keep_old, pt.m, zero.m))
            vE = Mux(mine, res.E, Mux(keep_old, pt.E, zero.E))
            vz = Mux(mine, res.z, Mux(keep_old, pt.z, 1))
            with m.If(dly["v"]):
                m.d.sync += [pt.m.eq(vm), pt.E.eq(vE), pt.z.eq(vz)]
            snap.append(WF(vm, vE, vz))
        total = add_tree(m, p, fb, snap, "comb")
        t_v = p.delay(dly["v"] & dly["last"], ADD_STAGES * fb.combine_levels, name="comb_v")
        t_bank = p.delay(dly["bank"], ADD_STAGES * fb.combine_levels, name="comb_bank")
        r = reciprocal(m, p, fb, total.m, "recip", self.platform)
        se = p.delay(total.E, fb.recip_stages, name="recip_se")
        v = p.delay(t_v, fb.recip_stages, name="recip_v")
        bank = p.delay(t_bank, fb.recip_stages, name="recip_bank")
        return Cat(r, se), v, bank

    def c_lane(self, m: Module, p: Pipe, word, vec, lane: int):
        fb = self.fb
        # the bank's word (the ring's bank select register) straight into the multiplier's operand registers
        P, XB = fb.P, fb.e_exp_bits
        em, nE, ez = Cat(word[:P], Const(1, 1)), word[P:P + XB], word[P + XB]
        r, SE = vec[:fb.R + 1], vec[fb.R + 1:].as_signed()
        live = p.delay(~ez, C_STAGES, name=f"clive{lane}")
        bits = round_output(m, p, fb, self.cfg, em, nE, r, SE, f"y{lane}", self.platform)
        return live, bits


# ---- the pieces as components, for tests ------------------------------------------------------------------------

class ExpUnit(wiring.Component):
    """x and the vector's max (raw bits) -> e packed, b_wb cycles later."""

    def __init__(self, cfg: SoftmaxConfig):
        self.cfg, self.fb = cfg, baseline(cfg)
        super().__init__({"x": In(cfg.width), "max": In(cfg.width), "ok": In(1), "e": Out(self.fb.e_bits)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.e.eq(exp_lane(m, Pipe(m, "u"), self.fb, self.cfg, self.x, self.max, self.ok, "u",
                                       platform))
        return m


class FloatAdder(wiring.Component):
    """a + b of working floats, ADD_STAGES cycles later."""

    def __init__(self, cfg: SoftmaxConfig):
        self.fb = fb = baseline(cfg)
        wf = {"m": fb.P + 1, "E": signed(fb.sum_exp_bits), "z": 1}
        super().__init__({**{f"a_{k}": In(v) for k, v in wf.items()}, **{f"b_{k}": In(v) for k, v in wf.items()},
                          **{f"o_{k}": Out(v) for k, v in wf.items()}})

    def elaborate(self, platform):
        m = Module()
        o = fadd(m, Pipe(m, "u"), self.fb, WF(self.a_m, self.a_E, self.a_z), WF(self.b_m, self.b_E, self.b_z), "u")
        m.d.comb += [self.o_m.eq(o.m), self.o_E.eq(o.E), self.o_z.eq(o.z)]
        return m


class Reciprocal(wiring.Component):
    """Sm (P + 1 bits) -> r, recip_stages cycles later."""

    def __init__(self, cfg: SoftmaxConfig):
        self.fb = fb = baseline(cfg)
        super().__init__({"sm": In(fb.P + 1), "r": Out(fb.R + 1)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.r.eq(reciprocal(m, Pipe(m, "u"), self.fb, self.sm, "u", platform))
        return m


class OutputRound(wiring.Component):
    """e (packed) and the vector's (r, SE) -> y bits, C_STAGES cycles later (advancing while `en`)."""

    def __init__(self, cfg: SoftmaxConfig):
        self.cfg, self.fb = cfg, baseline(cfg)
        super().__init__({"e": In(self.fb.e_bits), "vec": In(self.fb.vec_bits), "en": In(1, init=1),
                          "y": Out(cfg.width), "live": Out(1)})

    def elaborate(self, platform):
        m = Module()
        live, bits = FloatDatapath(self.cfg, platform).c_lane(m, Pipe(m, "u", en=self.en), self.e, self.vec, 0)
        m.d.comb += [self.y.eq(bits), self.live.eq(live)]
        return m


__all__ = ["WF", "ExpUnit", "FloatAdder", "FloatDatapath", "OutputRound", "Reciprocal", "add_tree", "exp2",
           "exp_lane", "fadd", "pack_e", "reciprocal", "round_output", "subtract", "to_fixed"]
