"""Small stream designs, one correct and several that break the stream rules, for tests/test_stream_monitor.py.

Every design is a one-deep register slice from stream `i` to stream `o`. The
broken ones behave exactly like the correct one while `o` is never stalled, so
only the testbench's protocol monitor, under output stalls, can tell them apart:

- `ok`: correct (valid holds until the handshake, the payload with it).
- `drops_valid`: after a stalled cycle it hides valid for one cycle, then offers
  the same beat again: every beat arrives intact and in order, yet valid fell
  before the handshake.
- `overwrites`: loads its register whenever the input is valid, taken or not,
  so a stalled beat is replaced by the next one: the payload changes while stalled.
- `payload_follows_ready`: drives the inverted payload while ready is low (a
  combinational path from ready to payload): the beat taken is right, but the
  payload offered in a stalled cycle is not the one taken later.

`FaultBench` puts one lane of each side by side (ports `<lane>_in`,
`<lane>_out`), so one Verilator build serves every test; a test drives and
collects only the lane it checks.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.config import BlockConfig, require

LANES = ("ok", "drops_valid", "overwrites", "payload_follows_ready")


@dataclasses.dataclass(frozen=True)
class StreamFaultsConfig(BlockConfig):
    block: ClassVar[str] = "stream-faults"
    width: int = 8  # payload bits of every lane

    def validate(self) -> None:
        require(isinstance(self.width, int) and 1 <= self.width <= 64, "width", "1 <= width <= 64", self.width)


class Slice(wiring.Component):
    """A one-deep register slice from `i` to `o`, correct or with one of the faults above."""

    def __init__(self, width: int, fault: str = "ok"):
        assert fault in LANES, fault
        self.fault = fault
        super().__init__({"i": In(stream.Signature(width)), "o": Out(stream.Signature(width))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        full = Signal()  # the register holds a beat not yet taken
        data = Signal.like(i.payload)
        hide = Signal()  # drops_valid: the previous cycle was stalled
        m.d.comb += [
            o.valid.eq(full & ~hide if self.fault == "drops_valid" else full),
            o.payload.eq(Mux(o.ready, data, ~data) if self.fault == "payload_follows_ready" else data),
            i.ready.eq(~full | (o.valid & o.ready)),
        ]
        if self.fault == "drops_valid":
            m.d.sync += hide.eq(o.valid & ~o.ready)
        if self.fault == "overwrites":
            with m.If(i.valid):  # the bug: should load only when the input beat is taken
                m.d.sync += data.eq(i.payload)
        with m.If(i.valid & i.ready):
            m.d.sync += [full.eq(1)]
            if self.fault != "overwrites":
                m.d.sync += data.eq(i.payload)
        with m.Elif(o.valid & o.ready):
            m.d.sync += full.eq(0)
        return m


class FaultBench(wiring.Component):
    """One `Slice` per lane of LANES, each with its own ports `<lane>_in` and `<lane>_out`."""

    def __init__(self, cfg: StreamFaultsConfig):
        self.cfg = cfg
        members = {}
        for lane in LANES:
            members[f"{lane}_in"] = In(stream.Signature(cfg.width))
            members[f"{lane}_out"] = Out(stream.Signature(cfg.width))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for lane in LANES:
            m.submodules[lane] = s = Slice(self.cfg.width, lane)
            wiring.connect(m, wiring.flipped(getattr(self, f"{lane}_in")), s.i)
            wiring.connect(m, s.o, wiring.flipped(getattr(self, f"{lane}_out")))
        return m
