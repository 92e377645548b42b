"""Formal proofs of the stream rules and bounded liveness of every block (accelkit.flows.formal, docs/formal.md).

Each block's proofs at its small config must pass. The harness itself is checked on tiny register slices: a
correct one passes, and slices that break the stream rule, never answer, or stop moving fail, each naming the
property, so a passing block proof is known not to be vacuous.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
from amaranth.hdl import Fragment, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.config import BlockConfig
from accelkit.flows import formal
from accelkit.flows.formal import FormalFailure, Liveness, Target, prove, require_pass
from accelkit.gen.hyft import SoftmaxUnit

PROOFS = [(t, prop) for t in formal.targets() for prop in t.plan]


@pytest.mark.formal
@pytest.mark.parametrize(("target", "prop"), PROOFS, ids=[f"{t.name}-{p}" for t, p in PROOFS])
def test_block_proof(target: Target, prop: str):
    require_pass(prove(target, prop))


@pytest.mark.formal
def test_sparse_engine_with_params_offered_for_ever():
    """A params load offered while a frame is offered too: it once deadlocked the engine (docs/formal.md)."""
    require_pass(prove(formal.reload_target(), "progress"))


# ---- the softmax units' liveness proofs catch a unit off its cycle model ---------------------------------------------

class SoftmaxFlawed(SoftmaxUnit):
    """The softmax unit with one flaw in its hand-over from B to C (the per-vector value, `vector_value`):

    late-sum: one register more than the config's `fin` stages (the cycle model, and the bounds, are a cycle short);
    never-summed: no bank is ever handed to C (a deadlock once every bank holds a vector).
    """

    def __init__(self, cfg, flaw: str):
        self.flaw = flaw
        super().__init__(cfg)

    def elaborate(self, platform):
        inner = self.dp.vector_value

        def flawed(m, p, beat, bt):
            vec, v, bank = inner(m, p, beat, bt)
            if self.flaw == "never-summed":
                return vec, 0, bank
            return p.reg(vec, name="late_vec"), p.reg(v, name="late_v"), p.reg(bank, name="late_bank")

        self.dp.vector_value = flawed
        return super().elaborate(platform)


@pytest.mark.formal
@pytest.mark.parametrize(("arch", "flaw", "prop"), [("hyft", "late-sum", "response"), ("float", "late-sum", "response"),
                                                     ("hyft", "never-summed", "progress")])
def test_a_softmax_unit_off_its_cycle_model_fails_liveness(arch, flaw, prop):
    """The response bound is the cycle model's, and tight: one cycle more before C starts fails it; a unit that
    never hands a bank to C fails progress."""
    t = formal.get_target(f"{arch}-softmax")
    t = dataclasses.replace(t, name=f"{t.name}-{flaw}")
    bound = t.liveness.bound(prop)
    with pytest.raises(FormalFailure, match=rf"'{prop}: .* at least every {bound} cycles' fails at step \d+"):
        require_pass(prove(t, prop, component=SoftmaxFlawed(t.config, flaw)))


# ---- the streams are found from the signature -----------------------------------------------------------------------

def streams_of(component: wiring.Component) -> dict:
    found = {s.name: (s.consumed, s.unit_field) for s in formal.stream_ports(component)}
    Fragment.get(component, None)  # elaborated, so Amaranth does not warn that it was never used
    return found


def test_streams_found_from_the_signature():
    by_name = {t.name: t for t in formal.targets()}
    found = streams_of(by_name["dybit-2x2"].build())
    assert found == {"a": (True, "last"), "b": (True, None), "c": (False, "last")}
    found = streams_of(by_name["sparse-chain"].build())
    assert found == {"params0": (True, None), "params1": (True, None), "sites_in": (True, "eof"),
                     "sites_out": (False, "eof")}


def test_nested_streams_are_found_with_their_flow():
    inner = wiring.Signature({"req": Out(stream.Signature(8)), "resp": In(stream.Signature(8))})

    class Nested(wiring.Component):
        def __init__(self):
            super().__init__({"bus": In(inner)})

        def elaborate(self, platform):
            return Module()

    assert streams_of(Nested()) == {"bus__req": (True, None), "bus__resp": (False, None)}


# ---- the harness on tiny register slices -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SliceConfig(BlockConfig):
    """Names a test slice's proof directory; the slices are not registered blocks."""

    block: ClassVar[str] = "test-slice"
    flaw: str = "none"


