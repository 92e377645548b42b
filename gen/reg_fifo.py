"""A stream FIFO on a `RegisteredRam` (gen/memory.py): block RAM read through its output register, then a
prefetch queue of flip-flops, so that nothing reads the block RAM's slow clock-to-output (5.8 ns on
LFE5U-85F speed 6) and the output's valid and payload are registers. With ``lutram=True`` the memory is LUT RAM
instead (an Amaranth `Memory` marked ``ram_style = "distributed"``, read the same way: a synchronous read and a
register), for a shallow FIFO; the rest, and the timing, is the same.

Every control signal the neighbours see is a register: ``i.ready`` ("fewer than `depth` held"), ``o.valid``
and ``o.payload`` (the queue's head, a mux of its registers by a registered pointer). "Full" and "the RAM holds an
unread beat" are kept as flags updated from compares of their counters' registers (held == depth - 1,
unread == 1) beside the handshakes, so no counter's carry chain sits between a handshake and a flag. A producer's
handshake logic therefore never waits on the FIFO's level compare, nor a consumer on its memory.

Streams: ``i`` in, ``o`` out, beats of `shape`. It holds at most `depth` beats, counted from the input
handshake to the output handshake (in the RAM, in the read pipeline and in the queue): ``i.ready`` is a
register, "fewer than `depth` held", so a beat enters once the beat `depth` places ahead left a cycle before.

Timing, all from registers:

- a beat written in cycle t (input handshake) is in the RAM from t + 1, where its read may be issued;
- a read issued in cycle t has its data on the RAM's ``r_data`` in cycle t + `READ_LATENCY`, which the queue
  takes at the end of that cycle; the queue's head is offered from the next cycle;
- a read is issued when the RAM holds an unread beat and the queue has room for it and every read in flight
  (`PREFETCH` entries: READ_LATENCY + 2, so that reads issued as the queue drains arrive before it runs dry).

So a beat is offered `LATENCY` = READ_LATENCY + 2 cycles after it entered, and no earlier than the cycle after
the beat ahead was taken: at one beat a cycle through, whatever the gaps and stalls. The cycle model
(golden/sparse_rtl_cycles.py `_Fifo`) is exactly that, with `depth` and `LATENCY`.

A RAM slot is written only while fewer than `depth` beats are held, and every beat not yet in the queue is
counted, so a write never lands on a slot that is unread or being read (the RAM has at least `depth` slots).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Signal, Value, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .memory import READ_LATENCY, RegisteredRam

__all__ = ["RegisteredFifo", "LATENCY", "PREFETCH"]

LATENCY = READ_LATENCY + 2  # input handshake to the beat offered (write, read issue, read, queue)
PREFETCH = READ_LATENCY + 2  # queue entries: with the reads in flight, room for one a cycle while it drains
_QBITS = (PREFETCH - 1).bit_length()


class RegisteredFifo(wiring.Component):
    credits = PREFETCH  # reads in flight + queued beats allowed (the queue's entries)

    def __init__(self, shape, depth: int, lutram: bool = False):
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth={depth!r} is invalid: a RegisteredFifo holds at least 2 beats")
        self.shape, self.depth, self.lutram = shape, depth, lutram
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})
        # the control registers (made here so that a formal proof can state their invariants: `invariants`)
        self.abits = (depth - 1).bit_length()
        self.held = Signal(range(depth + 1))  # beats held, input handshake to output handshake
        self.full = Signal()  # held == depth
        self.w_ptr = Signal(self.abits, name="w_ptr")
        self.r_ptr = Signal(self.abits, name="r_ptr")
        self.unread = Signal(range(depth + 1))  # beats written and no read issued yet
        self.has_unread = Signal()  # unread != 0, a register (the read issue does not wait on a compare)
        self.pending = Signal(range(self.credits + 1))  # reads in flight + beats in the queue
        self.arrive = Signal(READ_LATENCY)  # arrive[k]: a read issued k + 1 cycles ago
        self.q_w = Signal(_QBITS, name="q_w")  # the queue's write entry
        self.q_h = Signal(_QBITS, name="q_h")  # and its head
        self.q_n = Signal(range(PREFETCH + 1))  # beats in the queue

    def invariants(self) -> list[tuple[Value, str]]:
        """What holds of the control registers in every reachable state (the formal proof's k-induction needs
        them: from a state where they do not hold the queue could overwrite its head)."""
        inflight = sum(self.arrive[k] for k in range(READ_LATENCY))
        return [(self.pending == self.q_n + inflight, "pending: the queue and the reads in flight"),
                (self.pending <= PREFETCH, "pending within the queue"),
                (self.q_w == (self.q_h + self.q_n)[:_QBITS], "queue: write entry = head + beats"),
                (self.o.valid == (self.q_n != 0), "offered: the queue holds a beat"),
                (self.held == self.unread + self.pending, "held: unread, in flight, queued"),
                (self.held <= self.depth, "held within the depth"),
                (self.full == (self.held == self.depth), "full: held == depth"),
                (self.has_unread == (self.unread != 0), "has_unread: unread != 0"),
                ((self.w_ptr - self.r_ptr)[:self.abits] == self.unread[:self.abits], "pointers: unread apart")]

    def elaborate(self, platform):
        m = Module()
        width = len(Value.cast(self.i.payload))
        m.submodules.ram = ram = (LutRam if self.lutram else RegisteredRam)(width, 1 << self.abits)
        held, full, w_ptr, r_ptr = self.held, self.full, self.w_ptr, self.r_ptr
        unread, pending, arrive, q_w, q_h, q_n = self.unread, self.pending, self.arrive, self.q_w, self.q_h, self.q_n

        w_fire = self.i.valid & self.i.ready
        r_fire = self.o.valid & self.o.ready

        # beats held and the registered "full", decided from registers beside the handshakes (held == depth - 1
        # compared on the register, not on the sum): a write alone fills it from depth - 1, a read alone empties
        # it (a write needs ~full, so a full FIFO never writes)
        m.d.comb += self.i.ready.eq(~full)
        m.d.sync += held.eq(held + w_fire - r_fire)
        with m.If(w_fire & ~r_fire):
            m.d.sync += full.eq(held == self.depth - 1)
        with m.Elif(r_fire & ~w_fire):
            m.d.sync += full.eq(0)

        # the write side
        m.d.comb += [ram.w_addr.eq(w_ptr), ram.w_data.eq(self.i.payload), ram.w_en.eq(w_fire)]
        with m.If(w_fire):
            m.d.sync += w_ptr.eq(w_ptr + 1)

        # reads: issued while the RAM holds an unread beat and the queue has room for it and those in flight
        issue = Signal()
        m.d.comb += [issue.eq(self.has_unread & (pending != self.credits)), ram.r_addr.eq(r_ptr)]
        m.d.sync += [unread.eq(unread + w_fire - issue), pending.eq(pending + issue - r_fire)]
        # unread != 0 next: a write makes it so; else a read issued on the last unread beat clears it
        m.d.sync += self.has_unread.eq(w_fire | (self.has_unread & ~(issue & (unread == 1))))
        with m.If(issue):
            m.d.sync += r_ptr.eq(r_ptr + 1)
        m.d.sync += arrive.eq(Cat(issue, arrive[:-1]))

        # the prefetch queue: PREFETCH registers, written in order as reads arrive, offered from the head
        queue = Array(Signal(unsigned(width), name=f"q{k}", reset_less=True) for k in range(PREFETCH))
        got = arrive[-1]
        with m.If(got):
            m.d.sync += [queue[q_w].eq(ram.r_data), q_w.eq(_wrap(q_w + 1, PREFETCH))]
        with m.If(r_fire):
            m.d.sync += q_h.eq(_wrap(q_h + 1, PREFETCH))
        q_next = Signal.like(q_n)
        m.d.comb += q_next.eq(q_n + got - r_fire)
        m.d.sync += [q_n.eq(q_next), self.o.valid.eq(q_next != 0)]
        m.d.comb += self.o.payload.eq(queue[q_h])
        return m


def _wrap(v, n: int):
    """v modulo n for 0 <= v <= n (n a power of two: the low bits)."""
    assert n & (n - 1) == 0
    return v[:(n - 1).bit_length()]


class LutRam(wiring.Component):
    """`RegisteredRam`'s ports and read latency on LUT RAM: a `Memory` that yosys is told to map to distributed RAM
    (on ECP5 TRELLIS_DPR16X4, 16 words of 4 bits each), read synchronously, then a register."""

    def __init__(self, width: int, depth: int):
        self.width, self.depth = width, max(2, depth)
        self.abits = max(1, (self.depth - 1).bit_length())
        super().__init__({
            "w_addr": In(unsigned(self.abits)), "w_data": In(unsigned(width)), "w_en": In(1),
            "r_addr": In(unsigned(self.abits)), "r_data": Out(unsigned(width)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(self.width), depth=self.depth, init=[],
                                        attrs={"ram_style": "distributed"})
        wr, rd = mem.write_port(), mem.read_port(transparent_for=())
        m.d.comb += [wr.addr.eq(self.w_addr), wr.data.eq(self.w_data), wr.en.eq(self.w_en),
                     rd.addr.eq(self.r_addr), rd.en.eq(1)]
        out = Signal(self.width, name="r_reg", reset_less=True)
        m.d.comb += self.r_data.eq(out)
        m.d.sync += out.eq(rd.data)
        return m
