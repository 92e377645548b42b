"""Cycle model of the softmax unit (gen/hyft.py), exact for a batch with no input gaps and no output stalls.

Cycles are counted from the first input handshake; a vector's latency runs
from its first input handshake to its last output handshake, both included.
Each vector of N elements is n = ceil(N/L) beats and lives in one of `banks`
buffer banks, which go round a ring of three phases:

- A (fill) takes one beat per cycle; its bank is free at once or when the
  C phase of the vector `banks` earlier let go of it. The max and flags
  pipeline hands the bank to B `a_full(lanes)` cycles after the last beat.
- B (sum) reads one beat per cycle, starting on the cycle after its previous
  vector's last read if the bank is full by then; the sum's pipeline and the
  log2 hand the bank to C `b_done` cycles after the last read. An oversize
  vector skips B in one cycle.
- C (output) reads one beat per cycle likewise; each read leaves as an output
  beat `C_FIRE` cycles later, and the bank is free for A `C_FREE` cycles after
  the last read. An oversize vector is one (error) beat.

Steady state for back-to-back vectors of n beats: a bank is busy for about
3n + b_done + a_full + C_FREE cycles, so the period is
max(n, (3n + overhead) / banks) and the rate N / period elements per cycle.
"""

from __future__ import annotations

import dataclasses
import math

from accelkit.config import hyft as _ring
from accelkit.config.hyft import C_FREE, RING_FLAG, SoftmaxConfig, a_full

# The latency target of a vector alone in the unit: at most 3N/L + LATENCY_OVERHEAD cycles (Hyft, lanes 1..16).
# 40 before the pipelining for 125 MHz (issue 11), whose register stages added about 32 to 40 cycles.
LATENCY_OVERHEAD = 60


def stages(cfg: SoftmaxConfig) -> dict[str, int]:
    """The datapaths' register stages, as the config says the generator builds them."""
    return cfg.pipeline


def b_done(cfg: SoftmaxConfig) -> int:
    """B's last read -> the bank is SUMMED for C: the read (RING_READ), lane stages, the beat's sum, the
    accumulator, fin, the state write."""
    return _ring.b_done(stages(cfg))


def c_fire(cfg: SoftmaxConfig) -> int:
    """C's read -> its output handshake: the read (RING_READ), c_out stages, the output register."""
    return _ring.c_fire(stages(cfg))


@dataclasses.dataclass
class VectorTiming:
    n: int  # elements
    beats_in: int
    beats_out: int
    in_first: int  # cycle of the first input handshake (the batch's first is 0)
    in_last: int
    out_first: int
    out_last: int

    @property
    def latency(self) -> int:
        return self.out_last - self.in_first + 1


def beats(cfg: SoftmaxConfig, n: int) -> int:
    if n < 1:
        raise ValueError(f"N={n} is invalid: a vector has at least one element")
    return math.ceil(n / cfg.lanes)


def batch_timing(cfg: SoftmaxConfig, lengths: list[int]) -> list[VectorTiming]:
    """Predicted handshake cycles of every vector of a back-to-back batch (no gaps, no stalls)."""
    nb = cfg.banks
    out: list[VectorTiming] = []
    a_last = b_last = c_last = -1
    free: list[int] = []
    db, cf = b_done(cfg), c_fire(cfg)
    for v, n in enumerate(lengths):
        nin = beats(cfg, n)
        over = n > cfg.max_len
        nout = 1 if over else nin
        a_first = max(a_last + 1, free[v - nb] if v >= nb else 0)
        a_last = a_first + nin - 1
        full = a_last + a_full(cfg.lanes)
        b_first = max(full, b_last + 1)
        if over:
            b_last, summed = b_first, b_first + 1 + RING_FLAG  # the skip's state write, C's start flag
        else:
            b_last = b_first + nin - 1
            summed = b_last + db
        c_first = max(summed, c_last + 1)
        c_last = c_first + nout - 1
        free.append(c_last + C_FREE)
        out.append(VectorTiming(n, nin, nout, a_first, a_last, c_first + cf, c_last + cf))
    return out


def total_cycles(cfg: SoftmaxConfig, lengths: list[int]) -> int:
    """First input handshake to last output handshake, inclusive."""
    t = batch_timing(cfg, lengths)
    return t[-1].out_last - t[0].in_first + 1


def latency(cfg: SoftmaxConfig, n: int) -> int:
    """Cycles of one vector of n elements through an idle unit."""
    return batch_timing(cfg, [n])[0].latency


def sustained_rate(cfg: SoftmaxConfig, n: int, vectors: int = 24) -> float:
    """Elements per cycle on a long run of back-to-back vectors of n elements (the steady-state period)."""
    t = batch_timing(cfg, [n] * vectors)
    period = (t[-1].out_last - t[vectors // 2].out_last) / (vectors - 1 - vectors // 2)
    return n / period


__all__ = ["C_FREE", "a_full", "LATENCY_OVERHEAD", "VectorTiming", "b_done", "batch_timing", "beats", "c_fire",
           "latency", "stages", "sustained_rate", "total_cycles"]
