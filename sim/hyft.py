"""Running the softmax unit's RTL from Python: vectors in, outputs and cycles out.

    from accelkit.config.hyft import SoftmaxConfig
    from accelkit.sim.hyft import run_hyft
    run = run_hyft(SoftmaxConfig(), [torch.randn(300).bfloat16(), torch.randn(7).bfloat16()])
    run.outputs    # one tensor per vector, cfg's dtype; checked bit-exact against golden/hyft.py
    run.errors     # True where the vector was longer than max_len (its output is empty)
    run.latency    # per vector: its first input handshake to its last output handshake, inclusive
    run.cycles     # the batch: first input handshake to last output handshake, inclusive
    run.predicted  # golden/hyft_cycles.py's figures for the same batch (exact without gaps and stalls)

Packing (gen/hyft.py): element k of a vector goes to lane k mod L of beat
k div L; the last beat carries ``last`` and ``count`` = its number of valid
lanes (padding lanes are zero); other beats carry count = L. Output beats
mirror the input beats; an oversize vector gives one beat with ``error`` set.
With arch="float" (the conventional floating-point baseline) the golden model is
golden/float_softmax.py, bit-exact in the same way.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from accelkit.config.hyft import SoftmaxConfig
from accelkit.golden.hyft import bits_to_float, float_to_bits, hyft_softmax_bits, softmax_ref
from accelkit.golden.hyft_cycles import VectorTiming, batch_timing

from .payload import field, pack_lanes, unpack_lanes
from .runner import run_streams


@dataclasses.dataclass
class HyftRun:
    outputs: list[torch.Tensor]  # one per vector, cfg's dtype (empty for an oversize vector)
    errors: list[bool]  # the output's error flag per vector
    latency: list[int]  # per vector, first input handshake to last output handshake, inclusive
    cycles: int  # the batch, first input handshake to last output handshake, inclusive
    predicted: list[VectorTiming]  # the cycle model (exact when gap == stall == 0)
    in_fires: list[int]  # cycle of every input handshake, relative to the first
    out_fires: list[int]  # cycle of every output handshake, relative to the first input handshake
    waves: object = None  # waveform path when run with waves=True

    @property
    def predicted_cycles(self) -> int:
        return self.predicted[-1].out_last - self.predicted[0].in_first + 1

    @property
    def elements_per_cycle(self) -> float:
        return sum(t.n for t in self.predicted) / self.cycles


def _check_vectors(cfg: SoftmaxConfig, vectors) -> list[torch.Tensor]:
    if not isinstance(vectors, list | tuple) or not vectors:
        raise ValueError("vectors must be a non-empty list of 1-D tensors")
    out = []
    for i, v in enumerate(vectors):
        if not torch.is_tensor(v) or v.dim() != 1:
            raise TypeError(f"vectors[{i}] must be a 1-D torch tensor")
        if v.dtype != cfg.torch_dtype:
            raise TypeError(f"vectors[{i}] has dtype {v.dtype} but the unit is configured for fmt={cfg.fmt!r} "
                            f"({cfg.torch_dtype})")
        if v.numel() < 1:
            raise ValueError(f"vectors[{i}] is empty: a vector has at least one element")
        out.append(v.detach().cpu())
    return out


def expected_bits(cfg: SoftmaxConfig, v: torch.Tensor) -> torch.Tensor:
    """The golden output bits of one vector (int64): golden/hyft.py, or golden/float_softmax.py for arch="float"."""
    if cfg.arch == "float":
        from accelkit.golden.float_softmax import float_softmax_bits

        return float_softmax_bits(float_to_bits(v), cfg)
    return hyft_softmax_bits(float_to_bits(v), cfg)


def _beats(cfg: SoftmaxConfig, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lanes values, count, last) of one vector's beats."""
    L, n = cfg.lanes, len(bits)
    nb = -(-n // L)
    vals = np.zeros(nb * L, dtype=np.int64)
    vals[:n] = bits
    count = np.full(nb, L, dtype=np.int64)
    count[-1] = n - (nb - 1) * L
    last = np.zeros(nb, dtype=np.int64)
    last[-1] = 1
    return vals.reshape(nb, L), count, last


def pack_job(cfg: SoftmaxConfig, vectors: list[torch.Tensor]) -> tuple[list[int], list[int], list[str], list]:
    """Input beats, expected output beats, a label per output beat, and (first, last) beat indices per vector."""
    x_parts, y_parts, labels, spans = [], [], [], []
    n_in = n_out = 0
    cb = cfg.count_bits
    for i, v in enumerate(vectors):
        bits = float_to_bits(v).numpy()
        vals, count, last = _beats(cfg, bits)
        x_parts.append(pack_lanes(vals, cfg.width, [(count, cb), (last, 1)]))
        if len(bits) > cfg.max_len:
            y_parts.append(pack_lanes(np.zeros((1, cfg.lanes), np.int64), cfg.width,
                                      [(np.zeros(1, np.int64), cb), (np.ones(1, np.int64), 1),
                                       (np.ones(1, np.int64), 1)]))
            labels.append(f"vector {i} (N={len(bits)} > max_len={cfg.max_len}): its error beat")
        else:
            ov, oc, ol = _beats(cfg, expected_bits(cfg, v).numpy())
            y_parts.append(pack_lanes(ov, cfg.width, [(oc, cb), (ol, 1), (np.zeros(len(oc), np.int64), 1)]))
            labels += [f"vector {i} (N={len(bits)}) elements {b * cfg.lanes}..{b * cfg.lanes + int(oc[b]) - 1}"
                       for b in range(len(oc))]
        spans.append((n_in, n_in + len(x_parts[-1]) - 1, n_out, n_out + len(y_parts[-1]) - 1))
        n_in += len(x_parts[-1])
        n_out += len(y_parts[-1])
    return sum(x_parts, []), sum(y_parts, []), labels, spans


def unpack_outputs(cfg: SoftmaxConfig, beats: list[int], spans: list) -> tuple[list[torch.Tensor], list[bool]]:
    L, W, cb = cfg.lanes, cfg.width, cfg.count_bits
    vals = unpack_lanes(beats, W, L, signed=False)
    counts = field(beats, L * W, cb)
    errs = field(beats, L * W + cb + 1, 1)
    outs, errors = [], []
    for _, _, o0, o1 in spans:
        err = bool(errs[o0:o1 + 1].any())
        parts = [vals[b, :counts[b]] for b in range(o0, o1 + 1)] if not err else []
        flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        outs.append(bits_to_float(torch.from_numpy(flat.astype(np.int64)), cfg.fmt))
        errors.append(err)
    return outs, errors


def float_baseline_errors(cfg: SoftmaxConfig, v: torch.Tensor, out: torch.Tensor) -> tuple[float, float, float]:
    """(max abs error, max rel error on outputs >= 2^-10, |sum(y) - 1|) of one output against float64.

    NaN outputs where float64 gives NaN count as exact; a NaN anywhere else is an infinite error.
    """
    ref = softmax_ref(v)
    got = out.to(torch.float64)
    same_nan = torch.isnan(ref) & torch.isnan(got)
    err = torch.where(same_nan, torch.zeros_like(ref), (got - ref).abs())
    err = torch.nan_to_num(err, nan=float("inf"))
    big = ref >= 2**-10
    rel = float((err[big] / ref[big]).max()) if bool(big.any()) else 0.0
    total = 0.0 if bool(same_nan.all()) else abs(float(torch.nan_to_num(got, nan=float("inf")).sum()) - 1)
    return float(err.max()), rel, total


def run_hyft(cfg: SoftmaxConfig, vectors: list[torch.Tensor], gap: float = 0.0, stall: float = 0.0, seed: int = 1,
             waves: bool = False, check: bool = True, streams: str = "cocotb") -> HyftRun:
    """Run a batch of vectors back to back through the RTL of `cfg`.

    gap: chance of an idle cycle before each input beat; stall: chance that the
    output is not ready in a cycle. With check=True every output beat is
    compared with the golden model (every beat: data, count, last and error; golden/hyft.py, or
    golden/float_softmax.py for arch="float") and a difference raises SimulationMismatch
    naming the vector and elements. streams="hdl" (under
    cocotb) or "native" (no cocotb) drives the streams inside the simulator (accelkit.sim.hdl_streams; for long
    runs, docs/streams.md).
    """
    vectors = _check_vectors(cfg, vectors)
    x_beats, y_beats, labels, spans = pack_job(cfg, vectors)
    job = {
        "seed": seed,
        "sources": [{"name": "x", "beats": x_beats, "gap": gap}],
        "sinks": [{"name": "y", "count": len(y_beats), "stall": stall,
                   "expect": y_beats if check else None,
                   "labels": labels if check else None}],
        "timeout": 2000 + int(40 * (len(x_beats) + len(y_beats)) / max(1e-3, 1 - max(gap, stall))),
    }
    res = run_streams(cfg, job, waves=waves, streams=streams)
    xf, yf = res["source_fires"]["x"], res["sink_fires"]["y"]
    t0 = xf[0]
    outputs, errors = unpack_outputs(cfg, res["sinks"]["y"], spans)
    lat = [yf[o1] - xf[i0] + 1 for i0, _, _, o1 in spans]
    wave = res["run_dir"] / "dump.vcd" if waves else None
    return HyftRun(outputs=outputs, errors=errors, latency=lat, cycles=yf[-1] - t0 + 1,
                   predicted=batch_timing(cfg, [len(v) for v in vectors]),
                   in_fires=[c - t0 for c in xf], out_fires=[c - t0 for c in yf], waves=wave)


__all__ = ["HyftRun", "expected_bits", "float_baseline_errors", "pack_job", "run_hyft",
           "unpack_outputs"]
