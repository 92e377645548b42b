"""Running the sparse convolution engine's RTL from Python: frames in, output frames and cycles out.

    from accelkit.config.sparse_conv import SparseConvConfig
    from accelkit.sim.sparse_conv import random_layer, run_sparse_conv
    cfg = SparseConvConfig(max_height=34, max_width=34, cin=16, cout=16, pi=4, po=4)
    run = run_sparse_conv(cfg, random_layer(cfg, seed=0), [frame])
    run.outputs[0]     # the output SparseFrame, checked bit-exact against the golden layer
    run.cycles[0]      # first input handshake of the frame to its end-of-frame output handshake
    run.predicted[0]   # the cycle model's figure (accelkit.golden.sparse_rtl_cycles; docs/cycle-models.md)

A layer engine (SparseConvConfig, with a golden SparseConvLayer) or a chain (SparseChainConfig, with
a golden SparseChain of the same layers) runs any number of frames back to back. The frame shape is
a layer register loaded with the weights, so consecutive frames of one shape share a simulation and
each change of shape starts another. A `TokenFrame` is a frame whose token list may break the rules
(out of raster order, outside the frame): the engine must flag it and output the layer applied to
the tokens before the first bad one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from accelkit.config.sparse_conv import SparseChainConfig, SparseConvConfig
from accelkit.golden.sparse_conv import FrameError, SparseChain, SparseConvLayer, SparseFrame
from accelkit.golden.sparse_rtl_cycles import frames_cycles

from .payload import field, pack_lanes, unpack_lanes
from .runner import run_streams

__all__ = ["TokenFrame", "SparseConvRun", "run_sparse_conv", "random_layer", "random_chain", "with_channels",
           "random_frame", "dense_frame", "pack_params", "pack_frame_tokens", "pack_output_tokens",
           "engine_figures"]


@dataclasses.dataclass
class TokenFrame:
    """A frame as raw tokens, possibly malformed: (y, x) per token in stream order and its features."""

    height: int
    width: int
    coords: Any  # (N, 2)
    features: Any  # (N, C)

    def valid_prefix(self) -> tuple[SparseFrame, bool]:
        """The frame of the tokens before the first bad one, and whether there was a bad one."""
        coords = np.asarray(self.coords, dtype=np.int64).reshape(-1, 2)
        feats = np.asarray(self.features, dtype=np.int64)
        feats = feats.reshape(coords.shape[0], -1) if coords.shape[0] else feats.reshape(0, feats.shape[-1])
        prev = -1
        for i, (y, x) in enumerate(coords):
            key = int(y) * self.width + int(x)
            if not (0 <= y < self.height and 0 <= x < self.width) or key <= prev:
                return SparseFrame(self.height, self.width, coords[:i], feats[:i]), True
            prev = key
        return SparseFrame(self.height, self.width, coords, feats), False


@dataclasses.dataclass
class SparseConvRun:
    outputs: list[SparseFrame]  # per input frame, as the RTL produced it
    errors: list[bool]  # the end-of-frame error flag per frame
    cycles: list[int]  # per frame: its first input handshake to its end-of-frame output handshake, inclusive
    predicted: list[int]  # the cycle model's figure per frame (for gap = stall = 0, where it is exact)
    total_cycles: int  # first input handshake to the last output handshake of all frames (summed over runs)
    predicted_total: int
    waves: list = dataclasses.field(default_factory=list)  # waveform paths with waves=True
    sim_seconds: float = 0.0  # wall time of the simulations themselves (the simulator's start excluded)


# --------------------------------------------------------------------------- layers, frames


def _layers_of(cfg) -> tuple[SparseConvConfig, ...]:
    if isinstance(cfg, SparseChainConfig):
        return cfg.layers
    if isinstance(cfg, SparseConvConfig):
        return (cfg,)
    raise TypeError(f"cfg must be a SparseConvConfig or SparseChainConfig, got {type(cfg).__name__}")


def random_layer(cfg: SparseConvConfig, seed: int = 0, scale_range: tuple[int, int] | None = None) -> SparseConvLayer:
    """A golden layer of `cfg` with random full-range weights and biases and scales that keep outputs mostly
    unclamped (some clamp, which the tests want too)."""
    g = torch.Generator().manual_seed(seed)
    wlo, whi = cfg.weight_range
    shape = (cfg.cout, 1, cfg.kernel, cfg.kernel) if cfg.depthwise else (cfg.cout, cfg.cin, cfg.kernel,
                                                                            cfg.kernel)
    weight = torch.randint(wlo, whi + 1, shape, generator=g)
    blo, bhi = cfg.bias_range
    bias = torch.randint(max(blo, -4096), min(bhi, 4096) + 1, (cfg.cout,), generator=g)
    if scale_range is None:
        # aim ((psum) * scale) >> E at about +-64 for a typical psum of a few neighbours
        xmax = max(abs(v) for v in cfg.input_range)
        typical = max(1, int(xmax * (1 << (cfg.weight_bits - 1)) * (cfg.products_per_output / 3) ** 0.5 / 4))
        s = max(1, (64 << cfg.shift) // typical)
        scale_range = (max(0, s // 3), min(cfg.scale_max, 2 * s))
    scale = torch.randint(scale_range[0], scale_range[1] + 1, (cfg.cout,), generator=g)
    return SparseConvLayer.from_config(cfg, weight, bias, scale)


def random_chain(cfg: SparseChainConfig, seed: int = 0) -> SparseChain:
    return SparseChain([random_layer(l, seed + i) for i, l in enumerate(cfg.layers)])


def with_channels(frame: SparseFrame, channels: int, lo: int, hi: int, seed: int = 0) -> SparseFrame:
    """The same active sites with `channels` random features in lo..hi (real frames have 1 or 2 channels)."""
    g = torch.Generator().manual_seed(seed)
    return frame.with_features(torch.randint(lo, hi + 1, (frame.n_active, channels), generator=g))


def random_frame(height: int, width: int, density: float, channels: int, lo: int, hi: int,
                 seed: int = 0) -> SparseFrame:
    """Sites drawn independently with probability `density` (at least one site when density > 0)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(height, width, generator=g) < density
    if density > 0 and not bool(mask.any()):
        mask[int(torch.randint(height, (1,), generator=g)), int(torch.randint(width, (1,), generator=g))] = True
    coords = mask.nonzero()
    feats = torch.randint(lo, hi + 1, (coords.shape[0], channels), generator=g)
    return SparseFrame(height, width, coords, feats)


