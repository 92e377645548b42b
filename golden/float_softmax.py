"""The conventional floating-point softmax baseline (cfg.arch = "float"), bit-exact: the definition its RTL
implements (docs/float-baseline.md).

Integer arithmetic on int64 tensors, vectorised over the elements; the widths and tables are
`accelkit.config.float_softmax.baseline(cfg)`'s (the generator reads the same). A working float is a
triple (m, E, z): significand m in [2^P, 2^(P+1)) (P fraction bits), unbiased exponent E, zero flag z;
its value is m * 2^(E - P), or 0 when z. `>>` is an arithmetic shift (floor).

    float_softmax(x, cfg)            softmax over the last dimension, x in cfg's dtype
    float_softmax_bits(bits, cfg)    the same on raw bit patterns (int64)

Special values, the max, and the stream's behaviour (oversize vectors, beats) are the Hyft unit's
(golden/hyft.py): NaN or +inf anywhere, or every element -inf, gives all NaN; a -inf element gives +0;
subnormal inputs are read as zero. N = 1 gives exactly 1.0, and so do the outputs of 2^k equal maxima
alone (2^-k): a sum that is a power of two has an exact reciprocal.
"""

from __future__ import annotations

import torch

from accelkit.config.float_softmax import FloatBaseline, baseline
from accelkit.config.hyft import SoftmaxConfig

from .hyft import (
    _order_key,
    bits_to_float,
    decode_float,
    float_to_bits,
    leading_one,
    round_float,
    softmax_ref,
)

__all__ = ["exp_stage", "fadd", "float_softmax", "float_softmax_bits", "reciprocal", "round_rne", "subtract",
           "to_fixed", "vector_sum", "output"]


