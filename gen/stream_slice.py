"""A stream register slice (a two-entry skid buffer): every output and the input's ready are flip-flops.

Put after a memory-backed FIFO it keeps the memory's read out of the consumer's logic: the FIFO's read
enable is this slice's registered ready, and the consumer sees registered valid and payload. Full
throughput (a beat a cycle), one cycle of latency; holds at most two beats, the second in the skid
register only while the output is stalled. Its timing in the cycle model (golden/sparse_rtl_cycles.py)
is a FIFO of depth 2 and latency 1: a beat enters once the beat two ahead has left.

Its clock enables are kept local, for wide payloads (a network link carries up to 512 bits a beat). The skid
register loads whenever it is empty, so its enable is its own valid flag, not the consumer's ready. The output
register is split into chunks of `chunk_bits`, each with its own copy of the output valid: the consumer's ready
then drives one gate per chunk, and each gate the enable of that chunk's flip-flops only, not one net across
the whole payload. A copy's next state depends on itself, so yosys does not merge the copies (they are equal in
every cycle).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CHUNK_BITS", "StreamSlice"]


CHUNK_BITS = 64  # payload bits under one clock enable of the output register


class StreamSlice(wiring.Component):
    def __init__(self, shape, chunk_bits: int = CHUNK_BITS):
        if chunk_bits < 1:
            raise ValueError(f"StreamSlice: chunk_bits must be at least 1, got {chunk_bits}")
        self.shape = shape
        self.chunk_bits = chunk_bits
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})
        width = len(Value.cast(self.i.payload))
        self.chunks = [(lo, min(width, lo + chunk_bits)) for lo in range(0, width, chunk_bits)]
        # one copy of o.valid per chunk when there is more than one chunk
        self.valid_copies = [Signal(name=f"valid_copy{k}") for k in range(len(self.chunks))] \
            if len(self.chunks) > 1 else []
        self._ready_next = None

    @property
    def ready_next(self) -> Signal:
        """The value ``i.ready`` will have in the next cycle (combinational, from this cycle's flip-flops, ``i.valid``
        and ``o.ready``): a producer can register its own copy of a function of ``i.ready`` a cycle early. Built
        only when asked for (before elaboration), so the slices that do not use it are unchanged."""
        if self._ready_next is None:
            self._ready_next = Signal(name="ready_next")
        return self._ready_next

    def invariants(self) -> list[tuple[Value, str]]:
        """Every copy of the output valid equals it (the formal proof's k-induction needs it: from a state where
        a copy differs, that chunk would load while the output holds a beat)."""
        return [(c == self.o.valid, f"valid copy {k} = o.valid") for k, c in enumerate(self.valid_copies)]

    def elaborate(self, platform):
        m = Module()
        skid_valid = Signal()
        skid = Signal(self.shape, reset_less=True)  # payloads need no reset: their valids have one
        out = Signal(self.shape, name="out", reset_less=True)
        m.d.comb += [self.i.ready.eq(~skid_valid), self.o.payload.eq(out)]
        # the skid register holds the input whenever it is empty: it keeps the beat the cycle it becomes valid
        with m.If(~skid_valid):
            m.d.sync += skid.eq(self.i.payload)
        load = ~self.o.valid | self.o.ready  # the output register takes a new beat this cycle
        with m.If(load):
            m.d.sync += [self.o.valid.eq(skid_valid | self.i.valid), skid_valid.eq(0)]
        with m.Elif(self.i.valid & ~skid_valid):
            m.d.sync += skid_valid.eq(1)
        if self._ready_next is not None:  # ~(skid_valid's next state)
            m.d.comb += self._ready_next.eq(load | ~(skid_valid | self.i.valid))
        bits_in, bits_skid, bits_out = Value.cast(self.i.payload), Value.cast(skid), Value.cast(out)
        for k, (lo, hi) in enumerate(self.chunks):
            chunk_load = load
            if self.valid_copies:
                copy = self.valid_copies[k]
                chunk_load = ~copy | self.o.ready
                with m.If(chunk_load):
                    m.d.sync += copy.eq(skid_valid | self.i.valid)
            with m.If(chunk_load):
                m.d.sync += bits_out[lo:hi].eq(Mux(skid_valid, bits_skid[lo:hi], bits_in[lo:hi]))
        return m
