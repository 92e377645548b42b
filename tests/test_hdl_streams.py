"""The in-simulator stream harness (accelkit.sim.hdl_streams): the same job gives the same beats and the same
handshake cycles as the cocotb testbench, and it catches what the cocotb monitor catches."""

from __future__ import annotations

import re

import pytest
import torch
from stream_faults import StreamFaultsConfig

from accelkit.blocks import BLOCKS, Block
from accelkit.config.dybit import DyBitArrayConfig
from accelkit.config.sparse_conv import SparseConvConfig
from accelkit.golden.dybit import dybit_matmul
from accelkit.sim import hdl_streams
from accelkit.sim.dybit import pack_job, run_dybit_array
from accelkit.sim.runner import SimulationMismatch, run_streams
from accelkit.sim.sparse_conv import random_frame, random_layer, run_sparse_conv

pytestmark = pytest.mark.sim

DYBIT = DyBitArrayConfig()


def operands(m: int, k: int, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 1 << DYBIT.a_bits, (m, k), generator=g),
            torch.randint(0, 1 << DYBIT.b_bits, (k, n), generator=g))


def dybit_job(a, b, gap=0.0, stall=0.0, seed=1, count_delta=0, timeout=None):
    a_beats, b_beats, c_beats = pack_job(DYBIT, a, b)
    count = len(c_beats) + count_delta
    return {"seed": seed, "sources": [{"name": "a", "beats": a_beats, "gap": gap},
                                      {"name": "b", "beats": b_beats, "gap": gap}],
            "sinks": [{"name": "c", "count": count, "stall": stall, "expect": (c_beats + [0] * 8)[:count]}],
            "timeout": timeout or 1000 + 20 * (len(a_beats) + len(c_beats))}


def test_same_beats_and_cycles_as_the_cocotb_testbench():
    """No gaps or stalls: every handshake of every stream in the same cycle under both testbenches."""
    a, b = operands(9, 40, 7, seed=3)
    job = dybit_job(a, b)
    py, hdl = run_streams(DYBIT, job), run_streams(DYBIT, job, streams="hdl")
    assert hdl["sinks"] == py["sinks"]
    assert hdl["sink_fires"] == py["sink_fires"]
    assert hdl["source_fires"] == py["source_fires"]


def test_a_source_that_waits_starts_as_late_and_the_frame_is_bit_exact():
    """The sparse engine loads its params, then its frame (`after`): the same cycles under both testbenches."""
    cfg = SparseConvConfig(max_height=16, max_width=16)
    layer = random_layer(cfg, 1)
    frame = random_frame(16, 16, 0.3, cfg.cin, *cfg.input_range, seed=2)
    py = run_sparse_conv(cfg, layer, [frame, frame])
    hdl = run_sparse_conv(cfg, layer, [frame, frame], streams="hdl")
    assert hdl.cycles == py.cycles == py.predicted
    assert hdl.total_cycles == py.total_cycles
    for o_hdl, o_py in zip(hdl.outputs, py.outputs, strict=True):
        assert torch.equal(o_hdl.coords, o_py.coords) and torch.equal(o_hdl.features, o_py.features)


@pytest.mark.parametrize("gap,stall,seed", [(0.3, 0.0, 1), (0.0, 0.5, 2), (0.4, 0.6, 3), (0.1, 0.95, 4)])
def test_bit_exact_with_gaps_and_stalls(gap, stall, seed):
    """The harness's own gap and stall draws: nothing lost, duplicated or reordered, every beat checked."""
    a, b = operands(12, 33, 10, seed)
    run = run_dybit_array(DYBIT, a, b, gap=gap, stall=stall, seed=seed, streams="hdl")
    assert torch.equal(run.c, dybit_matmul(a, DYBIT.a_fmt, b, DYBIT.b_fmt))
    if gap or stall:
        assert run.cycles > run.predicted  # the gaps and stalls happened


def test_native_runs_the_same_simulation_without_cocotb():
    """streams="native": the same harness, the same draws, the same checks, with no cocotb: the same result
    as under cocotb, gaps and stalls included."""
    a, b = operands(20, 37, 11, seed=8)
    job = dybit_job(a, b, gap=0.3, stall=0.4, seed=5)
    hdl, native = run_streams(DYBIT, job, streams="hdl"), run_streams(DYBIT, job, streams="native")
    for key in ("sinks", "sink_fires", "source_fires", "cycles"):
        assert hdl[key] == native[key], key
    bad = dybit_job(a, b, seed=5)
    bad["sinks"][0]["expect"][7] ^= 1 << 40
    with pytest.raises(SimulationMismatch, match=r"stream c beat 7 of \d+: expected"):
        run_streams(DYBIT, bad, streams="native")


def test_a_wrong_beat_is_named():
    a, b = operands(4, 8, 4, seed=6)
    job = dybit_job(a, b)
    job["sinks"][0]["expect"][2] ^= 1
    with pytest.raises(SimulationMismatch, match=r"stream c beat 2 of 4: expected 0x[0-9a-f]+, got 0x[0-9a-f]+"):
        run_streams(DYBIT, job, streams="hdl")