def _check_layer(cfg: SparseConvConfig, layer: SparseConvLayer, where: str) -> None:
    if not isinstance(layer, SparseConvLayer):
        raise TypeError(f"{where} must be a SparseConvLayer, got {type(layer).__name__}")
    got = (layer.kind, layer.cin, layer.cout, layer.shift, layer.relu, layer.input_signed, layer.feature_bits,
           layer.weight_bits, layer.bias_bits, layer.scale_bits, layer.id_scale is not None)
    want = (cfg.kind, cfg.cin, cfg.cout, cfg.shift, cfg.relu, cfg.signed_input, cfg.feature_bits,
            cfg.weight_bits, cfg.bias_bits, cfg.scale_bits, cfg.residual)
    if got != want:
        raise FrameError(f"{where} ({layer!r}) does not match its config (kind, channels, shift, relu, "
                         f"signedness, widths, residual): {got} != {want}")


def _golden_layers(cfg, layer_or_chain) -> list[SparseConvLayer]:
    cfgs = _layers_of(cfg)
    if isinstance(layer_or_chain, SparseChain):
        if layer_or_chain.residual:
            raise FrameError("residual chains are not supported by the RTL chain")
        leaves = layer_or_chain.leaves
    else:
        leaves = [layer_or_chain]
    if len(leaves) != len(cfgs):
        raise FrameError(f"the golden model has {len(leaves)} layers, the config {len(cfgs)}")
    for i, (c, l) in enumerate(zip(cfgs, leaves, strict=True)):
        _check_layer(c, l, f"layer {i}")
    return leaves


# --------------------------------------------------------------------------- packing


