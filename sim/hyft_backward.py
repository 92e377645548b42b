"""Running the standalone backward unit's RTL (gen/hyft_backward.py `BackwardUnit`) under Verilator and cocotb.

    from accelkit.sim.hyft_backward import run_hyft_backward
    run = run_hyft_backward(SoftmaxConfig(), [(y_bits, dy_bits), ...], gap=0.3, stall=0.3)
    run.outputs     # dx bits per vector (y's length; empty for a vector longer than max_len)
    run.errors      # the error flag per vector
    run.latency     # per vector: its first y handshake to its last output handshake, inclusive

The unit is a variant of the hyft block's config (`accelkit.sim.build.Variant`): the shared stream testbench
drives ``y`` and ``dy`` (each beat as the forward's ``x``: lanes, count, last) with their own random gaps and
takes ``o`` (lanes, count, last, error) under random stalls; with check=True every output beat is compared with
the golden model (`hyft_softmax_backward_bits`; a dy of another length than y is the golden result with dy cut
or padded by NaN, as docs/specs/hyft.md "Backward RTL" defines it).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from accelkit.config.hyft import SoftmaxConfig
from accelkit.golden.hyft import hyft_softmax_backward_bits

from .build import TOP, Variant, module_digest
from .payload import field, pack_lanes, unpack_lanes
from .runner import run_streams

__all__ = ["HyftBackwardRun", "backward_variant", "expected_dx", "run_hyft_backward"]


@dataclasses.dataclass
class HyftBackwardRun:
    outputs: list[list[int]]
    errors: list[bool]
    latency: list[int]
    cycles: int


def backward_variant() -> Variant:
    def emit(cfg: SoftmaxConfig) -> str:
        from amaranth.back import verilog

        from accelkit.gen.hyft_backward import BackwardUnit

        return verilog.convert(BackwardUnit(cfg), name=TOP, emit_src=False)

    return Variant("hyft-backward-" + module_digest("accelkit.gen.hyft_backward")[:10], emit)


def expected_dx(cfg: SoftmaxConfig, y: list[int], dy: list[int]) -> tuple[list[int], bool]:
    """The unit's answer for one vector: (dx bits in y's length, error). A dy of another length is cut or
    padded with NaN (the unit's definition of that malformed input); longer than max_len: ([], True)."""
    n = len(y)
    if n > cfg.max_len:
        return [], True
    nan = cfg.float_format.nan_bits
    dyf = dy if len(dy) == n else (dy[:n - 1] + [nan] if len(dy) > n else dy + [nan] * (n - len(dy)))
    dx, err = hyft_softmax_backward_bits(torch.tensor([y]), torch.tensor([dyf]), cfg)
    return dx[0].tolist(), bool(err[0])


def _beats(cfg: SoftmaxConfig, vals: list[int]):
    L, n = cfg.lanes, len(vals)
    nb = max(1, -(-n // L))
    a = np.zeros(nb * L, dtype=np.int64)
    a[:n] = vals
    count = np.full(nb, L, dtype=np.int64)
    count[-1] = n - (nb - 1) * L
    last = np.zeros(nb, dtype=np.int64)
    last[-1] = 1
    return a.reshape(nb, L), count, last


def run_hyft_backward(cfg: SoftmaxConfig, vectors: list[tuple[list[int], list[int]]], gap: float = 0.0,
                      stall: float = 0.0, seed: int = 1, check: bool = True) -> HyftBackwardRun:
    """Run (y bits, dy bits) vectors back to back through the unit's RTL; every output beat checked (check=True)."""
    cb, W, L = cfg.count_bits, cfg.width, cfg.lanes
    ys, ds, outs, labels, spans = [], [], [], [], []
    n_y = n_o = 0
    for i, (y, dy) in enumerate(vectors):
        vy, cy, ly = _beats(cfg, y)
        vd, cd, ld = _beats(cfg, dy)
        ys += pack_lanes(vy, W, [(cy, cb), (ly, 1)])
        ds += pack_lanes(vd, W, [(cd, cb), (ld, 1)])
        dx, err = expected_dx(cfg, y, dy)
        if len(y) > cfg.max_len:
            o = pack_lanes(np.zeros((1, L), np.int64), W, [(np.zeros(1, np.int64), cb), (np.ones(1, np.int64), 1),
                                                          (np.ones(1, np.int64), 1)])
        else:
            vo, co, lo = _beats(cfg, dx)
            o = pack_lanes(vo, W, [(co, cb), (lo, 1), (np.full(len(co), int(err), np.int64), 1)])
        labels += [f"vector {i} (N={len(y)}, dy {len(dy)}) beat {b}" for b in range(len(o))]
        spans.append((n_y, n_y + len(vy) - 1, n_o, n_o + len(o) - 1))
        n_y += len(vy)
        n_o += len(o)
        outs += o
    job = {"seed": seed,
           "sources": [{"name": "y", "beats": ys, "gap": gap}, {"name": "dy", "beats": ds, "gap": gap}],
           "sinks": [{"name": "o", "count": len(outs), "stall": stall, "expect": outs if check else None,
                      "labels": labels if check else None}],
           "timeout": 5000 + int(200 * (len(ys) + len(outs)) / max(1e-3, 1 - max(gap, stall)))}
    res = run_streams(cfg, job, variant=backward_variant(), what="hyft backward unit")
    yf, of = res["source_fires"]["y"], res["sink_fires"]["o"]
    beats = res["sinks"]["o"]
    vals = unpack_lanes(beats, W, L, signed=False)
    counts, errs = field(beats, L * W, cb), field(beats, L * W + cb + 1, 1)
    outputs, errors = [], []
    for _, _, o0, o1 in spans:
        err = bool(errs[o0:o1 + 1].any())
        outputs.append([int(v) for b in range(o0, o1 + 1) for v in vals[b, :counts[b]]])
        errors.append(err)
    return HyftBackwardRun(outputs=outputs, errors=errors, latency=[of[o1] - yf[i0] + 1 for i0, _, _, o1 in spans],
                           cycles=of[-1] - yf[0] + 1)
