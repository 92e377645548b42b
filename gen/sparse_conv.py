"""The sparse-dataflow convolution layer engine, and chains of them (docs/specs/sparse-conv.md).

Streams (amaranth.lib.stream, valid/ready):

- ``params`` in: one load is ``cfg.param_words`` beats, in order: the frame-shape word
  (height - 1, then width - 1 above it), the weight words (word ``(tap * Go + go) * Gi + gi`` holds
  W[go*PO + o, gi*PI + i, tap] in lane ``o * PI + i``; depthwise: word ``tap * G + g`` holds
  W[g*P + l, 0, tap] in lane l), then ``cout / po`` requant words (PO biases, then PO scales).
  It is taken only between frames; sites are refused until a load has completed.
- ``sites_in`` in: a frame as tokens in raster order, ``cin / pi`` beats per active site (channels
  ``gi*PI .. gi*PI + PI - 1`` in beat gi, each beat carrying the site's y and x), then one beat with
  ``eof`` set. ``error`` on the end-of-frame beat marks a frame an upstream engine flagged.
- ``sites_out`` out: the output frame the same way, ``cout / po`` beats per output site, then the
  end-of-frame beat, whose ``error`` is set when the frame had a token out of raster order or
  outside the frame (or the input's end-of-frame beat had ``error``). Such a frame's output is the
  layer applied to the tokens before the bad one; the rest, up to the end-of-frame token, is dropped.

Microarchitecture. The line buffer (amaranth.lib.memory) holds ``cfg.buffer_slots`` input rows
(the kernel's window plus ``stride * prefetch_rows``) indexed by row mod slots, one word per (slot,
column, channel group), with an active-site bitmap and a row tag per slot in registers. Ingest
writes a token as soon as its slot's old row is no longer read. A row finder walks the output rows
once the input rows they read are complete (a later token, or the end of the frame, has been seen),
takes each output site from the row's bitmap with a priority encoder and computes its tap mask, the
active in-frame neighbours; it works one site ahead of the MAC sequencer. The sequencer issues one
MAC step per cycle over active taps only: output group outer, tap, input group inner (depthwise:
group outer, tap inner), each step a PI x PO block of products (depthwise: P lanes). Pipeline: read
line buffer and weights -> products summed over PI -> accumulate (seeded with the bias) -> times
scale -> shift, clamp, ReLU -> output register. All stages after the sequencer advance together
and stall only on output backpressure.

Timing. The numbers the cycle model (golden/sparse_rtl_cycles.py) reads are properties of the config:
``halo`` and ``buffer_slots`` (read below), and ``mac_pipeline_depth``, ``site_queue_depth``,
``site_handoff_latency``, ``finder_row_cycles``, ``finder_site_cycles``, ``row_ready_latency`` and
``eof_latency``, which describe the structure below: `_built` refuses a config whose number differs from
what is built, so a change to the structure must change the config, and the model follows.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from accelkit.config import ConfigError, require
from accelkit.config.sparse_conv import SparseChainConfig, SparseConvConfig

__all__ = ["token_layout", "in_token_layout", "out_token_layout", "engine_signature", "SparseConvEngine",
           "SparseConvChain"]


def token_layout(lanes: int, feature_bits: int, y_bits: int, x_bits: int) -> data.StructLayout:
    """One beat of a site token: feature lanes (raw bits), coordinates, end-of-frame and error flags."""
    return data.StructLayout({"data": data.ArrayLayout(unsigned(feature_bits), lanes), "y": unsigned(y_bits),
                              "x": unsigned(x_bits), "eof": 1, "error": 1})


def in_token_layout(cfg: SparseConvConfig) -> data.StructLayout:
    return token_layout(cfg.pi, cfg.feature_bits, cfg.y_bits, cfg.x_bits)


def out_token_layout(cfg: SparseConvConfig) -> data.StructLayout:
    return token_layout(cfg.po, cfg.feature_bits, cfg.out_y_bits, cfg.out_x_bits)


def engine_signature(cfg: SparseConvConfig) -> wiring.Signature:
    return wiring.Signature({
        "params": In(stream.Signature(unsigned(cfg.param_bits))),
        "sites_in": In(stream.Signature(in_token_layout(cfg))),
        "sites_out": Out(stream.Signature(out_token_layout(cfg))),
    })


def _built(cfg: SparseConvConfig, prop: str, built: int, what: str) -> None:
    """The config's timing number `prop` must be what the generator builds (`what`)."""
    require(getattr(cfg, prop) == built, prop, f"{built}: gen/sparse_conv.py builds {what}", getattr(cfg, prop))


