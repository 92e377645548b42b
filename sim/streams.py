"""cocotb drivers and a protocol monitor for amaranth.lib.stream ports, with random valid gaps and ready stalls.

An amaranth `stream.Signature` port `name` appears in the Verilog as
`name__valid`, `name__ready` and `name__payload`. Handshakes are decided on the
falling edge and sampled in the read-only phase before the rising edge, so the
same code is right whatever the simulator does with delta cycles.

`StreamMonitor` is the one coroutine that wakes every cycle for all streams: it
drives the sinks' ready, checks the stream rules on every port (inputs and
outputs) and collects the sinks' beats. The rules (docs/streams.md):

* valid and ready are never X or Z;
* once valid is high it stays high, with the same payload, until the handshake
  (valid and ready high at a rising edge).
"""

from __future__ import annotations

import random

from cocotb.triggers import Event, FallingEdge, ReadOnly, RisingEdge
from cocotb.types import Logic

RULE_KNOWN = "valid and ready are never X or Z"
RULE_VALID = "valid holds until ready"
RULE_PAYLOAD = "payload holds until ready"

# Logic values are singletons, so `is` tells 0 and 1 from everything else without a call.
_ZERO, _ONE = Logic(0), Logic(1)


def _bit(value) -> int | None:
    """0 or 1 for a resolvable one-bit value (Logic or a width-1 LogicArray), None for X, Z, U, W or -."""
    if value is _ONE:
        return 1
    if value is _ZERO:
        return 0
    return int(value) if value.is_resolvable else None


def _show(payload) -> str:
    return f"{int(payload):#x}" if payload.is_resolvable else f"0b{payload}"


class CycleCounter:
    """Counts rising edges; `now` is the index of the next rising edge."""

    def __init__(self, clk):
        self.clk = clk
        self.now = 0

    async def run(self) -> None:
        while True:
            await RisingEdge(self.clk)
            self.now += 1


class StreamPort:
    """The three signals of one stream and the rule check over its per-cycle samples.

    `valid`, `ready` and `payload` are anything with a `.value` (simulator
    handles, or plain objects in the unit tests). `check` is called once a cycle
    in the read-only phase; it leaves the sampled `valid` and `ready` (0 or 1)
    for the driver that shares the wake-up.
    """

    def __init__(self, name: str, valid, ready, payload):
        self.name, self.valid, self.ready, self.payload = name, valid, ready, payload
        self.v = self.r = 0
        self.cycle = -1  # the cycle of the last sample
        # the payload of a beat offered without a handshake, which must still be offered next cycle
        self.held = None

    @classmethod
    def of(cls, dut, name: str) -> StreamPort:
        return cls(name, getattr(dut, f"{name}__valid"), getattr(dut, f"{name}__ready"),
                   getattr(dut, f"{name}__payload"))

    def _fail(self, cycle: int, what: str, rule: str) -> str:
        return f"stream {self.name}, cycle {cycle}: {what} (rule: {rule})"

    def check(self, cycle: int, ready: int | None = None) -> str | None:
        """Sample this cycle; return a one-line message naming the stream, cycle and rule if one is broken.

        `ready` is given when the caller drove it itself (a sink): it deposited 0 or 1 on a DUT input, so
        reading it back would show the same value at the cost of a read.
        """
        valid = self.valid.value
        # inline 0/1 test: this runs for every stream on every cycle
        v = 1 if valid is _ONE else 0 if valid is _ZERO else _bit(valid)
        if v is None:
            return self._fail(cycle, f"valid is {valid}", RULE_KNOWN)
        if ready is None:
            ready = self.ready.value
            r = 1 if ready is _ONE else 0 if ready is _ZERO else _bit(ready)
            if r is None:
                return self._fail(cycle, f"ready is {ready}", RULE_KNOWN)
        else:
            r = ready
        self.v, self.r, self.cycle = v, r, cycle
        payload = None
        if self.held is not None:
            if not v:
                return self._fail(cycle, "valid fell before the handshake", RULE_VALID)
            payload = self.payload.value
            if payload != self.held:
                return self._fail(cycle, f"payload changed from {_show(self.held)} to {_show(payload)} "
                                         "before the handshake", RULE_PAYLOAD)
        # the payload is read only while a beat waits, so unstalled streams cost one or two one-bit reads a cycle
        self.held = (payload if payload is not None else self.payload.value) if v and not r else None
        return None


