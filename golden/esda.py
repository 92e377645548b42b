"""ESDA's exported-network folders (docs/specs/esda-network-format.md): read them, and write them.

`read_esda(folder)` returns the `SparseNetwork` with ESDA's test frame and its per-layer and pooled
outputs, so that an ESDA user's trained network runs on accelkit unchanged and is checked bit for bit
against ESDA's own results. `write_esda(net, folder, frame)` writes a network in the same format (the
tests make their own folders with it; the golden model fills in the per-layer outputs).

Every fault a reader must refuse (a missing file, a wrong count of integers, a value outside its
width, a residual block whose Cin differs from its Cout, channels that do not chain, a malformed
cfg.json) is a one-line `EsdaFormatError` that names the file or the layer.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch

from accelkit.config import ConfigError
from accelkit.golden.network import NetworkFileError, SparseNetwork, StageSpec, stage_kinds
from accelkit.golden.sparse_conv import FrameError, SparseFrame

__all__ = ["EsdaFormatError", "EsdaExport", "read_esda", "write_esda"]


class EsdaFormatError(NetworkFileError):
    """A malformed ESDA export: one line naming the file or layer."""


@dataclasses.dataclass
class EsdaExport:
    network: SparseNetwork
    frame: SparseFrame  # ESDA's test frame (tb_spatial_mask, tb_input_feature)
    layer_outputs: dict[str, torch.Tensor]  # L_output.txt: (N_out, Cout) per layer, sites in raster order
    pooled: torch.Tensor  # tb_output.txt


def _ints(path: Path, count: int | None, what: str) -> np.ndarray:
    """The integers of a data file; `count` (when given) must match."""
    if not path.is_file():
        raise EsdaFormatError(f"{path}: missing ({what})")
    try:
        vals = np.array([int(t) for t in path.read_text().split()], dtype=np.int64)
    except ValueError as e:
        raise EsdaFormatError(f"{path}: not whitespace-separated decimal integers ({e})") from None
    except OverflowError:
        raise EsdaFormatError(f"{path}: an integer beyond 64 bits") from None
    if count is not None and vals.size != count:
        raise EsdaFormatError(f"{path}: {vals.size} integers, {what} needs {count}")
    return vals


def _in_range(path: Path, vals: np.ndarray, lo: int, hi: int, what: str) -> None:
    if vals.size and (int(vals.min()) < lo or int(vals.max()) > hi):
        bad = int(vals[(vals < lo) | (vals > hi)][0])
        raise EsdaFormatError(f"{path}: value {bad} outside {what} ({lo}..{hi})")


def _torch_weight(v: torch.Tensor, kind: str, cin: int, cout: int) -> torch.Tensor:
    """ESDA's weight order as torch's conv2d layout: [ky][kx][cin][cout] (3x3), [cout][cin] (pw1x1),
    [ky][kx][c] (depthwise)."""
    if kind in ("conv3x3s2", "subm3x3"):
        return v.reshape(3, 3, cin, cout).permute(3, 2, 0, 1).contiguous()
    if kind == "pw1x1":
        return v.reshape(cout, cin, 1, 1)
    return v.reshape(3, 3, cout).permute(2, 0, 1).unsqueeze(1).contiguous()


def _signed(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _cfg(folder: Path) -> dict:
    p = folder / "cfg.json"
    if not folder.is_dir():
        raise EsdaFormatError(f"{folder}: no such folder")
    if not p.is_file():
        raise EsdaFormatError(f"{p}: missing (the network description)")
    try:
        cfg = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EsdaFormatError(f"{p}: not JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise EsdaFormatError(f"{p}: the top level is not an object")
    for k in ("input_shape", "CFG_EXP", "layers"):
        if k not in cfg:
            raise EsdaFormatError(f"{p}: no {k!r}")
    return cfg


def _int_key(cfg_path: Path, d: dict, key: str, where: str, lo: int, hi: int, default=None) -> int:
    v = d.get(key, default)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise EsdaFormatError(f"{cfg_path}: {where} {key}={v!r} is not an integer in {lo}..{hi}")
    return v


def read_esda(folder: str | os.PathLike) -> EsdaExport:
    """Read an ESDA export folder: network, test frame, ESDA's per-layer and pooled results."""
    folder = Path(folder)
    cfg = _cfg(folder)
    cp = folder / "cfg.json"
    data = folder / "data"
    shift = _int_key(cp, cfg, "CFG_EXP", "", 1, 62)
    sbits = _int_key(cp, cfg, "CFG_SW", "", 1, 32, 16)
    bbits = _int_key(cp, cfg, "CFG_BW", "", 1, 32, 16)
    shape = cfg["input_shape"]
    if not (isinstance(shape, list) and len(shape) == 2):
        raise EsdaFormatError(f"{cp}: input_shape={shape!r} is not [H, W]")
    h, w = (_int_key(cp, {"input_shape": v}, "input_shape", "", 1, 4096) for v in shape)
    if not isinstance(cfg["layers"], list) or not cfg["layers"]:
        raise EsdaFormatError(f"{cp}: layers is not a non-empty list")

    # Stages (linear layers run on the host: skipped).
    specs: list[StageSpec] = []
    for i, L in enumerate(cfg["layers"]):
        if not isinstance(L, dict) or "name" not in L or "type" not in L:
            raise EsdaFormatError(f"{cp}: layers[{i}] has no name or type")
        name, typ = L["name"], L["type"]
        if typ == "linear":
            continue
        if typ not in ("conv", "block"):
            raise EsdaFormatError(f"{cp}: layer {name!r}: type {typ!r} is not conv, block or linear")
        ch = L.get("channels")
        try:
            spec = StageSpec(name, typ, tuple(ch) if isinstance(ch, list) else ch,
                             stride=L.get("stride", 1), residual=bool(L.get("residual", False)))
            if specs:
                prev = specs[-1]
                if spec.channels[0] != prev.channels[-1]:
                    raise ConfigError(f"channels {list(spec.channels)} do not chain: the previous layer "
                                      f"{prev.name!r} outputs {prev.channels[-1]}")
            stage_kinds(spec, not specs)
        except ConfigError as e:
            raise EsdaFormatError(f"{cp}: layer {name!r}: {e}") from None
        specs.append(spec)
    if not specs:
        raise EsdaFormatError(f"{cp}: no conv or block layers")

    # Parameters, range-checked per file.
    params: dict[str, dict] = {}
    blo, bhi = _signed(bbits)
    for si, spec in enumerate(specs):
        for j, (name, kind, cin, cout, _) in enumerate(stage_kinds(spec, si == 0)):
            n = (9 * cin * cout if kind in ("conv3x3s2", "subm3x3") else cin * cout if kind == "pw1x1"
                 else 9 * cout)
            wp, bp, sp = (data / f"{name}_{k}.txt" for k in ("weight", "bias", "scale"))
            wv = _ints(wp, n, f"{kind} {cin} -> {cout} weights")
            _in_range(wp, wv, -128, 127, "8-bit signed weights")
            bv = _ints(bp, cout, f"{cout} biases")
            _in_range(bp, bv, blo, bhi, f"{bbits}-bit signed biases")
            sv = _ints(sp, cout, f"{cout} scales")
            _in_range(sp, sv, 0, (1 << sbits) - 1, f"{sbits}-bit unsigned scales")
            p = {"weight": _torch_weight(torch.from_numpy(wv), kind, cin, cout), "bias": torch.from_numpy(bv),
                 "scale": torch.from_numpy(sv)}
            if spec.residual and j == 2:
                ip = data / f"{spec.name}_id_scale.txt"
                iv = _ints(ip, 1, "one id_scale")
                _in_range(ip, iv, 0, (1 << sbits) - 1, f"{sbits}-bit unsigned id_scale")
                p["id_scale"] = int(iv[0])
            params[name] = p
    try:
        net = SparseNetwork.from_layout(specs, h, w, params, shift=shift, bias_bits=bbits, scale_bits=sbits)
    except (ConfigError, FrameError) as e:
        raise EsdaFormatError(f"{cp}: {e}") from None

    # The test frame and ESDA's results.
    mp = data / "tb_spatial_mask.txt"
    mask = _ints(mp, h * w, f"the {h} x {w} mask")
    if mask.size and not np.isin(mask, (0, 1)).all():
        raise EsdaFormatError(f"{mp}: values other than 0 and 1")
    n_act = int(mask.sum())
    fp = data / "tb_input_feature.txt"
    feats = _ints(fp, n_act * net.cin, f"{n_act} active sites x {net.cin} channels")
    _in_range(fp, feats, -128, 127, "8-bit signed features")
    coords = np.stack(np.nonzero(mask.reshape(h, w)), 1)
    frame = SparseFrame(h, w, coords, feats.reshape(n_act, net.cin))
    outs = {}
    for name, layer in net.leaves:
        op = data / f"{name}_output.txt"
        if op.is_file():
            v = _ints(op, None, "")
            if v.size % layer.cout:
                raise EsdaFormatError(f"{op}: {v.size} integers, not a multiple of {layer.cout} channels")
            outs[name] = torch.from_numpy(v.reshape(-1, layer.cout))
    tp = data / "tb_output.txt"
    pooled = torch.from_numpy(_ints(tp, net.cout, f"the pooled {net.cout} channels")) if tp.is_file() else None
    return EsdaExport(net, frame, outs, pooled)