def _lowest_set(m: Module, vec, width: int, name: str):
    """Index of the lowest set bit of `vec` (0 when none), a combinational priority encoder."""
    idx = Signal(range(max(width, 2)), name=name)
    for i in reversed(range(width)):
        with m.If(vec[i]):
            m.d.comb += idx.eq(i)
    return idx


class SparseConvEngine(wiring.Component):
    """One layer engine of `cfg` (see the module docstring for the streams)."""

    def __init__(self, cfg: SparseConvConfig):
        if not isinstance(cfg, SparseConvConfig):
            raise ConfigError(f"cfg={type(cfg).__name__} is invalid: a SparseConvConfig")
        require(not cfg.residual, "residual", "False: the RTL engine has no identity input", cfg.residual)
        self.cfg = cfg
        super().__init__(engine_signature(cfg))

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        S, W, Wo = cfg.buffer_slots, cfg.max_width, cfg.max_out_width
        Gi, Go, PI, PO = cfg.in_groups, cfg.requant_groups, cfg.pi, cfg.po
        dw, stride, fb, wb = cfg.depthwise, cfg.stride, cfg.feature_bits, cfg.weight_bits
        three = cfg.kernel == 3
        offs = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)] if three else [(0, 0)]
        T = len(offs)
        off_lo = cfg.halo  # an output row r reads input rows stride*r - off_lo .. stride*r + off_lo
        row_shape = unsigned(cfg.y_bits + 2)
        tag_bits = cfg.y_bits + 1
        no_row = (1 << tag_bits) - 1  # tag of a slot holding no row of this frame

        # ------------------------------------------------------------------ storage
        # (memories are at least 2 deep: a 1-word memory has a 0-bit address that Verilog cannot declare)
        m.submodules.line_buffer = lb = Memory(shape=unsigned(cfg.buffer_word_bits), depth=max(2, cfg.buffer_words),
                                               init=[])
        m.submodules.weights = wmem = Memory(shape=unsigned(cfg.weight_word_bits), depth=max(2, cfg.weight_words),
                                             init=[])
        m.submodules.requant = rqmem = Memory(shape=unsigned(cfg.requant_word_bits), depth=max(2, Go), init=[])
        lb_w, lb_r = lb.write_port(), lb.read_port(transparent_for=())
        w_w, w_r = wmem.write_port(), wmem.read_port(transparent_for=())
        rq_w, rq_r = rqmem.write_port(), rqmem.read_port(transparent_for=())
        bitmap = [Signal(W, name=f"bitmap_{s}") for s in range(S)]
        tag = [Signal(tag_bits, init=no_row, name=f"row_tag_{s}") for s in range(S)]

        # ------------------------------------------------------------------ params load
        pcount = Signal(range(cfg.param_words))
        loaded = Signal()
        frame_busy = Signal()
        height_m1 = Signal(cfg.y_bits)
        width_m1 = Signal(cfg.x_bits)
        pw = self.params.payload
        pfire = self.params.valid & self.params.ready
        nw = cfg.weight_words
        m.d.comb += [
            self.params.ready.eq(~frame_busy),
            w_w.addr.eq(pcount - 1), w_w.data.eq(pw[:cfg.weight_word_bits]),
            w_w.en.eq(pfire & (pcount >= 1) & (pcount <= nw)),
            rq_w.addr.eq(pcount - 1 - nw), rq_w.data.eq(pw[:cfg.requant_word_bits]),
            rq_w.en.eq(pfire & (pcount > nw)),
        ]
        with m.If(pfire):
            with m.If(pcount == cfg.param_words - 1):
                m.d.sync += [pcount.eq(0), loaded.eq(1)]
            with m.Else():
                m.d.sync += pcount.eq(pcount + 1)
            with m.If(pcount == 0):
                m.d.sync += [loaded.eq(0), height_m1.eq(pw[:cfg.y_bits]),
                             width_m1.eq(pw[cfg.y_bits:cfg.y_bits + cfg.x_bits])]

        # ------------------------------------------------------------------ shared frame state
        err = Signal()  # this frame had a bad token (or arrived flagged)
        discard = Signal()  # dropping tokens up to the end-of-frame token
        eof_seen = Signal()
        done_rows = Signal(row_shape)  # input rows below this one are complete
        has_last = Signal()
        last_y, last_x = Signal(cfg.y_bits), Signal(cfg.x_bits)  # last complete site
        use_row = Signal(row_shape)  # oldest output row still being read (sequencer, prefetch or finder)
        frame_reset = Signal()

        # ------------------------------------------------------------------ ingest
        tin = self.sites_in.payload
        gi = Signal(range(max(Gi, 2)))
        cur_y, cur_x = Signal(cfg.y_bits), Signal(cfg.x_bits)
        first_beat = gi == 0
        key_le = (tin.y < last_y) | ((tin.y == last_y) & (tin.x <= last_x))
        bad_first = (has_last & key_le) | (tin.y > height_m1) | (tin.x > width_m1)
        bad_next = (tin.y != cur_y) | (tin.x != cur_x)
        bad = Signal()
        m.d.comb += bad.eq(~tin.eof & Mux(first_beat, bad_first, bad_next))
        permit = Signal()
        m.d.comb += permit.eq(tin.y + off_lo < use_row * stride + S)
        open_ = Signal()
        # a params load offered between frames goes first: taking its shape word and a frame's first token in
        # one cycle would leave the frame busy with no weights loaded, a deadlock (found by the formal proof)
        m.d.comb += open_.eq(loaded & ~eof_seen & ~pfire)
        m.d.comb += self.sites_in.ready.eq(open_ & (discard | tin.eof | bad | permit))
        in_fire = self.sites_in.valid & self.sites_in.ready
        write = Signal()
        m.d.comb += write.eq(in_fire & ~tin.eof & ~discard & ~bad)
        slot_in = Signal(range(max(S, 2)))
        m.d.comb += slot_in.eq(tin.y % S)
        m.d.comb += [lb_w.addr.eq((slot_in * W + tin.x) * Gi + gi), lb_w.data.eq(tin.data), lb_w.en.eq(write)]
        # a peeked (not yet taken) good first beat of row y shows that every row above y is complete (registered,
        # as is eof_seen: the finder sees a row complete row_ready_latency cycles after)
        _built(cfg, "row_ready_latency", 1, "one register (done_rows, eof_seen) between ingest and the finder")
        with m.If(self.sites_in.valid & open_ & ~tin.eof & first_beat & ~bad & ~discard):
            m.d.sync += done_rows.eq(tin.y)
        with m.If(in_fire):
            m.d.sync += frame_busy.eq(1)
            with m.If(tin.eof):
                m.d.sync += [eof_seen.eq(1), discard.eq(0), gi.eq(0)]
                with m.If(~first_beat | tin.error):
                    m.d.sync += err.eq(1)
            with m.Elif(discard):
                pass
            with m.Elif(bad):
                m.d.sync += [err.eq(1), discard.eq(1), gi.eq(0)]
            with m.Else():
                with m.If(first_beat):
                    m.d.sync += [cur_y.eq(tin.y), cur_x.eq(tin.x)]
                last_beat = gi == Gi - 1
                with m.If(last_beat):
                    m.d.sync += [gi.eq(0), has_last.eq(1), last_y.eq(tin.y), last_x.eq(tin.x)]
                with m.Else():
                    m.d.sync += gi.eq(gi + 1)
                for s in range(S):
                    with m.If(slot_in == s):
                        new_row = first_beat & (tag[s] != tin.y)
                        with m.If(new_row):
                            m.d.sync += tag[s].eq(tin.y)
                        m.d.sync += bitmap[s].eq(Mux(new_row, 0, bitmap[s])
                                                 | Mux(last_beat, Const(1, W) << tin.x, 0))

        def row_bits(row, name):
            """The bitmap of input row `row` (all zero unless a slot holds that row)."""
            bits = Signal(W, name=name)
            for s in range(S):
                with m.If((row % S == s) & (tag[s] == row)):
                    m.d.comb += bits.eq(bitmap[s])
            return bits

        # ------------------------------------------------------------------ row finder
        f_row = Signal(row_shape)  # output row
        f_rem = Signal(Wo)  # its sites not yet handed on
        f_scan = Signal()
        f_done = Signal()
        row_ready = Signal()
        m.d.comb += row_ready.eq(eof_seen | (done_rows > f_row * stride + off_lo))
        last_out_row = last_y if stride == 1 else last_y >> 1
        rows_over = Signal()
        m.d.comb += rows_over.eq(eof_seen & (~has_last | (f_row > last_out_row)))
        centre = Signal(Wo)
        if stride == 1:
            m.d.comb += centre.eq(row_bits(f_row, "centre_row"))
        else:
            pair = Signal(W)
            m.d.comb += pair.eq(row_bits(f_row * 2, "centre_row0") | row_bits(f_row * 2 + 1, "centre_row1"))
            m.d.comb += centre.eq(Cat(*[pair[2 * i] | (pair[2 * i + 1] if 2 * i + 1 < W else 0)
                                        for i in range(Wo)]))
        f_x = _lowest_set(m, f_rem, Wo, "finder_x")
        f_rest = Signal(Wo)
        m.d.comb += f_rest.eq(f_rem & (f_rem - 1))
        # tap mask of the site (f_row, f_x): active neighbours among its window
        cy, cx = Signal(row_shape), Signal(cfg.x_bits + 1)
        m.d.comb += [cy.eq(f_row * stride), cx.eq(f_x * stride)]
        taps = Signal(T)
        if three:
            wins = []
            for dy in (-1, 0, 1):
                r = row_bits(cy + dy if dy >= 0 else cy - 1, f"win_row_{dy + 1}")
                ext = Signal(W + 2, name=f"win_ext_{dy + 1}")
                m.d.comb += ext.eq(Cat(Const(0, 1), r, Const(0, 1)))
                win = ext.bit_select(cx, 3)
                if dy < 0:
                    win = Mux(cy == 0, 0, win)
                wins.append(win)
            m.d.comb += taps.eq(Cat(*wins))
        else:
            m.d.comb += taps.eq(1)

        # prefetch register between the finder and the sequencer
        _built(cfg, "site_queue_depth", 1, "one prefetch register between the finder and the sequencer")
        _built(cfg, "site_handoff_latency", 2, "the prefetch register, then the sequencer's site registers")
        _built(cfg, "finder_row_cycles", 1, "one finder cycle per output row (load its bitmap, or pass it)")
        _built(cfg, "finder_site_cycles", 1, "one finder cycle per site handed on")
        pf_valid = Signal()
        pf_oy, pf_ox, pf_taps = Signal(row_shape), Signal(range(max(Wo, 2))), Signal(T)
        pf_take = Signal()
        with m.If(pf_take):
            m.d.sync += pf_valid.eq(0)
        with m.If(~f_done & ~frame_reset):
            with m.If(~f_scan):
                with m.If(rows_over):
                    m.d.sync += f_done.eq(1)
                with m.Elif(row_ready):
                    with m.If(centre == 0):
                        m.d.sync += f_row.eq(f_row + 1)
                    with m.Else():
                        m.d.sync += [f_rem.eq(centre), f_scan.eq(1)]
            with m.Elif(~pf_valid | pf_take):
                m.d.sync += [pf_valid.eq(1), pf_oy.eq(f_row), pf_ox.eq(f_x), pf_taps.eq(taps), f_rem.eq(f_rest)]
                with m.If(f_rest == 0):
                    m.d.sync += [f_scan.eq(0), f_row.eq(f_row + 1)]

        # ------------------------------------------------------------------ MAC sequencer
        out = self.sites_out
        adv = Signal()
        m.d.comb += adv.eq(~out.valid | out.ready)
        sv = Signal()
        s_oy, s_ox = Signal(row_shape), Signal(range(max(Wo, 2)))
        s_taps, s_rem = Signal(T), Signal(T)
        s_go = Signal(range(max(Go, 2)))
        s_gi = Signal(range(max(Gi, 2)))
        gi_steps = 1 if dw else Gi
        m.d.comb += use_row.eq(Mux(sv, s_oy, Mux(pf_valid, pf_oy, f_row)))
        tap = _lowest_set(m, s_rem, T, "tap")
        rem_rest = Signal(T)
        m.d.comb += rem_rest.eq(s_rem & (s_rem - 1))
        gi_last = s_gi == gi_steps - 1
        acc_last = Signal()
        m.d.comb += acc_last.eq(gi_last & (rem_rest == 0))
        site_done = Signal()
        m.d.comb += site_done.eq(sv & acc_last & (s_go == Go - 1))
        acc_first = (s_rem == s_taps) & (s_gi == 0)
        m.d.comb += pf_take.eq(adv & pf_valid & (~sv | site_done))
        # neighbour address of the step
        dy_t, dx_t = Signal(2), Signal(2)  # offset + 1
        for t, (dy, dx) in enumerate(offs):
            with m.If(tap == t):
                m.d.comb += [dy_t.eq(dy + 1), dx_t.eq(dx + 1)]
        ny = Signal(row_shape)
        nx = Signal(cfg.x_bits + 2)
        m.d.comb += [ny.eq(s_oy * stride + dy_t - 1), nx.eq(s_ox * stride + dx_t - 1)]
        lb_group = s_go if dw else s_gi
        m.d.comb += [lb_r.addr.eq(((ny % S) * W + nx) * Gi + lb_group), lb_r.en.eq(adv),
                     w_r.en.eq(adv), rq_r.en.eq(adv)]
        if dw:
            m.d.comb += w_r.addr.eq(tap * Gi + s_go)
        else:
            m.d.comb += w_r.addr.eq((tap * Go + s_go) * Gi + s_gi)
        with m.If(adv):
            with m.If(sv):
                with m.If(~gi_last):
                    m.d.sync += s_gi.eq(s_gi + 1)
                with m.Else():
                    m.d.sync += s_gi.eq(0)
                    with m.If(rem_rest != 0):
                        m.d.sync += s_rem.eq(rem_rest)
                    with m.Else():
                        m.d.sync += [s_rem.eq(s_taps), s_go.eq(Mux(s_go == Go - 1, 0, s_go + 1))]
                with m.If(site_done):
                    m.d.sync += sv.eq(0)
            with m.If(pf_take):
                m.d.sync += [sv.eq(1), s_oy.eq(pf_oy), s_ox.eq(pf_ox), s_taps.eq(pf_taps), s_rem.eq(pf_taps),
                             s_go.eq(0), s_gi.eq(0)]

        # ------------------------------------------------------------------ MAC pipeline
        v1, first1, last1 = Signal(), Signal(), Signal()
        oy1, ox1, go1 = Signal.like(s_oy), Signal.like(s_ox), Signal.like(s_go)
        with m.If(adv):
            m.d.sync += [v1.eq(sv), first1.eq(acc_first), last1.eq(acc_last), oy1.eq(s_oy), ox1.eq(s_ox),
                         go1.eq(s_go)]
        m.d.comb += rq_r.addr.eq(go1)
        xs = []
        for i in range(PI):
            raw = lb_r.data[i * fb:(i + 1) * fb]
            xs.append(raw.as_signed() if cfg.signed_input else raw.as_unsigned())
        lanes = PI if dw else PO
        wlane = [w_r.data[k * wb:(k + 1) * wb].as_signed() for k in range(PI if dw else PI * PO)]
        v2, first2, last2 = Signal(), Signal(), Signal()
        oy2, ox2 = Signal.like(s_oy), Signal.like(s_ox)
        part2 = [Signal(signed(cfg.psum_bits), name=f"part2_{o}") for o in range(lanes)]
        with m.If(adv):
            m.d.sync += [v2.eq(v1), first2.eq(first1), last2.eq(last1), oy2.eq(oy1), ox2.eq(ox1)]
            for o in range(lanes):
                if dw:
                    m.d.sync += part2[o].eq(xs[o] * wlane[o])
                else:
                    terms = [xs[i] * wlane[o * PI + i] for i in range(PI)]
                    while len(terms) > 1:  # adder tree
                        terms = [terms[k] + terms[k + 1] if k + 1 < len(terms) else terms[k]
                                 for k in range(0, len(terms), 2)]
                    m.d.sync += part2[o].eq(terms[0])
        bb, sb = cfg.bias_bits, cfg.scale_bits
        bias = [rq_r.data[o * bb:(o + 1) * bb].as_signed() for o in range(PO)]
        scale = [rq_r.data[PO * bb + o * sb:PO * bb + (o + 1) * sb].as_unsigned() for o in range(PO)]
        acc = [Signal(signed(cfg.psum_bits), name=f"acc_{o}") for o in range(PO)]
        v3 = Signal()
        oy3, ox3 = Signal.like(s_oy), Signal.like(s_ox)
        pb3 = [Signal(signed(cfg.psum_bits), name=f"psum_bias_{o}") for o in range(PO)]
        sc3 = [Signal(unsigned(sb), name=f"scale3_{o}") for o in range(PO)]
        with m.If(adv):
            m.d.sync += [v3.eq(v2 & last2), oy3.eq(oy2), ox3.eq(ox2)]
            with m.If(v2):
                for o in range(PO):
                    total = Mux(first2, bias[o], acc[o]) + part2[o]
                    m.d.sync += [acc[o].eq(total), pb3[o].eq(total), sc3[o].eq(scale[o])]
        half = 1 << (cfg.shift - 1)
        v4 = Signal()
        oy4, ox4 = Signal.like(s_oy), Signal.like(s_ox)
        prod4 = [Signal(signed(cfg.requant_bits), name=f"requant_{o}") for o in range(PO)]
        with m.If(adv):
            m.d.sync += [v4.eq(v3), oy4.eq(oy3), ox4.eq(ox3)]
            m.d.sync += [prod4[o].eq(pb3[o] * sc3[o] + half) for o in range(PO)]
        q = (1 << (fb - 1)) - 1
        ys = []
        for o in range(PO):
            sh = Signal(signed(max(cfg.requant_bits - cfg.shift, 2)), name=f"shifted_{o}")
            m.d.comb += sh.eq(prod4[o] >> cfg.shift)
            lo = 0 if cfg.relu else -q
            ys.append(Mux(sh > q, q, Mux(sh < lo, lo, sh)))

        # ------------------------------------------------------------------ output and end of frame
        stages = [v1, v2, v3, v4, out.valid]  # read, products, accumulate, scale, output register
        _built(cfg, "mac_pipeline_depth", len(stages), "these registers from the sequencer to the output")
        _built(cfg, "eof_latency", 2, "f_done, then the output register, after the finder's last row")
        pipe_empty = ~sv & ~pf_valid & ~v1 & ~v2 & ~v3 & ~v4  # the stages before the output register
        send_eof = Signal()
        m.d.comb += send_eof.eq(f_done & pipe_empty & adv)
        with m.If(adv):
            m.d.sync += out.valid.eq(v4 | send_eof)
            with m.If(send_eof):
                m.d.sync += [out.payload.eof.eq(1), out.payload.error.eq(err), out.payload.y.eq(0),
                             out.payload.x.eq(0)]
                m.d.sync += [out.payload.data[o].eq(0) for o in range(PO)]
            with m.Else():
                m.d.sync += [out.payload.eof.eq(0), out.payload.error.eq(0), out.payload.y.eq(oy4),
                             out.payload.x.eq(ox4)]
                m.d.sync += [out.payload.data[o].eq(ys[o]) for o in range(PO)]
        m.d.comb += frame_reset.eq(send_eof)
        with m.If(frame_reset):
            m.d.sync += [err.eq(0), discard.eq(0), eof_seen.eq(0), done_rows.eq(0), has_last.eq(0), gi.eq(0),
                         frame_busy.eq(0), f_row.eq(0), f_scan.eq(0), f_done.eq(0)]
            m.d.sync += [t.eq(no_row) for t in tag]
        return m


