"""cocotb drivers and monitors for amaranth.lib.stream ports, with random valid gaps and ready stalls.

An amaranth `stream.Signature` port `name` appears in the Verilog as
`name__valid`, `name__ready` and `name__payload`. Handshakes are decided on the
falling edge and sampled in the read-only phase before the rising edge, so the
same code is right whatever the simulator does with delta cycles.
"""

from __future__ import annotations

import random

from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge


class CycleCounter:
    """Counts rising edges; `now` is the index of the next rising edge."""

    def __init__(self, clk):
        self.clk = clk
        self.now = 0

    async def run(self) -> None:
        while True:
            await RisingEdge(self.clk)
            self.now += 1


class StreamSource:
    """Drives pre-packed beats into a stream port. `gap` is the chance of an idle cycle before each beat."""

    def __init__(self, dut, name: str, clk, counter: CycleCounter, rng: random.Random, gap: float = 0.0):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
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
            if self.ready.value:
                self.fire_cycles.append(self.counter.now)
                presenting = False
                i += 1
        await FallingEdge(self.clk)
        self.valid.value = 0


class StreamSink:
    """Collects every beat of a stream port. `stall` is the chance that ready is low in a cycle."""

    def __init__(self, dut, name: str, clk, counter: CycleCounter, rng: random.Random, stall: float = 0.0):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.name, self.clk, self.counter, self.rng, self.stall = name, clk, counter, rng, stall
        self.beats: list[int] = []
        self.fire_cycles: list[int] = []
        self.ready.value = 0

    async def run(self) -> None:
        while True:
            await FallingEdge(self.clk)
            ready = not (self.stall and self.rng.random() < self.stall)
            self.ready.value = int(ready)
            await ReadOnly()
            if ready and self.valid.value:
                self.beats.append(int(self.payload.value.to_unsigned()))
                self.fire_cycles.append(self.counter.now)

    async def wait_for(self, count: int, timeout_cycles: int) -> None:
        """Wait until `count` beats have arrived; fail with a clear message after `timeout_cycles`."""
        start = self.counter.now
        while len(self.beats) < count:
            if self.counter.now - start > timeout_cycles:
                raise AssertionError(f"stream {self.name}: {len(self.beats)} of {count} beats after "
                                     f"{timeout_cycles} cycles: the design hangs or drops beats")
            await RisingEdge(self.clk)
