"""Running the DyBit MAC array's RTL from Python: codes in, exact results and cycles out.

    from accelkit.config.dybit import DyBitArrayConfig
    from accelkit.sim.dybit import run_dybit_array
    run = run_dybit_array(DyBitArrayConfig(rows=4, cols=4), a_codes, b_codes)
    run.c        # M x N int64, units of 2^-(fa + fb), checked bit-exact against the golden model
    run.cycles   # first input handshake to last output handshake

The host splits the matmul into R x C output tiles (row tiles outer, column
tiles inner), pads M and N with zero codes, streams each tile's K columns of A
and rows of B, and reassembles C from the row beats.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from accelkit.config.dybit import DyBitArrayConfig
from accelkit.golden.dybit import QuantError, dybit_matmul, parse_format
from accelkit.golden.dybit_cycles import matmul_cycles

from .payload import pack_lanes, unpack_lanes
from .runner import run_streams


@dataclasses.dataclass
class DyBitRun:
    c: torch.Tensor  # M x N int64
    cycles: int  # first input handshake to last output handshake, inclusive
    predicted: int  # the cycle model's figure for the same shape (valid without gaps and stalls)
    waves: object = None  # waveform path when run with waves=True
    sim_seconds: float = 0.0  # wall time of the simulation itself (the simulator's start excluded)


def check_matmul(a: torch.Tensor, b: torch.Tensor, max_k: int, a_fmt, b_fmt) -> tuple[torch.Tensor, torch.Tensor]:
    """A and B as int64 code tensors of a matmul the array can run, or a one-line QuantError."""
    if not (torch.is_tensor(a) and torch.is_tensor(b)) or a.dim() != 2 or b.dim() != 2:
        raise QuantError("A and B must be 2-D integer tensors of codes")
    if a.shape[1] != b.shape[0]:
        raise QuantError(f"shapes {tuple(a.shape)} x {tuple(b.shape)} do not make a matmul")
    m, k = a.shape
    n = b.shape[1]
    if min(m, k, n) < 1:
        raise QuantError(f"matmul {m} x {k} x {n} is empty")
    if k > max_k:
        raise QuantError(f"K={k} is above max_k={max_k} that this array's accumulators were generated for")
    parse_format(a_fmt).to_int(a)  # range and dtype checks with a one-line QuantError
    parse_format(b_fmt).to_int(b)
    return a.to(torch.int64), b.to(torch.int64)


def _check_operands(cfg: DyBitArrayConfig, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return check_matmul(a, b, cfg.max_k, cfg.a_fmt, cfg.b_fmt)


def pad_tiles(a: np.ndarray, b: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """A (M x K) and B (K x N) padded with zeros to whole R x C output tiles."""
    m, k = a.shape
    n = b.shape[1]
    ap = np.zeros((math.ceil(m / rows) * rows, k), dtype=np.int64)
    ap[:m] = a
    bp = np.zeros((k, math.ceil(n / cols) * cols), dtype=np.int64)
    bp[:, :n] = b
    return ap, bp


def tile_inputs(ap: np.ndarray, bp: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The a and b beats (lane values) of padded A (tm*R x K) and B (K x tn*C), tile by tile (row tiles outer,
    column tiles inner), and each beat's `last` flag (the tile's final k)."""
    R, C = rows, cols
    k = ap.shape[1]
    tm, tn = ap.shape[0] // R, bp.shape[1] // C
    # a beats: tile (i, j), step kk -> A[i*R:(i+1)*R, kk]; the same A columns repeat for every j
    a_tiles = ap.reshape(tm, R, k).transpose(0, 2, 1)  # (tm, k, R)
    a_vals = np.repeat(a_tiles[:, None], tn, axis=1).reshape(-1, R)
    last = np.tile((np.arange(k) == k - 1).astype(np.int64), tm * tn)
    b_tiles = bp.reshape(k, tn, C).transpose(1, 0, 2)  # (tn, k, C)
    b_vals = np.tile(b_tiles[None], (tm, 1, 1, 1)).reshape(-1, C)
    return a_vals, b_vals, last


