"""The sparse engine's MAC array: one PI x PO block of products per step (depthwise: P lanes), summed over
PI and accumulated over a beat's steps (docs/specs/sparse-conv.md, gen/sparse_conv.py).

Stream ``steps`` in (valid only: the array never stalls): a step's PI input features and its weights as
read from the line buffer and weight memories, with ``first`` (start a new sum) and ``last`` (the output
beat's last step); ``oy``, ``ox``, ``go``, ``eof`` and ``error`` ride along. Stream ``sums`` out (valid
only): one beat per ``last`` step with the PO sums (no bias), and one per ``eof`` marker.

Stages, each a register with nothing slow before it: operands (memory outputs registered), products (each
a `registered_multiply`: a MULT18X18D with its own registers on ECP5), one adder-tree level per stage, accumulate.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.config.sparse_conv import SparseConvConfig

from .pipeline import MULTIPLY_LATENCY, adder_tree, delay, registered_multiply

__all__ = ["meta_layout", "step_data_layout", "sums_layout", "MacArray", "mac_array_latency"]


def meta_layout(cfg: SparseConvConfig) -> data.StructLayout:
    """What travels beside a step or a beat: the output site, its output group, end of frame, error."""
    return data.StructLayout({"oy": unsigned(cfg.out_y_bits), "ox": unsigned(cfg.out_x_bits),
                              "go": unsigned(max(1, (cfg.requant_groups - 1).bit_length())), "eof": 1,
                              "error": 1})


def step_data_layout(cfg: SparseConvConfig) -> data.StructLayout:
    return data.StructLayout({"x": unsigned(cfg.buffer_word_bits), "w": unsigned(cfg.weight_word_bits),
                              "first": 1, "last": 1, "meta": meta_layout(cfg)})


def sums_layout(cfg: SparseConvConfig) -> data.StructLayout:
    return data.StructLayout({"acc": data.ArrayLayout(signed(cfg.psum_bits), cfg.po), "meta": meta_layout(cfg)})


def _tree_levels(n: int) -> int:
    return max(0, (n - 1).bit_length())


def mac_array_latency(cfg: SparseConvConfig) -> int:
    """Registers from a step entering the array to its beat leaving it: operands, products (and their retiming
    register), tree, accumulate."""
    return 2 + MULTIPLY_LATENCY + cfg.retime + (0 if cfg.depthwise else _tree_levels(cfg.pi))


class MacArray(wiring.Component):
    def __init__(self, cfg: SparseConvConfig):
        self.cfg = cfg
        super().__init__({
            "steps": In(stream.Signature(step_data_layout(cfg), always_ready=True)),
            "sums": Out(stream.Signature(sums_layout(cfg), always_ready=True)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        PI, PO, fb, wb = cfg.pi, cfg.po, cfg.feature_bits, cfg.weight_bits
        dw = cfg.depthwise
        # operands: the memories' outputs, registered before any logic
        op = Signal(step_data_layout(cfg), name="operands", reset_less=True)
        op_v = Signal()
        m.d.sync += [op.eq(self.steps.payload), op_v.eq(self.steps.valid)]
        xs = [(op.x[i * fb:(i + 1) * fb].as_signed() if cfg.signed_input else op.x[i * fb:(i + 1) * fb].as_unsigned())
              for i in range(PI)]
        ws = [op.w[k * wb:(k + 1) * wb].as_signed() for k in range(PI if dw else PI * PO)]
        # products, one multiply alone per register, then cfg.retime fabric registers (the route from a multiplier
        # to its adder may cross the part)
        prods = [[delay(m, registered_multiply(m, xs[i], ws[i if dw else o * PI + i], f"prod_{o}_{i}", platform),
                        cfg.retime, f"prod_{o}_{i}_r", reset_less=True)
                  for i in ([o] if dw else range(PI))] for o in range(PO)]
        # sum over PI, one tree level per stage
        sums, stages = [], 0
        for o in range(PO):
            s, stages = adder_tree(m, prods[o], cfg.psum_bits, f"tree_{o}")
            sums.append(s)
        ctl = Signal(data.StructLayout({"first": 1, "last": 1, "meta": meta_layout(cfg)}))
        m.d.comb += [ctl.first.eq(op.first), ctl.last.eq(op.last), ctl.meta.eq(op.meta)]
        ctl_t = delay(m, ctl, MULTIPLY_LATENCY + cfg.retime + stages, "mac_ctl", reset_less=True)
        ctl_v = delay(m, op_v, MULTIPLY_LATENCY + cfg.retime + stages, "mac_v")
        # accumulate (first: start from zero); a beat leaves on its last step
        acc = [Signal(signed(cfg.psum_bits), name=f"acc_{o}", reset_less=True) for o in range(PO)]  # first: 0
        with m.If(ctl_v & ~ctl_t.meta.eof):
            for o in range(PO):
                m.d.sync += acc[o].eq(Mux(ctl_t.first, 0, acc[o]) + sums[o])
        out_v = Signal()
        out_meta = Signal(meta_layout(cfg), reset_less=True)
        m.d.sync += [out_v.eq(ctl_v & (ctl_t.last | ctl_t.meta.eof)), out_meta.eq(ctl_t.meta)]
        m.d.comb += self.sums.valid.eq(out_v)
        m.d.comb += self.sums.payload.meta.eq(out_meta)
        m.d.comb += [self.sums.payload.acc[o].eq(acc[o]) for o in range(PO)]
        assert 2 + MULTIPLY_LATENCY + cfg.retime + stages == mac_array_latency(cfg)
        return m
