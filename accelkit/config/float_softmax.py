"""The conventional floating-point softmax baseline (cfg.arch = "float"): its widths, tables and stages.

docs/float-baseline.md is the design; golden/float_softmax.py defines its arithmetic bit for bit from the
numbers here, gen/float_softmax.py builds the same hardware, and golden/hyft_cycles.py counts cycles from
`float_pipeline`. Everything derives from the format (M stored mantissa bits), the lanes and max_len:

- working floats carry P = M + g fraction bits (`GUARD_BITS` g per format, chosen by measurement so that
  the baseline is at least as accurate as Hyft on the accuracy study's tables);
- d = x - max is a float subtraction rounded to P + 1 significant bits (nearest even);
- t = d * log2(e) is an exact product with a (P + 3)-bit constant, rounded onto a fixed-point grid of
  FB = P + 2 fraction bits; t = n + f with integer n and f in [0, 1);
- 2^f: a table of 2^k segments, each a fitted polynomial (degree 1 or 2) with Q = P + 4 fraction bits,
  rounded to P fraction bits: e = 2^f * 2^n, a working float (n is its exponent: no multiplier);
- the sum: pipelined float adders (ADD_STAGES deep, round to nearest even at P + 1 bits), a tree over
  the lanes, ADD_STAGES interleaved partial sums, combined by a tree at the vector's end;
- 1/sum once per vector: a table of 2^kr entries and Newton-Raphson steps, R = P + 2 fraction bits;
- y = e * (1/sum): one multiplier per lane, rounded to the format (nearest even, gradual underflow).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config/hyft.py imports this module for SoftmaxConfig.pipeline
    from .hyft import SoftmaxConfig

# g: guard bits of the working precision above the format's mantissa (docs/float-baseline.md, "Precision")
GUARD_BITS: dict[str, int] = {"bf16": 8, "fp16": 5, "fp32": 3}
ADD_STAGES = 5  # the float adder: exponent differences and compares, swap, align, add, normalise and round
SUB_STAGES = 8  # d = max - x: the word, decode, compare and swap, align, add/subtract, leading one, normalise,
# round
MUL_STAGES = 2  # t = |d| * log2(e): a registered multiply (its operands, its product)
FIX_STAGES = 4  # t onto the fixed-point grid: shift (in two), round, negate and split into n and f
EXP1_STAGES = 6  # 2^f, degree 1: table, its data, multiply (operands, product), add, round and pack (degree 2: 3
# more)
RECIP_TABLE_STAGES = 2  # the table's read, its data registered
NR_STAGES = 6  # one Newton-Raphson step: Sm * r (operands, product), 2^R - that, r * it (operands, product), r + that
C_STAGES = 4  # y = e * r: the bank's word, multiply, normalise, shift (the rounding feeds the output register)


@dataclasses.dataclass(frozen=True)
class FloatBaseline:
    """Every width and table of the baseline for one format, lanes and max_len (see the module docstring)."""

    fmt: str
    lanes: int
    max_len: int
    guard: int

    # ---- the format
    @property
    def _f(self):
        from .hyft import FORMATS

        return FORMATS[self.fmt]

    @property
    def M(self) -> int:
        return self._f.man_bits

    @property
    def bias(self) -> int:
        return self._f.bias

    # ---- working floats
    @property
    def P(self) -> int:
        """Fraction bits of a working float's significand (P + 1 bits with the leading one)."""
        return self.M + self.guard

    @property
    def sub_extra(self) -> int:
        """X: bits below the larger operand's mantissa in the subtractor (guard, round, jammed sticky)."""
        return self.guard + 3

    @property
    def flush(self) -> int:
        """|t| >= flush: e = 2^t <= 2^-(bias+M+1) is below half the format's smallest subnormal: e = 0."""
        return self.bias + self.M + 1

    @property
    def n_bits(self) -> int:
        """Bits of the integer part of |t| below the flush: 0..flush-1."""
        return self.flush.bit_length()

    @property
    def d_exp_bits(self) -> int:
        """Signed exponent of d: -(bias+M+X) .. bias+2."""
        return (self.bias + self.M + self.sub_extra + 2).bit_length() + 1

    @property
    def log2e_frac(self) -> int:
        """Cf: fraction bits of the log2(e) constant (Cf + 1 bits: 1.0111...)."""
        return self.P + 2

    @property
    def log2e(self) -> int:
        from .hyft import log2e_constant

        return log2e_constant(self.log2e_frac)

    @property
    def fix_bits(self) -> int:
        """FB: fraction bits of the fixed-point t = n + f."""
        return self.P + 2

    # ---- 2^f
    @property
    def coef_frac(self) -> int:
        """Q: fraction bits of the table's polynomial coefficients and of 2^f before its rounding to P."""
        return self.P + 4

    @property
    def exp_table(self) -> tuple[int, int, tuple[tuple[int, ...], ...]]:
        """(k, degree, coefficients[segment][power]) of the piecewise polynomial for 2^f."""
        return exp2_segments(self.P, self.fix_bits, self.coef_frac)

    @property
    def seg_bits(self) -> int:
        return self.exp_table[0]

    @property
    def degree(self) -> int:
        return self.exp_table[1]

    @property
    def w_bits(self) -> int:
        """Bits of f below the segment index: the interpolation weight."""
        return self.fix_bits - self.seg_bits

    # ---- packed e in the buffer: fraction P bits, -exponent (0..flush) and a zero flag
    @property
    def e_exp_bits(self) -> int:
        return self.flush.bit_length()

    @property
    def e_bits(self) -> int:
        return self.P + self.e_exp_bits + 1

    # ---- sums
    @property
    def sum_exp_bits(self) -> int:
        """Signed exponent of sums: -(flush+1) .. clog2(max_len)+1."""
        return max(self.flush + 2, (self.max_len - 1).bit_length() + 2).bit_length() + 1

    @property
    def tree_levels(self) -> int:
        return (self.lanes - 1).bit_length()

    @property
    def partials(self) -> int:
        """Interleaved partial sums: one per stage of the adder, so the accumulation never waits for itself."""
        return ADD_STAGES

    @property
    def combine_levels(self) -> int:
        return (self.partials - 1).bit_length()

    # ---- 1/sum
    @property
    def R(self) -> int:
        """Fraction bits of the reciprocal r = 2^(R+P) / Sm, in (2^(R-1), 2^R]."""
        return self.P + 2

    @property
    def recip_table(self) -> tuple[int, int, tuple[int, ...]]:
        """(kr, Newton-Raphson steps, table): table[j] = round(2^R / (1 + (j + 1/2) / 2^kr))."""
        return recip_table(self.R)

    @property
    def nr_steps(self) -> int:
        return self.recip_table[1]

    # ---- stages
    @property
    def exp_stages(self) -> int:
        return EXP1_STAGES + 3 * (self.degree - 1)

    @property
    def b_wb(self) -> int:
        return SUB_STAGES + MUL_STAGES + FIX_STAGES + self.exp_stages

    @property
    def recip_stages(self) -> int:
        return RECIP_TABLE_STAGES + NR_STAGES * self.nr_steps

    @property
    def vector_stages(self) -> int:
        """The beat's sum -> the vector's reciprocal: the accumulating adder, the combine tree, 1/sum."""
        return ADD_STAGES * (1 + self.combine_levels) + self.recip_stages

    def pipeline(self) -> dict[str, int]:
        return {"b_wb": self.b_wb, "b_p": self.b_wb, "b_beat": ADD_STAGES * self.tree_levels,
                "fin": self.vector_stages - 1, "c_out": C_STAGES}

    @property
    def vec_bits(self) -> int:
        """The per-vector value C reads: r (R + 1 bits) and the sum's exponent (signed)."""
        return self.R + 1 + self.sum_exp_bits


