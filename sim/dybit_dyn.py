"""Running the runtime-format DyBit array's RTL from Python: jobs of codes and formats in, exact results out.

    from accelkit.config.dybit_dyn import DyBitDynConfig
    from accelkit.sim.dybit_dyn import run_dybit_dyn
    run = run_dybit_dyn(DyBitDynConfig(), [(a1, "dybit8k4", b1, "dybit4k3"), (a2, "int8", b2, "int8")])
    run.c[0]       # job 0's M x N int64 in units of 2^-(fa + fb), checked bit-exact against the golden model
    run.cycles     # the whole run: first input handshake (job 0's header) to last output handshake
    run.predicted  # the cycle model's figure (equal with no gaps and stalls)

Jobs run back to back on one array: each is a header beat with its formats, then its R x C output tiles
(row tiles outer, column tiles inner; M and N padded with zero codes, K with zero codes to a multiple of the
job's P), every tile ceil(K / P) beats of P codes per lane.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from accelkit.config import ConfigError
from accelkit.config.dybit_dyn import DyBitDynConfig, header_word
from accelkit.golden.dybit import QuantError
from accelkit.golden.dybit_dyn import check_job_formats, job_matmul, job_p, pack_k
from accelkit.golden.dybit_dyn_cycles import JobShape, schedule

from .dybit import check_matmul, pad_tiles, tile_inputs, tile_labels, tile_outputs, untile
from .payload import field, pack_lanes, unpack_lanes
from .runner import run_streams

LANE_BITS = 16


@dataclasses.dataclass
class DyBitDynRun:
    c: list[torch.Tensor]  # per job, M x N int64
    cycles: int  # first input handshake to last output handshake, inclusive
    predicted: int  # the cycle model's figure for the run (valid without gaps and stalls)
    job_cycles: list[int]  # per job: its header's handshake to its last output handshake
    job_predicted: list[int]  # the cycle model's per-job spans
    shapes: list[JobShape]
    waves: object = None
    sim_seconds: float = 0.0


@dataclasses.dataclass
class PackedRun:
    """The beats of a run: streams a and b, the expected c beats, and where each job's beats start."""

    a: list[int]
    b: list[int]
    c: list[int]
    shapes: list[JobShape]
    header_index: list[int]  # index of each job's header beat in a
    c_index: list[int]  # index of each job's first c beat
    labels: list[str]


def header_beat(cfg: DyBitDynConfig, a_fmt, b_fmt) -> int:
    """The a beat that starts a job (lane 0 = the formats, header = 1)."""
    fa, fb = check_job_formats(cfg, a_fmt, b_fmt)
    return pack_lanes(np.array([[header_word(fa, fb)] + [0] * (cfg.rows - 1)]), LANE_BITS,
                      [(np.array([0]), 1), (np.array([1]), 1)])[0]


def check_jobs(cfg: DyBitDynConfig, jobs) -> list[tuple]:
    """Every job as (A int64, A's format, B int64, B's format), or a one-line error naming the job."""
    if not isinstance(jobs, list | tuple) or not jobs:
        raise QuantError("jobs must be a non-empty list of (a_codes, a_format, b_codes, b_format)")
    out = []
    for q, job in enumerate(jobs):
        try:
            if not isinstance(job, list | tuple) or len(job) != 4:
                raise QuantError("a job is (a_codes, a_format, b_codes, b_format)")
            a, a_fmt, b, b_fmt = job
            fa, fb = check_job_formats(cfg, a_fmt, b_fmt)
            a, b = check_matmul(a, b, cfg.max_k, fa, fb)
        except (QuantError, ConfigError) as e:
            raise type(e)(f"job {q}: {e}") from None
        out.append((a, fa, b, fb))
    return out


