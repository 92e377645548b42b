"""A second, scalar Hyft model: Python integers and Fractions, one element at a time.

Written from the definition in `accelkit.golden.hyft`'s docstring without its
shortcuts (no alignment grid, no clamped shifts: d is the exact floor of the
exact difference), so that the vectorised golden model and this one agree only
if both follow the definition. Slow; for tests on short vectors.

`hyft_softmax_backward_scalar` does the same for the backward (training) mode,
from docs/specs/hyft.md "Backward (training) mode": exact Fractions divided by
the grid and rounded with Python integers, one element at a time, and Python's
own IEEE floats for the special values.
"""

from __future__ import annotations

import math
from fractions import Fraction

from accelkit.config.hyft import FORMATS, SoftmaxConfig


def decode_value(bits: int, fmt_name: str):
    """The value of a bit pattern: a Fraction (subnormals read as 0), or 'nan', '+inf', '-inf'."""
    f = FORMATS[fmt_name]
    sign = (bits >> (f.width - 1)) & 1
    e = (bits >> f.man_bits) & f.exp_max
    frac = bits & ((1 << f.man_bits) - 1)
    if e == f.exp_max:
        return "nan" if frac else ("-inf" if sign else "+inf")
    if e == 0:
        return Fraction(0)
    v = Fraction((1 << f.man_bits) | frac) * Fraction(2) ** (e - f.bias - f.man_bits)
    return -v if sign else v


def _interp(table, r: int, cfg: SoftmaxConfig) -> int:
    shift = cfg.interp_bits
    j, w = r >> shift, r & ((1 << shift) - 1)
    return table[j] + (((table[j + 1] - table[j]) * w) >> shift)


def _encode_output(Py: int, qy: int, cfg: SoftmaxConfig) -> int:
    f = FORMATS[cfg.fmt]
    M, W = f.man_bits, cfg.table_bits
    value = Fraction(Py) * Fraction(2) ** (qy - W)
    e = qy + f.bias
    if e >= 1:  # normal: M fraction bits below the leading one
        mant = round(value / Fraction(2) ** (qy - M))  # round half to even
        if mant == 1 << (M + 1):
            mant, e = mant >> 1, e + 1
        return (e << M) | (mant - (1 << M))
    # subnormal grid 2^(1 - bias - M); a result that rounds up to 2^M is the smallest normal
    return round(value / Fraction(2) ** (1 - f.bias - M))


def hyft_softmax_scalar(bits: list[int], cfg: SoftmaxConfig) -> list[int]:
    """The unit on one vector of bit patterns; returns the output bit patterns."""
    f = FORMATS[cfg.fmt]
    F, I, B, W, K = cfg.frac_bits, cfg.int_bits, cfg.sum_frac_bits, cfg.table_bits, cfg.log2e_frac_bits
    vals = [decode_value(b, cfg.fmt) for b in bits]
    if any(v in ("nan", "+inf") for v in vals) or all(v == "-inf" for v in vals):
        return [f.nan_bits] * len(bits)
    finite = [v for v in vals if not isinstance(v, str)]
    mx = max(finite)
    sat = 1 << (I + F)
    T = []
    for v in vals:
        if isinstance(v, str):  # -inf
            T.append(None)
            continue
        c = min(math.ceil((mx - v) * (1 << F)), sat)
        t = (-c * cfg.log2e_const) >> K
        T.append(t if t >= -sat else None)
    total = 0
    for t in T:
        if t is not None:
            q, r = t >> F, t & ((1 << F) - 1)
            P = _interp(cfg.exp2_table, r, cfg)
            total += math.floor(Fraction(P) * Fraction(2) ** (q - W + B))
    k = total.bit_length() - 1
    rs = math.floor(Fraction(total, 1 << k) * (1 << F)) - (1 << F)
    lsum = (k - B) * (1 << F) + _interp(cfg.log2_table, rs, cfg)
    if total != 1 << k:
        lsum += cfg.log2_bias
    out = []
    for t in T:
        if t is None:
            out.append(0)
            continue
        u = t - lsum
        qy, ry = u >> F, u & ((1 << F) - 1)
        out.append(_encode_output(_interp(cfg.exp2_table, ry, cfg), qy, cfg))
    return out


# ---- backward (training) mode, from docs/specs/hyft.md "Backward (training) mode" ------------------------

def _decode_signed(bits: int, fmt_name: str):
    """(sign, value): value a Fraction >= 0 (subnormals at their value, the sign kept apart), or a Python
    float inf/nan for the specials."""
    f = FORMATS[fmt_name]
    sign = (bits >> (f.width - 1)) & 1
    v = decode_value(bits, fmt_name)
    if v == "nan":
        return sign, math.nan
    if isinstance(v, str):
        return sign, math.inf if v == "+inf" else -math.inf
    if v == 0:  # zero or subnormal: the fraction field times the subnormal step
        v = Fraction(bits & ((1 << f.man_bits) - 1)) * Fraction(2) ** (1 - f.bias - f.man_bits)
    return sign, abs(v)


def _binade(v: Fraction) -> int:
    """E with 2^E <= v < 2^(E+1), for v > 0, by comparisons."""
    e = 0
    while v >= Fraction(2) ** (e + 1):
        e += 1
    while v < Fraction(2) ** e:
        e -= 1
    return e