def baseline(cfg: SoftmaxConfig, guard: int | None = None) -> FloatBaseline:
    return _baseline(cfg.fmt, cfg.lanes, cfg.max_len, GUARD_BITS[cfg.fmt] if guard is None else guard)


@functools.cache
def _baseline(fmt: str, lanes: int, max_len: int, guard: int) -> FloatBaseline:
    return FloatBaseline(fmt, lanes, max_len, guard)


def _fit_segment(j: int, k: int, degree: int):
    import numpy as np

    nodes = (1 - np.cos(np.pi * (np.arange(64) + 0.5) / 64)) / 2
    vals = np.exp2((j + nodes) / 2**k)
    return np.polynomial.polynomial.polyfit(nodes, vals, degree)


def _eval_fixed(coeffs: tuple[int, ...], w, wb: int):
    """The RTL's Horner evaluation in integers (numpy int64 or Python ints): coefficients with Q fraction bits,
    w the weight (wb bits)."""
    acc = coeffs[-1]
    for c in reversed(coeffs[:-1]):
        acc = c + ((acc * w) >> wb)
    return acc


@functools.cache
def exp2_segments(P: int, fb: int, q: int) -> tuple[int, int, tuple[tuple[int, ...], ...]]:
    """The fewest segments 2^k (degree 1 while k <= 7, else degree 2) whose fixed-point evaluation of 2^f
    errs by less than 2^-(P+2) relative on every segment's ends and a dense sample between."""
    import numpy as np

    for degree in (1, 2):
        for k in range(1, 12 if degree == 2 else 8):
            wb = fb - k
            table = []
            worst = 0.0
            for j in range(1 << k):
                c = _fit_segment(j, k, degree)
                coeffs = tuple(int(round(float(v) * 2**q)) for v in c)
                if j == 0:
                    coeffs = (1 << q, *coeffs[1:])  # 2^0 = 1 exactly
                table.append(coeffs)
                w = np.unique(np.concatenate([np.linspace(0, (1 << wb) - 1, 257).astype(np.int64),
                                              np.array([0, 1, (1 << wb) - 1], dtype=np.int64)]))
                got = _eval_fixed(tuple(np.int64(x) for x in coeffs), w, wb).astype(np.float64) / 2**q
                ref = np.exp2((j + w / 2**wb) / 2**k)
                worst = max(worst, float(np.max(np.abs(got / ref - 1))))
            if worst < 2.0 ** -(P + 2):
                return k, degree, tuple(table)
    raise AssertionError("no table reaches the working precision")  # pragma: no cover


