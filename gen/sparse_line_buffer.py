"""The sparse engine's line buffer: ingest of a frame's tokens into buffered input rows, with the active-site
bitmap and row tag of every slot (docs/specs/sparse-conv.md).

Stream ``sites_in`` in: tokens in raster order (see gen/sparse_conv.py), taken through a two-entry queue so
that ``ready`` is a register. A token is checked (raster order, inside the frame, the beats of a site
agree), then written one cycle later: the feature memory at {slot, column, group} (slot = the row's low
bits), its slot's bitmap bit on the site's last beat (the slot cleared and re-tagged on a new row). A bad
token flags the frame (``error``) and the rest up to the end-of-frame token is dropped.

Control in: ``loaded`` (weights present), ``hold`` (a params load is offered: take nothing), ``height_m1``,
``width_m1``, ``permit_row`` (tokens of input rows below it may be written: their slots are free), and
``frame_reset``. Status out: ``done_rows`` (input rows below it are complete: a good token of that row is at
the head, taken or not), ``eof_seen``, ``has_last``/``last_y``, ``error``, ``busy`` (a frame has started).
Read port: ``rd_addr`` in, ``rd_data`` out two cycles later (gen/memory.py, a registered block RAM read).
Stream ``accepted`` out (valid only): every beat written into the buffer (the frame's good tokens, in order),
then the end of frame: the identity of a residual block that starts with this layer (gen/network.py).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.config.sparse_conv import SparseConvConfig

from .memory import RegisteredRam

__all__ = ["token_layout", "accepted_layout", "LineBuffer"]


def token_layout(lanes: int, feature_bits: int, y_bits: int, x_bits: int) -> data.StructLayout:
    """One beat of a site token: feature lanes (raw bits), coordinates, end-of-frame and error flags."""
    return data.StructLayout({"data": data.ArrayLayout(unsigned(feature_bits), lanes), "y": unsigned(y_bits),
                              "x": unsigned(x_bits), "eof": 1, "error": 1})


def accepted_layout(lanes: int, feature_bits: int) -> data.StructLayout:
    """A beat the line buffer wrote (its feature lanes), or the frame's end."""
    return data.StructLayout({"data": data.ArrayLayout(unsigned(feature_bits), lanes), "eof": 1})