def _truncate_sig(v: Fraction, bits: int) -> Fraction:
    """v > 0 cut to `bits` significant bits (toward zero)."""
    step = Fraction(2) ** (_binade(v) - bits + 1)
    return math.floor(v / step) * step


def _encode_signed(sign: int, v: Fraction, fmt_name: str) -> int:
    """sign and |value| v >= 0 rounded to the format: nearest even, subnormals, overflow to infinity."""
    f = FORMATS[fmt_name]
    M = f.man_bits
    top = sign << (f.width - 1)
    if v == 0:
        return top
    E = _binade(v)
    if E + f.bias >= 1:
        mant = round(v / Fraction(2) ** (E - M))
        if mant == 1 << (M + 1):
            mant, E = mant >> 1, E + 1
        if E + f.bias >= f.exp_max:
            return top | (f.exp_max << M)
        return top | ((E + f.bias) << M) | (mant - (1 << M))
    return top | round(v / Fraction(2) ** (1 - f.bias - M))


def hyft_softmax_backward_scalar(y_bits: list[int], dy_bits: list[int], cfg: SoftmaxConfig):
    """The backward mode on one vector of bit patterns: (dx bit patterns, error flag)."""
    f = FORMATS[cfg.fmt]
    M, W, B = f.man_bits, cfg.table_bits, cfg.sum_frac_bits
    mt = min(M, W)
    ys = [_decode_signed(b, cfg.fmt) for b in y_bits]
    ds = [_decode_signed(b, cfg.fmt) for b in dy_bits]
    n = len(ys)
    if n == 0:
        return [], False

    # step 0: a non-finite input anywhere: IEEE floats (Python's) give torch's classes
    if any(isinstance(v, float) for _, v in ys + ds):
        def fl(sv):
            s, v = sv
            return v if isinstance(v, float) else math.copysign(float(v), -1.0 if s else 1.0)

        yf, df = [fl(a) for a in ys], [fl(a) for a in ds]
        s = sum(a * b for a, b in zip(yf, df, strict=True))  # IEEE: 0 * inf, inf - inf are NaN
        out = []
        for a, b in zip(yf, df, strict=True):
            r = a * (b - s)
            assert not math.isfinite(r), "a non-finite input must make every output special"
            out.append(f.nan_bits if math.isnan(r) else ((r < 0) << (f.width - 1)) | (f.exp_max << M))
        return out, True
    if any(v >= 2 or (s and v != 0) for s, v in ys):  # not a probability (-0 is allowed)
        return [f.nan_bits] * n, True

    def exponent(v: Fraction) -> int:  # the binade, or the smallest normal's for a subnormal
        return max(_binade(v), 1 - f.bias)

    # operands cut to Mt fraction bits of their exponent's binade, signs kept apart
    def cut(v: Fraction) -> Fraction:
        if v == 0:
            return v
        step = Fraction(2) ** (exponent(v) - mt)
        return math.floor(v / step) * step

    yv = [(s, cut(v)) for s, v in ys]
    dv = [(s, cut(v)) for s, v in ds]

    # step 1: the grid, from the largest |dy|
    nonzero = [exponent(v) for _, v in ds if v != 0]
    u = Fraction(2) ** ((max(nonzero) if nonzero else 0) + 1 - B)

    def nearest(v: Fraction) -> int:  # v >= 0 to the nearest integer, ties up
        return math.floor(v + Fraction(1, 2))

    # step 2: each product rounded on the grid, summed; each y rounded on 2^-B, summed
    S = 0
    for (sy, a), (sd, b) in zip(yv, dv, strict=True):
        p = nearest(a * b / u)
        S += -p if sy ^ sd else p
    Y = sum(nearest(a * (1 << B)) for _, a in yv)

    # step 2b: S / sum(y) with the reciprocal from two Newton steps, in integers of R fraction bits
    R = min(B + 2, 28)
    Yr = math.floor(Fraction(Y, 1 << B) * (1 << R))
    r = 1 << R
    if 8 * abs(Yr - (1 << R)) <= 1 << R:
        r = (2 << R) - Yr
        for _ in range(2):
            r = math.floor(Fraction(r * ((2 << R) - math.floor(Fraction(Yr * r, 1 << R))), 1 << R))
    Sn = nearest(Fraction(abs(S) * r, 1 << R))
    S = -Sn if S < 0 else Sn
    # s is -0 when every product is a zero (of a true zero input, not a cut one) with sign 1
    s_negzero = all((a == 0 or b == 0) and (sy ^ sd) for (sy, a), (sd, b) in zip(ys, ds, strict=True))

    out = []
    for (sy, a), (sd, b), (_, b_in) in zip(yv, dv, ds, strict=True):
        # step 3
        DY = nearest(b / u) * (-1 if sd else 1)
        G = DY - S
        if G != 0:
            sg = int(G < 0)
        elif DY != 0:
            sg = 0
        else:
            sg = 0 if (b_in == 0 and s_negzero) else sd
        # step 4, 5, 6
        g = _truncate_sig(Fraction(abs(G)), W + 1) * u if G else Fraction(0)
        out.append(_encode_signed(sy ^ sg, a * g, cfg.fmt))
    return out, False
