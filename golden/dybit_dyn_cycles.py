"""Cycle model of the runtime-format DyBit array (gen/dybit_dyn.py), exact for unstalled streams.

A run is a list of jobs (M x K x N, operand widths na x nb) streamed back to back. Job q is one header
beat then T_q = ceil(M/R) * ceil(N/C) tiles of Kb_q = ceil(K / P_q) beats, P_q = (8/na) (8/nb). Every beat,
header or data, takes one cycle at the input when the pipeline advances; a header enters no stage (a bubble).

The whole pipeline advances together, so beats keep their distance. Tile t's last beat reaches the
accumulators D = pipeline_depth cycles after it enters, the finished tile moves to the shadow bank, and the
bank drains one row per cycle from the next cycle, R rows, each reaching ``c`` O = output_stages cycles later
(the output slice passes a beat a cycle when ``c`` is ready). A tile whose last beat reaches the accumulators
while the bank still drains waits (the whole pipeline with it). With g_t = Kb of tile t, plus 1 for the
header in front of a job's first tile, the times A_t at which tile t's last beat accumulates are

    A_0 = g_0 - 1 + D,    A_t = A_(t-1) + max(g_t, R + 1)

and the run's cycles, first input handshake (the first header) to last output handshake, both included:

    cycles = g_0 + sum_(t >= 1) max(g_t, R + 1) + D + R + O

A job's own span (its header's handshake to its last row's) follows from the same times: a stall of s
cycles at A_t delays every input beat that had not entered by then.
"""

from __future__ import annotations

import dataclasses
import math

from accelkit.config.dybit_dyn import DyBitDynConfig, macs_per_pe


@dataclasses.dataclass(frozen=True)
class JobShape:
    m: int
    k: int
    n: int
    na: int
    nb: int

    @property
    def p(self) -> int:
        return macs_per_pe(self.na, self.nb)

    def beats_per_tile(self) -> int:
        return math.ceil(self.k / self.p)


def tiles(cfg: DyBitDynConfig, m: int, n: int) -> int:
    return math.ceil(m / cfg.rows) * math.ceil(n / cfg.cols)


@dataclasses.dataclass(frozen=True)
class Schedule:
    cycles: int  # first input handshake to last output handshake, inclusive
    job_spans: tuple[int, ...]  # per job: its header's handshake to its last output handshake, inclusive


def schedule(cfg: DyBitDynConfig, jobs: list[JobShape]) -> Schedule:
    """Predicted cycles of a run of jobs with no input gaps and no output stalls."""
    if not jobs:
        raise ValueError("jobs is empty: a run has at least one job")
    for q, j in enumerate(jobs):
        for name in ("m", "k", "n"):
            if getattr(j, name) < 1:
                raise ValueError(f"job {q}: {name.upper()}={getattr(j, name)} is invalid: matmul dimensions are at "
                                 "least 1")
    R, D, O = cfg.rows, cfg.pipeline_depth, cfg.output_stages
    slot = 0  # input slots (beats) so far, header and data
    stalls: list[tuple[int, int]] = []  # (virtual cycle of the stall, its length)
    prev_a = None
    header_slot, last_tile_a = [], []
    for j in jobs:
        header_slot.append(slot)
        slot += 1
        kb = j.beats_per_tile()
        for _ in range(tiles(cfg, j.m, j.n)):
            slot += kb
            virtual = slot - 1 + D  # the tile's last beat at the accumulators, counted without stalls
            stalled = sum(s for _, s in stalls)
            a = virtual + stalled
            if prev_a is not None and a < prev_a + R + 1:
                stalls.append((virtual, prev_a + R + 1 - a))
                a = prev_a + R + 1
            prev_a = a
        last_tile_a.append(prev_a)

    def real_input(s: int) -> int:  # an input beat at slot s waits for every stall that began at or before it
        return s + sum(n for v, n in stalls if v <= s)

    spans = tuple(last_tile_a[q] + R + O - real_input(header_slot[q]) + 1 for q in range(len(jobs)))
    return Schedule(cycles=prev_a + R + O + 1, job_spans=spans)


def run_cycles(cfg: DyBitDynConfig, jobs: list[JobShape]) -> int:
    """The closed form of the docstring (equal to schedule(...).cycles)."""
    gaps = []
    for j in jobs:
        kb = j.beats_per_tile()
        gaps += [kb + 1] + [kb] * (tiles(cfg, j.m, j.n) - 1)
    return gaps[0] + sum(max(g, cfg.rows + 1) for g in gaps[1:]) + cfg.pipeline_depth + cfg.rows + cfg.output_stages


def macs_per_cycle(jobs: list[JobShape], cycles: int) -> float:
    """Useful MACs (M K N of every job) per cycle."""
    return sum(j.m * j.k * j.n for j in jobs) / cycles


def utilisation(cfg: DyBitDynConfig, jobs: list[JobShape], cycles: int) -> float:
    """Useful MACs over the MACs the array could have done in `cycles`: M K N / (R C P cycles), for a run
    whose jobs share one P."""
    if len({j.p for j in jobs}) != 1:
        raise ValueError("utilisation of a run mixing P is ambiguous: measure each mode on its own")
    p = jobs[0].p
    return macs_per_cycle(jobs, cycles) / (cfg.rows * cfg.cols * p)
