"""Content-addressed builds: Verilog emission and Verilator models, cached by hash.

A build directory is named by a hash of the config, the generator sources and
the tool versions, so re-running is free, any change rebuilds, and two configs
never share a directory. Concurrent builders (pytest-xdist workers, parallel
sweeps) take a file lock on the directory, so they never clobber each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from amaranth.back import verilog

from accelkit.blocks import Block, block_for_config
from accelkit.config import BlockConfig

from .tools import verilator_env, versions

TOP = "top"
# Amaranth's Verilog trips these -Wall warnings; they carry no information here.
VERILATOR_WARNINGS_OFF = ["-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL", "-Wno-UNOPTFLAT",
                          "-Wno-DECLFILENAME", "-Wno-PINCONNECTEMPTY", "-Wno-CASEINCOMPLETE"]


def cache_root() -> Path:
    root = os.environ.get("ACCELKIT_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "accelkit"


_PKG_ROOT = Path(__file__).resolve().parents[1]


def _source_files() -> list[Path]:
    # Everything a generator can depend on: the generators and the configs that drive them.
    files = sorted((_PKG_ROOT / "gen").rglob("*.py")) + sorted((_PKG_ROOT / "accelkit" / "config").rglob("*.py"))
    files.append(_PKG_ROOT / "accelkit" / "blocks.py")
    return files


def source_digest() -> str:
    h = hashlib.sha256()
    for f in _source_files():
        h.update(f.relative_to(_PKG_ROOT).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def build_key(cfg: BlockConfig, flavour: str) -> str:
    """Hash naming a build: config, generator source, tool versions and the kind of build."""
    blob = json.dumps({"config": cfg.to_dict(), "source": source_digest(), "tools": versions(),
                       "flavour": flavour}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_dir(cfg: BlockConfig, flavour: str) -> Path:
    return cache_root() / f"{cfg.block}-{flavour}-{build_key(cfg, flavour)}"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def emit_verilog(cfg: BlockConfig, block: Block | None = None) -> str:
    """The Verilog of one config, as Amaranth writes it (deterministic: no source paths)."""
    block = block or block_for_config(cfg)
    component = block.build(cfg)
    text = verilog.convert(component, name=TOP, emit_src=False)
    header = f"// accelkit {block.name}: generated from {json.dumps(cfg.to_dict(), sort_keys=True)}\n"
    return header + text


def verilog_file(cfg: BlockConfig) -> Path:
    """The emitted Verilog of `cfg`, cached by content."""
    d = build_dir(cfg, "rtl")
    out = d / f"{TOP}.v"
    if out.exists():
        return out
    with locked(d):
        if not out.exists():
            d.mkdir(parents=True, exist_ok=True)
            (d / "config.json").write_text(cfg.to_json() + "\n")
            tmp = out.with_suffix(".v.tmp")
            tmp.write_text(emit_verilog(cfg))
            tmp.replace(out)
    return out


def _first_problem(log: Path) -> str:
    """The first Verilator or compiler complaint in a build log, for a one-line error."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no build log"
    for line in lines:
        if line.startswith(("%Error", "%Warning")) or " error: " in line:
            return line.strip()[:300]
    return "see the log"


def verilated_model(cfg: BlockConfig, waves: bool = False) -> Path:
    """Build (once) the Verilator model of `cfg` and return its build directory."""
    d = build_dir(cfg, "verilator-waves" if waves else "verilator")
    stamp = d / ".built"
    if stamp.exists():
        return d
    src = verilog_file(cfg)
    with locked(d):
        if stamp.exists():
            return d
        from cocotb_tools.runner import get_runner

        env = verilator_env()
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            runner = get_runner("verilator")
            d.mkdir(parents=True, exist_ok=True)
            runner.build(sources=[src], hdl_toplevel=TOP, build_dir=d, waves=waves,
                         build_args=[*VERILATOR_WARNINGS_OFF, "-O3", "--x-assign", "fast",
                                     "--x-initial", "fast"],
                         log_file=d / "build.log", always=True)
        except (SystemExit, Exception) as e:
            raise RuntimeError(f"Verilator build of {cfg.block} failed: {_first_problem(d / 'build.log')}; "
                               f"see {d / 'build.log'}") from e
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        stamp.write_text(json.dumps(versions(), sort_keys=True))
    return d
