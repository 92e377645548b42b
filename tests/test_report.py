"""The report's pieces that need no long flow: studies cached by content, sections without the long figures."""

from __future__ import annotations

import pytest

from accelkit.flows import bench_hyft
from accelkit.flows.measure import cached_study

CALLS = []


def tiny_study() -> dict:
    CALLS.append(1)
    return {"value": 1.5, "rows": [1, 2]}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELKIT_CACHE", str(tmp_path))
    CALLS.clear()
    return tmp_path


def test_study_runs_once_and_is_then_read_from_the_cache(cache):
    assert cached_study("tiny", tiny_study, compute=False) is None
    assert CALLS == []
    assert cached_study("tiny", tiny_study) == {"value": 1.5, "rows": [1, 2]}
    assert cached_study("tiny", tiny_study) == cached_study("tiny", tiny_study, compute=False)
    assert len(CALLS) == 1
    assert len(list((cache / "studies").glob("tiny-*.json"))) == 1


def test_hyft_section_without_the_long_figures_says_how_to_get_them():
    area = {k: 1 for k in ("ecp5_lut4", "ecp5_ff", "ecp5_mult18", "ecp5_ebr", "xilinx_lut", "xilinx_ff",
                           "xilinx_dsp", "xilinx_bram", "fmax_mhz", "latency_256")}
    res = {"default_config": {"fmt": "bf16", "lanes": 4, "segments": 8, "max_len": 1024},
           "timing": {"latency": [], "rate_n": 256, "rate_rtl": 3.9, "rate_model": 3.9, "batch_cycles_rtl": 1,
                      "batch_cycles_model": 1},
           # the default report measures no Fmax of the float baseline
           "area": [{"lanes": n, "arch": a, **{k: v for k, v in area.items() if a == "hyft" or k != "fmax_mhz"}}
                    for n in bench_hyft.AREA_LANES_DEFAULT for a in ("hyft", "float")],
           "accuracy": None}
    md = bench_hyft.render(res)
    assert "16 lanes, and the float baseline's Fmax: `accelkit report --full`" in md
    assert "| --full |" in md
    assert "Not in this report: `accelkit report --full` runs the study" in md


def test_dybit_section_without_the_long_figures_says_how_to_get_them():
    from accelkit.flows import bench_dybit

    area = dict.fromkeys(("ecp5_lut4", "ecp5_ff", "ecp5_ccu2", "ecp5_mult18", "ecp5_ebr", "xilinx_lut", "xilinx_ff",
                          "xilinx_dsp", "xilinx_bram", "fmax_mhz"), 1)
    cyc = {"array": "4x4", "m": 3, "k": 5, "n": 7, "cycles": 13, "model_cycles": 13, "utilisation": 0.5}
    res = {"default_config": {"rows": 4, "cols": 4, "a_format": "dybit8k4", "b_format": "dybit4k3", "max_k": 4096},
           "default_area": area, "utilisation": [cyc], "cycle_model": [cyc], "minilm": None}
    md = bench_dybit.render(res)
    assert "Not in this report: `accelkit report --full` (eight more syntheses)" in md
    assert "exact on every shape" in md
    assert [cfg for cfg, _ in bench_dybit.area_points()] == [bench_dybit.DyBitArrayConfig()]
