"""Formal proofs of the network top's own components (accelkit.flows.formal, docs/formal.md): the beat gearbox, the
global sum pool, the params demux, the register slice and the registered FIFO.

Their proofs at the small configs of `formal.network_targets()` run with every other block's in
tests/test_formal.py (`test_block_proof`). Here each target's proofs are shown able to fail: flawed variants of
each component, each a bug one could write, fail the property that should catch them, naming it.
"""

from __future__ import annotations

import dataclasses

import pytest
from amaranth.hdl import Cat, Fragment, Module, Signal

from accelkit.flows import formal
from accelkit.flows.formal import FormalFailure, Target, prove, require_pass
from accelkit.gen.network import ParamsDemux
from accelkit.gen.reg_fifo import PREFETCH, RegisteredFifo
from accelkit.gen.sparse_gearbox import BeatGearbox
from accelkit.gen.sparse_pool import SumPool
from accelkit.gen.stream_slice import StreamSlice


def flawed_target(name: str, flaw: str) -> Target:
    """The target `name` under a name of its own, so a flawed variant's runs do not share the proof's directory."""
    return dataclasses.replace(formal.get_target(name), name=f"{name}-{flaw}")


def fails(name: str, flaw: str, component, prop: str, match: str) -> None:
    with pytest.raises(FormalFailure, match=match):
        require_pass(prove(flawed_target(name, flaw), prop, component=component))


def test_the_network_targets_are_in_the_default_list():
    names = [t.name for t in formal.targets()]
    assert {"gearbox-split", "gearbox-merge", "sum-pool", "params-demux", "stream-slice", "reg-fifo"} <= set(names)
    for t in formal.network_targets():
        assert t.builder is not None and set(t.plan) >= {"stream", "cover", "progress"}


def test_their_streams_are_found_from_the_signature():
    def streams(name: str) -> dict:
        component = formal.get_target(name).build()
        found = {s.name: (s.consumed, s.unit_field) for s in formal.stream_ports(component)}
        Fragment.get(component, None)  # elaborated, so Amaranth does not warn that it was never used
        return found

    assert streams("gearbox-split") == {"sites_in": (True, "eof"), "sites_out": (False, "eof")}
    assert streams("sum-pool") == {"sites_in": (True, "eof"), "pooled": (False, "last")}
    assert streams("params-demux") == {"params": (True, None), "out0": (False, None), "out1": (False, None),
                                       "out2": (False, None)}


# ---- the gearbox -----------------------------------------------------------------------------------------------------

def gearbox(name: str, cls: type[BeatGearbox]) -> BeatGearbox:
    cfg = formal.get_target(name).config
    return cls(cfg.lanes_in, cfg.lanes_out, cfg.channels, cfg.feature_bits, cfg.y_bits, cfg.x_bits)


class GearboxClearWins(BeatGearbox):
    """The output register's clear on a taken beat written after its load, so it wins: a beat loaded in the cycle
    the previous one leaves is lost (every other beat at full rate, an end of frame among them)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        with m.If(self.sites_out.valid & self.sites_out.ready):
            m.d.sync += self.sites_out.valid.eq(0)
        return m


class GearboxFlagFollowsInput(BeatGearbox):
    """The end-of-frame and error flags registered from every valid input beat, not only when the output
    register is free: they change under a stalled output beat."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        i, o = self.sites_in, self.sites_out
        with m.If(i.valid):
            m.d.sync += [o.payload.eof.eq(i.payload.eof), o.payload.error.eq(i.payload.error)]
        return m


class SplitEofWaits(BeatGearbox):
    """A split whose input beat is taken only with its last part, the end-of-frame beat too: that beat is not
    passed alone but sent once per part (`ratio` end-of-frame beats for one)."""

    def _split(self, m: Module, i, o) -> None:
        k, n = self.ratio, self.lanes_out
        part = Signal(range(k))
        free = ~o.valid | o.ready
        last = part == k - 1  # the flaw: `i.payload.eof | ...` forgotten
        m.d.comb += i.ready.eq(free & last)
        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(free & i.valid):
            m.d.sync += [o.valid.eq(1), o.payload.y.eq(i.payload.y), o.payload.x.eq(i.payload.x),
                         o.payload.eof.eq(i.payload.eof), o.payload.error.eq(i.payload.error)]
            with m.Switch(part):
                for j in range(k):
                    with m.Case(j):
                        m.d.sync += [o.payload.data[l].eq(i.payload.data[j * n + l]) for l in range(n)]
            m.d.sync += part.eq(part + 1)
            with m.If(last):
                m.d.sync += part.eq(0)


