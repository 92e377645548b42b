"""Cycle model of the DyBit MAC array (gen/dybit_array.py), exact for unstalled streams.

Cycles are counted from the first input handshake to the last output handshake,
both included. An M x K x N matmul runs as T = ceil(M/R) * ceil(N/C) tiles, each
taking K input beats. A tile's last beat reaches the accumulators two cycles
after it enters (decode, product), the finished tile moves to the shadow bank,
and the bank drains one row per cycle starting on the next cycle, R rows in all.
The next tile's accumulation overlaps the drain, so tiles follow each other
every K cycles, unless the bank is still draining when the next tile finishes
(K < R + 1): then every tile waits for the drain, a period of R + 1 cycles.

    cycles = (T - 1) * max(K, R + 1) + K + 2 + R

MAC utilisation is the useful MACs M*K*N over R*C*cycles.
"""

from __future__ import annotations

import math

from accelkit.config.dybit import DyBitArrayConfig


def tiles(cfg: DyBitArrayConfig, m: int, n: int) -> int:
    return math.ceil(m / cfg.rows) * math.ceil(n / cfg.cols)


def matmul_cycles(cfg: DyBitArrayConfig, m: int, k: int, n: int) -> int:
    """Predicted cycles of an M x K x N matmul with no input gaps and no output stalls."""
    for name, v in (("M", m), ("K", k), ("N", n)):
        if v < 1:
            raise ValueError(f"{name}={v} is invalid: matmul dimensions are at least 1")
    period = max(k, cfg.rows + 1)
    return (tiles(cfg, m, n) - 1) * period + k + cfg.pipeline_depth + cfg.rows


def utilisation(cfg: DyBitArrayConfig, m: int, k: int, n: int, cycles: int) -> float:
    return m * k * n / (cfg.rows * cfg.cols * cycles)