def pack_params(cfg: SparseConvConfig, layer: SparseConvLayer, height: int, width: int) -> list[int]:
    """The params load of one engine: shape word, weight words, requant words (see gen/sparse_conv.py)."""
    words = [(height - 1) | ((width - 1) << cfg.y_bits)]
    wt = layer.weight.numpy()
    wmask = (1 << cfg.weight_bits) - 1
    offs = [(dy, dx) for dy in range(3) for dx in range(3)] if cfg.kernel == 3 else [(0, 0)]
    gi_n, go_n, PI, PO = cfg.in_groups, cfg.requant_groups, cfg.pi, cfg.po
    for ty, tx in offs:
        if cfg.depthwise:
            for g in range(gi_n):
                lanes = [int(wt[g * PI + lane, 0, ty, tx]) for lane in range(PI)]
                words.append(sum((v & wmask) << (k * cfg.weight_bits) for k, v in enumerate(lanes)))
        else:
            for go in range(go_n):
                for gi in range(gi_n):
                    lanes = [int(wt[go * PO + o, gi * PI + i, ty, tx]) for o in range(PO) for i in range(PI)]
                    words.append(sum((v & wmask) << (k * cfg.weight_bits) for k, v in enumerate(lanes)))
    bb, sb = cfg.bias_bits, cfg.scale_bits
    for go in range(go_n):
        w = 0
        for o in range(PO):
            w |= (int(layer.bias[go * PO + o]) & ((1 << bb) - 1)) << (o * bb)
            w |= int(layer.scale[go * PO + o]) << (PO * bb + o * sb)
        if cfg.residual:
            w |= int(layer.id_scale) << (PO * (bb + sb))
        words.append(w)
    assert len(words) == cfg.param_words
    return words


def _pack_tokens(coords: np.ndarray, feats: np.ndarray, lanes: int, fbits: int, ybits: int, xbits: int,
                 error: bool) -> list[int]:
    n, c = feats.shape
    groups = c // lanes
    vals = feats.reshape(n * groups, lanes) if n else np.zeros((0, lanes), np.int64)
    ys = np.repeat(coords[:, 0], groups) if n else np.zeros(0, np.int64)
    xs = np.repeat(coords[:, 1], groups) if n else np.zeros(0, np.int64)
    vals = np.concatenate([vals, np.zeros((1, lanes), np.int64)])
    ys, xs = np.concatenate([ys, [0]]), np.concatenate([xs, [0]])
    eof = np.zeros(len(ys), np.int64)
    eof[-1] = 1
    err = np.zeros(len(ys), np.int64)
    err[-1] = int(error)
    return pack_lanes(vals, fbits, [(ys, ybits), (xs, xbits), (eof, 1), (err, 1)])


def pack_frame_tokens(cfg: SparseConvConfig, frame: SparseFrame | TokenFrame) -> list[int]:
    """The input beats of one frame: cin/pi beats per site, then the end-of-frame beat."""
    coords = np.asarray(frame.coords, dtype=np.int64).reshape(-1, 2)
    feats = np.asarray(frame.features, dtype=np.int64).reshape(coords.shape[0], -1) if coords.shape[0] else \
        np.zeros((0, cfg.cin), np.int64)
    if coords.shape[0] and feats.shape[1] != cfg.cin:
        raise FrameError(f"frame has {feats.shape[1]} channels, the engine takes cin={cfg.cin}")
    ymask, xmask = (1 << cfg.y_bits) - 1, (1 << cfg.x_bits) - 1
    if coords.shape[0] and (coords.min() < 0 or coords[:, 0].max() > ymask or coords[:, 1].max() > xmask):
        raise FrameError(f"token coordinates do not fit the engine's {cfg.y_bits}-bit y / {cfg.x_bits}-bit x")
    return _pack_tokens(coords, feats, cfg.pi, cfg.feature_bits, cfg.y_bits, cfg.x_bits, False)


def pack_output_tokens(cfg: SparseConvConfig, frame: SparseFrame, error: bool) -> list[int]:
    """The output beats the engine must produce for output frame `frame`: cout/po per site, then end of frame."""
    return _pack_tokens(frame.coords.numpy(), frame.features.numpy(), cfg.po, cfg.feature_bits, cfg.out_y_bits,
                        cfg.out_x_bits, error)


