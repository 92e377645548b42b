"""Content-addressed builds: Verilog emission and Verilator models, cached by hash.

A build directory is named by a hash of the config, the source of every module
the generator's output depends on (its import closure within the project, so an
edit to a config module or a helper it imports rebuilds) and the tool versions,
so re-running is free, any change rebuilds, and two configs never share a
directory. Concurrent builders (pytest-xdist workers, parallel
sweeps, Dask workers sharing the cache) take a file lock on the directory, so
they never clobber each other, and every file a reader checks for is written
whole under a temporary name of its own and renamed into place (`atomic_write`).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from amaranth.back import verilog

from accelkit._loaded import LOADED
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


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _is_project(name: str, path: Path) -> bool:
    """accelkit's own modules, and modules outside any installation (a test's generator); not libraries,
    whose versions the key records instead."""
    if name == "accelkit" or name.startswith("accelkit."):
        return True
    installed = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return not any(path.resolve().is_relative_to(p) for p in installed)


def _imports(name: str, path: Path) -> set[str]:
    """Modules a source file imports anywhere (module level or inside functions), resolved to absolute names."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return out


@functools.cache
def _closure(roots: tuple[str, ...]) -> tuple[tuple[str, Path], ...]:
    """Every project module reachable by imports from `roots`, with the packages that contain them."""
    seen: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None or not _is_project(name, path):
            continue
        seen[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b
        todo += sorted(_imports(name, path))
    return tuple(sorted(seen.items()))


def _roots(block: Block) -> tuple[str, str]:
    """The modules of a block's generator and config, where its import closure starts."""
    return block.generator.partition(":")[0], block.config.partition(":")[0]


def generator_sources(block: Block) -> list[tuple[str, Path]]:
    """(module, file) of every module the generator's output can depend on: the generator's module, the
    config's, and every project module they import, transitively (found by reading their imports)."""
    return list(_closure(_roots(block)))


def module_digest(*modules: str) -> str:
    """Digest of the source of `modules` and of every project module they import, transitively: the key of
    anything computed by them and cached by content (builds, and the studies of flows/measure.py)."""
    h = hashlib.sha256()
    for name, path in _closure(tuple(modules)):
        _check_loaded(name, path)
        h.update(name.encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def _check_loaded(name: str, path: Path) -> None:
    """A module this process imported must still be the file the key hashes, or what the process builds under
    that key would be the old code's."""
    loaded = LOADED.get(name) if name in sys.modules else None
    if loaded is None:
        return
    try:
        st = path.stat()
    except OSError:
        return
    if (st.st_mtime_ns, st.st_size) != loaded:
        raise StaleSourceError(f"{name} ({path}) changed on disk since this process imported it: restart it, so "
                               "that what it builds and caches is the new code")


class StaleSourceError(RuntimeError):
    """A generator's source file changed after the running process imported it."""


def source_digest(block: Block) -> str:
    return module_digest(*_roots(block))


# What the Verilator model is compiled with, beyond the Verilog: a change here must rebuild.
VERILATOR_BUILD_ARGS = [*VERILATOR_WARNINGS_OFF, "-O3", "--x-assign", "fast", "--x-initial", "fast"]


def _cocotb_libs() -> str:
    """Where this environment's cocotb VPI libraries are: a Verilator model links them by absolute path (its
    RUNPATH), so a model built by another environment (another clone's venv) must not be reused here."""
    from cocotb_tools.config import libs_dir
    return str(libs_dir)


def build_key(cfg: BlockConfig, flavour: str) -> str:
    """Hash naming a build: config, the source of every module the generator depends on, tool versions,
    the kind of build and, for Verilator models, how they are compiled and which cocotb libraries they link."""
    verilator = flavour.startswith("verilator")
    blob = json.dumps({"config": cfg.to_dict(), "source": source_digest(block_for_config(cfg)),
                       "tools": versions(), "flavour": flavour,
                       "verilator_args": VERILATOR_BUILD_ARGS if verilator else None,
                       **({"cocotb_libs": _cocotb_libs()} if verilator else {})},
                      sort_keys=True)
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


def atomic_write(path: Path, data: str | bytes) -> Path:
    """Write `path` so that no reader (another process, another host sharing the cache) ever sees it half
    written: into a temporary file of this writer's own in the same directory, synced, then renamed over
    `path`. Concurrent writers of the same content each rename a whole file; the last one wins."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def emit_verilog(cfg: BlockConfig, block: Block | None = None, platform: str | None = None) -> str:
    """The Verilog of one config, as Amaranth writes it (deterministic: no source paths). With
    ``platform="ecp5"``, the generators instantiate ECP5 primitives where yosys would not infer them (a
    MULT18X18D with its own registers); the default is portable Verilog, what rtl/ holds and what is simulated."""
    block = block or block_for_config(cfg)
    component = block.build(cfg)
    text = verilog.convert(component, name=TOP, emit_src=False, platform=platform)
    header = f"// accelkit {block.name}: generated from {json.dumps(cfg.to_dict(), sort_keys=True)}\n"
    return header + text


@dataclasses.dataclass(frozen=True)
class Variant:
    """Another design made from a block's config (a wrapper around it, say): `name` goes into its build
    directories' names beside the block's key, so it must change whenever `emit` would emit other Verilog
    (include a digest of the module that emits it)."""

    name: str
    emit: Callable[[BlockConfig], str]  # cfg -> Verilog with top module TOP
    build_args: tuple[str, ...] = ()  # Verilator arguments beyond VERILATOR_BUILD_ARGS (`name` must cover them)
    main: Path | None = None  # a C++ main in place of cocotb's verilator.cpp (`name` must cover its content)


def verilog_file(cfg: BlockConfig, platform: str | None = None, variant: Variant | None = None) -> Path:
    """The emitted Verilog of `cfg` (for `platform`, see `emit_verilog`; or of `variant`), cached by content."""
    kind = "rtl" + (f"-{platform}" if platform else "") + (f"-{variant.name}" if variant else "")
    d = build_dir(cfg, kind)
    out = d / f"{TOP}.v"
    if out.exists():
        return out
    with locked(d):
        if not out.exists():
            d.mkdir(parents=True, exist_ok=True)
            atomic_write(d / "config.json", cfg.to_json() + "\n")
            atomic_write(out, variant.emit(cfg) if variant else emit_verilog(cfg, platform=platform))
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


def _verilator_runner(main: Path | None):
    """cocotb's Verilator runner; with `main`, one that compiles that C++ main in place of cocotb's own."""
    import cocotb_tools.config
    from cocotb_tools.runner import Verilator, get_runner

    if main is None:
        return get_runner("verilator")

    class WithMain(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            default = str(cocotb_tools.config.share_dir / "lib" / "verilator" / "verilator.cpp")
            if default not in cmds[0]:
                raise RuntimeError(f"cocotb's Verilator runner no longer compiles {default}; cannot use {main}")
            cmds[0] = [str(main) if arg == default else arg for arg in cmds[0]]
            return cmds

    return WithMain()


def verilated_model(cfg: BlockConfig, waves: bool = False, variant: Variant | None = None) -> Path:
    """Build (once) the Verilator model of `cfg` (or of `variant`) and return its build directory."""
    d = build_dir(cfg, "verilator" + (f"-{variant.name}" if variant else "") + ("-waves" if waves else ""))
    stamp = d / ".built"
    if stamp.exists():
        return d
    src = verilog_file(cfg, variant=variant)
    with locked(d):
        if stamp.exists():
            return d
        env = verilator_env()
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            runner = _verilator_runner(variant.main if variant else None)
            d.mkdir(parents=True, exist_ok=True)
            runner.build(sources=[src], hdl_toplevel=TOP, build_dir=d, waves=waves,
                         build_args=VERILATOR_BUILD_ARGS + list(variant.build_args if variant else ()),
                         log_file=d / "build.log", always=True)
        except (SystemExit, Exception) as e:
            what = f"{cfg.block} ({variant.name})" if variant else cfg.block
            raise RuntimeError(f"Verilator build of {what} failed: {_first_problem(d / 'build.log')}; "
                               f"see {d / 'build.log'}") from e
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        # the precompiled headers (two of about 100 MB each) serve only the compile: a cache of hundreds of
        # models filled a 50 GB disk with them
        for pch in d.glob("*.gch"):
            pch.unlink(missing_ok=True)
        atomic_write(stamp, json.dumps(versions(), sort_keys=True))
    return d
