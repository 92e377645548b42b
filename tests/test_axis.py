"""AXI4-Stream wrappers (gen/axis.py, docs/axis.md): the byte layout, the Vivado attributes, `accelkit emit --axis`,
and the wrapped DyBit array, Hyft unit and sparse engine under Verilator with cocotbext-axi sources and sinks and
their pause generators, bit-exact against the golden models through the blocks' own packers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from amaranth.hdl import signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.blocks import BLOCKS
from accelkit.cli import main
from accelkit.config.dybit import DyBitArrayConfig
from accelkit.config.hyft import SoftmaxConfig
from accelkit.config.sparse_conv import SparseConvConfig
from accelkit.gen import axis
from accelkit.gen.axis import axis_streams, block_streams, emit_axis_verilog, slot_bits, stream_mapping
from accelkit.golden.dybit import dybit_matmul
from accelkit.golden.dybit_cycles import matmul_cycles
from accelkit.golden.hyft import float_to_bits, hyft_softmax
from accelkit.sim import dybit as sim_dybit
from accelkit.sim import hyft as sim_hyft
from accelkit.sim import sparse_conv as sim_sparse
from accelkit.sim.axis import run_axis
from accelkit.sim.runner import SimulationMismatch

# ---------------------------------------------------------------------------------------------- the byte layout


def sim_signature(cfg):
    """The signature of the block of `cfg` (built for it only)."""
    core = BLOCKS[cfg.block].build(cfg)
    axis._built_for_signature(core)
    return core.signature


def test_slot_widths():
    assert [slot_bits(w) for w in (1, 2, 3, 4, 5, 8, 9, 16, 17, 27, 32, 33, 64, 65, 128)] == \
        [1, 2, 4, 4, 8, 8, 16, 16, 32, 32, 32, 64, 64, 72, 128]


def test_layout_by_hand():
    """The documented rules on hand-computed transfers: bytes, nibbles, sign extension, byte-aligned fields,
    tlast and tuser."""
    # DyBit 2 x 3: a = two 8-bit codes + last, b = three 4-bit codes, c = three signed 27-bit sums + last
    a, b, c = axis_streams(sim_signature(DyBitArrayConfig(rows=2, cols=3)))
    assert (a.port, a.tdata_bits, a.last, a.flags) == ("s_axis_a", 16, ("last", 16), ())
    assert a.to_axis(0x12 | 0xFE << 8 | 1 << 16) == (0xFE12, 1, 0)
    assert (b.port, b.tdata_bits, b.last) == ("s_axis_b", 16, None)
    assert b.to_axis(0x3 | 0xA << 4 | 0x5 << 8) == (0x5A3, 0, 0)  # two codes a byte, lane 0 low; 4 bits padding
    assert (c.port, c.tdata_bits, c.is_input) == ("m_axis_c", 96, False)
    m27 = (1 << 27) - 1
    payload = (-5 & m27) | (7 << 27) | ((-(1 << 26)) & m27) << 54 | 1 << 81
    tdata = 0xFFFFFFFB | 7 << 32 | 0xFC000000 << 64  # int32 lanes, little-endian
    assert c.to_axis(payload) == (tdata, 1, 0)
    assert c.from_axis(tdata, 1, 0, strict=True) == payload
    with pytest.raises(ValueError, match=r"m_axis_c: tdata\[31:0\] = 0xf7fffffb is not data\[0\]"):
        c.from_axis(tdata & ~(1 << 27), 1, 0, strict=True)  # a padding bit that is not the sign
    # Hyft y: four 16-bit lanes, count (3 bits) in its own byte, last -> tlast, error -> tuser
    y = axis_streams(sim_signature(SoftmaxConfig()))[1]
    assert (y.tdata_bits, y.last, [f for f, _ in y.flags]) == (72, ("last", 67), ["error"])
    assert y.to_axis(0xBEEF | 3 << 64 | 1 << 67 | 1 << 68) == (0xBEEF | 3 << 64, 1, 1)
    with pytest.raises(ValueError, match="bits set outside every field"):
        y.from_axis(1 << 70, strict=True)
    # sparse tokens: y and x each in a byte after the features, eof -> tlast, error -> tuser
    cfg = SparseConvConfig(max_height=100, max_width=11, cin=8, cout=8)
    s = axis_streams(sim_signature(cfg))[1]
    assert (cfg.y_bits, cfg.x_bits) == (7, 4)  # y in a byte-wide slot, x in a nibble
    assert (s.port, s.tdata_bits, s.last[0], s.flags[0][0]) == ("s_axis_sites_in", 48, "eof", "error")
    tok = 0x04030201 | 5 << 32 | 9 << 39  # the payload: y at 32, x at 39, eof at 43, error at 44
    assert s.to_axis(tok | 1 << 43 | 1 << 44) == (0x04030201 | 5 << 32 | 9 << 40, 1, 1)
    assert s.to_axis(tok) == (0x04030201 | 5 << 32 | 9 << 40, 0, 0)


def test_what_does_not_map_is_refused():
    union = data.UnionLayout({"a": 8, "b": signed(8)})
    with pytest.raises(ValueError, match="payload field payload is a UnionLayout"):
        stream_mapping("u", union, True)
    with pytest.raises(ValueError, match="two end-of-frame fields"):
        stream_mapping("t", data.StructLayout({"d": 8, "last": 1, "eof": 1}), False)
    with pytest.raises(ValueError, match="port cfg is not an amaranth.lib.stream stream"):
        axis_streams(wiring.Signature({"cfg": In(4), "y": Out(stream.Signature(unsigned(8)))}))


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_every_block_maps_every_bit_once(block):
    """Every stream of every block at its default config: each payload bit in exactly one place (a lane, tlast or
    tuser), whole bytes of tdata, no slot across a byte boundary, and the payload survives a round trip."""
    for s in block_streams(BLOCKS[block].default_config()):
        assert s.tdata_bits % 8 == 0 and s.tdata_bits > 0
        bits = [lane.src + k for lane in s.lanes for k in range(lane.width)]
        bits += [bit for _, bit in ([s.last] if s.last else []) + list(s.flags)]
        assert sorted(bits) == list(range(s.payload_bits)), s.port
        slots = sorted((lane.dst, lane.dst + lane.slot) for lane in s.lanes)
        assert all(e1 <= b2 for (_, e1), (b2, _) in zip(slots, slots[1:], strict=False)), f"{s.port}: overlap"
        assert all(lane.slot >= 8 and lane.dst % 8 == 0 or lane.dst // 8 == (lane.dst + lane.slot - 1) // 8
                   for lane in s.lanes), f"{s.port}: a slot straddles a byte"
        payload = int.from_bytes(bytes(range(1, 200)), "little") & ((1 << s.payload_bits) - 1)
        assert s.from_axis(*s.to_axis(payload), strict=True) == payload


def test_docs_tables_are_current():
    text = (Path(__file__).resolve().parents[1] / "docs" / "axis.md").read_text()
    assert axis.render_docs(text) == text, "docs/axis.md is out of date: run python -m accelkit.gen.axis"


# ---------------------------------------------------------------------------------------------- Verilog and CLI


def _top_module(verilog: str, top: str) -> str:
    start = verilog.index(f"module {top}(")
    return verilog[start:verilog.index("endmodule", start)]


def _attrs_of(module: str, port: str) -> dict[str, str]:
    """The (* ... *) attributes on the declaration `input|output [..] port;`."""
    m = re.search(r"((?:\s*\(\*[^*]*\*\)\n)*)\s*(?:input|output)\s+(?:\[\d+:0\]\s+)?" + port + ";", module)
    assert m, f"no port declaration of {port}"
    return dict(re.findall(r'\(\* (\w+) = "([^"]*)" \*\)', m.group(1)))


def test_verilog_carries_the_vivado_interface_attributes():
    cfg = DyBitArrayConfig(rows=2, cols=3)
    top = _top_module(emit_axis_verilog(cfg, top="mac"), "mac")
    streams = block_streams(cfg)
    for s in streams:
        for sig in s.signals():
            attrs = _attrs_of(top, f"{s.port}_{sig}")
            assert attrs["X_INTERFACE_INFO"] == f"xilinx.com:interface:axis:1.0 {s.port} {sig.upper()}"
        param = _attrs_of(top, f"{s.port}_tdata")["X_INTERFACE_PARAMETER"]
        assert f"TDATA_NUM_BYTES {s.tdata_bytes}," in param and f"HAS_TLAST {int(bool(s.last))}" in param
    assert _attrs_of(top, "clk") == {"X_INTERFACE_INFO": "xilinx.com:signal:clock:1.0 clk CLK",
                                     "X_INTERFACE_PARAMETER": "ASSOCIATED_BUSIF s_axis_a:s_axis_b:m_axis_c, "
                                                              "ASSOCIATED_RESET rst"}
    assert _attrs_of(top, "rst") == {"X_INTERFACE_INFO": "xilinx.com:signal:reset:1.0 rst RST",
                                     "X_INTERFACE_PARAMETER": "POLARITY ACTIVE_HIGH"}
    assert re.search(r"input \[15:0\] s_axis_b_tdata;", top) and re.search(r"output \[95:0\] m_axis_c_tdata;", top)


def test_emit_axis_writes_wrapper_layout_and_core(tmp_path, capsys):
    assert main(["emit", "hyft", "--max-len", "64", "--axis", "--top", "softmax", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "top module softmax, AXI4-Stream ports, Verilator lint: clean" in out
    v = (tmp_path / "hyft.v").read_text()
    assert "module softmax(" in v and "\\softmax.core" in v and "module top(" not in v
    assert re.search(r"output \[71:0\] m_axis_y_tdata;", v) and "m_axis_y_tuser" in v
    layout = (tmp_path / "hyft_axis.md").read_text()
    assert "tlast = `last`; tuser = [0] `error`" in layout and "| [67:64] | `count` |" in layout
    assert "AXI4-Stream wrapper" in (tmp_path / "hyft.core").read_text()


def test_emit_refuses_a_bad_top_name(tmp_path, capsys):
    assert main(["emit", "hyft", "--axis", "--top", "2x", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "accelkit: --top '2x' is invalid: a Verilog identifier (letters, digits, _)\n"


# ---------------------------------------------------------------------------------------------- under Verilator


def codes(bits: int, shape, seed: int) -> torch.Tensor:
    return torch.randint(0, 1 << bits, shape, generator=torch.Generator().manual_seed(seed))


DYBIT = DyBitArrayConfig(rows=2, cols=3)  # 3 lanes: b and c have padding, c signed 27 -> 32 bits


@pytest.mark.sim
def test_dybit_array_bit_exact_with_pauses():
    a, b = codes(8, (5, 9), 1), codes(4, (9, 7), 2)
    a_beats, b_beats, c_beats = sim_dybit.pack_job(DYBIT, a, b)  # the block's own packer and golden model
    for gap, stall, seed in ((0.3, 0.3, 1), (0.7, 0.6, 2)):
        run = run_axis(DYBIT, {"a": a_beats, "b": b_beats}, {"c": len(c_beats)}, gap=gap, stall=stall, seed=seed)
        assert run.beats["c"] == c_beats
        c = sim_dybit.unpack_c(DYBIT, run.beats["c"], 5, 7)
        assert torch.equal(c, dybit_matmul(a, DYBIT.a_fmt, b, DYBIT.b_fmt))
        assert run.cycles("a", "c") > matmul_cycles(DYBIT, 5, 9, 7)  # the pauses did pause
    assert (c < 0).any() and (c > 0).any()  # both signs through the sign-extended lanes
    assert [t[1] for t in run.transfers["c"]] == [0, 1] * (len(c_beats) // 2)  # tlast on each tile's last row
    # no pauses: the wrapper is wires, so the block's exact cycle model holds on its AXI4-Stream ports
    run = run_axis(DYBIT, {"a": a_beats, "b": b_beats}, {"c": len(c_beats)})
    assert run.beats["c"] == c_beats and run.cycles("a", "c") == matmul_cycles(DYBIT, 5, 9, 7)


@pytest.mark.sim
def test_missing_or_extra_transfers_fail_in_one_line():
    a, b = codes(8, (2, 3), 3), codes(4, (3, 3), 4)
    a_beats, b_beats, c_beats = sim_dybit.pack_job(DYBIT, a, b)
    with pytest.raises(SimulationMismatch, match=r"transfers after 300 cycles: m_axis_c 2 of 3"):
        run_axis(DYBIT, {"a": a_beats, "b": b_beats}, {"c": len(c_beats) + 1}, timeout=300)
    with pytest.raises(SimulationMismatch, match=r"m_axis_c: 1 transfer\(s\) more than the 1 expected"):
        run_axis(DYBIT, {"a": a_beats, "b": b_beats}, {"c": len(c_beats) - 1})
    with pytest.raises(ValueError, match=r"give beats for the inputs \['a', 'b'\]"):
        run_axis(DYBIT, {"a": a_beats}, {"c": 2})


HYFT = SoftmaxConfig(max_len=64)


@pytest.mark.sim
def test_hyft_bit_exact_with_pauses():
    g = torch.Generator().manual_seed(5)
    lengths = (1, 4, 7, 13, 70, 3, 64)  # partial last beats, an oversize vector (error in tuser), max_len
    vectors = [(torch.randn(n, generator=g, dtype=torch.float64) * 4).to(HYFT.torch_dtype) for n in lengths]
    vectors[2][3] = float("-inf")
    x_beats, y_beats, _, spans = sim_hyft.pack_job(HYFT, vectors)
    run = run_axis(HYFT, {"x": x_beats}, {"y": len(y_beats)}, gap=0.3, stall=0.4, seed=3)
    assert run.beats["y"] == y_beats
    outputs, errors = sim_hyft.unpack_outputs(HYFT, run.beats["y"], spans)
    assert errors == [n > HYFT.max_len for n in lengths]
    for v, out, err in zip(vectors, outputs, errors, strict=True):
        if not err:
            assert torch.equal(float_to_bits(out), float_to_bits(hyft_softmax(v, HYFT)))
    # tuser is set on exactly the oversize vector's one beat, tlast on every vector's last beat
    users = [t[2] for t in run.transfers["y"]]
    assert sum(users) == 1 and users[spans[4][2]] == 1
    assert [i for i, t in enumerate(run.transfers["y"]) if t[1]] == [o1 for _, _, _, o1 in spans]


SPARSE = SparseConvConfig(max_height=13, max_width=11, cin=8, cout=8)


@pytest.mark.sim
def test_sparse_engine_bit_exact_with_pauses():
    """Two frames back to back, the second flagged by an upstream engine (tuser on its input end-of-frame
    transfer), which the engine passes on to its output end-of-frame transfer."""
    layer = sim_sparse.random_layer(SPARSE, seed=1)
    lo, hi = SPARSE.input_range
    frames = [sim_sparse.random_frame(13, 11, d, SPARSE.cin, lo, hi, seed=k) for k, d in enumerate((0.3, 0.15))]
    params = sim_sparse.pack_params(SPARSE, layer, 13, 11)
    s_in = next(s for s in block_streams(SPARSE) if s.name == "sites_in")
    first = sim_sparse.pack_frame_tokens(SPARSE, frames[0])
    second = sim_sparse.pack_frame_tokens(SPARSE, frames[1])
    second[-1] |= 1 << s_in.flags[0][1]  # the error bit of the end-of-frame token
    expect = (sim_sparse.pack_output_tokens(SPARSE, layer(frames[0]), False)
              + sim_sparse.pack_output_tokens(SPARSE, layer(frames[1]), True))
    run = run_axis(SPARSE, {"params": params, "sites_in": first + second}, {"sites_out": len(expect)},
                   gap=0.3, stall=0.3, seed=4, after={"sites_in": "params"}, timeout=20_000)
    assert run.beats["sites_out"] == expect
    outs, errs, _ = sim_sparse._unpack_frames(SPARSE, run.beats["sites_out"], [(13, 11)] * 2)
    assert errs == [False, True]
    for frame, out in zip(frames, outs, strict=True):
        gold = layer(frame)
        assert torch.equal(torch.as_tensor(out.coords), torch.as_tensor(gold.coords))
        assert torch.equal(torch.as_tensor(out.features), torch.as_tensor(gold.features))
    # one AXI4-Stream packet per frame, ending on its end-of-frame transfer, which alone carries the flag
    n0 = len(sim_sparse.pack_output_tokens(SPARSE, layer(frames[0]), False))
    assert [i for i, t in enumerate(run.transfers["sites_out"]) if t[1]] == [n0 - 1, len(expect) - 1]
    assert [i for i, t in enumerate(run.transfers["sites_out"]) if t[2]] == [len(expect) - 1]
