"""The sparse engine's requantiser: y = clamp(((acc + bias) * scale + 2^(E-1)) >> E, lo, q) per lane
(docs/specs/sparse-conv.md), pipelined so that no stage holds more than one add, one multiply or one clamp.

Stream ``sums`` in (valid only) from the MAC array; the requant memory is read through ``rq_addr`` /
``rq_data`` (a registered RAM read: data two cycles after the address); stream ``feats`` out (valid only):
the output features and the beat's meta, in order, eof markers included.

Stages: beat registered twice (its output group addresses the requant word meanwhile) -> acc + bias -> partial
products of times scale (18 x 18 each, alone) -> their sum -> shift with round half up (the bit below the shift) ->
clamp (and ReLU).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.config.sparse_conv import SparseConvConfig, signed_bits

from .pipeline import MULTIPLY_LATENCY, delay, split_multiply
from .sparse_mac import meta_layout, sums_layout

__all__ = ["feats_layout", "Requantiser", "requantiser_latency", "RQ_READ_LATENCY"]

RQ_READ_LATENCY = 2  # the requant word comes from a registered RAM read (gen/memory.py)


def feats_layout(cfg: SparseConvConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(unsigned(cfg.feature_bits), cfg.po), "meta": meta_layout(cfg)})


def _product_stages(cfg: SparseConvConfig) -> int:
    a_bits, b_bits = cfg.psum_bits, cfg.scale_bits
    n = -(-a_bits // 17) * -(-b_bits // 17)
    return MULTIPLY_LATENCY + max(0, (n - 1).bit_length())


def requantiser_latency(cfg: SparseConvConfig) -> int:
    """Registers from a beat entering to its features leaving: beat, bias add, products (+ tree), round, clamp."""
    return RQ_READ_LATENCY + 1 + _product_stages(cfg) + 2


class Requantiser(wiring.Component):
    def __init__(self, cfg: SparseConvConfig):
        self.cfg = cfg
        super().__init__({
            "sums": In(stream.Signature(sums_layout(cfg), always_ready=True)),
            "rq_addr": Out(unsigned(max(1, (max(2, cfg.requant_groups) - 1).bit_length()))),
            "rq_data": In(unsigned(cfg.requant_word_bits)),
            "feats": Out(stream.Signature(feats_layout(cfg), always_ready=True)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        PO, bb, sb, E = cfg.po, cfg.bias_bits, cfg.scale_bits, cfg.shift
        # beat registered; its output group addresses the requant word
        m.d.comb += self.rq_addr.eq(self.sums.payload.meta.go)
        beat = delay(m, self.sums.payload, RQ_READ_LATENCY, "beat")  # the word is read meanwhile
        bv = delay(m, self.sums.valid, RQ_READ_LATENCY, "beat_v")
        # acc + bias (the word arrived with the beat), scale registered beside it
        bias = [self.rq_data[o * bb:(o + 1) * bb].as_signed() for o in range(PO)]
        scale = [self.rq_data[PO * bb + o * sb:PO * bb + (o + 1) * sb].as_unsigned() for o in range(PO)]
        tb = cfg.psum_bits  # psum_range already includes the bias
        t = [Signal(signed(tb), name=f"biased_{o}") for o in range(PO)]
        sc = [Signal(unsigned(sb), name=f"scale_{o}") for o in range(PO)]
        m.d.sync += [t[o].eq(beat.acc[o] + bias[o]) for o in range(PO)]
        m.d.sync += [sc[o].eq(scale[o]) for o in range(PO)]
        meta = delay(m, beat.meta, 1, "rq_meta1")
        v = delay(m, bv, 1, "rq_v1")
        # times scale, split into lone 18 x 18 multiplies and a tree
        lo, hi = cfg.psum_range
        pbits = signed_bits(min(lo * cfg.scale_max, 0), max(hi * cfg.scale_max, 0))
        prods, stages = [], 0
        for o in range(PO):
            p, stages = split_multiply(m, t[o], sc[o], pbits, f"scaled_{o}", platform)
            prods.append(p)
        assert stages == _product_stages(cfg)
        meta = delay(m, meta, stages, "rq_meta2")
        v = delay(m, v, stages, "rq_v2")
        # >> E rounding half up: floor((p + 2^(E-1)) / 2^E) = (p >> E) + bit E-1 of p
        rb = max(2, pbits - E + 1)
        r = [Signal(signed(rb), name=f"rounded_{o}") for o in range(PO)]
        for o in range(PO):
            m.d.sync += r[o].eq((prods[o] >> E) + prods[o][E - 1])
        meta = delay(m, meta, 1, "rq_meta3")
        v = delay(m, v, 1, "rq_v3")
        # clamp to [lo, q] (ReLU: lo = 0)
        q = (1 << (cfg.feature_bits - 1)) - 1
        low = 0 if cfg.relu else -q
        out = Signal(feats_layout(cfg), name="out")
        ov = Signal()
        for o in range(PO):
            m.d.sync += out.data[o].eq(Mux(r[o] > q, q, Mux(r[o] < low, low, r[o])))
        m.d.sync += [out.meta.eq(meta), ov.eq(v)]
        m.d.comb += [self.feats.valid.eq(ov), self.feats.payload.eq(out)]
        return m