@pytest.mark.formal
@pytest.mark.parametrize("name", ["gearbox-split", "gearbox-merge"])
def test_a_gearbox_losing_beats_fails_completion(name):
    fails(name, "clear-wins", gearbox(name, GearboxClearWins), "completion",
          r"completion proof of gearbox-.*-clear-wins .*'completion: while a unit is owed, a unit-ending output "
          r"handshake at least every 1 cycles' fails at step \d+")


@pytest.mark.formal
@pytest.mark.parametrize("name", ["gearbox-split", "gearbox-merge"])
def test_a_gearbox_changing_a_stalled_beat_fails_stream(name):
    fails(name, "flag-follows", gearbox(name, GearboxFlagFollowsInput), "stream",
          r"'stream rule of output sites_out: valid and payload held until taken' fails at step \d+")


@pytest.mark.formal
def test_a_split_duplicating_the_end_of_frame_fails_completion():
    fails("gearbox-split", "eof-waits", gearbox("gearbox-split", SplitEofWaits), "completion",
          r"'completion: while a unit is owed, a unit-ending output handshake at least every 1 cycles' fails")


# ---- the sum pool ----------------------------------------------------------------------------------------------------

def sum_pool(cls: type[SumPool]) -> SumPool:
    cfg = formal.get_target("sum-pool").config
    return cls(cfg.channels, cfg.lanes, cfg.feature_bits, cfg.y_bits, cfg.x_bits, cfg.max_sites)


class PoolReadyWhileEmitting(SumPool):
    """Input taken while a vector leaves (`~emitting` forgotten): the sums under a stalled output beat change."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.sites_in.ready.eq(1)
        return m


class PoolLastNever(SumPool):
    """`last` left undriven: the vector's beats leave, but no vector ends."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.pooled.payload.last.eq(0)
        return m


@pytest.mark.formal
def test_a_pool_taking_input_while_it_emits_fails_stream():
    fails("sum-pool", "ready-while-emitting", sum_pool(PoolReadyWhileEmitting), "stream",
          r"'stream rule of output pooled: valid and payload held until taken' fails at step \d+")


@pytest.mark.formal
def test_a_pool_that_never_ends_a_vector_fails_completion_and_cover():
    fails("sum-pool", "last-never", sum_pool(PoolLastNever), "completion",
          r"'completion: while a unit is owed, a unit-ending output handshake at least every 3 cycles' fails")
    r = prove(flawed_target("sum-pool", "last-never"), "cover", component=sum_pool(PoolLastNever))
    assert not r.passed and "cover 'a unit-ending beat on output pooled'" in r.reason, r.reason


# ---- the params demux ------------------------------------------------------------------------------------------------

class FlawedDemux(ParamsDemux):
    """`ParamsDemux` with one flaw:

    any-ready: the held beat counts as taken when any output is ready, not its own: a beat waiting for a stalled
    engine is replaced or dropped; stuck-on-dropped: the register's occupancy kept in a flag of its own, cleared
    only by an output handshake: a beat for an index with no engine is never taken and the demux stops.
    """

    def __init__(self, layout, widths, flaw: str):
        self.flaw = flaw
        super().__init__(layout, widths)

    def elaborate(self, platform):
        m = Module()
        n = len(self.widths)
        p = self.params
        outs = [getattr(self, f"out{i}") for i in range(n)]
        sel = Signal(n)
        word = Signal(len(p.payload.word))
        full = Signal()
        if self.flaw == "any-ready":
            taken = Cat(*[o.ready for o in outs]).any()
        else:
            taken = Cat(*[sel[i] & o.ready for i, o in enumerate(outs)]).any()
        free = (~full if self.flaw == "stuck-on-dropped" else ~sel.any()) | taken
        m.d.comb += p.ready.eq(free)
        with m.If(p.valid & free):
            m.d.sync += [word.eq(p.payload.word), sel.eq(Cat(*[p.payload.layer == i for i in range(n)])), full.eq(1)]
        with m.Elif(taken):
            m.d.sync += [sel.eq(0), full.eq(0)]
        for i, o in enumerate(outs):
            m.d.comb += [o.valid.eq(sel[i]), o.payload.eq(word[:self.widths[i]])]
        return m