def _z(t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(t)


def round_rne(v: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """v >> drop rounded to nearest, ties to even (v >= 0; drop <= 0 shifts left, exactly)."""
    d = drop.clamp(min=0)
    keep = v >> d
    rem = v - (keep << d)
    half = torch.where(d > 0, 1 << (d - 1).clamp(min=0), _z(d))
    up = (d > 0) & ((rem > half) | ((rem == half) & ((keep & 1) == 1)))
    return torch.where(drop > 0, keep + up.to(torch.int64), v << (-drop).clamp(min=0))


def subtract(sx, Ex, mx_, sm, Em, mm, fb: FloatBaseline):
    """d = mx - x >= 0 (operands decoded, m = 0 for zero), rounded to nearest even at P + 1 bits: (m, E, z).

    The larger magnitude's significand is placed X = g + 3 bits up, the smaller one aligned to it with a
    jammed sticky bit, added or subtracted: exact enough for a correct rounding (docs/float-baseline.md).
    """
    M, X, P = fb.M, fb.sub_extra, fb.P
    x_big = (mx_ != 0) & ((Ex > Em) | ((Ex == Em) & (mx_ > mm)) | (mm == 0))
    Eb, Es = torch.where(x_big, Ex, Em), torch.where(x_big, Em, Ex)
    mb, ms = torch.where(x_big, mx_, mm), torch.where(x_big, mm, mx_)
    sh = torch.where(ms == 0, _z(Eb), (Eb - Es).clamp(max=M + X + 2))
    a = mb << X
    bw = ms << X
    bt = bw >> sh
    b = bt | ((bt << sh) != bw).to(torch.int64)
    r = torch.where(sm == sx, a - b, a + b)
    zero = r == 0
    lead = leading_one(r)
    keep = round_rne(r, lead - P)
    carry = keep >> (P + 1)
    m = torch.where(zero, torch.full_like(r, 1 << P), keep >> carry)
    E = Eb - M - X + lead + carry
    return m, torch.where(zero, _z(E), E), zero


def to_fixed(dm, dE, dz, fb: FloatBaseline):
    """|t| = |d| * log2(e) on the grid 2^-FB, rounded to nearest (ties up): (tfix, dead). Dead: |t| >= flush."""
    P, FB, Cf = fb.P, fb.fix_bits, fb.log2e_frac
    big = dE >= fb.n_bits
    q = dm * fb.log2e
    s = (P + Cf - FB - dE).clamp(min=1, max=2 * P + 8)  # right shift; dE < n_bits <= P keeps it >= 1
    tfix = ((q >> (s - 1)) + 1) >> 1
    tfix = torch.where(dz, _z(tfix), tfix)
    dead = ~dz & (big | (tfix >= fb.flush << FB))
    return torch.where(dead, _z(tfix), tfix), dead


def exp_stage(tfix, fb: FloatBaseline):
    """e = 2^-|t| as a working float (m, E): n = floor(-|t|), f = -|t| - n, 2^f from the segment table."""
    FB, wb, Q, P = fb.fix_bits, fb.w_bits, fb.coef_frac, fb.P
    tneg = -tfix
    n = tneg >> FB
    f = tneg & ((1 << FB) - 1)
    j = f >> wb
    w = f & ((1 << wb) - 1)
    tab = torch.tensor(fb.exp_table[2], dtype=torch.int64)  # (segments, degree + 1)
    acc = tab[j, fb.degree]
    for i in range(fb.degree - 1, -1, -1):
        acc = tab[j, i] + ((acc * w) >> wb)
    m = (acc + (1 << (Q - P - 1))) >> (Q - P)
    carry = m >> (P + 1)
    return m >> carry, n + carry


def fadd(a, b, fb: FloatBaseline):
    """a + b of non-negative working floats, rounded to nearest even at P + 1 bits (an exact result is kept)."""
    (ma, Ea, za), (mb, Eb, zb) = a, b
    P = fb.P
    a_big = zb | (~za & ((Ea > Eb) | ((Ea == Eb) & (ma >= mb))))
    Ebig = torch.where(a_big, Ea, Eb)
    mbig, msm = torch.where(a_big, ma, mb), torch.where(a_big, mb, ma)
    zsm = torch.where(a_big, zb, za)
    sh = (Ebig - torch.where(a_big, Eb, Ea)).clamp(min=0, max=P + 4)
    bw = msm << 3
    bt = bw >> sh
    bj = torch.where(zsm, _z(bt), bt | ((bt << sh) != bw).to(torch.int64))
    s = (mbig << 3) + bj
    hi = s >> (P + 4)  # the carry: shift right by one, the lost bit jammed
    s = torch.where(hi == 1, (s >> 1) | (s & 1), s)
    keep = round_rne(s, torch.full_like(s, 3))
    carry = keep >> (P + 1)
    m = keep >> carry
    E = Ebig + hi + carry
    z = za & zb
    return torch.where(z, torch.full_like(m, 1 << P), m), torch.where(z, _z(E), E), z


def _tree(vals, fb: FloatBaseline):
    """Pairwise tree over the last dimension: (0+1), (2+3), ... per level; an odd one out goes up a level as it
    is (ceil(log2 n) levels)."""
    m, E, z = vals
    while m.shape[-1] > 1:
        n = m.shape[-1] - m.shape[-1] % 2
        sm, sE, sz = fadd((m[..., 0:n:2], E[..., 0:n:2], z[..., 0:n:2]), (m[..., 1:n:2], E[..., 1:n:2], z[..., 1:n:2]),
                          fb)
        if n < m.shape[-1]:
            sm, sE, sz = (torch.cat([s, t[..., n:]], dim=-1) for s, t in ((sm, m), (sE, E), (sz, z)))
        m, E, z = sm, sE, sz
    return m[..., 0], E[..., 0], z[..., 0]


def vector_sum(m, E, z, fb: FloatBaseline):
    """The sum of e over the last dimension as the unit adds it: lanes of each beat by a tree, beat j into
    partial sum j mod A (A = ADD_STAGES, in beat order), the A partials by a tree."""
    L, A = fb.lanes, fb.partials
    n = m.shape[-1]
    nb = -(-n // L)
    nbp = -(-nb // A) * A
    pad = nbp * L - n

    def padded(t, v):
        return torch.nn.functional.pad(t, (0, pad), value=v)

    m, E, z = padded(m, 1 << fb.P), padded(E, 0), padded(z.to(torch.int64), 1).bool()
    shape = m.shape[:-1]
    beats = _tree((m.reshape(*shape, nbp, L), E.reshape(*shape, nbp, L), z.reshape(*shape, nbp, L)), fb)
    bm, bE, bz = (t.reshape(*shape, nbp // A, A) for t in beats)
    acc = (torch.full_like(bm[..., 0, :], 1 << fb.P), _z(bE[..., 0, :]), torch.ones_like(bz[..., 0, :]))
    for i in range(nbp // A):
        acc = fadd(acc, (bm[..., i, :], bE[..., i, :], bz[..., i, :]), fb)
    return _tree(acc, fb)


def reciprocal(Sm, fb: FloatBaseline):
    """r ~ 2^(R+P) / Sm for Sm in [2^P, 2^(P+1)): 2^R exactly for Sm = 2^P, else Newton-Raphson from the table:
    r' = r + ((r * (2^R - ((Sm * r) >> P))) >> R), truncated."""
    P, R = fb.P, fb.R
    kr, steps, table = fb.recip_table
    j = (Sm >> (P - kr)) - (1 << kr)
    r = torch.tensor(table, dtype=torch.int64)[j.clamp(0, (1 << kr) - 1)]
    for _ in range(steps):
        delta = (1 << R) - ((Sm * r) >> P)
        r = r + ((r * delta) >> R)
    return torch.where(Sm == 1 << P, torch.full_like(r, 1 << R), r)


def output(em, eE, r, SE, fb: FloatBaseline, cfg: SoftmaxConfig):
    """y = e * r * 2^-(R + SE) rounded to the format (nearest even, gradual underflow): output bits."""
    Z = em * r
    X = eE - fb.P - fb.R - SE
    return round_float(_z(Z), X, Z, cfg)


def float_softmax_bits(bits: torch.Tensor, cfg: SoftmaxConfig, guard: int | None = None) -> torch.Tensor:
    """The baseline on raw bit patterns (int64, last dimension = one vector): output bit patterns.

    `guard` overrides the format's guard bits (the precision study; the RTL is built with the default).
    """
    fb = baseline(cfg, guard)
    fmt = cfg.float_format
    if bits.shape[-1] == 0:
        return bits.clone()
    sign, E, m, is_nan, is_inf = decode_float(bits, fmt)
    pos_inf = is_inf & (sign == 0)
    neg_inf = is_inf & (sign == 1)
    finite = ~(is_nan | is_inf)
    nan_vec = (is_nan | pos_inf).any(-1, keepdim=True) | neg_inf.all(-1, keepdim=True)

    key = torch.where(finite, _order_key(sign, m, E, fmt), torch.full_like(m, -(1 << 40)))
    idx = key.argmax(-1, keepdim=True)
    sm, Em, mm = (t.gather(-1, idx) for t in (sign, E, m))
    sm = torch.where(mm == 0, _z(sm), sm)  # the max is canonical: +0 for every zero

    dm, dE, dz = subtract(sign, E, m, sm, Em, mm, fb)
    tfix, dead = to_fixed(dm, dE, dz, fb)
    em, eE = exp_stage(tfix, fb)
    ez = dead | ~finite
    Sm, SE, _ = vector_sum(em, eE, ez, fb)
    r = reciprocal(Sm, fb)
    out = output(em, eE, r.unsqueeze(-1), SE.unsqueeze(-1), fb, cfg)
    out = torch.where(ez, _z(out), out)
    return torch.where(nan_vec, torch.full_like(out, fmt.nan_bits), out)


def float_softmax(x: torch.Tensor, cfg: SoftmaxConfig, guard: int | None = None) -> torch.Tensor:
    """Softmax over the last dimension, bit-exact to the float baseline of `cfg` (x in cfg's dtype)."""
    if x.dtype != cfg.torch_dtype:
        raise TypeError(f"x has dtype {x.dtype} but the unit is configured for fmt={cfg.fmt!r} ({cfg.torch_dtype})")
    if x.dim() == 0:
        return float_softmax(x.reshape(1), cfg, guard).reshape(())
    out = float_softmax_bits(float_to_bits(x.detach().cpu()), cfg, guard)
    return bits_to_float(out, cfg.fmt).to(x.device)


def errors_against_float64(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """(max |y - ref|, max |y - ref| / ref over ref >= 2^-10, max |sum(y) - 1|) against float64 softmax of x
    (finite rows only)."""
    ref = softmax_ref(x)
    y = y.to(torch.float64)
    ok = torch.isfinite(ref).all(-1)
    err = (y - ref).abs()[ok]
    big = ref[ok] >= 2.0**-10
    rel = float((err[big] / ref[ok][big]).max()) if bool(big.any()) else 0.0
    return float(err.max()) if err.numel() else 0.0, rel, float((y[ok].sum(-1) - 1).abs().max()) if ok.any() else 0.0
