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


@pytest.mark.parametrize("argv,seed_jobs,router", [
    ([], 2, None),
    (["--seed-jobs", "1", "--router", "router2"], 1, "router2"),
])
def test_synth_passes_router_and_seed_jobs(monkeypatch, capsys, argv, seed_jobs, router):
    """`accelkit synth --seed-jobs N --router R` reaches every place-and-route call of synth_config (the flow
    itself is not run here: its calls are recorded)."""
    import accelkit.flows.synth as synth

    calls = []

    def fake(cfg, targets=(), fmax=True, device="85k", seeds=(1,), seed_jobs=1, router=None):
        calls.append({"targets": tuple(targets), "fmax": fmax, "seeds": tuple(seeds), "seed_jobs": seed_jobs,
                      "router": router})
        res = {t: {"lut4": 1} for t in targets}
        if fmax:
            cp = {"start": "a", "end": "b", "logic_levels": 1, "carry_levels": 0, "total_ns": 5.0,
                  "routing_share": 0.5}
            res["fmax"] = {"fmax_mhz": 200.0, "seeds": {str(s): 200.0 for s in seeds}, "part": "LFE5U-85F",
                           "speed": 6, "package": "CABGA381", "critical_path": cp}
        return res

    monkeypatch.setattr(synth, "synth_config", fake)
    assert main(["synth", "dybit-dyn", "--seeds", "2", *argv]) == 0
    fmax_calls = [c for c in calls if c["fmax"]]
    assert fmax_calls and all(c["seed_jobs"] == seed_jobs and c["router"] == router and c["seeds"] == (1, 2)
                              for c in fmax_calls)
    assert "fmax: median 200.0 MHz" in capsys.readouterr().out


def test_synth_refuses_an_unknown_router(capsys):
    with pytest.raises(SystemExit) as e:
        main(["synth", "dybit-dyn", "--router", "router3"])
    assert e.value.code == 2 and "--router: invalid choice: 'router3'" in capsys.readouterr().err
