"""Whole event-camera networks, bit-exact: a chain of layers and inverted-residual blocks, then a global sum pool.

A `SparseNetwork` is what ESDA compiles into one dataflow accelerator (docs/specs/sparse-conv.md,
docs/network.md): stages run in sequence, each a `SparseConvLayer` or a block (a `SparseChain`
whose last pw1x1 may add the block's input, `residual=True`), and the network ends in a global
sum pool: one int64 per output channel, the sum over the last layer's active sites.

    net(frame)        -> the pooled vector, int64 (Cout_last,)
    net.trace(frame)  -> every layer's output frame, in execution order
    net.save(path)    -> path.json (structure) + path.npz (integer weights); SparseNetwork.load(path)
    SparseNetwork.from_esda(folder)  -> a network exported by ESDA (docs/specs/esda-network-format.md)

Layers are named: a layer stage by its own name, the layers of block `b` as `b_0`, `b_1`, ...
(ESDA's names). `SparseNetwork.random(layout, ...)` builds a network of a topology (for
example `SEE_A`, ESDA's eye tracker) with random weights whose scales are calibrated on frames
so that activations neither die out nor saturate through the depth of the network.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np
import torch

from accelkit.config import ConfigError, require
from accelkit.golden.sparse_conv import FrameError, SparseChain, SparseConvLayer, SparseFrame, output_grid

__all__ = ["SparseNetwork", "StageSpec", "SEE_A", "NetworkFileError", "pool"]

FORMAT = "accelkit-sparse-network"
VERSION = 1
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# What a layer needs beyond its weights, as saved in the JSON (the weights go to the .npz).
_LAYER_KEYS = ("kind", "relu", "shift", "input_signed", "feature_bits", "weight_bits", "bias_bits", "scale_bits",
               "id_scale")


class NetworkFileError(ValueError):
    """A network file or folder that cannot be read: one line naming the file (or the layer) and the fault."""


def pool(frame: SparseFrame) -> torch.Tensor:
    """The global sum pool: per channel, the int64 sum over the active sites (zeros for an empty frame)."""
    return frame.features.sum(0, dtype=torch.int64) if frame.n_active else torch.zeros(frame.channels,
                                                                                        dtype=torch.int64)


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage of a topology, as ESDA's cfg.json describes it.

    type "conv": one layer, channels (Cin, Cout): a 3x3 conv (stride 2: conv3x3s2, 1: subm3x3) before any
    block, a pw1x1 after the blocks. type "block": an inverted-residual block, channels (Cin, C, Cout):
    pw1x1 Cin -> C with ReLU, depthwise 3x3 on C with ReLU (dw3x3s2 at stride 2), pw1x1 C -> Cout without
    ReLU that adds the block input when `residual` (then stride 1 and Cin == Cout).
    """

    name: str
    type: str
    channels: tuple[int, ...]
    stride: int = 1
    residual: bool = False
    relu: bool = True  # conv stages only (block layers follow the block rule above)

    def __post_init__(self):
        where = f"stage {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"name={self.name!r} is invalid: a stage name is an identifier")
        require(self.type in ("conv", "block"), f"{where} type", "'conv' or 'block'", self.type)
        n = 2 if self.type == "conv" else 3
        ch = tuple(self.channels) if isinstance(self.channels, list | tuple) else self.channels
        require(isinstance(ch, tuple) and len(ch) == n and all(isinstance(c, int) and not isinstance(c, bool)
                                                                and c >= 1 for c in ch),
                f"{where} channels", f"{n} positive integers for a {self.type}", self.channels)
        object.__setattr__(self, "channels", ch)
        require(self.stride in (1, 2), f"{where} stride", "1 or 2", self.stride)
        if self.residual:
            require(self.type == "block", f"{where} residual", "only a block adds its input", self.residual)
            require(self.stride == 1, f"{where} residual", "a residual block has stride 1", self.stride)
            require(ch[0] == ch[-1], f"{where} residual",
                    f"a residual block has Cin == Cout, got {ch[0]} -> {ch[-1]}", self.residual)