def tile_outputs(cp: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The c beats of a padded result (tm*R x tn*C): one row of a tile per beat, in tile order; `last` flags."""
    R, C = rows, cols
    tm, tn = cp.shape[0] // R, cp.shape[1] // C
    c_vals = cp.reshape(tm, R, tn, C).transpose(0, 2, 1, 3).reshape(-1, C)  # (tile, row) order
    c_last = np.tile((np.arange(R) == R - 1).astype(np.int64), tm * tn)
    return c_vals, c_last


def untile(vals: np.ndarray, m: int, n: int, rows: int, cols: int) -> torch.Tensor:
    """Inverse of tile_outputs: the c beats' lane values back to the M x N result."""
    R, C = rows, cols
    tm, tn = math.ceil(m / R), math.ceil(n / C)
    full = np.asarray(vals).reshape(tm, tn, R, C).transpose(0, 2, 1, 3).reshape(tm * R, tn * C)
    return torch.from_numpy(np.ascontiguousarray(full[:m, :n]).astype(np.int64))


def tile_labels(m: int, n: int, rows: int, cols: int, prefix: str = "") -> list[str]:
    """A name for every c beat: its tile, the tile's first row and column, the row."""
    tn = math.ceil(n / cols)
    return [f"{prefix}tile {t} (rows {(t // tn) * rows}.., cols {(t % tn) * cols}..) row {r}"
            for t in range(math.ceil(m / rows) * tn) for r in range(rows)]


def pack_job(cfg: DyBitArrayConfig, a: torch.Tensor, b: torch.Tensor) -> tuple[list[int], list[int], list[int]]:
    """Beats of streams a, b and the expected beats of c for A x B (codes), tile by tile."""
    R, C = cfg.rows, cfg.cols
    ap, bp = pad_tiles(a.numpy(), b.numpy(), R, C)
    a_vals, b_vals, last = tile_inputs(ap, bp, R, C)
    cp = dybit_matmul(torch.from_numpy(ap), cfg.a_fmt, torch.from_numpy(bp), cfg.b_fmt).numpy()
    c_vals, c_last = tile_outputs(cp, R, C)
    return (pack_lanes(a_vals, cfg.a_bits, [(last, 1)]), pack_lanes(b_vals, cfg.b_bits),
            pack_lanes(c_vals, cfg.acc_bits, [(c_last, 1)]))


def unpack_c(cfg: DyBitArrayConfig, beats: list[int], m: int, n: int) -> torch.Tensor:
    return untile(unpack_lanes(beats, cfg.acc_bits, cfg.cols, signed=True), m, n, cfg.rows, cfg.cols)


def run_dybit_array(cfg: DyBitArrayConfig, a: torch.Tensor, b: torch.Tensor, *, gap: float = 0.0,
                    stall: float = 0.0, seed: int = 1, waves: bool = False, check: bool = True,
                    streams: str = "cocotb") -> DyBitRun:
    """Run C = A x B (codes of cfg.a_format and cfg.b_format) on the RTL.

    gap: chance of an idle cycle before each input beat; stall: chance that the
    output is not ready in a cycle. With check=True the testbench compares every
    output beat with the golden model and a difference raises SimulationMismatch.
    streams="hdl" (under cocotb) or "native" (no cocotb) drives the streams inside the simulator
    (accelkit.sim.hdl_streams; for long runs, docs/streams.md).
    """
    a, b = _check_operands(cfg, a, b)
    m, k = a.shape
    n = b.shape[1]
    a_beats, b_beats, c_beats = pack_job(cfg, a, b)
    labels = tile_labels(m, n, cfg.rows, cfg.cols) if check else None
    job = {
        "seed": seed,
        "sources": [{"name": "a", "beats": a_beats, "gap": gap}, {"name": "b", "beats": b_beats, "gap": gap}],
        "sinks": [{"name": "c", "count": len(c_beats), "stall": stall, "expect": c_beats if check else None,
                   "labels": labels}],
        "timeout": 1000 + 20 * (len(a_beats) + len(c_beats)),
    }
    res = run_streams(cfg, job, waves=waves, streams=streams)
    c = unpack_c(cfg, res["sinks"]["c"], m, n)
    cycles = res["sink_fires"]["c"][-1] - res["source_fires"]["a"][0] + 1
    wave = res["run_dir"] / "dump.vcd" if waves else None
    return DyBitRun(c=c, cycles=cycles, predicted=matmul_cycles(cfg, m, k, n), waves=wave,
                    sim_seconds=res["sim_seconds"])