def _write(path: Path, vals) -> None:
    a = np.asarray(vals, dtype=np.int64).reshape(-1)
    path.write_text("\n".join(str(int(v)) for v in a) + "\n")


def write_esda(net: SparseNetwork, folder: str | os.PathLike, frame: SparseFrame,
               parallelism: dict[str, list[int]] | None = None) -> Path:
    """Write `net` as an ESDA export folder, with `frame` as its test frame and the golden results."""
    folder = Path(folder)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    layers = net.layers
    arith = {(l.shift, l.bias_bits, l.scale_bits, l.weight_bits, l.feature_bits) for l in layers}
    if len(arith) != 1 or next(iter(arith))[3:] != (8, 8):
        raise ConfigError(f"layers={arith!r} is invalid: ESDA's format has one shift, bias and scale width, "
                          "8-bit weights and features")
    shift, bbits, sbits = next(iter(arith))[:3]
    grids = net.grids()
    cfg_layers = []
    li = 0
    for spec in net.layout():
        n = 3 if spec.type == "block" else 1
        cfg_layers.append({"name": spec.name, "type": spec.type, "stride": spec.stride, "residual": spec.residual,
                           "channels": list(spec.channels), "input_shape": list(grids[li]),
                           "parallelism": (parallelism or {}).get(spec.name, [1] * n)})
        li += n
    cfg_layers.append({"name": "fc", "type": "linear", "channels": [net.cout, 2], "residual": False, "stride": 1,
                       "input_shape": [1, 1], "parallelism": [1]})
    cfg = {"input_shape": [float(net.height), float(net.width)], "CFG_EXP": shift, "CFG_SW": sbits,
           "CFG_BW": bbits, "layers": cfg_layers}
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=1) + "\n")
    outs = net.trace(frame)
    for (name, l), out in zip(net.leaves, outs, strict=True):
        w = l.weight
        if l.kind in ("conv3x3s2", "subm3x3"):
            w = w.permute(2, 3, 1, 0)  # [ky][kx][cin][cout]
        elif l.kind in ("dw3x3", "dw3x3s2"):
            w = w[:, 0].permute(1, 2, 0)  # [ky][kx][c]
        _write(data / f"{name}_weight.txt", w)
        _write(data / f"{name}_bias.txt", l.bias)
        _write(data / f"{name}_scale.txt", l.scale)
        _write(data / f"{name}_output.txt", out.features)
        if l.id_scale is not None:
            _write(data / f"{name.rsplit('_', 1)[0]}_id_scale.txt", [l.id_scale])
    _write(data / "tb_spatial_mask.txt", frame.mask.to(torch.int64))
    _write(data / "tb_input_feature.txt", frame.features)
    _write(data / "tb_output.txt", net(frame))
    return folder
