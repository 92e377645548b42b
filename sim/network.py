"""Running a whole compiled network's RTL (gen/network.py) from Python: frames in, pooled vectors and cycles out.

    cfg, summary = compile_network(net, frames, mac_budget=...)        # accelkit.flows.compile
    run = run_network(cfg, net, frames, gap=0.2, stall=0.3)
    run.pooled[k]        # frame k's pooled vector from the RTL, checked bit-exact against net(frame)
    run.latency[k]       # its first input handshake to its last pooled beat's handshake, inclusive
    run.interval         # the steady-state interval: mean cycles between consecutive frames' last pooled beats
    run.predicted        # the cycle model's latencies and interval (exact when gap = stall = 0)

The weights go in through the top's one ``params`` port, each beat tagged with its engine; the frames
run back to back in one simulation (built once per config, cached by content).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from accelkit.config.network import SparseNetworkConfig
from accelkit.golden.network import SparseNetwork
from accelkit.golden.sparse_conv import FrameError, SparseFrame
from accelkit.golden.sparse_rtl_cycles import frames_cycles

from .payload import field, unpack_lanes
from .runner import run_streams
from .sparse_conv import _check_layer, pack_frame_tokens, pack_params

__all__ = ["NetworkRun", "run_network", "pack_network_params", "pool_beats"]


@dataclasses.dataclass
class NetworkRun:
    pooled: list[torch.Tensor]  # per frame, int64 (cout,)
    errors: list[bool]
    latency: list[int]
    interval: float
    predicted_latency: list[int]
    predicted_interval: float


def _word_bits(cfg: SparseNetworkConfig) -> int:
    return max(l.param_bits for l in cfg.layers)


def pack_network_params(cfg: SparseNetworkConfig, net: SparseNetwork) -> list[int]:
    """Every engine's load, one after the other, each beat tagged with its engine's index above the word."""
    wb = _word_bits(cfg)
    grids = net.grids()
    words = []
    for i, (c, l) in enumerate(zip(cfg.layers, net.layers, strict=True)):
        words += [w | (i << wb) for w in pack_params(c, l, *grids[i])]
    return words


def _sum_bits(cfg: SparseNetworkConfig) -> int:
    from accelkit.gen.sparse_pool import pool_sum_bits
    last = cfg.last
    return pool_sum_bits(last.feature_bits, last.max_out_height * last.max_out_width)


def pool_beats(cfg: SparseNetworkConfig, pooled: torch.Tensor, error: bool = False) -> list[int]:
    """The beats the top emits for one pooled vector: cout / po beats of po sums, `last` on the final one."""
    po, sb = cfg.last.po, _sum_bits(cfg)
    groups = cfg.last.cout // po
    out = []
    for g in range(groups):
        w = 0
        for l in range(po):
            w |= (int(pooled[g * po + l]) & ((1 << sb) - 1)) << (l * sb)
        w |= int(g == groups - 1) << (po * sb)
        w |= int(error) << (po * sb + 1)
        out.append(w)
    return out


def _check(cfg: SparseNetworkConfig, net: SparseNetwork) -> None:
    if not isinstance(cfg, SparseNetworkConfig):
        raise TypeError(f"cfg must be a SparseNetworkConfig, got {type(cfg).__name__}")
    if not isinstance(net, SparseNetwork):
        raise TypeError(f"net must be a SparseNetwork, got {type(net).__name__}")
    if len(net.layers) != len(cfg.layers):
        raise FrameError(f"the network has {len(net.layers)} layers, the config {len(cfg.layers)}")
    if tuple(net.residual_spans()) != cfg.residual:
        raise FrameError(f"the network's residual blocks {net.residual_spans()} are not the config's {cfg.residual}")
    if not cfg.pool:
        raise FrameError("run_network runs networks that end in the sum pool (cfg.pool=True)")
    for i, (c, l) in enumerate(zip(cfg.layers, net.layers, strict=True)):
        _check_layer(c, l, f"layer {net.names[i]}")
        if (c.max_height, c.max_width) != net.grids()[i]:
            raise FrameError(f"layer {net.names[i]} runs on {net.grids()[i]}, its engine is built for "
                             f"{(c.max_height, c.max_width)}")


def run_network(cfg: SparseNetworkConfig, net: SparseNetwork, frames: list[SparseFrame], gap: float = 0.0,
                stall: float = 0.0, seed: int = 1, check: bool = True, streams: str = "cocotb") -> NetworkRun:
    """Build (cached) and run the network top on `frames` back to back; with check=True every pooled beat
    (sums, last, error) is compared with the golden network and a difference raises SimulationMismatch.
    streams="hdl" (under cocotb) or "native" (no cocotb) drives the streams inside the simulator
    (accelkit.sim.hdl_streams): for many frames."""
    _check(cfg, net)
    frames = list(frames)
    if not frames:
        raise FrameError("no frames to run")
    for k, f in enumerate(frames):
        if not isinstance(f, SparseFrame):
            raise FrameError(f"frames[{k}] is a {type(f).__name__}, not a SparseFrame")
        net.check_frame(f)
        net.layers[0].check_input(f)
    params = pack_network_params(cfg, net)
    beats, starts, expect, labels = [], [], [], []
    for k, f in enumerate(frames):
        starts.append(len(beats))
        beats += pack_frame_tokens(cfg.first, f)
        exp = pool_beats(cfg, net(f))
        expect += exp
        labels += [f"frame {k} pooled channels {g * cfg.last.po}.." for g in range(len(exp))]
    groups = cfg.last.cout // cfg.last.po
    pred = frames_cycles(cfg, frames)
    # the model's cycles (exact without gaps and stalls), stretched by the chance of a moving cycle, then 8x
    slow = max(0.02, (1 - gap) * (1 - stall))
    job = {
        "seed": seed,
        "sources": [{"name": "params", "beats": params, "gap": gap},
                    {"name": "sites_in", "beats": beats, "gap": gap, "after": "params"}],
        "sinks": [{"name": "pooled", "count": len(expect), "stall": stall,
                   "expect": expect if check else None, "labels": labels if check else None}],
        "timeout": 20000 + len(params) * 4 + int(8 * pred["total"] / slow),
    }
    res = run_streams(cfg, job, streams=streams)
    got = res["sinks"]["pooled"]
    po, sb = cfg.last.po, _sum_bits(cfg)
    sums = unpack_lanes(got, sb, po, signed=True)
    errs = field(got, po * sb + 1, 1)
    in_fires, out_fires = res["source_fires"]["sites_in"], res["sink_fires"]["pooled"]
    pooled, errors, latency, ends = [], [], [], []
    for k in range(len(frames)):
        rows = slice(k * groups, (k + 1) * groups)
        pooled.append(torch.from_numpy(np.asarray(sums[rows]).reshape(-1).astype(np.int64)))
        errors.append(bool(errs[(k + 1) * groups - 1]))
        end = out_fires[(k + 1) * groups - 1]
        ends.append(end)
        latency.append(end - in_fires[starts[k]] + 1)
    interval = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else float(latency[0])
    p_lat = pred["frames"]
    p_int = (pred["total"] - p_lat[0]) / (len(frames) - 1) if len(frames) > 1 else float(p_lat[0])
    return NetworkRun(pooled, errors, latency, interval, p_lat, p_int)