class StreamSource:
    """Drives pre-packed beats into a stream port. `gap` is the chance of an idle cycle before each beat."""

    def __init__(self, dut, name: str, clk, counter: CycleCounter, rng: random.Random, gap: float = 0.0):
        self.port = StreamPort.of(dut, name)
        self.valid, self.ready, self.payload = self.port.valid, self.port.ready, self.port.payload
        self.name, self.clk, self.counter, self.rng, self.gap = name, clk, counter, rng, gap
        self.fire_cycles: list[int] = []
        self.valid.value = 0

    async def send(self, beats: list[int]) -> None:
        i = 0
        presenting = False
        while i < len(beats):
            await FallingEdge(self.clk)
            if not presenting:
                if self.gap and self.rng.random() < self.gap:
                    self.valid.value = 0
                    await ReadOnly()
                    continue
                # once valid is up it stays up until the beat is taken (no withdrawal)
                self.valid.value = 1
                self.payload.value = beats[i]
                presenting = True
            await ReadOnly()
            now = self.counter.now
            # the monitor, which wakes first, has usually sampled ready this cycle already (an X reads as no)
            ready = self.port.r if self.port.cycle == now else _bit(self.ready.value)
            if ready:
                self.fire_cycles.append(now)
                presenting = False
                i += 1
        await FallingEdge(self.clk)
        self.valid.value = 0


class StreamSink:
    """Collects every beat of a stream port. `stall` is the chance that ready is low in a cycle.

    It has no coroutine of its own: `StreamMonitor` calls `drive` on the falling
    edge and `collect` after the read-only phase's checks.
    """

    def __init__(self, dut, name: str, clk, counter: CycleCounter, rng: random.Random, stall: float = 0.0):
        self.port = StreamPort.of(dut, name)
        self.valid, self.ready, self.payload = self.port.valid, self.port.ready, self.port.payload
        self.name, self.clk, self.counter, self.rng, self.stall = name, clk, counter, rng, stall
        self.beats: list[int] = []
        self.fire_cycles: list[int] = []
        self.ready.value = self.driven = 0
        self._want: tuple[int, int] | None = None  # (beats, last cycle) that wait_for waits for
        self._arrived = Event()

    def drive(self) -> None:
        self.driven = int(not (self.stall and self.rng.random() < self.stall))
        self.ready.value = self.driven

    def collect(self, cycle: int) -> None:
        if self.port.v and self.port.r:
            self.beats.append(int(self.payload.value.to_unsigned()))
            self.fire_cycles.append(cycle)
        if self._want is not None and (len(self.beats) >= self._want[0] or cycle >= self._want[1]):
            self._want = None
            self._arrived.set()

    async def wait_for(self, count: int, timeout_cycles: int) -> None:
        """Wait until `count` beats have arrived; fail with a clear message after `timeout_cycles`."""
        if len(self.beats) < count:
            # `collect` wakes this at the last beat or the deadline, instead of a wake-up every cycle
            self._want = (count, self.counter.now + timeout_cycles)
            await self._arrived.wait()
            # resume just after the rising edge, where a per-cycle poll would have seen it
            await RisingEdge(self.clk)
        if len(self.beats) < count:
            raise AssertionError(f"stream {self.name}: {len(self.beats)} of {count} beats after "
                                 f"{timeout_cycles} cycles: the design hangs or drops beats")


class StreamMonitor:
    """Checks every stream every cycle, driving and collecting the sinks in the same wake-up.

    One coroutine for all streams, and the sinks' own per-cycle work folded
    into it, so the checks cost signal reads rather than extra scheduler
    wake-ups. `run` returns the first violation's message and never ends otherwise.
    """

    def __init__(self, clk, counter: CycleCounter, sources: list[StreamSource], sinks: list[StreamSink]):
        self.clk, self.counter, self.sinks = clk, counter, sinks
        self.inputs = [s.port for s in sources]

    async def run(self) -> str:
        while True:
            await FallingEdge(self.clk)
            for snk in self.sinks:
                snk.drive()
            await ReadOnly()
            cycle = self.counter.now
            for port in self.inputs:
                error = port.check(cycle)
                if error:
                    return error
            for snk in self.sinks:
                error = snk.port.check(cycle, snk.driven)
                if error:
                    return error
            for snk in self.sinks:
                snk.collect(cycle)
