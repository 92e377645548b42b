"""The global sum pool that ends a network: per channel, the sum of the last layer's outputs over a frame's sites.

In: the last engine's site tokens (gen/sparse_line_buffer.py `token_layout`, ``channels / lanes`` beats per
site, then the end-of-frame beat). Out: one pooled vector per frame, as ``channels / lanes`` beats of
``lanes`` signed sums (channels ``g * lanes ..`` in beat g), ``last`` on the final beat, ``error`` on every
beat of a frame whose end-of-frame beat carried ``error`` or that ended in the middle of a site's beats (its
sums are then those of the beats received; the next frame starts clean).

The sums live in registers, one per channel, each added to by its beat's group. At the end of frame they
leave from the bottom ``lanes`` registers: each taken beat shifts the registers down by ``lanes`` with
zeros coming in, so the output is a register and the sums are cleared for the next frame as they leave.
The input waits (``ready`` low) while a vector leaves: ``channels / lanes`` cycles a frame.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.config import require

from .sparse_line_buffer import token_layout

__all__ = ["SumPool", "pooled_layout", "pool_sum_bits"]


def pool_sum_bits(feature_bits: int, max_sites: int) -> int:
    """Width of a channel's sum: signed features over at most `max_sites` sites, exact."""
    return feature_bits + max(0, (max_sites - 1).bit_length())


def pooled_layout(lanes: int, sum_bits: int) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(signed(sum_bits), lanes), "last": 1, "error": 1})


class SumPool(wiring.Component):
    def __init__(self, channels: int, lanes: int, feature_bits: int, y_bits: int, x_bits: int, max_sites: int):
        for name, v in (("channels", channels), ("lanes", lanes), ("max_sites", max_sites)):
            require(isinstance(v, int) and v >= 1, name, "a positive integer", v)
        require(channels % lanes == 0, "lanes", f"a divisor of channels={channels}", lanes)
        self.channels, self.lanes, self.feature_bits = channels, lanes, feature_bits
        self.groups = channels // lanes
        self.sum_bits = pool_sum_bits(feature_bits, max_sites)
        super().__init__({
            "sites_in": In(stream.Signature(token_layout(lanes, feature_bits, y_bits, x_bits))),
            "pooled": Out(stream.Signature(pooled_layout(lanes, self.sum_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        i, o = self.sites_in, self.pooled
        L, G, sb = self.lanes, self.groups, self.sum_bits
        acc = [Signal(signed(sb), name=f"sum_{c}") for c in range(self.channels)]
        group = Signal(range(G))
        emitting = Signal()
        left = Signal(range(G + 1))  # beats of the vector still to leave
        error = Signal()

        m.d.comb += i.ready.eq(~emitting)
        m.d.comb += [o.valid.eq(emitting), o.payload.last.eq(left == 1), o.payload.error.eq(error)]
        m.d.comb += [o.payload.data[l].eq(acc[l]) for l in range(L)]

        lanes = [Signal(signed(self.feature_bits), name=f"lane_{l}") for l in range(L)]
        m.d.comb += [lanes[l].eq(i.payload.data[l]) for l in range(L)]
        with m.If(i.valid & i.ready):
            with m.If(i.payload.eof):
                m.d.sync += [emitting.eq(1), left.eq(G), error.eq(i.payload.error | (group != 0)), group.eq(0)]
            with m.Else():
                for g in range(G):
                    with m.If(group == g):
                        m.d.sync += [acc[g * L + l].eq(acc[g * L + l] + lanes[l]) for l in range(L)]
                m.d.sync += group.eq(0 if G == 1 else group + 1)
                with m.If(group == G - 1):
                    m.d.sync += group.eq(0)
        with m.If(o.valid & o.ready):
            m.d.sync += [acc[c].eq(acc[c + L] if c + L < self.channels else 0) for c in range(self.channels)]
            m.d.sync += left.eq(left - 1)
            with m.If(left == 1):
                m.d.sync += emitting.eq(0)
        return m