LAYOUT = data.StructLayout({"data": 4, "last": 1})


class Slice(wiring.Component):
    """A one-beat register slice, correct or with one `flaw`:

    drop: lets valid fall after one cycle of stall; change: changes the payload while stalled;
    stuck: stops taking input after its first unit-ending beat; mute: never drives its output valid.
    """

    def __init__(self, flaw: str = "none"):
        self.flaw = flaw
        super().__init__({"i": In(stream.Signature(LAYOUT)), "o": Out(stream.Signature(LAYOUT))})

    def elaborate(self, platform):
        m = Module()
        stuck = Signal()
        m.d.comb += self.i.ready.eq((~self.o.valid | self.o.ready) & ~stuck)
        with m.If(self.i.ready):
            m.d.sync += [self.o.valid.eq(self.i.valid & (self.flaw != "mute")), self.o.payload.eq(self.i.payload)]
            if self.flaw == "stuck":
                with m.If(self.i.valid & self.i.payload.last):
                    m.d.sync += stuck.eq(1)
        with m.Elif(self.flaw == "drop"):
            m.d.sync += self.o.valid.eq(0)
        with m.Elif(self.flaw == "change"):
            m.d.sync += self.o.payload.data.eq(self.o.payload.data + 1)
        if self.flaw == "stuck":
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += self.o.valid.eq(0)
        return m


def slice_target(flaw: str) -> Target:
    return Target(f"slice-{flaw}", "test-slice", SliceConfig(flaw), f"register slice, flaw {flaw}",
                  Liveness(progress=3, response=3, completion=3, why="a register slice answers the next cycle"),
                  {"stream": ("prove", 6), "cover": ("cover", 8), "progress": ("bmc", 12), "response": ("bmc", 12),
                   "completion": ("bmc", 12)})


@pytest.mark.formal
@pytest.mark.parametrize("prop", ["stream", "cover", "progress", "response", "completion"])
def test_a_correct_slice_passes(prop):
    require_pass(prove(slice_target("none"), prop, component=Slice("none")))


@pytest.mark.formal
@pytest.mark.parametrize("flaw", ["drop", "change"])
def test_a_slice_breaking_the_stream_rule_fails_naming_it(flaw):
    with pytest.raises(FormalFailure, match=r"stream proof of slice-.*'stream rule of output o: valid and payload "
                                            r"held until taken' fails at step \d+; trace .*trace\.vcd"):
        require_pass(prove(slice_target(flaw), "stream", component=Slice(flaw)))


@pytest.mark.formal
def test_a_slice_that_stops_taking_input_fails_progress():
    with pytest.raises(FormalFailure, match=r"'progress: a handshake at least every 3 cycles' fails at step \d+"):
        require_pass(prove(slice_target("stuck"), "progress", component=Slice("stuck")))


@pytest.mark.formal
def test_a_slice_that_never_answers_fails_cover_and_response():
    r = prove(slice_target("mute"), "cover", component=Slice("mute"))
    assert not r.passed and "cover 'a unit-ending beat on output o'" in r.reason, r.reason
    r = prove(slice_target("mute"), "completion", component=Slice("mute"))
    assert not r.passed and "'completion: while a unit is owed" in r.reason, r.reason


@pytest.mark.formal
def test_the_trace_of_a_failure_shows_the_handshakes():
    r = prove(slice_target("drop"), "stream", component=Slice("drop"))
    vcd = r.log.parent / "stream" / "engine_0" / "trace.vcd"
    component = Slice("drop")
    lines = formal.handshake_timeline(formal.read_vcd(vcd), formal.stream_ports(component))
    Fragment.get(component, None)
    assert lines[0].startswith("step 0: reset")
    assert any("(o stalled)" in line for line in lines), lines


@pytest.mark.formal
def test_the_module_entry_point_prints_the_table(capsys):
    assert formal.main(["dybit-1x3"]) == 0
    out = capsys.readouterr().out
    assert "block" in out and "completion < 3" in out and "FAIL" not in out