class SparseConvChain(wiring.Component):
    """Layer engines of a SparseChainConfig connected stream to stream: ``sites_in`` feeds the first,
    the last drives ``sites_out``; engine i loads through ``params{i}``."""

    def __init__(self, cfg: SparseChainConfig):
        if not isinstance(cfg, SparseChainConfig):
            raise ConfigError(f"cfg={type(cfg).__name__} is invalid: a SparseChainConfig")
        require(cfg.link_latency == 0, "link_latency", "0: the chain wires each engine's output stream to the next "
                "engine's input", cfg.link_latency)
        self.cfg = cfg
        self.engines = [SparseConvEngine(l) for l in cfg.layers]
        ports = {f"params{i}": In(stream.Signature(unsigned(l.param_bits))) for i, l in enumerate(cfg.layers)}
        ports["sites_in"] = In(stream.Signature(in_token_layout(cfg.first)))
        ports["sites_out"] = Out(stream.Signature(out_token_layout(cfg.last)))
        super().__init__(wiring.Signature(ports))

    def elaborate(self, platform):
        m = Module()
        for i, e in enumerate(self.engines):
            m.submodules[f"layer{i}"] = e
            wiring.connect(m, wiring.flipped(getattr(self, f"params{i}")), e.params)
            if i:
                wiring.connect(m, self.engines[i - 1].sites_out, e.sites_in)
        wiring.connect(m, wiring.flipped(self.sites_in), self.engines[0].sites_in)
        wiring.connect(m, self.engines[-1].sites_out, wiring.flipped(self.sites_out))
        return m
