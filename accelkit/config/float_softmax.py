"""The conventional floating-point softmax baseline (cfg.arch = "float"): what its hardware is.

Widths, polynomial coefficients and pipeline depths, all derived from the
`SoftmaxConfig`; gen/float_softmax.py builds them and golden/hyft_cycles.py
counts cycles from the same depths (`SoftmaxConfig.pipeline`).

The baseline is what a softmax unit without Hyft's format tricks looks like,
built from the same ring of buffer banks as the Hyft unit (gen/hyft.py):

- max: the same float compare as Hyft (order-preserving integer keys).
- d = x - max: a floating-point subtractor (align, subtract, normalise).
- e = exp(d) by range reduction: t = d * log2(e) (a float multiplier),
  t = k + f with integer k and f in [0, 1), 2^f by a fixed-point Horner
  polynomial, e = 2^f * 2^k (no multiplier: k is the exponent).
- sum: a floating-point adder tree over the lanes and a floating-point
  accumulator (a single-cycle float adder: its result feeds itself).
- y = e / sum: a pipelined floating-point divider (restoring, two quotient bits
  per stage), rounded to the format to nearest even with gradual underflow.

Inside, values are working floats: a normalised mantissa with `work_bits`
fraction bits (23 for bf16 and fp16 inputs, as torch computes their softmax in
float32; 26 for fp32) and a wide exponent, truncated after each operation. Its
accuracy is a measured figure against float64 (tests/test_sim_hyft.py), not a
bit-exact definition: the RTL is the definition.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config/hyft.py imports this module for SoftmaxConfig.pipeline
    from .hyft import SoftmaxConfig

DIV_BITS_PER_STAGE = 2


def work_bits(cfg: SoftmaxConfig) -> int:
    """P: fraction bits of the working floats' mantissas."""
    return 23 if cfg.man_bits < 23 else 26


def fixed_bits(cfg: SoftmaxConfig) -> int:
    """Fraction bits of the range-reduced f and of the polynomial's fixed-point arithmetic."""
    return work_bits(cfg) + 3


def flush_exp(cfg: SoftmaxConfig) -> int:
    """e below 2^-flush_exp is flushed to 0: y = e / sum (sum >= 1) then rounds to +0 in every format."""
    return cfg.bias + cfg.man_bits + 3


def exp_field_bits(cfg: SoftmaxConfig) -> int:
    """Signed exponent width of the working floats (e down to 2^-flush_exp, the sum up to 2^13)."""
    return (flush_exp(cfg) + 16).bit_length() + 1


def working_float_bits(cfg: SoftmaxConfig) -> int:
    """A packed working float: mantissa with its hidden one (P + 1 bits), exponent, zero flag."""
    return work_bits(cfg) + 1 + exp_field_bits(cfg) + 1


def poly_degree(cfg: SoftmaxConfig) -> int:
    return len(poly_coeffs(cfg)) - 1


@functools.cache
def _fit(degree: int, frac: int) -> tuple[tuple[int, ...], float]:
    import numpy as np

    # least squares on Chebyshev nodes of [0, 1): close to the minimax polynomial of 2^f
    nodes = (1 - np.cos(np.pi * (np.arange(400) + 0.5) / 400)) / 2
    c = np.polynomial.polynomial.polyfit(nodes, np.exp2(nodes), degree)
    coeffs = tuple(int(round(float(v) * 2**frac)) for v in c)
    grid = np.linspace(0, 1, 20001)[:-1]
    approx = np.polynomial.polynomial.polyval(grid, np.array(coeffs, dtype=np.float64) / 2**frac)
    return coeffs, float(np.max(np.abs(approx - np.exp2(grid)) / np.exp2(grid)))


@functools.cache
def poly_coeffs(cfg: SoftmaxConfig) -> tuple[int, ...]:
    """Fixed-point coefficients (fixed_bits fraction bits) of the lowest-degree polynomial for 2^f on [0, 1)
    whose relative error is below 2^-(P+1)."""
    target = 2.0 ** -(work_bits(cfg) + 1)
    for degree in range(2, 12):
        coeffs, err = _fit(degree, fixed_bits(cfg))
        if err < target:
            return coeffs
    raise AssertionError("no polynomial degree reaches the working precision")  # pragma: no cover


def log2e_mantissa(cfg: SoftmaxConfig) -> int:
    """log2(e) as a P+2-bit integer mantissa with P+1 fraction bits (1.0111...)."""
    p = work_bits(cfg) + 1
    return round(math.log2(math.e) * 2**p)


def tree_levels(cfg: SoftmaxConfig) -> int:
    return (cfg.lanes - 1).bit_length()


def div_stages(cfg: SoftmaxConfig) -> int:
    return math.ceil((work_bits(cfg) + 4) / DIV_BITS_PER_STAGE)


SUB_STAGES = 3  # align, add, normalise
ADD_STAGES = 2  # align and add, normalise (operands are never negative)


def float_pipeline(cfg: SoftmaxConfig) -> dict[str, int]:
    """Register stages of the baseline's datapaths (the keys of `SoftmaxConfig.pipeline`)."""
    b_wb = SUB_STAGES + 2 + poly_degree(cfg) + 1  # subtract, *log2e, to fixed, Horner steps, pack
    return {"b_wb": b_wb, "b_p": b_wb, "b_beat": ADD_STAGES * tree_levels(cfg), "fin": 0,
            "c_out": div_stages(cfg)}


__all__ = ["DIV_BITS_PER_STAGE", "div_stages", "exp_field_bits", "fixed_bits", "float_pipeline",
           "flush_exp", "log2e_mantissa", "poly_coeffs", "poly_degree", "tree_levels", "work_bits",
           "working_float_bits"]
