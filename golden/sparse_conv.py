"""The sparse-dataflow convolution engine, bit-exact (docs/specs/sparse-conv.md).

A `SparseFrame` is an H x W grid, its active sites in raster order and C integer
features per site. A `SparseConvLayer` is one layer module of the engine
(`subm3x3`, `dw3x3`, `pw1x1`, `conv3x3s2`, `dw3x3s2`): exact int64 psums over
the active neighbours only, then ESDA's requantisation (and residual add), so
the integer results of trained ESDA / MinkowskiEngine networks are reproduced.
`SparseChain` runs layers (and nested residual blocks) in sequence.

Weights follow torch's conv2d layout and indexing: the tap for neighbour
q = p + d, d = (dy, dx) in {-1, 0, 1}^2, is `weight[..., dy + 1, dx + 1]`.

Input signedness: a layer takes signed features (-2^(b-1) .. 2^(b-1) - 1) unless
built with `input_signed=False`, the first layer of a network fed raw event
counts (0 .. 2^b - 1). It is a layer parameter, not inferred from the frame,
because a frame of small counts looks the same either way.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from accelkit.config import ConfigError, require
from accelkit.config.sparse_conv import DEPTHWISE_KINDS, KINDS, STRIDE2_KINDS

__all__ = ["KINDS", "DEPTHWISE_KINDS", "STRIDE2_KINDS", "FrameError", "SparseFrame", "SparseConvLayer",
           "SparseChain", "default_frames_dir", "load_frames", "output_grid", "gather_taps",
           "neighbour_counts", "useful_macs", "requant"]
# Kernel taps d = (dy, dx), in the order of torch's weight[..., dy + 1, dx + 1] raster.
OFFSETS_3X3 = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
OFFSETS_1X1 = ((0, 0),)


class FrameError(ValueError):
    """A malformed frame or .npz, or a frame a layer cannot take. One line, says what is wrong."""


# --------------------------------------------------------------------------- frames


def _as_int64(x: Any, what: str) -> torch.Tensor:
    """An integer array-like as an int64 tensor; bool, float and complex data are refused."""
    if torch.is_tensor(x):
        if x.dtype == torch.bool or x.is_floating_point() or x.is_complex():
            if x.numel() == 0:
                return x.to(torch.int64)
            raise FrameError(f"{what} must be integers, got dtype {x.dtype}")
        return x.detach().to("cpu", torch.int64)
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise FrameError(f"{what} is not an array: {e}") from None
    if a.size == 0:
        return torch.zeros(a.shape, dtype=torch.int64)
    if a.dtype.kind not in "iu":
        raise FrameError(f"{what} must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "u" and a.dtype.itemsize == 8 and int(a.max()) >= 1 << 63:
        raise FrameError(f"{what} has values beyond int64")
    return torch.from_numpy(a.astype(np.int64))


def _dim(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
        raise FrameError(f"{what} must be a positive integer, got {v!r}")
    return int(v)


class SparseFrame:
    """An H x W frame: active sites `coords` (N, 2) as (y, x) in raster order, `features` (N, C).

    Both are stored as int64 tensors. Feature values are not range-checked here
    (a frame is a container); each layer checks the range it takes.
    """

    __hash__ = None  # mutable tensors inside; equality is by value

    def __init__(self, height: int, width: int, coords: Any, features: Any):
        self.height = _dim(height, "height")
        self.width = _dim(width, "width")
        coords = _as_int64(coords, "coords")
        features = _as_int64(features, "features")
        if coords.numel() == 0 and coords.dim() != 2:
            coords = coords.reshape(0, 2)
        if coords.dim() != 2 or coords.shape[1] != 2:
            raise FrameError(f"coords must have shape (N, 2), got {tuple(coords.shape)}")
        if features.dim() != 2 or features.shape[1] < 1:
            raise FrameError(f"features must have shape (N, C) with C >= 1, got {tuple(features.shape)}")
        if features.shape[0] != coords.shape[0]:
            raise FrameError(f"features has {features.shape[0]} rows but coords has {coords.shape[0]} sites")
        y, x = coords[:, 0], coords[:, 1]
        outside = (y < 0) | (y >= self.height) | (x < 0) | (x >= self.width)
        if bool(outside.any()):
            i = int(outside.nonzero()[0, 0])
            raise FrameError(f"coords[{i}] = (y={int(y[i])}, x={int(x[i])}) is outside the "
                             f"{self.height} x {self.width} frame")
        keys = y * self.width + x
        bad = (keys[1:] <= keys[:-1]).nonzero()
        if bad.numel():
            i = int(bad[0, 0]) + 1
            what = "duplicates" if bool(keys[i] == keys[i - 1]) else "comes after"
            raise FrameError(f"coords not in raster order: coords[{i}] = ({int(y[i])}, {int(x[i])}) {what} "
                             f"coords[{i - 1}] = ({int(y[i - 1])}, {int(x[i - 1])})")
        self.coords = coords.contiguous()
        self.features = features.contiguous()
        self._keys = keys.contiguous()

    # ----- constructors

    @classmethod
    def from_dense(cls, dense: Any, mask: Any = None) -> SparseFrame:
        """The frame of `dense` (C, H, W) at the sites of `mask` (H, W; default: any channel nonzero).

        Values of `dense` outside the mask are dropped: that is the masked-frame semantics.
        """
        dense = _as_int64(dense, "dense")
        if dense.dim() != 3:
            raise FrameError(f"dense must have shape (C, H, W), got {tuple(dense.shape)}")
        if mask is None:
            mask = (dense != 0).any(0)
        else:
            mask = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask)
            if mask.dtype != torch.bool:
                if mask.is_floating_point() or not bool(((mask == 0) | (mask == 1)).all()):
                    raise FrameError(f"mask must be bool (or 0/1 integers), got dtype {mask.dtype}")
                mask = mask.bool()
        if tuple(mask.shape) != tuple(dense.shape[1:]):
            raise FrameError(f"mask has shape {tuple(mask.shape)} but dense is {tuple(dense.shape)}")
        coords = mask.nonzero()  # row-major: raster order
        feats = dense[:, coords[:, 0], coords[:, 1]].T
        return cls(dense.shape[1], dense.shape[2], coords, feats)

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> SparseFrame:
        """Load a frame stored as in accelkit/data/event_frames (mask, coords, features)."""
        path = Path(path)
        if not path.is_file():
            raise FrameError(f"{path}: no such file")
        try:
            z = np.load(path, allow_pickle=False)
        except Exception as e:  # zipfile / pickle / format errors all mean "not a frame file"
            raise FrameError(f"{path}: cannot read as .npz ({type(e).__name__}: {e})") from None
        if not hasattr(z, "files"):
            raise FrameError(f"{path}: a single .npy array, not an .npz archive")
        try:
            with z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:  # e.g. an object array, refused without pickle
            raise FrameError(f"{path}: cannot read as .npz ({type(e).__name__}: {e})") from None
        return cls.from_arrays(arrays, str(path))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], source: str = "arrays") -> SparseFrame:
        """A frame from the .npz layout: mask bool (H, W), coords int (N, 2), features int8/uint8 (N, C)."""
        missing = [k for k in ("mask", "coords", "features") if k not in arrays]
        if missing:
            raise FrameError(f"{source}: missing key(s) {', '.join(missing)} "
                             f"(has {', '.join(sorted(arrays))})")
        mask, coords, feats = (np.asarray(arrays[k]) for k in ("mask", "coords", "features"))
        if mask.dtype != np.bool_ or mask.ndim != 2:
            raise FrameError(f"{source}: mask must be a 2-D bool array, got {mask.dtype} {mask.shape}")
        if coords.dtype.kind not in "iu" or coords.ndim != 2 or coords.shape[1] != 2:
            raise FrameError(f"{source}: coords must be an integer (N, 2) array, "
                             f"got {coords.dtype} {coords.shape}")
        if feats.dtype not in (np.uint8, np.int8) or feats.ndim != 2:
            raise FrameError(f"{source}: features must be a uint8 or int8 (N, C) array, "
                             f"got {feats.dtype} {feats.shape}")
        try:
            frame = cls(mask.shape[0], mask.shape[1], coords, feats)
        except FrameError as e:
            raise FrameError(f"{source}: {e}") from None
        if not torch.equal(frame.mask, torch.from_numpy(mask)):
            n_diff = int((frame.mask != torch.from_numpy(mask)).sum())
            raise FrameError(f"{source}: coords disagree with mask ({frame.n_active} coords, "
                             f"{int(mask.sum())} mask sites, {n_diff} differ)")
        return frame

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The .npz layout of this frame; features as uint8 if they fit, else int8."""
        f = self.features
        if f.numel() == 0 or (int(f.min()) >= 0 and int(f.max()) <= 255):
            feats = f.numpy().astype(np.uint8)
        elif int(f.min()) >= -128 and int(f.max()) <= 127:
            feats = f.numpy().astype(np.int8)
        else:
            raise FrameError("features do not fit 8 bits; the .npz layout holds uint8 or int8 only")
        return {"mask": self.mask.numpy(), "coords": self.coords.numpy().astype(np.int32), "features": feats}

    def to_npz(self, path: str | os.PathLike) -> None:
        np.savez(path, **self.to_arrays())

    # ----- views

    @property
    def n_active(self) -> int:
        return int(self.coords.shape[0])

    @property
    def channels(self) -> int:
        return int(self.features.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def density(self) -> float:
        return self.n_active / (self.height * self.width)

    @property
    def keys(self) -> torch.Tensor:
        """Raster index y * W + x of each active site (strictly increasing)."""
        return self._keys

    @property
    def mask(self) -> torch.Tensor:
        m = torch.zeros(self.height, self.width, dtype=torch.bool)
        m[self.coords[:, 0], self.coords[:, 1]] = True
        return m

    def to_dense(self) -> torch.Tensor:
        """(C, H, W) int64, zero at inactive sites."""
        d = torch.zeros(self.channels, self.height, self.width, dtype=torch.int64)
        d[:, self.coords[:, 0], self.coords[:, 1]] = self.features.T
        return d

    def with_features(self, features: Any) -> SparseFrame:
        """The same sites with new features (N, C')."""
        return SparseFrame(self.height, self.width, self.coords, features)

    def same_sites(self, other: SparseFrame) -> bool:
        return self.shape == other.shape and torch.equal(self.coords, other.coords)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparseFrame):
            return NotImplemented
        return self.same_sites(other) and torch.equal(self.features, other.features)

    def __repr__(self) -> str:
        return (f"SparseFrame({self.height} x {self.width}, {self.n_active} active "
                f"({100 * self.density:.1f}%), C={self.channels})")