def pack_run(cfg: DyBitDynConfig, jobs) -> PackedRun:
    """The beats of a run of checked jobs (`check_jobs`)."""
    R, C = cfg.rows, cfg.cols
    a_parts, b_parts, c_parts, shapes, hdr_idx, c_idx, labels = [], [], [], [], [], [], []
    na_beats = nc_beats = 0
    for q, (a, fa, b, fb) in enumerate(jobs):
        m, k = a.shape
        n = b.shape[1]
        p = job_p(fa, fb)
        shapes.append(JobShape(m, k, n, fa.n, fb.n))
        ap, bp = pad_tiles(a.numpy(), b.numpy(), R, C)
        a_vals, b_vals, last = tile_inputs(pack_k(ap, fa.n, p, axis=1), pack_k(bp, fb.n, p, axis=0), R, C)
        cp = job_matmul(torch.from_numpy(ap), fa, torch.from_numpy(bp), fb).numpy()
        c_vals, c_last = tile_outputs(cp, R, C)
        hdr_idx.append(na_beats)
        c_idx.append(nc_beats)
        a_parts.append([header_beat(cfg, fa, fb)])
        a_parts.append(pack_lanes(a_vals, LANE_BITS, [(last, 1), (np.zeros_like(last), 1)]))
        b_parts.append(pack_lanes(b_vals, LANE_BITS))
        c_parts.append(pack_lanes(c_vals, cfg.acc_bits, [(c_last, 1), (np.zeros_like(c_last), 1)]))
        labels += tile_labels(m, n, R, C, prefix=f"job {q} ({fa.name} x {fb.name}) ")
        na_beats += 1 + len(a_vals)
        nc_beats += len(c_vals)
    return PackedRun(a=[x for part in a_parts for x in part], b=[x for part in b_parts for x in part],
                     c=[x for part in c_parts for x in part], shapes=shapes, header_index=hdr_idx, c_index=c_idx,
                     labels=labels)


def c_error_flags(cfg: DyBitDynConfig, beats: list[int]) -> np.ndarray:
    """The error bit of every c beat."""
    return field(beats, cfg.cols * cfg.acc_bits + 1, 1)


def run_dybit_dyn(cfg: DyBitDynConfig, jobs, *, gap: float = 0.0, stall: float = 0.0, seed: int = 1,
                  waves: bool = False, check: bool = True, streams: str = "cocotb") -> DyBitDynRun:
    """Run the jobs, each (a_codes, a_format, b_codes, b_format), back to back on the RTL.

    Formats are "dybit<n>k<kmax>" or "int<n>" (or OperandFormat) with n in cfg.widths. A job the array cannot
    run (a format it was not generated for, codes wider than the format, K above max_k) is refused before the
    simulation with a one-line ConfigError or QuantError naming the job. gap: chance of an idle cycle before
    each input beat; stall: chance that the output is not ready in a cycle. With check=True the testbench
    compares every output beat (error flag included) with the golden model. streams="hdl" or "native" drives
    the streams inside the simulator (docs/streams.md), for long runs.
    """
    jobs = check_jobs(cfg, jobs)
    packed = pack_run(cfg, jobs)
    job = {
        "seed": seed,
        "sources": [{"name": "a", "beats": packed.a, "gap": gap}, {"name": "b", "beats": packed.b, "gap": gap}],
        "sinks": [{"name": "c", "count": len(packed.c), "stall": stall, "expect": packed.c if check else None,
                   "labels": packed.labels if check else None}],
        "timeout": 1000 + int(20 * (len(packed.a) + len(packed.c)) / max(1e-3, (1 - gap) * (1 - stall))),
    }
    res = run_streams(cfg, job, waves=waves, streams=streams)
    beats, a_fires, c_fires = res["sinks"]["c"], res["source_fires"]["a"], res["sink_fires"]["c"]
    vals = unpack_lanes(beats, cfg.acc_bits, cfg.cols, signed=True)
    cs, spans = [], []
    for q, (a, _, b, _) in enumerate(jobs):
        start = packed.c_index[q]
        end = packed.c_index[q + 1] if q + 1 < len(jobs) else len(beats)
        cs.append(untile(vals[start:end], a.shape[0], b.shape[1], cfg.rows, cfg.cols))
        spans.append(c_fires[end - 1] - a_fires[packed.header_index[q]] + 1)
    sched = schedule(cfg, packed.shapes)
    return DyBitDynRun(c=cs, cycles=c_fires[-1] - a_fires[0] + 1, predicted=sched.cycles, job_cycles=spans,
                       job_predicted=list(sched.job_spans), shapes=packed.shapes,
                       waves=res["run_dir"] / "dump.vcd" if waves else None, sim_seconds=res["sim_seconds"])
