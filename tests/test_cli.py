"""The accelkit command: emit, params, sim and the one-line errors."""

import json

import pytest

from accelkit.cli import main


def test_emit_writes_verilog_and_config(tmp_path, capsys):
    assert main(["emit", "dybit-array", "--rows", "2", "--cols", "3", "--a-format", "int8", "-o", str(tmp_path),
                 "--top", "mac_array"]) == 0
    v = (tmp_path / "dybit_array.v").read_text()
    assert "module mac_array(" in v and "module top(" not in v
    cfg = json.loads((tmp_path / "dybit_array.json").read_text())
    assert cfg == {"block": "dybit-array", "rows": 2, "cols": 3, "a_format": "int8", "b_format": "dybit4k3",
                   "max_k": 4096}
    assert "Verilator lint: clean" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--rows", "0"], "accelkit: rows=0 is invalid: an integer in 1..32"),
    (["--rows", "four"], "accelkit: --rows: 'four' is not an integer"),
    (["--a-format", "dybit4k9"], "accelkit: kmax=9 is invalid"),
    (["--lanes", "4"], "accelkit: --lanes is invalid for dybit-array"),
])
def test_bad_parameters_give_one_line(tmp_path, capsys, argv, message):
    assert main(["emit", "dybit-array", *argv, "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_params_lists_defaults(capsys):
    assert main(["params", "dybit-array"]) == 0
    out = capsys.readouterr().out
    assert "--max-k" in out and "4096" in out


@pytest.mark.sim
def test_sim_checks_and_counts(capsys):
    assert main(["sim", "dybit-array", "--rows", "2", "--cols", "2", "--stall", "0.2"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["check"].startswith("bit-exact") and res["cycles"] >= res["model_cycles"] > 0