def default_frames_dir() -> Path:
    """Where the real event frames live: $ACCELKIT_EVENT_FRAMES, else the five frames shipped with accelkit
    (package data `accelkit/data/event_frames`, from ESDA, MIT licence: see its LICENSE-ESDA and README.md)."""
    env = os.environ.get("ACCELKIT_EVENT_FRAMES")
    if env:
        return Path(env)
    return Path(str(importlib.resources.files("accelkit") / "data" / "event_frames"))


def load_frames(directory: str | os.PathLike | None = None) -> dict[str, SparseFrame]:
    """Every .npz frame of `directory` (default: `default_frames_dir()`), by file stem, sorted."""
    d = Path(directory) if directory is not None else default_frames_dir()
    if not d.is_dir():
        raise FrameError(f"{d}: no such directory (set ACCELKIT_EVENT_FRAMES to the event-frames folder)")
    return {p.stem: SparseFrame.from_npz(p) for p in sorted(d.glob("*.npz"))}


# --------------------------------------------------------------------------- gathering neighbours


def output_grid(kind: str, height: int, width: int) -> tuple[int, int]:
    """The output grid of a layer of `kind` on an H x W input: ceil(H/2) x ceil(W/2) for stride 2."""
    if kind in STRIDE2_KINDS:
        return (height + 1) // 2, (width + 1) // 2
    return height, width


