"""The testbench's stream protocol monitor: deliberately broken designs are caught, correct ones pass.

The designs (tests/stream_faults.py) run through the real flow, `run_streams`,
as a test-only block registered for the duration of each test. Verilator is
two-state (an X or Z written to a signal reads back as 0), so the X/Z rule is
checked on cocotb `Logic`/`LogicArray` samples here, not on a simulated design.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from cocotb.types import Logic, LogicArray
from stream_faults import LANES, StreamFaultsConfig

from accelkit.blocks import BLOCKS, Block
from accelkit.sim.runner import SimulationMismatch, run_streams
from accelkit.sim.streams import StreamPort

CFG = StreamFaultsConfig(width=8)
BEATS = [(37 * k + 5) & 0xFF for k in range(40)]  # 0x05, 0x2a, 0x4f, ...: neighbours differ in many bits
NO_WAVES = "; run again with waves=True (accelkit sim --waves) for a waveform"


@pytest.fixture(autouse=True)
def stream_faults_block(monkeypatch):
    """Registered per test, so the block never shows up in other tests' view of the registry."""
    monkeypatch.setitem(BLOCKS, CFG.block, Block(
        name=CFG.block, config="stream_faults:StreamFaultsConfig", generator="stream_faults:FaultBench",
        summary="register slices with deliberate stream protocol faults (tests only)"))


def run_lane(lane: str, beats=BEATS, gap: float = 0.0, stall: float = 0.0, seed: int = 1, timeout: int = 2000):
    job = {"seed": seed, "timeout": timeout,
           "sources": [{"name": f"{lane}_in", "beats": beats, "gap": gap}],
           "sinks": [{"name": f"{lane}_out", "count": len(beats), "stall": stall, "expect": beats}]}
    return run_streams(CFG, job)


# --- the checks on sampled values, without a simulator -----------------------------------------------------------


def port(name="s"):
    """A StreamPort over plain objects whose `.value` the test sets each cycle."""
    return StreamPort(name, SimpleNamespace(value=Logic(0)), SimpleNamespace(value=Logic(0)),
                      SimpleNamespace(value=LogicArray(0, 4)))


def run_samples(p: StreamPort, samples) -> list[str | None]:
    """Feed (valid, ready, payload) per cycle; the checks' result per cycle."""
    out = []
    for cycle, (valid, ready, payload) in enumerate(samples):
        p.valid.value, p.ready.value, p.payload.value = Logic(valid), Logic(ready), LogicArray(payload)
        out.append(p.check(cycle))
    return out


@pytest.mark.parametrize("signal", ["valid", "ready"])
@pytest.mark.parametrize("value", [Logic("X"), Logic("Z"), Logic("U"), Logic("W"), Logic("-"),
                                   LogicArray("X"), LogicArray("Z")], ids=repr)
def test_x_or_z_on_valid_or_ready_is_reported(signal, value):
    p = port("sites_out")
    getattr(p, signal).value = value
    assert p.check(123) == (f"stream sites_out, cycle 123: {signal} is {value} "
                            "(rule: valid and ready are never X or Z)")


def test_x_or_z_on_the_ready_a_dut_drives_into_a_source_is_reported():
    """An input stream's ready is the DUT's: it is read and checked even while the source offers nothing."""
    p = port("a")
    assert run_samples(p, [("0", "1", "0000"), ("0", "Z", "0000")]) == [
        None, "stream a, cycle 1: ready is Z (rule: valid and ready are never X or Z)"]


def test_weak_levels_and_a_width_one_array_are_plain_bits():
    p = port()
    p.valid.value, p.ready.value = LogicArray("1"), Logic("H")
    assert p.check(0) is None and (p.v, p.r) == (1, 1)


def test_a_legal_sequence_passes():
    """Valid held through stalls with its payload; after each handshake the payload may change and valid fall;
    ready rises and falls freely; payload bits are free (even X) while valid is low."""
    samples = [("0", "0", "XXXX"), ("1", "0", "1010"), ("1", "0", "1010"), ("1", "1", "1010"),
               ("1", "0", "0110"), ("1", "1", "0110"), ("1", "1", "0001"), ("0", "0", "1111"),
               ("0", "1", "ZZZZ"), ("1", "1", "0011")]
    assert run_samples(port(), samples) == [None] * len(samples)