# ESDA's eye tracker (SEE-A) on 60 x 80 event frames: conv1, seven inverted-residual blocks, conv8, sum pool.
SEE_A = (
    StageSpec("conv1", "conv", (3, 64), stride=2),
    StageSpec("block_0", "block", (64, 64, 16), stride=2),
    StageSpec("block_1", "block", (16, 128, 24), stride=2),
    StageSpec("block_2", "block", (24, 192, 24), stride=1, residual=True),
    StageSpec("block_3", "block", (24, 24, 72), stride=1),
    StageSpec("block_4", "block", (72, 144, 200), stride=2),
    StageSpec("block_5", "block", (200, 400, 200), stride=1, residual=True),
    StageSpec("block_6", "block", (200, 400, 200), stride=1, residual=True),
    StageSpec("conv8", "conv", (200, 128), stride=1),
)


def stage_kinds(spec: StageSpec, first: bool) -> list[tuple[str, str, int, int, bool]]:
    """The layers of a stage: (name, kind, cin, cout, relu) each."""
    if spec.type == "conv":
        if first:
            kind = "conv3x3s2" if spec.stride == 2 else "subm3x3"
        else:
            require(spec.stride == 1, f"stage {spec.name!r} stride",
                    "1 for a conv after the first stage (a pw1x1)", spec.stride)
            kind = "pw1x1"
        return [(spec.name, kind, spec.channels[0], spec.channels[1], spec.relu)]
    cin, c, cout = spec.channels
    dw = "dw3x3s2" if spec.stride == 2 else "dw3x3"
    return [(f"{spec.name}_0", "pw1x1", cin, c, True), (f"{spec.name}_1", dw, c, c, True),
            (f"{spec.name}_2", "pw1x1", c, cout, False)]


