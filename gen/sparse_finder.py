"""The sparse engine's site finder: walks the output rows of a frame once their input rows are complete,
and hands on each output site with its tap mask (the active in-frame inputs of its window), in raster
order, then one eof site (docs/specs/sparse-conv.md).

Inputs from the line buffer: the per-slot bitmaps and row tags, ``done_rows`` (input rows below it are
complete), ``eof_seen``, ``has_last``/``last_y`` (the frame's last good site) and ``error``.
Stream ``sites`` out: {oy, ox, taps, eof, error}, through a small queue. ``row`` (out) is the oldest
output row the finder still holds.

Pipeline (no stage decodes the whole row width in one cycle). Rows go down four row stages, one row each,
a row entering a stage the cycle the row ahead leaves it: issue (the row's input rows complete), slot
look-up by tag (registered one-hots), bitmap copy, scan (centre row, chunk mask of ``cfg.finder_chunk``
output columns). So empty rows pass one a cycle, and the next rows load while the scanned row's chunks are
handed on. Per site, chunk stage A picks the scanned row's lowest non-empty chunk (a one-hot), A2 copies
that chunk's bits and window, A3 splits off its lowest site, B hands on one site a cycle as a one-hot, and
the last stage C1 forms the site's column (one-hot index, concatenated with the chunk) and its tap mask
(one-hot AND-OR) into the queue. Every chunk carries its row. Timing: ``finder_row_stages``,
``finder_chunk_stages`` (golden/sparse_rtl_cycles.py).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.config.sparse_conv import SparseConvConfig

from .pipeline import at_most_one, lowest_one_hot, one_hot_index, or_all
from .sparse_sequencer import site_layout

__all__ = ["SiteFinder"]


class SiteFinder(wiring.Component):
    def __init__(self, cfg: SparseConvConfig):
        self.cfg = cfg
        S, W = cfg.buffer_slots, cfg.max_width
        super().__init__({
            "bitmaps": In(data.ArrayLayout(unsigned(W), S)),
            "tags": In(data.ArrayLayout(unsigned(cfg.tag_bits), S)),
            "done_rows": In(unsigned(cfg.y_bits + 2)),
            "eof_seen": In(1),
            "has_last": In(1),
            "last_y": In(unsigned(cfg.y_bits)),
            "error": In(1),
            "frame_reset": In(1),
            "sites": Out(stream.Signature(site_layout(cfg))),
            "row": Out(unsigned(cfg.out_y_bits)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        S, W, Wo, s, h = cfg.buffer_slots, cfg.max_width, cfg.max_out_width, cfg.stride, cfg.halo
        K = cfg.finder_chunk
        NC = -(-Wo // K)
        three = cfg.kernel == 3
        nrows = 3 if three else 1
        span = s * (K - 1) + 3 if three else 1  # window columns a chunk's sites read, from s*K*c - 1
        rb, oyb = cfg.y_bits + 2, cfg.out_y_bits

        m.submodules.queue = q = fifo.SyncFIFO(width=site_layout(cfg).size, depth=cfg.site_queue_depth)
        wiring.connect(m, q.r_stream, wiring.flipped(self.sites))

        # ---- the row pipeline: issue (I), slot look-up (S), bitmap copy (W), scan (C); one row per stage, each
        # stage moving on when the next is free, so an empty row passes in a cycle a stage and the next rows
        # load while the scanned row's chunks are handed on
        f_row = Signal(oyb + 1)  # the next row to issue
        cy = Signal(rb)  # f_row * stride
        need = Signal(rb, init=h + 1)  # done_rows must reach this: f_row * stride + halo + 1
        i_v, s_v, w_v, c_v = Signal(), Signal(), Signal(), Signal()
        i_row, s_row, w_row, c_row = (Signal(oyb, name=f"{n}_row") for n in "iswc")
        # the input rows the issued row's window reads (f_row * stride + d, d in -1..1), registered at issue so
        # that the slot look-up compares flip-flops with the row tags
        i_rows = [Signal(rb, name=f"i_in_row_{k}", reset_less=True) for k in range(nrows)]
        i_top = Signal()  # the issued row is the frame's first (it has no row above)
        # the stages' data (no reset: each is loaded as its stage's valid is set)
        sel = [Signal(S, name=f"sel_{k}", reset_less=True) for k in range(nrows)]
        win = [Signal(W, name=f"win_{k}", reset_less=True) for k in range(nrows)]
        cwin = [Signal(W, name=f"cwin_{k}", reset_less=True) for k in range(nrows)] if three else []
        # the scanned row's sites: for stride-1 3x3 kinds the window's centre row itself, else a register
        centre_reg = Signal(NC * K, reset_less=True) if not (three and s == 1) else None
        centre = centre_reg if centre_reg is not None else Cat(cwin[1], Const(0, NC * K - W))
        nz = Signal(NC)  # the scanned row's chunks not yet handed on
        a_v = Signal()
        ends = Signal()  # the frame's rows are all issued (end of frame seen)
        eof_pend = Signal()

        # the issue decision starts from flip-flops: the line buffer's status is compared a cycle late, against
        # this cycle's and the next row's `need` / `f_row` (the one a row issued last cycle makes current)
        last_out_row = self.last_y if s == 1 else self.last_y >> 1
        issued = Signal()  # a row was issued last cycle
        eof_r, has_last_r = Signal(), Signal()
        rdy_now, rdy_next, over_now, over_next = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [eof_r.eq(self.eof_seen), has_last_r.eq(self.has_last),
                     rdy_now.eq(self.done_rows >= need), rdy_next.eq(self.done_rows >= need + s),
                     over_now.eq(f_row > last_out_row), over_next.eq(f_row >= last_out_row), issued.eq(0)]
        rows_over = eof_r & (~has_last_r | Mux(issued, over_next, over_now))
        ready = eof_r | Mux(issued, rdy_next, rdy_now)
        nz_zero = Signal(init=1)  # nz == 0 as a register, kept a step ahead (the stages' free chain starts from it)
        # a stage may load when it is empty or moves on this cycle; the scan and copy stages know that from
        # the stage after them, the look-up and issue stages only from the next stage being empty (so their
        # load enables are one LUT of flip-flops, at the price of a bubble when every stage is full)
        c_free = ~c_v | (nz_zero & ~a_v)  # the scanned row's last chunk has left stage A
        w_free = ~w_v | c_free
        s_free = ~s_v | ~w_v
        i_free = ~i_v | ~s_v
        with m.If(c_v & c_free):
            m.d.sync += c_v.eq(0)
        with m.If(w_v & c_free):
            m.d.sync += [c_v.eq(1), c_row.eq(w_row), w_v.eq(0)]
            if s == 1:
                c_bits = win[1] if three else win[0]
            else:
                pair = win[1] | win[2]
                c_bits = Cat(*[pair[2 * i] | (pair[2 * i + 1] if 2 * i + 1 < W else 0) for i in range(Wo)])
            c_nz = Cat(*[c_bits[c * K:(c + 1) * K] != 0 for c in range(NC)])
            m.d.sync += [nz.eq(c_nz), nz_zero.eq(c_nz == 0)]
            if centre_reg is not None:
                m.d.sync += centre_reg.eq(c_bits)
            if three:
                m.d.sync += [a.eq(b) for a, b in zip(cwin, win, strict=True)]
        with m.If(s_v & w_free):
            m.d.sync += [w_v.eq(1), w_row.eq(s_row), s_v.eq(0)]
            for k in range(nrows):
                m.d.sync += win[k].eq(or_all([Mux(sel[k][t], self.bitmaps[t], 0) for t in range(S)]))
        with m.If(i_v & s_free):
            m.d.sync += [s_v.eq(1), s_row.eq(i_row), i_v.eq(0)]
            for k in range(nrows):
                d = k - 1 if three else 0
                row_k = i_rows[k]
                for t in range(S):
                    hit = (row_k[:cfg.slot_bits] == t) if cfg.slot_bits else Const(1, 1)
                    hit = hit & (self.tags[t] == row_k)
                    if d < 0:
                        hit = hit & ~i_top
                    m.d.sync += sel[k][t].eq(hit)
        with m.If(i_free & ~ends):
            with m.If(rows_over):
                m.d.sync += ends.eq(1)
            with m.Elif(ready):
                m.d.sync += [i_rows[k].eq(cy + (k - 1 if three else 0)) for k in range(nrows)]
                m.d.sync += [i_v.eq(1), i_row.eq(f_row), i_top.eq(cy == 0), issued.eq(1),
                             f_row.eq(f_row + 1), cy.eq(cy + s), need.eq(need + s)]

        # ---- the chunk pipeline: A (the lowest chunk left, as a one-hot), A2 (its bits and window columns),
        # A3 (its lowest site and the rest), B (hands on a site a cycle), C1 (column and tap mask, into the queue)
        a_oh = Signal(NC)
        a2_v, a2_ci, a2_oy = Signal(), Signal(max(1, (NC - 1).bit_length())), Signal(oyb)
        a2_bits = Signal(K)
        a2_win = [Signal(span, name=f"a2_win_{k}") for k in range(nrows)]
        b_ci, b_oy = Signal.like(a2_ci), Signal(oyb)
        b_win = [Signal(span, name=f"b_win_{k}") for k in range(nrows)]
        c1_v, c1_oh, c1_ci, c1_oy = Signal(), Signal(K), Signal.like(a2_ci), Signal(oyb)
        c1_win = [Signal(span, name=f"c1_win_{k}") for k in range(nrows)]

        # queue write: the site (column and taps from the one-hot), or the eof site
        c1_x = one_hot_index(m, c1_oh, "site_x") if K > 1 else Const(0, 1)
        taps = []
        if three:
            for k in range(nrows):
                for dx in range(3):
                    taps.append(or_all([c1_oh[j] & c1_win[k][s * j + dx] for j in range(K)]))
        else:
            taps.append(Const(1, 1))
        qp = Signal(site_layout(cfg))
        m.d.comb += [q.w_data.eq(qp), q.w_en.eq(c1_v | eof_pend)]
        with m.If(c1_v):
            m.d.comb += [qp.oy.eq(c1_oy), qp.ox.eq(Cat(c1_x, c1_ci) if K > 1 else c1_ci), qp.taps.eq(Cat(*taps))]
        with m.Else():
            m.d.comb += [qp.eof.eq(1), qp.error.eq(self.error)]
        c1_load = ~c1_v | q.w_rdy
        with m.If(eof_pend & ~c1_v & q.w_rdy):
            m.d.sync += eof_pend.eq(0)

        # emit stage B: the site one-hot to hand on next and the chunk's other sites (split a stage ahead, so
        # its loop is one carry chain and a zero test of a register)
        b_v = Signal()
        b_oh, b_rest = Signal(K), Signal(K)
        a3_v, a3_oh, a3_rest, a3_ci, a3_oy = Signal(), Signal(K), Signal(K), Signal.like(a2_ci), Signal(oyb)
        a3_win = [Signal(span, name=f"a3_win_{k}") for k in range(nrows)]
        rest_oh = lowest_one_hot(m, b_rest, "rest_oh")
        # b_rest == 0 as a register, kept a step ahead, so the loads below start from flip-flops
        b_rest_zero, a3_rest_zero = Signal(init=1), Signal(init=1)
        take = c1_load & b_rest_zero  # B empties (or is empty) this cycle: it may load the next chunk
        with m.If(c1_load):
            m.d.sync += [c1_v.eq(b_v), c1_oh.eq(b_oh), c1_ci.eq(b_ci), c1_oy.eq(b_oy)]
            m.d.sync += [a.eq(b) for a, b in zip(c1_win, b_win, strict=True)]
            m.d.sync += [b_oh.eq(rest_oh), b_rest.eq(b_rest & ~rest_oh),
                         b_rest_zero.eq(at_most_one(b_rest))]
        a3_load = ~a3_v | take
        with m.If(take):
            m.d.sync += [b_v.eq(a3_v), b_oh.eq(a3_oh), b_rest.eq(Mux(a3_v, a3_rest, 0)), b_ci.eq(a3_ci),
                         b_oy.eq(a3_oy), b_rest_zero.eq(~a3_v | a3_rest_zero)]
            m.d.sync += [a.eq(b) for a, b in zip(b_win, a3_win, strict=True)]
        # split stage A3: the chunk's lowest site and the rest
        a2_oh = lowest_one_hot(m, a2_bits, "a2_oh")
        with m.If(a3_load):
            m.d.sync += [a3_v.eq(a2_v), a3_oh.eq(a2_oh), a3_rest.eq(a2_bits & ~a2_oh), a3_ci.eq(a2_ci),
                         a3_oy.eq(a2_oy), a3_rest_zero.eq(at_most_one(a2_bits))]
            m.d.sync += [a.eq(b) for a, b in zip(a3_win, a2_win, strict=True)]
        a2_load = ~a2_v | a3_load
        with m.If(a3_load):
            m.d.sync += a2_v.eq(0)
        # chunk copy A2: the chunk's bits and window columns (one-hot AND-OR over the chunks of the scanned row)
        a_load = ~a_v | a2_load
        with m.If(a2_load & a_v):
            m.d.sync += [a2_v.eq(1), a2_oy.eq(c_row), a2_ci.eq(one_hot_index(m, a_oh, "a_ci") if NC > 1 else 0),
                         a2_bits.eq(or_all([Mux(a_oh[c], centre[c * K:(c + 1) * K], 0) for c in range(NC)]))]
            for k in range(nrows):
                if three:
                    ext = Cat(Const(0, 1), cwin[k], Const(0, s * K * NC + span))
                    m.d.sync += a2_win[k].eq(or_all([Mux(a_oh[c], ext[s * K * c:s * K * c + span], 0)
                                                  for c in range(NC)]))
        with m.If(a2_load):
            m.d.sync += a_v.eq(0)
        nz_oh = lowest_one_hot(m, nz, "chunk_oh")
        with m.If(a_load & c_v & ~nz_zero):
            m.d.sync += [a_v.eq(1), a_oh.eq(nz_oh), nz.eq(nz & ~nz_oh), nz_zero.eq(at_most_one(nz))]

        # ---- end of frame: once the rows are over and every stage is empty, the eof site
        idle = ~(i_v | s_v | w_v | c_v | a2_v | a3_v | b_v | c1_v)
        eof_done = Signal()
        with m.If((ends | (i_free & rows_over)) & idle & ~eof_done):
            m.d.sync += [eof_pend.eq(1), eof_done.eq(1)]
        with m.If(self.frame_reset):
            m.d.sync += [f_row.eq(0), cy.eq(0), need.eq(h + 1), ends.eq(0), eof_done.eq(0), issued.eq(0),
                         eof_r.eq(0), rdy_now.eq(0), rdy_next.eq(0)]

        # ---- the oldest output row the finder holds: the queue's head, else the oldest stage's (registers a
        # cycle behind, which only ever reports an older row)
        chunk_v, chunk_row, rows_row = Signal(), Signal(oyb), Signal(oyb)
        m.d.sync += [chunk_v.eq(c1_v | b_v | a3_v | a2_v),
                     chunk_row.eq(Mux(c1_v, c1_oy, Mux(b_v, b_oy, Mux(a3_v, a3_oy, a2_oy)))),
                     rows_row.eq(Mux(c_v, c_row, Mux(w_v, w_row, Mux(s_v, s_row, Mux(i_v, i_row, f_row)))))]
        with m.If(self.frame_reset):
            m.d.sync += [chunk_v.eq(0), rows_row.eq(0)]
        head = Signal(site_layout(cfg))
        m.d.comb += head.eq(q.r_data)
        m.d.comb += self.row.eq(Mux(q.r_rdy, head.oy, Mux(chunk_v, chunk_row, rows_row)))
        return m
