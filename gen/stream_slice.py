"""A stream register slice (a two-entry skid buffer): every output and the input's ready are flip-flops.

Put after a memory-backed FIFO it keeps the memory's read out of the consumer's logic: the FIFO's read
enable is this slice's registered ready, and the consumer sees registered valid and payload. Full
throughput (a beat a cycle), one cycle of latency; holds at most two beats, the second in the skid
register only while the output is stalled. Its timing in the cycle model (golden/sparse_rtl_cycles.py)
is a FIFO of depth 2 and latency 1: a beat enters once the beat two ahead has left.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamSlice"]


class StreamSlice(wiring.Component):
    def __init__(self, shape):
        self.shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        skid_valid = Signal()
        skid = Signal(self.shape, reset_less=True)  # payloads need no reset: their valids have one
        out = Signal(self.shape, name="out", reset_less=True)
        m.d.comb += [self.i.ready.eq(~skid_valid), self.o.payload.eq(out)]
        load = ~self.o.valid | self.o.ready  # the output register takes a new beat this cycle
        with m.If(load):
            with m.If(skid_valid):
                m.d.sync += [out.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [out.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & ~skid_valid):
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m
