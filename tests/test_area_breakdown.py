"""flows/area_breakdown.py: the parts of a synthesised Hyft / float softmax unit sum to the flat synthesis."""

from __future__ import annotations

import pytest

from accelkit.config.hyft import SoftmaxConfig
from accelkit.flows.area_breakdown import (
    CATEGORIES,
    assign_parts,
    breakdown,
    category_of,
    part_of_name,
    signal_stem,
    table,
)

pytestmark = pytest.mark.synth

FIGURES = ("lut4", "ff", "ccu2", "mult18", "ebr", "lutram")


def test_names_map_to_parts():
    assert part_of_name("b_vx2_47", "hyft") == "B.sub.lane2"
    assert part_of_name("\\b_l3s_keep_12", "float") == "B.sub.lane3"
    assert part_of_name("fin_recip_r1_7", "float") == "norm"
    assert part_of_name("fin_recip_v_3", "float") == "tags"
    assert part_of_name("bank1.ebr0", "hyft") == "top.bank1"
    assert part_of_name("bank1.wdata", "hyft") == "ring.ports"  # the top's register under the bank's name
    assert part_of_name("$123", "hyft") is None
    assert part_of_name("b_c3_384_LUT4_C_Z", "hyft") is None  # yosys autoname: anonymous
    assert category_of("C.round.lane3") == "C.round" and category_of("top.bank0") == "ring.banks"
    assert signal_stem("b_vx12_47") == "b_vx#"


def test_cells_follow_names_then_readers():
    """A cell driving a named signal takes its part; one driving only anonymous wires takes its readers'
    majority, through a chain; one feeding nothing named stays in the top."""
    module = {
        "netnames": {"b_vx0_1": {"bits": [2]}, "$5": {"bits": [3]}, "$6": {"bits": [4]}, "c_u1_9": {"bits": [5]},
                     "$7": {"bits": [6]}},
        "cells": {
            "ff": {"type": "TRELLIS_FF", "port_directions": {"DI": "input", "Q": "output"},
                   "connections": {"DI": [3], "Q": [2]}},
            "lut_a": {"type": "LUT4", "port_directions": {"A": "input", "Z": "output"},
                      "connections": {"A": [4], "Z": [3]}},
            "lut_b": {"type": "LUT4", "port_directions": {"A": "input", "Z": "output"},
                      "connections": {"A": [7], "Z": [4]}},
            "ff2": {"type": "TRELLIS_FF", "port_directions": {"DI": "input", "Q": "output"},
                    "connections": {"DI": [4], "Q": [5]}},
            "orphan": {"type": "LUT4", "port_directions": {"A": "input", "Z": "output"},
                       "connections": {"A": [2], "Z": [6]}},
        },
    }
    parts, how = assign_parts({}, module, "hyft")
    assert parts["ff"] == "B.sub.lane0" and parts["lut_a"] == "B.sub.lane0" and parts["ff2"] == "C.scale.lane1"
    # lut_b feeds lut_a (B.sub) and ff2 (C.scale), one bit each: the tie goes to the first name
    assert parts["lut_b"] == "B.sub.lane0"
    assert "orphan" not in parts and how == {"drives": 2, "readers": 2, "none": 1}


@pytest.mark.parametrize("arch", ["hyft", "float"])
def test_parts_sum_to_the_flat_synthesis(arch):
    cfg = SoftmaxConfig(arch=arch, fmt="bf16", lanes=2, max_len=64)
    res = breakdown(cfg)
    assert res["total"] == {k: res["total"].get(k, 0) for k in FIGURES}
    assert {k: res["total"][k] for k in FIGURES} == {k: res["flat"][k] for k in FIGURES}
    assert sum(c["lut4"] for c in res["categories"].values()) == res["flat"]["lut4"]
    for cat in res["categories"]:
        assert cat in CATEGORIES
    # every lane's datapath, every bank and the shared parts are there, and almost nothing is left unplaced
    for part in ("top.bank0", "ring.ports", "ring.control", "A.max", "norm", "output", "sum.lanes",
                 *(f"{c}.lane{k}" for c in ("B.sub", "B.exp", "C.round") for k in range(2))):
        assert part in res["parts"], part
    assert res["parts"].get("top", {}).get("lut4", 0) <= 0.01 * res["flat"]["lut4"]
    assert res["flat"]["mult18"] == sum(p["mult18"] for p in res["parts"].values()) > 0
    assert res["unknown_names"] == []  # every signal name of the design is known to a rule (or anonymous)
    assert sum(f["lut4"] for sig in res["signals"].values() for f in sig.values()) == res["flat"]["lut4"]
    text = table(res, "parts")
    assert "B.sub.lane1" in text and "**sum of the parts**" in text


def test_xilinx_parts_sum_to_the_flat_synthesis():
    res = breakdown(SoftmaxConfig(arch="hyft", fmt="bf16", lanes=1, max_len=16), xilinx=True)["xilinx"]
    assert res["total"] == res["flat"] and res["total"]["dsp"] > 0  # (breakdown also checks it)
    assert res["parts"].get("top", {}).get("lut", 0) <= 0.01 * res["flat"]["lut"]
    for part in ("top.bank0", "ring.ports", "B.sub.lane0", "norm", "C.round.lane0"):
        assert part in res["parts"], part


def test_parts_synthesised_alone_cross_check():
    """Every part in a module of its own: with abc9's delay target relaxed the parts cost about what the flat
    attribution gives them (within 10 % in all); mapped for depth, module by module, at least as much."""
    res = breakdown(SoftmaxConfig(arch="hyft", fmt="bf16", lanes=1, max_len=16), hier=True)
    flat, relaxed, default = res["total"]["lut4"], res["hier_relaxed_total"]["lut4"], res["hier_total"]["lut4"]
    assert abs(relaxed - flat) <= 0.1 * flat and default >= flat
    assert res["hier_total"]["mult18"] == res["hier_relaxed_total"]["mult18"] == res["total"]["mult18"]
    for part in ("B.sub.lane0", "B.exp.lane0", "ring.ports", "norm"):
        assert part in res["hier_parts"] and part in res["hier_relaxed_parts"], part