class LineBuffer(wiring.Component):
    def __init__(self, cfg: SparseConvConfig):
        self.cfg = cfg
        S, W, rb = cfg.buffer_slots, cfg.max_width, cfg.y_bits + 2
        self._tok = token_layout(cfg.pi, cfg.feature_bits, cfg.y_bits, cfg.x_bits)
        super().__init__({
            "sites_in": In(stream.Signature(self._tok)),
            "loaded": In(1), "hold": In(1),
            "height_m1": In(unsigned(cfg.y_bits)), "width_m1": In(unsigned(cfg.x_bits)),
            "permit_row": In(unsigned(rb)),
            "frame_reset": In(1),
            "done_rows": Out(unsigned(rb)), "eof_seen": Out(1), "has_last": Out(1),
            "last_y": Out(unsigned(cfg.y_bits)), "error": Out(1), "busy": Out(1),
            "bitmaps": Out(data.ArrayLayout(unsigned(W), S)),
            "tags": Out(data.ArrayLayout(unsigned(cfg.tag_bits), S)),
            "rd_addr": In(unsigned(cfg.lb_addr_bits)),
            "rd_data": Out(unsigned(cfg.buffer_word_bits)),
            "accepted": Out(stream.Signature(accepted_layout(cfg.pi, cfg.feature_bits), always_ready=True)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        S, W, Gi = cfg.buffer_slots, cfg.max_width, cfg.in_groups
        sb, gib = cfg.slot_bits, (Gi - 1).bit_length()
        no_row = (1 << cfg.tag_bits) - 1

        m.submodules.mem = mem = RegisteredRam(cfg.buffer_word_bits, cfg.buffer_depth)
        m.d.comb += [mem.r_addr.eq(self.rd_addr), self.rd_data.eq(mem.r_data)]

        tags = [Signal(cfg.tag_bits, init=no_row, name=f"row_tag_{t}") for t in range(S)]
        bitmaps = [Signal(W, name=f"bitmap_{t}") for t in range(S)]
        m.d.comb += [self.tags[t].eq(tags[t]) for t in range(S)]
        m.d.comb += [self.bitmaps[t].eq(bitmaps[t]) for t in range(S)]

        # check stage: each token is checked against the one before it in the stream as it enters the queue
        # (while a frame is good, that is the last good site), so the queue holds a token with its verdict
        tin = self.sites_in.payload
        entry_l = data.StructLayout({"tok": self._tok, "gi": unsigned(max(1, gib)), "first": 1, "last": 1, "bad": 1})
        # the queue: two entry registers, each with its range and permit verdicts as registers, refreshed every
        # cycle (from the incoming token when the entry is written): the take decision starts from flip-flops.
        # Occupancy and timing are those of a two-entry SyncFIFO (readable the cycle after it is written).
        ent = [Signal(entry_l, name=f"entry_{k}", reset_less=True) for k in range(2)]  # entry_k_valid resets
        ent_v = [Signal(name=f"entry_{k}_valid") for k in range(2)]
        ent_range = [Signal(name=f"entry_{k}_outside") for k in range(2)]  # first beat outside the frame
        ent_permit = [Signal(name=f"entry_{k}_permit") for k in range(2)]  # its row's slot is free
        wp, rp = Signal(), Signal()
        w_ready = ~(ent_v[0] & ent_v[1])
        m.d.comb += self.sites_in.ready.eq(w_ready)
        put = self.sites_in.valid & w_ready
        c_gi = Signal(max(1, gib))
        prev_y, prev_x, prev_any = Signal(cfg.y_bits, reset_less=True), Signal(cfg.x_bits, reset_less=True), Signal()
        c_first = c_gi == 0
        c_last = c_gi == Gi - 1
        key_le = (tin.y < prev_y) | ((tin.y == prev_y) & (tin.x <= prev_x))
        bad_first = prev_any & key_le
        bad_next = (tin.y != prev_y) | (tin.x != prev_x)
        entry = Signal(entry_l)
        m.d.comb += [entry.tok.eq(tin), entry.gi.eq(c_gi), entry.first.eq(c_first), entry.last.eq(c_last),
                     entry.bad.eq(~tin.eof & Mux(c_first, bad_first, bad_next))]
        with m.If(put):
            with m.If(tin.eof):
                m.d.sync += [c_gi.eq(0), prev_any.eq(0)]
            with m.Else():
                m.d.sync += [c_gi.eq(Mux(c_last, 0, c_gi + 1)), prev_y.eq(tin.y), prev_x.eq(tin.x)]
                with m.If(c_last):
                    m.d.sync += prev_any.eq(1)
        # the verdicts of the incoming token and of each entry are formed side by side and the write picks one,
        # so the compares start from registers and the write decision (the queue's fill) only drives a mux
        # the shape is compared against copies of it kept here (a cycle behind the engine's, and a load spans
        # at least three beats before `loaded` rises, so no token is taken on a stale verdict): the compares
        # start from flip-flops placed beside them, not from registers that the whole engine reads
        h_m1, w_m1 = Signal.like(self.height_m1, name="shape_h_m1"), Signal.like(self.width_m1, name="shape_w_m1")
        m.d.sync += [h_m1.eq(self.height_m1), w_m1.eq(self.width_m1)]

        def verdicts(tok):
            return (tok.y > h_m1) | (tok.x > w_m1), tok.y < self.permit_row

        in_range, in_permit = verdicts(tin)
        for k in range(2):
            writing = put & (wp == k)
            k_range, k_permit = verdicts(ent[k].tok)
            # an entry loads whenever it is empty (the one written is empty): its payload's enable is its own
            # valid flag, not the producer's valid, which would drive the enable of every payload bit
            with m.If(~ent_v[k]):
                m.d.sync += ent[k].eq(entry)
            with m.If(writing):
                m.d.sync += ent_v[k].eq(1)
            m.d.sync += [ent_range[k].eq(Mux(writing, in_range, k_range)),
                         ent_permit[k].eq(Mux(writing, in_permit, k_permit))]
        with m.If(put):
            m.d.sync += wp.eq(~wp)
        got = Signal(entry_l)
        head_v, head_range, head_permit = Signal(), Signal(), Signal()
        m.d.comb += [got.eq(Mux(rp, ent[1], ent[0])), head_v.eq(Mux(rp, ent_v[1], ent_v[0])),
                     head_range.eq(Mux(rp, ent_range[1], ent_range[0])),
                     head_permit.eq(Mux(rp, ent_permit[1], ent_permit[0]))]
        head = got.tok

        last_y, has_last = self.last_y, self.has_last
        err, discard, eof_seen, busy = self.error, Signal(), self.eof_seen, self.busy
        first_beat, last_beat = got.first, got.last
        # the range verdict is refreshed every cycle, so a shape loaded after a token entered the queue is the
        # one it is checked against (no token is taken during a load); the permit verdict is a cycle old
        bad = Signal()
        m.d.comb += bad.eq(got.bad | (~head.eof & first_beat & head_range))
        open_ = Signal()
        m.d.comb += open_.eq(self.loaded & ~eof_seen & ~self.hold)
        take = Signal()
        m.d.comb += take.eq(head_v & open_ & (discard | head.eof | bad | head_permit))
        with m.If(take):
            m.d.sync += rp.eq(~rp)
            for k in range(2):
                with m.If((rp == k) & ~(put & (wp == k))):
                    m.d.sync += ent_v[k].eq(0)
        write = take & ~head.eof & ~discard & ~bad

        # a good first beat at the head, taken or not, shows every row above its row complete
        with m.If(head_v & open_ & ~head.eof & first_beat & ~bad & ~discard):
            m.d.sync += self.done_rows.eq(head.y)
        with m.If(take):
            m.d.sync += busy.eq(1)
            with m.If(head.eof):
                m.d.sync += [eof_seen.eq(1), discard.eq(0)]
                with m.If(~first_beat | head.error):
                    m.d.sync += err.eq(1)
            with m.Elif(discard):
                pass
            with m.Elif(bad):
                m.d.sync += [err.eq(1), discard.eq(1)]
            with m.Elif(last_beat):
                m.d.sync += [has_last.eq(1), last_y.eq(head.y)]

        # write stage: memory word, bitmap bit, row tag, all from registers
        w_en, w_new, w_set = Signal(), Signal(), Signal()
        # the write's data (no reset: used only with w_en, which has one)
        w_slot = Signal(max(1, sb), reset_less=True)
        w_x = Signal(cfg.x_bits, reset_less=True)
        w_y = Signal(cfg.y_bits, reset_less=True)
        w_addr = Signal(cfg.lb_addr_bits, reset_less=True)
        w_data = Signal(cfg.buffer_word_bits, reset_less=True)
        slot_in = head.y[:sb] if sb else Const(0, 1)
        fields = ([got.gi[:gib]] if gib else []) + [head.x] + ([head.y[:sb]] if sb else [])
        m.d.sync += [w_en.eq(write), w_new.eq(first_beat & (~has_last | (head.y != last_y))),
                     w_set.eq(last_beat), w_slot.eq(slot_in), w_x.eq(head.x), w_y.eq(head.y),
                     w_addr.eq(Cat(*fields)), w_data.eq(head.data.as_value())]
        m.d.comb += [mem.w_addr.eq(w_addr), mem.w_data.eq(w_data), mem.w_en.eq(w_en)]
        acc_eof = Signal()
        m.d.sync += acc_eof.eq(take & head.eof)
        m.d.comb += [self.accepted.valid.eq(w_en | acc_eof), self.accepted.payload.data.eq(w_data),
                     self.accepted.payload.eof.eq(acc_eof)]
        bit = Signal(W)
        m.d.comb += bit.eq(Mux(w_set, Const(1, W) << w_x, 0))
        for t in range(S):
            hit = w_en & ((w_slot == t) if sb else Const(1, 1))
            with m.If(hit):
                m.d.sync += bitmaps[t].eq(Mux(w_new, 0, bitmaps[t]) | bit)
                with m.If(w_new):
                    m.d.sync += tags[t].eq(w_y)

        with m.If(self.frame_reset):
            m.d.sync += [err.eq(0), discard.eq(0), eof_seen.eq(0), self.done_rows.eq(0), has_last.eq(0),
                         busy.eq(0)]
            m.d.sync += [tags[t].eq(no_row) for t in range(S)]
        return m
