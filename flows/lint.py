"""Verilator lint of generated Verilog, quiet about what Amaranth's output always trips."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from accelkit.sim.build import TOP, VERILATOR_WARNINGS_OFF
from accelkit.sim.tools import verilator_env, verilator_root

# Besides the simulation build's list: Amaranth declares every register with its reset value
# (`reg [7:0] r = 8'h00;`) and assigns it in an always block, which -Wall reports as PROCASSINIT.
LINT_WARNINGS_OFF = [*VERILATOR_WARNINGS_OFF, "-Wno-PROCASSINIT"]

_MESSAGE = re.compile(r"^%(Warning-[A-Z0-9_]+|Error(?:-[A-Z0-9_]+)?):\s*(.*)$")


def parse_lint_output(text: str) -> tuple[list[str], list[str]]:
    """Warnings and errors from Verilator's output, each as one line ``CATEGORY: file:line:col: message``.

    Verilator's closing ``Exiting due to N error(s)`` summary is not an error of its own.
    """
    warnings: list[str] = []
    errors: list[str] = []
    for line in text.splitlines():
        m = _MESSAGE.match(line)
        if m is None or m.group(2).startswith("Exiting due to"):
            continue
        kind, message = m.groups()
        if kind.startswith("Warning-"):
            warnings.append(f"{kind.removeprefix('Warning-')}: {message}")
        else:
            errors.append(f"{kind}: {message}")
    return warnings, errors


def lint(verilog: Path, top: str = TOP) -> list[str]:
    """Lint `verilog` with Verilator ``--lint-only -Wall`` and return the warnings left after `LINT_WARNINGS_OFF`.

    A lint error (syntax, elaboration) raises a one-line RuntimeError quoting Verilator's first error.
    """
    verilog = Path(verilog).resolve()
    argv = [str(verilator_root() / "bin" / "verilator"), "--lint-only", "-Wall", "-Wno-fatal",
            *LINT_WARNINGS_OFF, "--top-module", top, str(verilog)]
    proc = subprocess.run(argv, cwd=verilog.parent, env={**os.environ, **verilator_env()},
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    warnings, errors = parse_lint_output(proc.stdout + proc.stderr)
    if errors or proc.returncode != 0:
        first = errors[0] if errors else f"exit {proc.returncode} with no %Error line"
        raise RuntimeError(f"Verilator lint of {verilog} failed with {max(len(errors), 1)} error(s): {first}")
    return warnings