def test_missing_beats_time_out_with_a_reason():
    a, b = operands(4, 8, 4, seed=6)
    with pytest.raises(SimulationMismatch, match=r"stream c: 4 of 5 beats after 400 cycles: the design hangs or "
                                                 r"drops beats"):
        run_streams(DYBIT, dybit_job(a, b, count_delta=1, timeout=400), streams="hdl")


def test_extra_beats_are_counted():
    a, b = operands(4, 8, 4, seed=6)
    with pytest.raises(SimulationMismatch, match=r"stream c: 4 beats, expected 3"):
        run_streams(DYBIT, dybit_job(a, b, count_delta=-1), streams="hdl")


def test_memories_grow_with_the_job():
    assert hdl_streams.depth_bits_for({"sources": [{"beats": [0] * 10}], "sinks": [{"count": 3}]}) == 12
    assert hdl_streams.depth_bits_for({"sources": [{"beats": [0] * 70_000}], "sinks": [{"count": 3}]}) == 17
    assert hdl_streams.depth_bits_for({"sources": [], "sinks": [{"count": 8192}]}) == 14


# --- the protocol monitor inside the harness, on deliberately broken designs (tests/stream_faults.py) ------------

FAULTS = StreamFaultsConfig(width=8)
BEATS = [(37 * k + 5) & 0xFF for k in range(40)]


@pytest.fixture
def stream_faults_block(monkeypatch):
    monkeypatch.setitem(BLOCKS, FAULTS.block, Block(
        name=FAULTS.block, config="stream_faults:StreamFaultsConfig", generator="stream_faults:FaultBench",
        summary="register slices with deliberate stream protocol faults (tests only)"))


def run_lane(lane: str, stall: float, seed: int = 1, streams: str = "hdl"):
    job = {"seed": seed, "timeout": 4000, "sources": [{"name": f"{lane}_in", "beats": BEATS}],
           "sinks": [{"name": f"{lane}_out", "count": len(BEATS), "stall": stall, "expect": BEATS}]}
    return run_streams(FAULTS, job, streams=streams)


def test_the_correct_slice_passes_under_stalls(stream_faults_block):
    assert run_lane("ok", 0.6)["sinks"]["ok_out"] == BEATS


@pytest.mark.parametrize("width", [1, 32, 33, 64])
def test_payloads_of_every_width_cross_the_files_intact(monkeypatch, width):
    """The beats go in and come out as binary files (sim/hdl_streams.py, sim/hdl_result.py): all ones, all
    zeros and a walking one at the word boundaries."""
    cfg = StreamFaultsConfig(width=width)
    monkeypatch.setitem(BLOCKS, cfg.block, Block(
        name=cfg.block, config="stream_faults:StreamFaultsConfig", generator="stream_faults:FaultBench",
        summary="register slices with deliberate stream protocol faults (tests only)"))
    beats = [(1 << width) - 1, 0] + [1 << k for k in range(width)] + [(0x9E3779B97F4A7C15 >> (64 - width)) | 1]
    job = {"seed": 3, "timeout": 4000, "sources": [{"name": "ok_in", "beats": beats, "gap": 0.3}],
           "sinks": [{"name": "ok_out", "count": len(beats), "stall": 0.3, "expect": beats}]}
    assert run_streams(cfg, job, streams="native")["sinks"]["ok_out"] == beats


@pytest.mark.parametrize("lane,rule", [
    ("drops_valid", "valid fell before the handshake (rule: valid holds until ready)"),
    ("overwrites", "payload changed before the handshake (rule: payload holds until ready)"),
    ("payload_follows_ready", "payload changed before the handshake (rule: payload holds until ready)"),
])
@pytest.mark.parametrize("streams", ["hdl", "native"])
def test_broken_designs_are_caught(stream_faults_block, lane, rule, streams):
    assert run_lane(lane, 0.0, streams=streams)["sinks"][f"{lane}_out"] == BEATS  # unstalled, they look correct
    with pytest.raises(SimulationMismatch, match=rf"stream {lane}_out, cycle \d+: {re.escape(rule)}"):
        run_lane(lane, 0.5, streams=streams)


@pytest.mark.parametrize("gap,stall", [(0.5, 0.0), (0.0, 0.5), (0.75, 0.0), (0.0, 0.2)])
def test_gaps_and_stalls_follow_their_probabilities(stream_faults_block, gap, stall):
    """Through a register slice, a beat takes 1 / (1 - p) cycles on average for a gap or stall chance p."""
    beats = [(7 * k) & 0xFF for k in range(3000)]
    job = {"seed": 9, "timeout": 40_000, "sources": [{"name": "ok_in", "beats": beats, "gap": gap}],
           "sinks": [{"name": "ok_out", "count": len(beats), "stall": stall, "expect": beats}]}
    fires = run_streams(FAULTS, job, streams="hdl")["sink_fires"]["ok_out"]
    per_beat = (fires[-1] - fires[0]) / (len(beats) - 1)
    assert per_beat == pytest.approx(1 / (1 - gap - stall), rel=0.06)