@pytest.mark.parametrize("samples,message", [
    ([("1", "0", "1010"), ("0", "0", "1010")],
     "cycle 1: valid fell before the handshake (rule: valid holds until ready)"),
    ([("1", "0", "1010"), ("1", "0", "1010"), ("0", "1", "1010")],
     "cycle 2: valid fell before the handshake (rule: valid holds until ready)"),
    ([("1", "0", "1010"), ("1", "1", "1011")],
     "cycle 1: payload changed from 0xa to 0xb before the handshake (rule: payload holds until ready)"),
    ([("1", "0", "1010"), ("1", "0", "10X0")],
     "cycle 1: payload changed from 0xa to 0b10X0 before the handshake (rule: payload holds until ready)"),
], ids=["valid-falls", "valid-falls-as-ready-rises", "payload-changes", "payload-goes-x"])
def test_broken_sequences_are_reported_at_their_cycle(samples, message):
    """The same checks run on a sink (ready given: the testbench drove it) and on a source (ready read)."""
    assert run_samples(port("c"), samples)[-1] == f"stream c, {message}"
    p = port("c")
    results = []
    for cycle, (valid, ready, payload) in enumerate(samples):
        p.valid.value, p.payload.value = Logic(valid), LogicArray(payload)
        results.append(p.check(cycle, int(ready)))
    assert results == [None] * (len(samples) - 1) + [f"stream c, {message}"]


# --- deliberately broken designs through run_streams ---------------------------------------------------------------


@pytest.mark.sim
def test_the_correct_slice_passes_with_gaps_and_stalls():
    for gap, stall, seed in ((0.0, 0.0, 1), (0.4, 0.0, 2), (0.0, 0.6, 3), (0.5, 0.5, 4), (0.2, 0.9, 5)):
        res = run_lane("ok", gap=gap, stall=stall, seed=seed)
        assert res["sinks"]["ok_out"] == BEATS, (gap, stall, seed)


@pytest.mark.sim
def test_cycles_are_numbered_as_the_handshakes_are():
    """Without gaps or stalls beat k enters at cycle k and leaves at k + 1: the numbering the messages use."""
    res = run_lane("ok")
    assert res["source_fires"]["ok_in"] == list(range(len(BEATS)))
    assert res["sink_fires"]["ok_out"] == list(range(1, len(BEATS) + 1))


@pytest.mark.sim
@pytest.mark.parametrize("lane", [lane for lane in LANES if lane != "ok"])
def test_every_broken_slice_is_right_when_never_stalled(lane):
    """Beats and counts alone cannot tell these designs from the correct one: only a stall shows the fault."""
    assert run_lane(lane, gap=0.4, seed=6)["sinks"][f"{lane}_out"] == BEATS


@pytest.mark.sim
@pytest.mark.parametrize("lane,message", [
    ("drops_valid", "stream drops_valid_out, cycle 2: valid fell before the handshake "
                    "(rule: valid holds until ready)"),
    ("overwrites", "stream overwrites_out, cycle 2: payload changed from 0x5 to 0x2a before the handshake "
                   "(rule: payload holds until ready)"),
])
def test_a_fault_under_a_full_stall_is_named_with_its_cycle(lane, message):
    """Output never ready: beat 0 enters at cycle 0, is offered from cycle 1, and the fault shows at cycle 2."""
    with pytest.raises(SimulationMismatch) as e:
        run_lane(lane, stall=1.0)
    assert str(e.value) == f"stream-faults: {message}{NO_WAVES}"


@pytest.mark.sim
@pytest.mark.parametrize("lane,what,rule", [
    ("drops_valid", r"valid fell before the handshake", "valid holds until ready"),
    ("overwrites", r"payload changed from (0x\w+) to (0x\w+) before the handshake", "payload holds until ready"),
    ("payload_follows_ready", r"payload changed from (0x\w+) to (0x\w+) before the handshake",
     "payload holds until ready"),
])
def test_every_fault_is_caught_under_random_gaps_and_stalls(lane, what, rule):
    with pytest.raises(SimulationMismatch) as e:
        run_lane(lane, gap=0.3, stall=0.5, seed=7)
    m = re.fullmatch(rf"stream-faults: stream {lane}_out, cycle (\d+): {what} \(rule: {re.escape(rule)}\)"
                     f"{re.escape(NO_WAVES)}", str(e.value))
    assert m, str(e.value)
    assert 1 <= int(m.group(1)) < 2000
    if lane == "payload_follows_ready":  # the stalled cycle showed the inverted word, the handshake the word itself
        before, after = int(m.group(2), 16), int(m.group(3), 16)
        assert before == after ^ 0xFF and after in BEATS
    if lane == "overwrites":  # the stalled beat was replaced by the one behind it
        before, after = int(m.group(2), 16), int(m.group(3), 16)
        assert BEATS.index(after) == BEATS.index(before) + 1


@pytest.mark.sim
def test_a_correct_slice_stalled_for_good_breaks_no_rule_and_times_out():
    """Holding a beat for as long as the sink wants is legal: the failure is the timeout, not the monitor."""
    with pytest.raises(SimulationMismatch) as e:
        run_lane("ok", stall=1.0, timeout=60)
    assert str(e.value) == (f"stream-faults: stream ok_out: 0 of {len(BEATS)} beats after 60 cycles: "
                            f"the design hangs or drops beats{NO_WAVES}")