def _unpack_frames(cfg: SparseConvConfig, beats: list[int], shapes: list[tuple[int, int]]):
    """Split output beats at end-of-frame beats into frames (and error flags)."""
    PO, fb = cfg.po, cfg.feature_bits
    base = PO * fb
    ys = field(beats, base, cfg.out_y_bits)
    xs = field(beats, base + cfg.out_y_bits, cfg.out_x_bits)
    eof = field(beats, base + cfg.out_y_bits + cfg.out_x_bits, 1)
    err = field(beats, base + cfg.out_y_bits + cfg.out_x_bits + 1, 1)
    vals = unpack_lanes(beats, fb, PO, signed=True) if beats else np.zeros((0, PO), np.int64)
    groups = cfg.requant_groups
    frames, errors, ends = [], [], []
    start = 0
    for k, (h, w) in enumerate(shapes):
        ends_here = np.nonzero(eof[start:])[0]
        if not len(ends_here):
            raise FrameError(f"output has no end-of-frame beat for frame {k}")
        end = start + int(ends_here[0])
        n = (end - start) // groups
        sl = slice(start, start + n * groups, groups)
        coords = np.stack([ys[sl], xs[sl]], 1) if n else np.zeros((0, 2), np.int64)
        feats = vals[start:start + n * groups].reshape(n, groups * PO) if n else np.zeros((0, cfg.cout), np.int64)
        frames.append(SparseFrame(h, w, coords, feats))
        errors.append(bool(err[end]))
        ends.append(end)
        start = end + 1
    return frames, errors, ends


# --------------------------------------------------------------------------- running


def _shapes(layers, h: int, w: int) -> list[tuple[int, int]]:
    out = [(h, w)]
    for c in layers:
        out.append(c.output_grid(*out[-1]))
    return out


def _golden_out(leaves, frame):
    if isinstance(frame, TokenFrame):
        x, error = frame.valid_prefix()
    else:
        x, error = frame, False
    for l in leaves:
        x = l(x)
    return x, error


def run_sparse_conv(cfg: SparseConvConfig | SparseChainConfig, layer_or_chain: SparseConvLayer | SparseChain,
                    frames, gap: float = 0.0, stall: float = 0.0, seed: int = 1, waves: bool = False,
                    check: bool = True, streams: str = "cocotb") -> SparseConvRun:
    """Run a layer engine (or a chain) on `frames` (one or a list of SparseFrame / TokenFrame), back to back.

    gap: chance of an idle cycle before each input beat (params too); stall: chance that the output is not
    ready in a cycle. With check=True every output beat, and the end-of-frame error flag, is compared with
    the golden model and a difference raises SimulationMismatch. streams="hdl" (under cocotb) or
    "native" (no cocotb) drives the streams inside the simulator (accelkit.sim.hdl_streams; for long runs).
    """
    layers = _layers_of(cfg)
    if any(c.residual for c in layers):
        raise FrameError("residual=True: a residual layer adds its block's input, so it runs inside a network "
                         "(accelkit.sim.network.run_network, `accelkit network sim`)")
    leaves = _golden_layers(cfg, layer_or_chain)
    if isinstance(frames, SparseFrame | TokenFrame):
        frames = [frames]
    frames = list(frames)
    if not frames:
        raise FrameError("no frames to run")
    for k, f in enumerate(frames):
        if not isinstance(f, SparseFrame | TokenFrame):
            raise FrameError(f"frames[{k}] is a {type(f).__name__}, not a SparseFrame or TokenFrame")
        if not layers[0].fits(f.height, f.width):
            raise FrameError(f"frames[{k}] is {f.height} x {f.width}, the engine takes at most "
                             f"{layers[0].max_height} x {layers[0].max_width}")
        if isinstance(f, SparseFrame):
            leaves[0].check_input(f)
    # consecutive frames of one shape share a simulation
    runs: list[list[int]] = []
    for k, f in enumerate(frames):
        if runs and (frames[runs[-1][0]].height, frames[runs[-1][0]].width) == (f.height, f.width):
            runs[-1].append(k)
        else:
            runs.append([k])
    result = SparseConvRun([None] * len(frames), [False] * len(frames), [0] * len(frames), [0] * len(frames),
                           0, 0)
    last = layers[-1]
    for ks in runs:
        h, w = frames[ks[0]].height, frames[ks[0]].width
        shapes = _shapes(layers, h, w)
        params = [pack_params(c, l, *shapes[i]) for i, (c, l) in enumerate(zip(layers, leaves, strict=True))]
        beats, starts = [], []
        expect, labels = [], []
        for k in ks:
            starts.append(len(beats))
            beats += pack_frame_tokens(layers[0], frames[k])
            out, error = _golden_out(leaves, frames[k])
            exp = pack_output_tokens(last, out, error)
            expect += exp
            groups = last.requant_groups
            sites = out.coords.tolist()
            labels += [f"frame {k} site ({sites[j // groups][0]}, {sites[j // groups][1]}) "
                       f"channels {(j % groups) * last.po}.." for j in range(len(exp) - 1)]
            labels.append(f"frame {k} end of frame")
        names = ["params"] if len(layers) == 1 else [f"params{i}" for i in range(len(layers))]
        longest = max(range(len(params)), key=lambda i: len(params[i]))
        sources = [{"name": n, "beats": p, "gap": gap} for n, p in zip(names, params, strict=True)]
        sources.append({"name": "sites_in", "beats": beats, "gap": gap, "after": names[longest]})
        fill = sum(c.buffer_slots * c.max_width for c in layers)
        job = {
            "seed": seed,
            "sources": sources,
            "sinks": [{"name": "sites_out", "count": len(expect), "stall": stall,
                       "expect": expect if check else None, "labels": labels if check else None}],
            "timeout": 5000 + fill + 40 * (len(beats) + len(expect)) * max(c.taps * c.requant_groups
                                                                             for c in layers),
        }
        res = run_streams(cfg, job, waves=waves, streams=streams)
        outs, errs, ends = _unpack_frames(last, res["sinks"]["sites_out"], [shapes[-1]] * len(ks))
        in_fires, out_fires = res["source_fires"]["sites_in"], res["sink_fires"]["sites_out"]
        predicted = frames_cycles(cfg, [frames[k] for k in ks])
        for j, k in enumerate(ks):
            result.outputs[k], result.errors[k] = outs[j], errs[j]
            result.cycles[k] = out_fires[ends[j]] - in_fires[starts[j]] + 1
            result.predicted[k] = predicted["frames"][j]
        result.total_cycles += out_fires[-1] - in_fires[0] + 1
        result.predicted_total += predicted["total"]
        result.sim_seconds += res["sim_seconds"]
        if waves:
            result.waves.append(res["run_dir"] / "dump.vcd")
    return result


