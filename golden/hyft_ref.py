"""A second, scalar Hyft model: Python integers and Fractions, one element at a time.

Written from the definition in `accelkit.golden.hyft`'s docstring without its
shortcuts (no alignment grid, no clamped shifts: d is the exact floor of the
exact difference), so that the vectorised golden model and this one agree only
if both follow the definition. Slow; for tests on short vectors.
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