@functools.cache
def recip_table(R: int) -> tuple[int, int, tuple[int, ...]]:
    """(kr, steps, table) of the reciprocal: one Newton-Raphson step from a 2^kr-entry table (relative error
    about 2^-(kr+2) at the segment midpoints, squared by the step) while kr <= 10, else two steps."""
    kr = max(3, math.ceil((R + 2) / 2) - 1)
    steps = 1
    if kr > 10:
        kr, steps = max(3, math.ceil((R + 2) / 4)), 2
    table = tuple(round(2**R * 2**kr / (2**kr + j + 0.5)) for j in range(1 << kr))
    return kr, steps, table


def float_pipeline(cfg: SoftmaxConfig) -> dict[str, int]:
    """Register stages of the baseline's datapaths (the keys of `SoftmaxConfig.pipeline`)."""
    return baseline(cfg).pipeline()


def working_float_bits(cfg: SoftmaxConfig) -> int:
    """A buffer word of the baseline: e packed (fraction, -exponent, zero flag)."""
    return baseline(cfg).e_bits


__all__ = ["ADD_STAGES", "C_STAGES", "FloatBaseline", "GUARD_BITS", "NR_STAGES", "SUB_STAGES", "baseline",
           "exp2_segments", "float_pipeline", "recip_table", "working_float_bits"]