class SparseNetwork:
    """Stages in sequence on an H x W input grid, then the global sum pool.

    stages: (name, SparseConvLayer) or (name, SparseChain of SparseConvLayers; residual or not) pairs.
    """

    def __init__(self, height: int, width: int, stages: list[tuple[str, SparseConvLayer | SparseChain]]):
        for name, v in (("height", height), ("width", width)):
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "a positive integer", v)
        stages = list(stages)
        require(len(stages) >= 1, "stages", "at least one stage", len(stages))
        self.height, self.width = height, width
        self.stages: list[tuple[str, SparseConvLayer | SparseChain]] = []
        seen: set[str] = set()
        leaves: list[tuple[str, SparseConvLayer]] = []
        for i, st in enumerate(stages):
            require(isinstance(st, tuple) and len(st) == 2, f"stages[{i}]", "a (name, layer or block) pair", st)
            name, body = st
            if not isinstance(name, str) or not _NAME.match(name):
                raise ConfigError(f"stages[{i}] name={name!r} is invalid: an identifier")
            require(all(name != n for n, _ in self.stages), f"stages[{i}] name", "unique among the stages", name)
            if isinstance(body, SparseChain):
                for j, l in enumerate(body.layers):
                    require(isinstance(l, SparseConvLayer), f"stage {name!r} layers[{j}]",
                            "a SparseConvLayer (blocks do not nest)", type(l).__name__)
                names = [f"{name}_{j}" for j in range(len(body.layers))]
                layers = list(body.layers)
            else:
                require(isinstance(body, SparseConvLayer), f"stage {name!r}", "a SparseConvLayer or SparseChain",
                        type(body).__name__)
                require(body.id_scale is None, f"stage {name!r} id_scale",
                        "None outside a residual block", body.id_scale)
                names, layers = [name], [body]
            for n, l in zip(names, layers, strict=True):
                require(n not in seen, f"stage {name!r}", f"a unique name ({n!r} is used twice)", n)
                seen.add(n)
                if leaves:
                    prev_name, prev = leaves[-1]
                    require(l.cin == prev.cout, f"layer {n!r} cin",
                            f"{prev.cout}, the output channels of {prev_name!r}", l.cin)
                    require(l.input_signed, f"layer {n!r} input_signed",
                            f"True: it takes the requantised output of {prev_name!r}", l.input_signed)
                    require(l.feature_bits == prev.feature_bits, f"layer {n!r} feature_bits",
                            f"{prev.feature_bits}, as {prev_name!r}", l.feature_bits)
                leaves.append((n, l))
            self.stages.append((name, body))
        self._leaves = leaves

    # ----- structure

    @property
    def leaves(self) -> list[tuple[str, SparseConvLayer]]:
        """(name, layer) of every layer in execution order."""
        return list(self._leaves)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self._leaves]

    @property
    def layers(self) -> list[SparseConvLayer]:
        return [l for _, l in self._leaves]

    @property
    def cin(self) -> int:
        return self._leaves[0][1].cin

    @property
    def cout(self) -> int:
        return self._leaves[-1][1].cout

    def residual_spans(self) -> list[tuple[int, int]]:
        """(first, last) layer indices of each residual block: layer `last` adds the input of layer `first`."""
        spans, i = [], 0
        for _, body in self.stages:
            n = len(body.layers) if isinstance(body, SparseChain) else 1
            if isinstance(body, SparseChain) and body.residual:
                spans.append((i, i + n - 1))
            i += n
        return spans

    def grids(self) -> list[tuple[int, int]]:
        """The input grid of every layer, then the output grid of the last."""
        g = [(self.height, self.width)]
        for _, l in self._leaves:
            g.append(output_grid(l.kind, *g[-1]))
        return g

    def __repr__(self) -> str:
        return (f"SparseNetwork({self.height} x {self.width}, {len(self.stages)} stages, {len(self._leaves)} layers, "
                f"{self.cin} -> {self.cout} channels)")

    # ----- compute

    def check_frame(self, frame: SparseFrame) -> None:
        if not isinstance(frame, SparseFrame):
            raise FrameError(f"the network takes a SparseFrame, got {type(frame).__name__}")
        if frame.shape != (self.height, self.width):
            raise FrameError(f"the network takes {self.height} x {self.width} frames, got "
                             f"{frame.height} x {frame.width}")

    def trace(self, frame: SparseFrame) -> list[SparseFrame]:
        """Every layer's output frame, in execution order (the last is the frame the pool sums)."""
        self.check_frame(frame)
        outs: list[SparseFrame] = []
        x = frame
        for _, body in self.stages:
            if isinstance(body, SparseChain):
                sub = body.trace(x)
                outs.extend(sub)
                x = sub[-1]
            else:
                x = body(x)
                outs.append(x)
        return outs

    def __call__(self, frame: SparseFrame) -> torch.Tensor:
        """The pooled vector: int64 (Cout_last,)."""
        return pool(self.trace(frame)[-1])

    def layer_inputs(self, frame: SparseFrame) -> list[SparseFrame]:
        """The input frame of every layer (the frame, then every output but the last)."""
        return [frame] + self.trace(frame)[:-1]

    def useful_macs(self, frame: SparseFrame) -> list[int]:
        """Per layer: multiply-accumulates with an active operand on `frame`."""
        return [l.useful_macs(x) for l, x in zip(self.layers, self.layer_inputs(frame), strict=True)]

    # ----- building

    @classmethod
    def from_layout(cls, layout, height: int, width: int, params: dict[str, dict], shift: int = 16,
                    input_signed: bool = True, feature_bits: int = 8, weight_bits: int = 8, bias_bits: int = 16,
                    scale_bits: int = 16) -> SparseNetwork:
        """The network of `layout` (StageSpecs) with `params[layer name]` = weight, bias, scale (and id_scale
        for the last layer of a residual block)."""
        stages = []
        for i, spec in enumerate(layout):
            require(isinstance(spec, StageSpec), f"layout[{i}]", "a StageSpec", type(spec).__name__)
            layers = []
            for j, (name, kind, cin, cout, relu) in enumerate(stage_kinds(spec, i == 0)):
                require(name in params, "params", f"an entry for layer {name!r}", sorted(params)[:3])
                p = params[name]
                last = spec.type == "block" and j == 2
                layers.append(SparseConvLayer(
                    kind, p["weight"], p["bias"], p["scale"], shift=shift, relu=relu,
                    id_scale=p.get("id_scale") if (spec.residual and last) else None,
                    input_signed=input_signed if (i == 0 and j == 0) else True, feature_bits=feature_bits,
                    weight_bits=weight_bits, bias_bits=bias_bits, scale_bits=scale_bits))
                require(layers[-1].cin == cin and layers[-1].cout == cout, f"layer {name!r} weight",
                        f"{cout} x {cin} channels as stage {spec.name!r} says",
                        f"{layers[-1].cout} x {layers[-1].cin}")
            if spec.type == "block":
                stages.append((spec.name, SparseChain(layers, residual=spec.residual)))
            else:
                stages.append((spec.name, layers[0]))
        return cls(height, width, stages)

    @classmethod
    def random(cls, layout=SEE_A, height: int = 60, width: int = 80, frames: list[SparseFrame] | None = None,
               seed: int = 0, target: float = 24.0, **arith) -> SparseNetwork:
        """A network of `layout` with random full-range weights; biases and scales calibrated on `frames`.

        Layer by layer, on the calibration frames' real inputs to that layer, each output channel's
        scale maps its psum spread to about `target` (so activations stay alive and mostly unclamped
        through every layer), and a residual block's id_scale adds its input at 0.35 to 0.7 times
        its size. Without `frames`, one random 20%-dense frame with small features is used.
        """
        shift = arith.get("shift", 16)
        sbits, bbits, wbits = arith.get("scale_bits", 16), arith.get("bias_bits", 16), arith.get("weight_bits", 8)
        g = torch.Generator().manual_seed(seed)
        if frames is None:
            mask = torch.rand(height, width, generator=g) < 0.2
            coords = mask.nonzero()
            frames = [SparseFrame(height, width, coords,
                                  torch.randint(-4, 5, (coords.shape[0], layout[0].channels[0]), generator=g))]
        xs = list(frames)
        wmax = (1 << (wbits - 1)) - 1
        smax = (1 << sbits) - 1
        bmax = (1 << (bbits - 1)) - 1
        stages = []
        for i, spec in enumerate(layout):
            block_in = xs
            layers = []
            for j, (_, kind, cin, cout, relu) in enumerate(stage_kinds(spec, i == 0)):
                dw = kind.startswith("dw")
                k = 1 if kind == "pw1x1" else 3
                w = torch.randint(-wmax, wmax + 1, (cout, 1 if dw else cin, k, k), generator=g)
                lay_signed = arith.get("input_signed", True) if (i == 0 and j == 0) else True
                probe = SparseConvLayer(kind, w, torch.zeros(cout, dtype=torch.int64),
                                        torch.zeros(cout, dtype=torch.int64), shift=shift, input_signed=lay_signed,
                                        weight_bits=wbits, bias_bits=bbits, scale_bits=sbits)
                ps = torch.cat([probe.psum(x)[1] for x in xs]).double()
                std = ps.std(0).nan_to_num(0.0).clamp(min=1.0) if ps.shape[0] > 1 else torch.ones(cout,
                                                                                                   dtype=torch.float64)
                jitter = 0.75 + 0.5 * torch.rand(cout, generator=g, dtype=torch.float64)
                scale = (target * (1 << shift) / std * jitter).round().clamp(1, smax).to(torch.int64)
                bias = ((torch.rand(cout, generator=g, dtype=torch.float64) - 0.5) * std).round()
                bias = bias.clamp(-bmax - 1, bmax).to(torch.int64)
                id_scale = None
                if spec.residual and j == 2:  # the block's last layer adds its input
                    id_scale = int(min(smax, round((0.35 + 0.35 * float(torch.rand(1, generator=g))) * (1 << shift))))
                layer = SparseConvLayer(kind, w, bias, scale, shift=shift, relu=relu, id_scale=id_scale,
                                        input_signed=lay_signed, weight_bits=wbits, bias_bits=bbits,
                                        scale_bits=sbits)
                if id_scale is not None:
                    xs = [layer(x, identity=b) for x, b in zip(xs, block_in, strict=True)]
                else:
                    xs = [layer(x) for x in xs]
                layers.append(layer)
            stages.append((spec.name, SparseChain(layers, residual=spec.residual) if spec.type == "block"
                           else layers[0]))
        return cls(height, width, stages)

    # ----- files: JSON structure + .npz weights

    def to_dict(self) -> dict:
        stages = []
        for name, body in self.stages:
            layers = body.layers if isinstance(body, SparseChain) else [body]
            stages.append({"name": name, "type": "block" if isinstance(body, SparseChain) else "layer",
                           "residual": bool(isinstance(body, SparseChain) and body.residual),
                           "layers": [{k: getattr(l, k) for k in _LAYER_KEYS} for l in layers]})
        return {"format": FORMAT, "version": VERSION, "height": self.height, "width": self.width, "stages": stages}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for n, l in self._leaves:
            for k in ("weight", "bias", "scale"):
                out[f"{n}.{k}"] = getattr(l, k).numpy().astype(np.int64)
        return out

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write `path`.json and `path`.npz (a suffix on `path` is replaced); returns both paths."""
        p = Path(path)
        js, npz = p.with_suffix(".json"), p.with_suffix(".npz")
        js.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        np.savez(npz, **self.arrays())
        return js, npz

    @classmethod
    def load(cls, path: str | os.PathLike) -> SparseNetwork:
        """Read what `save` wrote (`path` with or without .json); errors name the file."""
        p = Path(path)
        js, npz = p.with_suffix(".json"), p.with_suffix(".npz")
        for f in (js, npz):
            if not f.is_file():
                raise NetworkFileError(f"{f}: no such file (a network is a .json and an .npz beside it)")
        try:
            d = json.loads(js.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise NetworkFileError(f"{js}: not JSON ({e})") from None
        try:
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:  # zip / format errors all mean "not a weights file"
            raise NetworkFileError(f"{npz}: cannot read as .npz ({type(e).__name__}: {e})") from None
        try:
            return cls.from_dict(d, arrays)
        except (ConfigError, FrameError, KeyError, TypeError, ValueError) as e:
            msg = f"missing key {e}" if isinstance(e, KeyError) else str(e)
            raise NetworkFileError(f"{js}: {msg}") from None

    @classmethod
    def from_dict(cls, d: dict, arrays: dict[str, np.ndarray]) -> SparseNetwork:
        require(isinstance(d, dict) and d.get("format") == FORMAT, "format", f"{FORMAT!r}",
                d.get("format") if isinstance(d, dict) else type(d).__name__)
        require(d.get("version") == VERSION, "version", f"{VERSION}", d.get("version"))
        stages = []
        for s in d["stages"]:
            name = s["name"]
            layers = []
            for j, ld in enumerate(s["layers"]):
                lname = f"{name}_{j}" if s["type"] == "block" else name
                unknown = sorted(set(ld) - set(_LAYER_KEYS))
                require(not unknown, f"layer {lname!r}", f"keys among {', '.join(_LAYER_KEYS)}", unknown)
                w = {}
                for k in ("weight", "bias", "scale"):
                    key = f"{lname}.{k}"
                    if key not in arrays:
                        raise NetworkFileError(f"the .npz has no array {key!r}")
                    w[k] = arrays[key]
                args = {k: ld[k] for k in _LAYER_KEYS if k in ld}
                kind = args.pop("kind")
                layers.append(SparseConvLayer(kind, w["weight"], w["bias"], w["scale"], **args))
            if s["type"] == "block":
                stages.append((name, SparseChain(layers, residual=bool(s.get("residual", False)))))
            else:
                require(s["type"] == "layer" and len(layers) == 1, f"stage {name!r}",
                        "type 'layer' with one layer, or type 'block'", s["type"])
                stages.append((name, layers[0]))
        return cls(d["height"], d["width"], stages)

    # ----- ESDA

    @classmethod
    def from_esda(cls, folder: str | os.PathLike) -> SparseNetwork:
        """The network of an ESDA export folder (cfg.json + data/); see accelkit.golden.esda."""
        from accelkit.golden.esda import read_esda
        return read_esda(folder).network

    def layout(self) -> list[StageSpec]:
        """The StageSpecs of this network (for ESDA export and the compiler)."""
        specs = []
        for name, body in self.stages:
            if isinstance(body, SparseChain):
                l0, l1, l2 = body.layers if len(body.layers) == 3 else (None, None, None)
                require(l0 is not None and l0.kind == "pw1x1" and l1.kind in ("dw3x3", "dw3x3s2")
                        and l2.kind == "pw1x1", f"stage {name!r}", "a pw1x1, dw3x3(s2), pw1x1 block",
                        [l.kind for l in body.layers])
                specs.append(StageSpec(name, "block", (l0.cin, l1.cin, l2.cout), stride=l1.stride,
                                       residual=body.residual))
            else:
                specs.append(StageSpec(name, "conv", (body.cin, body.cout), stride=body.stride, relu=body.relu))
        return specs