def _check_kind(kind: str) -> None:
    require(kind in KINDS, "kind", f"one of {', '.join(KINDS)}", kind)


def gather_taps(frame: SparseFrame, kind: str):
    """Output sites of a `kind` layer on `frame`, and per kernel tap the active neighbours it reads.

    Returns (out_coords (M, 2) in raster order of the output grid, taps), taps a list of
    ((dy, dx), out_rows, in_rows): output row out_rows[k] reads input row in_rows[k] through
    the weight tap (dy, dx). Neighbours outside the frame or inactive are absent.
    """
    _check_kind(kind)
    h, w = frame.shape
    coords, keys = frame.coords, frame.keys
    if kind in STRIDE2_KINDS:
        ho, wo = output_grid(kind, h, w)
        okeys = torch.unique((coords[:, 0] >> 1) * wo + (coords[:, 1] >> 1))  # sorted: raster order
        out_coords = torch.stack([okeys // wo, okeys % wo], 1)
        centres = out_coords * 2
    else:
        out_coords = coords
        centres = coords
    offsets = OFFSETS_1X1 if kind == "pw1x1" else OFFSETS_3X3
    taps = []
    n = keys.numel()
    for dy, dx in offsets:
        qy, qx = centres[:, 0] + dy, centres[:, 1] + dx
        inside = (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
        qk = qy * w + qx
        if n:
            idx = torch.searchsorted(keys, qk).clamp(max=n - 1)
            hit = inside & (keys[idx] == qk)
        else:
            idx = torch.zeros_like(qk)
            hit = torch.zeros_like(inside)
        out_rows = hit.nonzero().flatten()
        taps.append(((dy, dx), out_rows, idx[out_rows]))
    return out_coords, taps


def neighbour_counts(frame: SparseFrame, kind: str) -> torch.Tensor:
    """|N(p)| for each output site p (raster order): active in-frame inputs its kernel reads (pw1x1: 1)."""
    out_coords, taps = gather_taps(frame, kind)
    counts = torch.zeros(out_coords.shape[0], dtype=torch.int64)
    for _, out_rows, _ in taps:
        counts[out_rows] += 1
    return counts


def useful_macs(frame: SparseFrame, kind: str, cin: int, cout: int) -> int:
    """Multiply-accumulates with an active operand: sum |N(p)| * Cin * Cout (depthwise: sum |N(p)| * C)."""
    total = int(neighbour_counts(frame, kind).sum())
    return total * cin if kind in DEPTHWISE_KINDS else total * cin * cout


# --------------------------------------------------------------------------- arithmetic


def requant(psum: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor, shift: int, relu: bool = False,
            identity: torch.Tensor | None = None, id_scale: int | None = None,
            out_bits: int = 8) -> torch.Tensor:
    """ESDA requantisation of int64 psums (N, Cout), per output channel; optional residual add.

    y = clamp(((psum + bias) * scale + 2^(E-1)) >> E [+ ((x_id * id_scale + 2^(E-1)) >> E)], -q, q),
    q = 2^(out_bits-1) - 1, `>>` arithmetic (floor); then max(y, 0) if relu.
    """
    half = 1 << (shift - 1)
    y = ((psum + bias) * scale + half) >> shift
    if identity is not None:
        y = y + ((identity * id_scale + half) >> shift)
    q = (1 << (out_bits - 1)) - 1
    y = y.clamp(-q, q)
    return y.clamp(min=0) if relu else y


def _param(x: Any, what: str) -> torch.Tensor:
    """A layer parameter as int64; a bad one is a ConfigError naming it."""
    try:
        return _as_int64(x, what)
    except FrameError as e:
        raise ConfigError(f"{what} is invalid: {e}") from None


class SparseConvLayer:
    """One layer of the engine: `layer(frame)` or, with a residual, `layer(frame, identity=x_id)`.

    weight: torch conv2d layout, (Cout, Cin, 3, 3) for subm3x3 / conv3x3s2, (C, 1, 3, 3) for
    dw3x3 / dw3x3s2, (Cout, Cin, 1, 1) for pw1x1; signed `weight_bits` integers.
    bias (Cout,) signed `bias_bits`; scale (Cout,) unsigned `scale_bits`; `shift` E >= 1.
    id_scale: one unsigned `scale_bits` integer, pw1x1 only: the layer then adds the residual
    `identity` frame (the block input, same sites, Cout channels) as in the spec.
    """

    def __init__(self, kind: str, weight: Any, bias: Any, scale: Any, shift: int = 16, relu: bool = False,
                 id_scale: int | None = None, input_signed: bool = True, feature_bits: int = 8,
                 weight_bits: int = 8, bias_bits: int = 16, scale_bits: int = 16):
        _check_kind(kind)
        for name, v, lo, hi in (("feature_bits", feature_bits, 2, 16), ("weight_bits", weight_bits, 2, 16),
                                ("bias_bits", bias_bits, 1, 32), ("scale_bits", scale_bits, 1, 32),
                                ("shift", shift, 1, 62)):
            require(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi, name,
                    f"an integer in {lo}..{hi}", v)
        require(isinstance(relu, bool), "relu", "True or False", relu)
        require(isinstance(input_signed, bool), "input_signed", "True or False", input_signed)
        self.kind, self.shift, self.relu, self.input_signed = kind, shift, relu, input_signed
        self.feature_bits, self.weight_bits, self.bias_bits, self.scale_bits = (
            feature_bits, weight_bits, bias_bits, scale_bits)

        weight = _param(weight, "weight")
        k = 1 if kind == "pw1x1" else 3
        require(weight.dim() == 4 and tuple(weight.shape[2:]) == (k, k), "weight",
                f"shape (Cout, Cin, {k}, {k}) for {kind}", tuple(weight.shape))
        if self.depthwise:
            require(weight.shape[1] == 1, "weight", f"shape (C, 1, 3, 3) for depthwise {kind}",
                    tuple(weight.shape))
        require(weight.shape[0] >= 1 and weight.shape[1] >= 1, "weight", "at least one channel",
                tuple(weight.shape))
        wlo, whi = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
        require(bool(((weight >= wlo) & (weight <= whi)).all()), "weight",
                f"signed {weight_bits}-bit integers in {wlo}..{whi}",
                f"range {int(weight.min())}..{int(weight.max())}")
        self.weight = weight
        cout = weight.shape[0]

        bias, scale = _param(bias, "bias"), _param(scale, "scale")
        require(tuple(bias.shape) == (cout,), "bias", f"shape ({cout},)", tuple(bias.shape))
        require(tuple(scale.shape) == (cout,), "scale", f"shape ({cout},)", tuple(scale.shape))
        blo, bhi = -(1 << (bias_bits - 1)), (1 << (bias_bits - 1)) - 1
        require(bool(((bias >= blo) & (bias <= bhi)).all()), "bias",
                f"signed {bias_bits}-bit integers in {blo}..{bhi}",
                f"range {int(bias.min())}..{int(bias.max())}")
        smax = (1 << scale_bits) - 1
        require(bool(((scale >= 0) & (scale <= smax)).all()), "scale",
                f"unsigned {scale_bits}-bit integers in 0..{smax}",
                f"range {int(scale.min())}..{int(scale.max())}")
        self.bias, self.scale = bias, scale

        if id_scale is not None:
            require(kind == "pw1x1", "id_scale",
                    "only for pw1x1 (the last layer of an inverted-residual block)", id_scale)
            t = _param(id_scale, "id_scale")
            require(t.numel() == 1, "id_scale", "one integer (one scale for the whole identity)", id_scale)
            id_scale = int(t.reshape(-1)[0])
            require(0 <= id_scale <= smax, "id_scale", f"an unsigned {scale_bits}-bit integer in 0..{smax}",
                    id_scale)
        self.id_scale = id_scale

        # Exactness guard: the requant product must fit int64 (it does for ESDA's 8/8/16/16).
        worst = (self.psum_bound() + (1 << (bias_bits - 1))) * smax + (1 << (shift - 1))
        if id_scale is not None:
            worst += (1 << (feature_bits - 1)) * smax
        require(worst < 1 << 62, "scale_bits", "small enough that (psum + bias) * scale fits 63 bits",
                scale_bits)

    @classmethod
    def from_config(cls, cfg, weight: Any, bias: Any, scale: Any,
                    id_scale: int | None = None) -> SparseConvLayer:
        """The layer a `SparseConvConfig` describes, with these parameters."""
        require(cfg.residual == (id_scale is not None), "id_scale",
                "given exactly when the config has residual=True", id_scale)
        layer = cls(cfg.kind, weight, bias, scale, shift=cfg.shift, relu=cfg.relu, id_scale=id_scale,
                    input_signed=cfg.signed_input, feature_bits=cfg.feature_bits, weight_bits=cfg.weight_bits,
                    bias_bits=cfg.bias_bits, scale_bits=cfg.scale_bits)
        require(layer.cin == cfg.cin and layer.cout == cfg.cout, "weight",
                f"{cfg.cout} x {cfg.cin} channels as the config says", f"{layer.cout} x {layer.cin}")
        return layer

    # ----- shape

    @property
    def depthwise(self) -> bool:
        return self.kind in DEPTHWISE_KINDS

    @property
    def stride(self) -> int:
        return 2 if self.kind in STRIDE2_KINDS else 1

    @property
    def cin(self) -> int:
        return int(self.weight.shape[0] if self.depthwise else self.weight.shape[1])

    @property
    def cout(self) -> int:
        return int(self.weight.shape[0])

    @property
    def taps(self) -> int:
        return 1 if self.kind == "pw1x1" else 9

    def input_range(self) -> tuple[int, int]:
        b = self.feature_bits
        return (-(1 << (b - 1)), (1 << (b - 1)) - 1) if self.input_signed else (0, (1 << b) - 1)

    def psum_bound(self) -> int:
        """Largest |psum| any input can produce (before bias)."""
        lo, hi = self.input_range()
        terms = self.taps * (1 if self.depthwise else self.cin)
        return terms * max(abs(lo), hi) * (1 << (self.weight_bits - 1))

    def __repr__(self) -> str:
        extra = ", relu" if self.relu else ""
        if self.id_scale is not None:
            extra += f", id_scale={self.id_scale}"
        return f"SparseConvLayer({self.kind}, {self.cin} -> {self.cout}, E={self.shift}{extra})"

    # ----- compute

    def check_input(self, frame: SparseFrame) -> None:
        if not isinstance(frame, SparseFrame):
            raise FrameError(f"{self.kind} layer takes a SparseFrame, got {type(frame).__name__}")
        if frame.channels != self.cin:
            raise FrameError(f"{self.kind} layer takes {self.cin} channels, the frame has {frame.channels}")
        lo, hi = self.input_range()
        f = frame.features
        if f.numel() and (int(f.min()) < lo or int(f.max()) > hi):
            sign = "signed" if self.input_signed else "unsigned"
            hint = ""
            if self.input_signed and int(f.min()) >= 0:
                hint = "; raw event counts need input_signed=False"
            raise FrameError(f"{self.kind} layer takes {sign} {self.feature_bits}-bit features in "
                             f"{lo}..{hi}, the frame has {int(f.min())}..{int(f.max())}{hint}")

    def psum(self, frame: SparseFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """(out_coords (M, 2), psum (M, Cout) int64): the exact sums before bias and requant."""
        self.check_input(frame)
        out_coords, taps = gather_taps(frame, self.kind)
        x = frame.features
        psum = torch.zeros(out_coords.shape[0], self.cout, dtype=torch.int64)
        for (dy, dx), out_rows, in_rows in taps:
            if out_rows.numel() == 0:
                continue
            k = 0 if self.kind == "pw1x1" else 1
            w = self.weight[:, :, dy + k, dx + k]  # (Cout, Cin) or (C, 1)
            contrib = x[in_rows] * w[:, 0] if self.depthwise else x[in_rows] @ w.T
            psum.index_add_(0, out_rows, contrib)
        return out_coords, psum

    def __call__(self, frame: SparseFrame, identity: SparseFrame | None = None) -> SparseFrame:
        out_coords, psum = self.psum(frame)
        ho, wo = output_grid(self.kind, frame.height, frame.width)
        id_feats = None
        if self.id_scale is not None:
            if not isinstance(identity, SparseFrame):
                raise FrameError("this pw1x1 layer has id_scale: call it with identity=<the block input>")
            if identity.shape != (ho, wo) or not torch.equal(identity.coords, out_coords):
                raise FrameError(f"identity frame ({identity!r}) does not have the layer's output sites")
            if identity.channels != self.cout:
                raise FrameError(f"identity frame has {identity.channels} channels, "
                                 f"the layer outputs {self.cout}")
            qmax = (1 << (self.feature_bits - 1)) - 1
            f = identity.features
            if f.numel() and (int(f.min()) < -qmax - 1 or int(f.max()) > qmax):
                raise FrameError(f"identity features must be signed {self.feature_bits}-bit, "
                                 f"got {int(f.min())}..{int(f.max())}")
            id_feats = f
        elif identity is not None:
            raise FrameError("identity given but this layer has no id_scale (no residual add)")
        y = requant(psum, self.bias, self.scale, self.shift, self.relu, id_feats, self.id_scale,
                    self.feature_bits)
        return SparseFrame(ho, wo, out_coords, y)

    def neighbour_counts(self, frame: SparseFrame) -> torch.Tensor:
        return neighbour_counts(frame, self.kind)

    def useful_macs(self, frame: SparseFrame) -> int:
        return useful_macs(frame, self.kind, self.cin, self.cout)


class SparseChain:
    """Layers (or nested chains) run in sequence; `residual=True` makes the chain an inverted-residual
    block: its last layer (a pw1x1 with id_scale) adds the chain's own input."""

    def __init__(self, layers: list, residual: bool = False):
        layers = list(layers)
        require(len(layers) >= 1, "layers", "at least one layer", len(layers))
        for i, l in enumerate(layers):
            require(isinstance(l, SparseConvLayer | SparseChain), f"layers[{i}]",
                    "a SparseConvLayer or SparseChain", type(l).__name__)
            if i:
                require(l.cin == layers[i - 1].cout, f"layers[{i}]",
                        f"{layers[i - 1].cout} input channels (the previous layer's output)", l.cin)
            last = i == len(layers) - 1
            if isinstance(l, SparseConvLayer) and l.id_scale is not None and not (residual and last):
                raise ConfigError(f"layers[{i}].id_scale={l.id_scale!r} is invalid: only the last layer of a "
                                  "residual=True chain adds the identity")
        if residual:
            end = layers[-1]
            require(isinstance(end, SparseConvLayer) and end.id_scale is not None, "residual",
                    "a last layer that is a pw1x1 with id_scale", repr(end))
            require(all(l.stride == 1 for l in layers), "residual",
                    "stride-1 layers only (same sites in and out)", [l.kind for l in self._flatten(layers)])
            require(layers[0].cin == end.cout, "residual", f"input channels == output channels ({end.cout})",
                    layers[0].cin)
        self.layers, self.residual = layers, residual

    @staticmethod
    def _flatten(layers) -> list[SparseConvLayer]:
        out = []
        for l in layers:
            out.extend(l.leaves if isinstance(l, SparseChain) else [l])
        return out

    @property
    def leaves(self) -> list[SparseConvLayer]:
        """Every layer, nested chains flattened, in execution order."""
        return self._flatten(self.layers)

    @property
    def cin(self) -> int:
        return self.layers[0].cin

    @property
    def cout(self) -> int:
        return self.layers[-1].cout

    @property
    def stride(self) -> int:
        s = 1
        for l in self.layers:
            s *= l.stride
        return s

    def trace(self, frame: SparseFrame) -> list[SparseFrame]:
        """The output of every leaf layer, in order (the last one is the chain's output)."""
        outs: list[SparseFrame] = []
        x = frame
        for i, l in enumerate(self.layers):
            if isinstance(l, SparseChain):
                sub = l.trace(x)
                outs.extend(sub)
                x = sub[-1]
            else:
                x = l(x, identity=frame) if (self.residual and i == len(self.layers) - 1) else l(x)
                outs.append(x)
        return outs

    def __call__(self, frame: SparseFrame) -> SparseFrame:
        return self.trace(frame)[-1]

    def __repr__(self) -> str:
        return f"SparseChain({len(self.leaves)} layers{', residual' if self.residual else ''})"
