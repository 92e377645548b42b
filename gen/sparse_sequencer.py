"""The sparse engine's MAC sequencer: one MAC step per cycle over a site's active taps only
(docs/specs/sparse-conv.md), output group outer, tap, input group inner (depthwise: group outer, tap inner).

Stream ``sites`` in: {oy, ox, taps, eof, error} from the site finder. Stream ``steps`` out (valid only):
per step the line-buffer and weight addresses (registered, so the memories see a register and nothing
else), ``first``/``last`` of the output beat, and the beat's meta; an ``eof`` site becomes one eof step.
``can_emit`` (in) says an output beat may be issued: a step that ends a beat (or an eof step) waits for it,
which is how the output queue's free space holds the sequencer (credits), not the output's ``ready``.
``beat`` (out) pulses when such a step is issued; ``busy`` and ``row`` tell the line buffer which output
row is being read.

Addresses are concatenations: line buffer {slot, column, group} with the slot the row's low bits, weights
{tap, output group, input group}, each field padded to a power of two (config: the ``*_field_bits``).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.config.sparse_conv import SparseConvConfig

from .pipeline import lowest_one_hot, one_hot_index
from .sparse_mac import meta_layout

__all__ = ["site_layout", "step_layout", "MacSequencer", "SEQUENCER_LATENCY"]

SEQUENCER_LATENCY = 2  # registers from the issue decision to the step's addresses (tap register, address register)


def site_layout(cfg: SparseConvConfig) -> data.StructLayout:
    return data.StructLayout({"oy": unsigned(cfg.out_y_bits), "ox": unsigned(cfg.out_x_bits), "taps": cfg.taps,
                              "eof": 1, "error": 1})


def step_layout(cfg: SparseConvConfig) -> data.StructLayout:
    return data.StructLayout({"lb_addr": unsigned(cfg.lb_addr_bits), "w_addr": unsigned(cfg.w_addr_bits),
                              "first": 1, "last": 1, "meta": meta_layout(cfg)})


def _f(n: int) -> int:
    """Bits of a field counting 0..n-1, padded to a power of two (0 bits for n == 1)."""
    return (n - 1).bit_length()


class MacSequencer(wiring.Component):
    def __init__(self, cfg: SparseConvConfig):
        self.cfg = cfg
        super().__init__({
            "sites": In(stream.Signature(site_layout(cfg))),
            "steps": Out(stream.Signature(step_layout(cfg), always_ready=True)),
            "can_emit": In(1),
            "beat": Out(1),
            "busy": Out(1),
            "row": Out(unsigned(cfg.out_y_bits)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        T, s = cfg.taps, cfg.stride
        Gi, Go = cfg.in_groups, cfg.requant_groups
        dw = cfg.depthwise
        gi_steps = 1 if dw else Gi
        sb = cfg.slot_bits
        xb = cfg.x_bits
        three = cfg.kernel == 3
        site = self.sites.payload

        # ---- the next site, registered with what the sequencer derives from it (slots and columns of its
        # window rows, its tap count), so the sequencer's own loop starts from registers
        n_off = 3 if three else 1
        cnt_bits = max(1, T.bit_length())
        p_v = Signal()
        p_site = Signal(site_layout(cfg), reset_less=True)  # datapath registers: read only beside a valid
        p_cnt = Signal(cnt_bits)
        p_slot = [Signal(max(1, sb), name=f"next_slot_{k}", reset_less=True) for k in range(n_off)]
        p_col = [Signal(xb, name=f"next_col_{k}", reset_less=True) for k in range(n_off)]
        p_take = Signal()
        m.d.comb += self.sites.ready.eq(~p_v | p_take)
        with m.If(p_take):
            m.d.sync += p_v.eq(0)
        with m.If(self.sites.valid & self.sites.ready):
            m.d.sync += [p_v.eq(1), p_site.eq(site), p_cnt.eq(sum(site.taps[k] for k in range(T)))]
            cy = site.oy * s if s > 1 else site.oy
            cx = site.ox * s if s > 1 else site.ox
            for k in range(n_off):
                d = k - 1 if three else 0
                m.d.sync += [p_slot[k].eq((cy + d)[:max(1, sb)]), p_col[k].eq((cx + d)[:xb])]

        # ---- the site being sequenced: the tap loop ends on registered flags (last tap of the pass, last
        # input group, last output group), updated a step ahead
        sv = Signal()
        s_eof, s_err = Signal(), Signal()
        s_oy, s_ox = Signal(cfg.out_y_bits, reset_less=True), Signal(cfg.out_x_bits, reset_less=True)
        s_taps, s_rem = Signal(T), Signal(T)
        s_cnt, s_n = Signal(cnt_bits), Signal(cnt_bits)
        rem_one, gi_last, go_last = Signal(), Signal(), Signal()
        s_go = Signal(max(1, _f(Go)))
        s_gi = Signal(max(1, _f(gi_steps)))
        s_slot = [Signal(max(1, sb), name=f"slot_{k}", reset_less=True) for k in range(n_off)]
        s_col = [Signal(xb, name=f"col_{k}", reset_less=True) for k in range(n_off)]
        first_r = Signal()

        tap_oh = lowest_one_hot(m, s_rem, "tap_oh")
        last = Signal()
        m.d.comb += last.eq(gi_last & rem_one)
        site_done = last & go_last
        issue = Signal()
        m.d.comb += issue.eq(sv & ((~last & ~s_eof) | self.can_emit))
        m.d.comb += p_take.eq(p_v & (~sv | (issue & (site_done | s_eof))))
        m.d.comb += [self.beat.eq(issue & (last | s_eof)), self.busy.eq(sv | p_v),
                     self.row.eq(Mux(sv, s_oy, p_site.oy))]

        with m.If(issue):
            m.d.sync += first_r.eq(0)
            with m.If(~gi_last):
                m.d.sync += [s_gi.eq(s_gi + 1), gi_last.eq(s_gi == gi_steps - 2)]
            with m.Else():
                m.d.sync += [s_gi.eq(0), gi_last.eq(gi_steps == 1)]
                with m.If(~rem_one):
                    m.d.sync += [s_rem.eq(s_rem & ~tap_oh), s_n.eq(s_n - 1), rem_one.eq(s_n == 2)]
                with m.Else():
                    m.d.sync += [s_rem.eq(s_taps), s_n.eq(s_cnt), rem_one.eq(s_cnt == 1), first_r.eq(1),
                                 s_go.eq(Mux(go_last, 0, s_go + 1)), go_last.eq(s_go == Go - 2)]
            with m.If(site_done | s_eof):
                m.d.sync += sv.eq(0)
        with m.If(p_take):
            m.d.sync += [sv.eq(1), s_eof.eq(p_site.eof), s_err.eq(p_site.error), s_oy.eq(p_site.oy),
                         s_ox.eq(p_site.ox), s_taps.eq(p_site.taps), s_rem.eq(p_site.taps), s_cnt.eq(p_cnt),
                         s_n.eq(p_cnt), rem_one.eq(p_cnt == 1), gi_last.eq(gi_steps == 1), go_last.eq(Go == 1),
                         s_go.eq(0), s_gi.eq(0), first_r.eq(1)]
            m.d.sync += [a.eq(b) for a, b in zip(s_slot + s_col, p_slot + p_col, strict=True)]
        first = first_r

        # ---- step register 1: the tap as a one-hot, counters, meta
        q_v, q_first, q_last = Signal(), Signal(), Signal()
        q_oh = Signal(T, reset_less=True)
        q_go, q_gi = Signal.like(s_go, reset_less=True), Signal.like(s_gi, reset_less=True)
        q_meta = Signal(meta_layout(cfg), reset_less=True)
        q_slot = [Signal.like(x, name=f"q_slot_{k}") for k, x in enumerate(s_slot)]
        q_col = [Signal.like(x, name=f"q_col_{k}") for k, x in enumerate(s_col)]
        m.d.sync += [q_v.eq(issue), q_first.eq(first), q_last.eq(last), q_oh.eq(tap_oh), q_go.eq(s_go),
                     q_gi.eq(s_gi), q_meta.oy.eq(s_oy), q_meta.ox.eq(s_ox), q_meta.go.eq(s_go),
                     q_meta.eof.eq(s_eof), q_meta.error.eq(s_err & s_eof)]
        m.d.sync += [a.eq(b) for a, b in zip(q_slot + q_col, s_slot + s_col, strict=True)]

        # ---- step register 2: addresses by concatenation (row / column of the tap picked by one-hot AND-OR)
        if three:
            dy_oh = [q_oh[3 * k] | q_oh[3 * k + 1] | q_oh[3 * k + 2] for k in range(3)]
            dx_oh = [q_oh[k] | q_oh[3 + k] | q_oh[6 + k] for k in range(3)]
            slot = Signal(max(1, sb))
            col = Signal(xb)
            m.d.comb += slot.eq(Mux(dy_oh[0], q_slot[0], 0) | Mux(dy_oh[1], q_slot[1], 0) | Mux(dy_oh[2], q_slot[2], 0))
            m.d.comb += col.eq(Mux(dx_oh[0], q_col[0], 0) | Mux(dx_oh[1], q_col[1], 0) | Mux(dx_oh[2], q_col[2], 0))
            tap_idx = one_hot_index(m, q_oh, "tap_idx")
        else:
            slot, col, tap_idx = q_slot[0], q_col[0], None
        gib, gob = _f(Gi), _f(Go)
        lb_group = q_go if dw else q_gi
        lb_fields = ([lb_group[:gib]] if gib else []) + [col] + ([slot[:sb]] if sb else [])
        if dw:
            w_fields = ([q_go[:gib]] if gib else []) + ([tap_idx] if three else [])
        else:
            w_fields = (([q_gi[:gib]] if gib else []) + ([q_go[:gob]] if gob else [])
                        + ([tap_idx] if three else []))
        out = self.steps
        pay = Signal.like(out.payload, name="step", reset_less=True)
        m.d.comb += out.payload.eq(pay)
        m.d.sync += [out.valid.eq(q_v), pay.first.eq(q_first), pay.last.eq(q_last),
                     pay.meta.eq(q_meta), pay.lb_addr.eq(Cat(*lb_fields)),
                     pay.w_addr.eq(Cat(*w_fields) if w_fields else 0)]
        return m