# --------------------------------------------------------------------------- acceptance figures


def dense_frame(height: int, width: int, channels: int, lo: int, hi: int, seed: int = 0) -> SparseFrame:
    """The fully active frame of this size with random features."""
    return random_frame(height, width, 1.0, channels, lo, hi, seed)


def engine_figures(cfg: SparseConvConfig, frame: SparseFrame, seed: int = 0, dense_rtl: bool = False,
                   streams: str = "cocotb") -> dict:
    """The acceptance figures of one engine on one frame, measured on the RTL (JSON-ready).

    The frame's sites are kept and its features replaced by random ones of cfg.cin channels (real frames
    have 1 or 2). `dense_cycles` is the same engine on the fully active frame of the frame's size: from the
    cycle model (exact wherever it was checked, docs/cycle-models.md), or measured on the RTL too with
    dense_rtl=True (long). `streams`: see `run_sparse_conv`.
    Utilisation is useful MACs (sum |N(p)| * Cin * Cout) over MAC units x RTL cycles.
    """
    from accelkit.golden.sparse_conv import useful_macs
    from accelkit.golden.sparse_rtl_cycles import dense_frame_cycles

    lo, hi = cfg.input_range
    x = with_channels(frame, cfg.cin, lo, hi, seed)
    layer = random_layer(cfg, seed)
    run = run_sparse_conv(cfg, layer, [x], streams=streams)
    dense_model = dense_frame_cycles(cfg, frame.height, frame.width)
    fig = {
        "kind": cfg.kind, "pi": cfg.pi, "po": cfg.po, "cin": cfg.cin, "cout": cfg.cout,
        "height": frame.height, "width": frame.width, "n_active": frame.n_active, "density": frame.density,
        "rtl_cycles": run.cycles[0], "model_cycles": run.predicted[0],
        "dense_cycles_model": dense_model,
        "useful_macs": useful_macs(x, cfg.kind, cfg.cin, cfg.cout), "mac_units": cfg.mac_units,
    }
    if dense_rtl:
        d = run_sparse_conv(cfg, layer, [dense_frame(frame.height, frame.width, cfg.cin, lo, hi, seed)],
                            streams=streams)
        fig["dense_cycles_rtl"] = d.cycles[0]
    dense = fig.get("dense_cycles_rtl", dense_model)
    fig["speedup"] = dense / run.cycles[0]
    fig["utilisation"] = fig["useful_macs"] / (cfg.mac_units * run.cycles[0])
    return fig