class DemuxWordUnregistered(ParamsDemux):
    """The word passed to the outputs straight from the input, not from the register: it changes under a
    stalled output beat as soon as the next params beat comes."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        for i, w in enumerate(self.widths):
            m.d.comb += getattr(self, f"out{i}").payload.eq(self.params.payload.word[:w])
        return m


def demux(flaw: str) -> ParamsDemux:
    cfg = formal.get_target("params-demux").config
    layout, widths = formal.params_demux_layout(cfg), list(cfg.widths)
    return DemuxWordUnregistered(layout, widths) if flaw == "word-unregistered" else FlawedDemux(layout, widths, flaw)


@pytest.mark.formal
@pytest.mark.parametrize("flaw", ["any-ready", "word-unregistered"])
def test_a_demux_changing_a_stalled_beat_fails_stream(flaw):
    fails("params-demux", flaw, demux(flaw), "stream",
          r"'stream rule of output out\d: valid and payload held until taken' fails at step \d+")


@pytest.mark.formal
def test_a_demux_stuck_on_a_beat_for_no_engine_fails_progress():
    fails("params-demux", "stuck-on-dropped", demux("stuck-on-dropped"), "progress",
          r"'progress: a handshake at least every 1 cycles' fails at step \d+")


@pytest.mark.formal
def test_the_demux_stream_proof_needs_its_invariant():
    """Without "at most one output valid" k-induction does not close: from a two-hot state (none reachable from
    reset) the beat not taken is dropped with the other (docs/formal.md)."""
    t = dataclasses.replace(formal.get_target("params-demux"), name="params-demux-no-invariant", invariants=None)
    r = prove(t, "stream")
    assert not r.passed and "k-induction did not close" in r.reason, r.reason


# ---- the register slice after every link and identity FIFO -------------------------------------------------------

class SliceLoadsWhileStalled(StreamSlice):
    """Loads the output register every cycle, ready or not: a stalled beat is overwritten."""

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(1)
        m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        return m


class SliceTwoRegisters(StreamSlice):
    """Two registers in a row under one enable: a correct stream, but a beat is offered two cycles after it
    entered, not the one the cycle model counts on."""

    def elaborate(self, platform):
        m = Module()
        mid_valid = Signal()
        mid = Signal(self.shape)
        move = self.o.ready | ~self.o.valid
        m.d.comb += self.i.ready.eq(move)
        with m.If(move):
            m.d.sync += [mid.eq(self.i.payload), mid_valid.eq(self.i.valid),
                         self.o.payload.eq(mid), self.o.valid.eq(mid_valid)]
        return m


def slice_of(cls):
    return cls(formal.build_stream_slice(formal.get_target("stream-slice").config).i.payload.shape())


def test_a_slice_that_loads_while_stalled_breaks_the_stream_rule():
    fails("stream-slice", "loads-while-stalled", slice_of(SliceLoadsWhileStalled), "stream", "stream")


def test_a_slice_one_cycle_slower_misses_its_response_bound():
    fails("stream-slice", "two-registers", slice_of(SliceTwoRegisters), "response", "response")


# ---- the registered FIFO (link and identity FIFOs once deep) -------------------------------------------------------

class FifoOneCreditTooMany(RegisteredFifo):
    """Issues a read while the queue and the reads in flight fill all its entries: under a stall the read's data
    lands on the queue's head."""

    credits = PREFETCH + 1


def test_a_fifo_that_overfills_its_queue_is_caught():
    """A counterexample from reset (5 beats in, the output stalled: 7 steps), not only an induction that fails to
    close: a bounded check of 14 cycles."""
    cfg = formal.get_target("reg-fifo").config
    flawed = FifoOneCreditTooMany(formal.build_reg_fifo(cfg).i.payload.shape(), cfg.depth)
    r = prove(flawed_target("reg-fifo", "one-credit-too-many"), "stream", mode="bmc", depth=14, component=flawed)
    assert not r.passed and "'pending within the queue' fails at step" in r.reason, r.reason
