"""The sweep machinery: grids of validated configs, parallel points, JSON/CSV/PNG outputs."""

import csv
import json

import pytest

from accelkit.config import ConfigError
from accelkit.config.dybit import DyBitArrayConfig
from accelkit.flows.sweep import grid, plot_area_cycles, run_sweep, write_tables


def fake_measure(cfg):  # module level so worker processes can pickle it
    n = cfg.rows * cfg.cols
    return {"rows": cfg.rows, "cols": cfg.cols, "cycles": 1000 // n, "lut": 10 * n}


def test_grid_is_the_product_of_the_axes():
    cfgs = grid(DyBitArrayConfig(), {"rows": [1, 2], "cols": [4, 8, 16]})
    assert [(c.rows, c.cols) for c in cfgs] == [(1, 4), (1, 8), (1, 16), (2, 4), (2, 8), (2, 16)]
    assert all(c.a_format == "dybit8k4" for c in cfgs)


def test_grid_validates_every_point():
    with pytest.raises(ConfigError, match="rows=64 is invalid"):
        grid(DyBitArrayConfig(), {"rows": [1, 64]})


@pytest.mark.parametrize("jobs", [1, 2])
def test_rows_keep_config_order_and_outputs_are_written(tmp_path, jobs):
    cfgs = grid(DyBitArrayConfig(), {"rows": [1, 2, 4], "cols": [1, 8]})
    seen = []
    rows = run_sweep(cfgs, fake_measure, jobs=jobs, on_done=lambda c, r: seen.append(c))
    assert rows == [fake_measure(c) for c in cfgs] and len(seen) == len(cfgs)
    j, c = write_tables(rows, tmp_path, "s")
    assert json.loads(j.read_text()) == rows
    with open(c) as fh:
        assert [int(r["lut"]) for r in csv.DictReader(fh)] == [r["lut"] for r in rows]
    png = plot_area_cycles(rows, tmp_path / "s.png", "t", lambda r: f"{r['rows']}x{r['cols']}", [("lut", "LUT")])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flat_area_and_table():
    from accelkit.flows.measure import flat_area, md_table

    row = flat_area({"ecp5": {"lut4": 10, "cells": {"LUT4": 10}}, "ecp5-nodsp": {"lut4": 30},
                     "fmax": {"fmax_mhz": 91.234, "clocks": {}}})
    assert row == {"ecp5_lut4": 10, "ecp5_nodsp_lut4": 30, "fmax_mhz": 91.23}
    assert md_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |\n"
