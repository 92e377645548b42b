"""How close the conventional floating-point baseline (cfg.arch = "float") must come to float64.

The baseline's arithmetic is fixed by its hardware parameters
(accelkit/config/float_softmax.py); its accuracy is a measured figure against
float64 within these bounds (tests/test_sim_hyft.py), not a bit-exact definition.
"""

from __future__ import annotations

from accelkit.config.float_softmax import work_bits
from accelkit.config.hyft import SoftmaxConfig


def error_bounds(cfg: SoftmaxConfig, n: int) -> tuple[float, float]:
    """(relative error on outputs >= 2^-10, absolute error) the baseline stays within against float64.

    The output rounding gives half an ulp (2^-(M+1)); the working floats, truncated after each
    operation, add about (n + 12) * 2^-P relative through the sum and the exp of d = x - max, whose
    own truncation is amplified by |d| <= 2^(E-1) log2(e) ulps of 2^-P. The bound below is that
    estimate with a factor of two to spare; the absolute bound adds the smallest subnormal.
    """
    P, M = work_bits(cfg), cfg.man_bits
    rel = 2.0 ** -(M + 1) + 2 * (n + 12 + 2 * 2 ** (cfg.exp_bits - 1)) * 2.0 ** -P
    return rel, rel + 2.0 ** -(cfg.bias + M - 1)


__all__ = ["error_bounds"]
