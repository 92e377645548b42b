"""The sparse engine's requantiser: y = clamp(((acc + bias) * scale + 2^(E-1)) >> E, lo, q) per lane
(docs/specs/sparse-conv.md), pipelined so that no stage holds more than one add, one multiply or one clamp.

Stream ``sums`` in (valid only) from the MAC array; the requant memory is read through ``rq_addr`` /
``rq_data`` (a registered RAM read: data two cycles after the address); stream ``feats`` out (valid only):
the output features and the beat's meta, in order, eof markers included.

Stages: beat registered twice (its output group addresses the requant word meanwhile) -> acc + bias -> partial
products of times scale (18 x 18 each, alone) -> their sum -> shift with round half up (the bit below the shift) ->
clamp (and ReLU; bit reductions, no compare).

With ``cfg.residual`` (the last pw1x1 of an inverted-residual block) stream ``identity`` in carries the block's
input beats (po lanes, in the order of this layer's output beats, then the frame's eof): each output beat takes
one as it enters, x_id * id_scale (one registered multiply, id_scale from the requant word) is rounded beside the
main path and added in a stage of its own before the clamp. The identity of a beat is in the queue before the beat
reaches the requantiser (it entered the block first), so the requantiser never waits; the eof beat takes the
identity's eof.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.config.sparse_conv import SparseConvConfig, signed_bits

from .pipeline import MULTIPLY_LATENCY, delay, registered_multiply, saturate, split_multiply
from .sparse_mac import meta_layout, sums_layout

__all__ = ["feats_layout", "identity_layout", "Requantiser", "requantiser_latency", "RQ_READ_LATENCY"]

RQ_READ_LATENCY = 2  # the requant word comes from a registered RAM read (gen/memory.py)


def feats_layout(cfg: SparseConvConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(unsigned(cfg.feature_bits), cfg.po), "meta": meta_layout(cfg)})


def identity_layout(cfg: SparseConvConfig) -> data.StructLayout:
    """A beat of a residual block's identity: the block input's features (po lanes) or its end of frame."""
    return data.StructLayout({"data": data.ArrayLayout(unsigned(cfg.feature_bits), cfg.po), "eof": 1})


def _product_stages(cfg: SparseConvConfig) -> int:
    a_bits, b_bits = cfg.psum_bits, cfg.scale_bits
    n = -(-a_bits // 17) * -(-b_bits // 17)
    return MULTIPLY_LATENCY + cfg.retime + max(0, (n - 1).bit_length())


def requantiser_latency(cfg: SparseConvConfig) -> int:
    """Registers from a beat entering to its features leaving: beat, bias add, products (+ tree), round, clamp."""
    return RQ_READ_LATENCY + 1 + _product_stages(cfg) + 2 + (1 if cfg.residual else 0)


class Requantiser(wiring.Component):
    def __init__(self, cfg: SparseConvConfig):
        self.cfg = cfg
        ports = {
            "sums": In(stream.Signature(sums_layout(cfg), always_ready=True)),
            "rq_addr": Out(unsigned(max(1, (max(2, cfg.requant_groups) - 1).bit_length()))),
            "rq_data": In(unsigned(cfg.requant_word_bits)),
            "feats": Out(stream.Signature(feats_layout(cfg), always_ready=True)),
        }
        if cfg.residual:
            ports["identity"] = In(stream.Signature(identity_layout(cfg)))
        super().__init__(ports)

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        PO, bb, sb, E = cfg.po, cfg.bias_bits, cfg.scale_bits, cfg.shift
        # beat registered; its output group addresses the requant word
        m.d.comb += self.rq_addr.eq(self.sums.payload.meta.go)
        beat = delay(m, self.sums.payload, RQ_READ_LATENCY, "beat", reset_less=True)  # the word is read meanwhile
        bv = delay(m, self.sums.valid, RQ_READ_LATENCY, "beat_v")
        # acc + bias (the word arrived with the beat), scale registered beside it
        bias = [self.rq_data[o * bb:(o + 1) * bb].as_signed() for o in range(PO)]
        scale = [self.rq_data[PO * bb + o * sb:PO * bb + (o + 1) * sb].as_unsigned() for o in range(PO)]
        tb = cfg.psum_bits  # psum_range already includes the bias
        t = [Signal(signed(tb), name=f"biased_{o}", reset_less=True) for o in range(PO)]
        sc = [Signal(unsigned(sb), name=f"scale_{o}", reset_less=True) for o in range(PO)]
        m.d.sync += [t[o].eq(beat.acc[o] + bias[o]) for o in range(PO)]
        m.d.sync += [sc[o].eq(scale[o]) for o in range(PO)]
        meta = delay(m, beat.meta, 1, "rq_meta1", reset_less=True)
        v = delay(m, bv, 1, "rq_v1")
        # times scale, split into lone 18 x 18 multiplies and a tree
        lo, hi = cfg.psum_range
        pbits = signed_bits(min(lo * cfg.scale_max, 0), max(hi * cfg.scale_max, 0))
        prods, stages = [], 0
        for o in range(PO):
            p, stages = split_multiply(m, t[o], sc[o], pbits, f"scaled_{o}", platform, retime=cfg.retime)
            prods.append(p)
        assert stages == _product_stages(cfg)
        meta = delay(m, meta, stages, "rq_meta2", reset_less=True)
        v = delay(m, v, stages, "rq_v2")
        # >> E rounding half up: floor((p + 2^(E-1)) / 2^E) = (p >> E) + bit E-1 of p
        rb = max(2, pbits - E + 1)
        r = [Signal(signed(rb), name=f"rounded_{o}", reset_less=True) for o in range(PO)]
        for o in range(PO):
            m.d.sync += r[o].eq((prods[o] >> E) + prods[o][E - 1])
        meta = delay(m, meta, 1, "rq_meta3", reset_less=True)
        v = delay(m, v, 1, "rq_v3")
        if cfg.residual:
            r, meta, v = self._identity_add(m, r, meta, v, stages, platform)
        # clamp to [lo, q] (ReLU: lo = 0), from bit reductions of r (no compare's carry chain)
        out = Signal(feats_layout(cfg), name="out", reset_less=True)
        ov = Signal()
        for o in range(PO):
            m.d.sync += out.data[o].eq(saturate(m, r[o], cfg.feature_bits, cfg.relu, f"clamp_{o}"))
        m.d.sync += [out.meta.eq(meta), ov.eq(v)]
        m.d.comb += [self.feats.valid.eq(ov), self.feats.payload.eq(out)]
        return m

    def _identity_add(self, m: Module, r: list, meta, v, stages: int, platform):
        """The residual path: each beat entering takes one identity beat (the eof beat takes the identity's eof),
        whose x_id * id_scale is rounded beside the main path; returns the sums r + r_id a stage later."""
        cfg = self.cfg
        PO, E, fb = cfg.po, cfg.shift, cfg.feature_bits
        idn = self.identity
        beat = self.sums
        # a data beat takes an identity data beat; the eof beat takes the identity up to its eof (in order, it is
        # the next one); a data beat meeting the identity's eof (a malformed frame) adds 0 and takes nothing
        draining = Signal()
        take_data = beat.valid & ~beat.payload.meta.eof & idn.valid & ~idn.payload.eof
        drain = (beat.valid & beat.payload.meta.eof) | draining
        m.d.comb += idn.ready.eq(take_data | drain)
        with m.If(drain & ~(idn.valid & idn.payload.eof)):
            m.d.sync += draining.eq(1)
        with m.Elif(draining):
            m.d.sync += draining.eq(0)
        x_id = [Signal(signed(fb), name=f"x_id_{o}", reset_less=True) for o in range(PO)]
        for o in range(PO):
            m.d.sync += x_id[o].eq(Mux(take_data, idn.payload.data[o].as_signed(), 0))
        # id_scale arrives with the requant word, RQ_READ_LATENCY after the beat; x_id waits for it
        x_id = [delay(m, x, RQ_READ_LATENCY - 1, f"x_id_{o}", reset_less=True) for o, x in enumerate(x_id)]
        id_scale = self.rq_data[PO * (cfg.bias_bits + cfg.scale_bits):].as_unsigned()
        prods = [delay(m, registered_multiply(m, x_id[o], id_scale, f"id_scaled_{o}", platform), cfg.retime,
                       f"id_scaled_{o}_r", reset_less=True) for o in range(PO)]
        pb = len(prods[0])
        r_id = []
        for o in range(PO):
            t = Signal(signed(max(2, pb - E + 1)), name=f"id_rounded_{o}", reset_less=True)
            m.d.sync += t.eq((prods[o] >> E) + prods[o][E - 1])
            r_id.append(t)
        # with the word at cycle RQ_READ_LATENCY, the main path's rounding is there 1 + stages + 1 cycles later,
        # the identity's MULTIPLY_LATENCY + cfg.retime + 1
        r_id = [delay(m, t, stages + 1 - MULTIPLY_LATENCY - cfg.retime, f"id_rounded_{o}", reset_less=True)
                for o, t in enumerate(r_id)]
        total = [Signal(signed(max(len(a), len(b)) + 1), name=f"with_identity_{o}", reset_less=True)
                 for o, (a, b) in enumerate(zip(r, r_id, strict=True))]
        m.d.sync += [total[o].eq(r[o] + r_id[o]) for o in range(PO)]
        return total, delay(m, meta, 1, "rq_meta4", reset_less=True), delay(m, v, 1, "rq_v4")
