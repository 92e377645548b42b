"""A beat gearbox between two layer engines whose beat widths differ by a whole factor.

The network compiler (flows/compile.py) lets a layer's PI divide, or be a multiple of, the previous
layer's PO. Between the two engines this component re-beats the site-token stream
(gen/sparse_line_buffer.py `token_layout`):

- split (``lanes_in = k * lanes_out``): each site beat leaves as k beats, lanes
  ``j * lanes_out .. (j + 1) * lanes_out - 1`` in beat j, same y and x;
- merge (``lanes_out = k * lanes_in``): k consecutive site beats of a site leave as one beat, beat j's
  lanes at ``j * lanes_in``;
- the end-of-frame beat passes alone, with its ``error`` flag.

Sites carry ``channels / lanes_in`` beats, so a merge completes at every site's boundary. A merge
that meets an end-of-frame beat mid-group (malformed input) drops the partial beat and sets ``error``
on the end-of-frame beat that resynchronises it.

Full rate both ways: one output beat per cycle while the input keeps up. The output leaves from a
register; ``sites_in.ready`` is ``sites_out.ready`` (or an empty output register) on a split's last
part, and the holding register's free state on a merge. Equal widths need no gearbox (refused).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.config import require

from .sparse_line_buffer import token_layout

__all__ = ["BeatGearbox"]


class BeatGearbox(wiring.Component):
    """Site tokens of `lanes_in` feature lanes in, of `lanes_out` lanes out (one divides the other)."""

    def __init__(self, lanes_in: int, lanes_out: int, channels: int, feature_bits: int, y_bits: int, x_bits: int):
        for name, v in (("lanes_in", lanes_in), ("lanes_out", lanes_out), ("channels", channels)):
            require(isinstance(v, int) and v >= 1, name, "a positive integer", v)
        require(lanes_in % lanes_out == 0 or lanes_out % lanes_in == 0, "lanes_out",
                f"a divisor or multiple of lanes_in={lanes_in}", lanes_out)
        require(lanes_in != lanes_out, "lanes_out", "different from lanes_in: equal widths are wired directly",
                lanes_out)
        require(channels % lanes_in == 0 and channels % lanes_out == 0, "channels",
                f"a multiple of both lane counts ({lanes_in}, {lanes_out})", channels)
        self.lanes_in, self.lanes_out, self.channels = lanes_in, lanes_out, channels
        self.tok_in = token_layout(lanes_in, feature_bits, y_bits, x_bits)
        self.tok_out = token_layout(lanes_out, feature_bits, y_bits, x_bits)
        super().__init__({"sites_in": In(stream.Signature(self.tok_in)),
                          "sites_out": Out(stream.Signature(self.tok_out))})

    @property
    def ratio(self) -> int:
        return max(self.lanes_in, self.lanes_out) // min(self.lanes_in, self.lanes_out)

    def elaborate(self, platform):
        m = Module()
        i, o = self.sites_in, self.sites_out
        if self.lanes_in > self.lanes_out:
            self._split(m, i, o)
        else:
            self._merge(m, i, o)
        return m

    def _split(self, m: Module, i, o) -> None:
        k, n = self.ratio, self.lanes_out
        part = Signal(range(k))
        free = Signal()  # the output register can take a beat this cycle
        m.d.comb += free.eq(~o.valid | o.ready)
        last = Signal()
        m.d.comb += last.eq(i.payload.eof | (part == k - 1))
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
            m.d.sync += part.eq(0 if k == 1 else part + 1)
            with m.If(last):
                m.d.sync += part.eq(0)

    def _merge(self, m: Module, i, o) -> None:
        k, n = self.ratio, self.lanes_in
        part = Signal(range(k))
        # The output register fills part by part; it is offered (valid) once complete, and the next
        # beat's first part may enter in the cycle it leaves.
        free = Signal()
        m.d.comb += free.eq(~o.valid | o.ready)
        m.d.comb += i.ready.eq(free)
        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(i.valid & free):
            with m.If(i.payload.eof):
                m.d.sync += [o.valid.eq(1), o.payload.eof.eq(1),
                             o.payload.error.eq(i.payload.error | (part != 0)), part.eq(0)]
            with m.Else():
                with m.Switch(part):
                    for j in range(k):
                        with m.Case(j):
                            m.d.sync += [o.payload.data[j * n + l].eq(i.payload.data[l]) for l in range(n)]
                m.d.sync += [o.payload.y.eq(i.payload.y), o.payload.x.eq(i.payload.x), o.payload.eof.eq(0),
                             o.payload.error.eq(0)]
                with m.If(part == k - 1):
                    m.d.sync += [o.valid.eq(1), part.eq(0)]
                with m.Else():
                    m.d.sync += part.eq(part + 1)
