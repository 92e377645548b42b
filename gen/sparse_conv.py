"""The sparse-dataflow convolution layer engine, and chains of them (docs/specs/sparse-conv.md).

Streams (amaranth.lib.stream, valid/ready):

- ``params`` in: one load is ``cfg.param_words`` beats, in order: the frame-shape word
  (height - 1, then width - 1 above it), the weight words (word ``(tap * Go + go) * Gi + gi`` holds
  W[go*PO + o, gi*PI + i, tap] in lane ``o * PI + i``; depthwise: word ``tap * G + g`` holds
  W[g*P + l, 0, tap] in lane l), then ``cout / po`` requant words (PO biases, then PO scales, then with
  ``residual`` the id_scale).
  It is taken only between frames; sites are refused until a load has completed.
- ``sites_in`` in: a frame as tokens in raster order, ``cin / pi`` beats per active site (channels
  ``gi*PI .. gi*PI + PI - 1`` in beat gi, each beat carrying the site's y and x), then one beat with
  ``eof`` set. ``error`` on the end-of-frame beat marks a frame an upstream engine flagged.
- ``identity`` in (``residual``: the last pw1x1 of an inverted-residual block): the block input's beats as the
  block's first engine accepted them (its ``identity_out``), then each frame's end (gen/sparse_requant.py).
- ``sites_out`` out: the output frame the same way, ``cout / po`` beats per output site, then the
  end-of-frame beat, whose ``error`` is set when the frame had a token out of raster order or
  outside the frame (or the input's end-of-frame beat had ``error``). Such a frame's output is the
  layer applied to the tokens before the bad one; the rest, up to the end-of-frame token, is dropped.

Microarchitecture: five components, each a `wiring.Component` that can be simulated, proven and timed
alone, composed here.

- Line buffer (gen/sparse_line_buffer.py): a two-entry input queue (``ready`` is a register), tokens checked as
  they enter, taken at the head when their slot is free, written a cycle later into ``cfg.buffer_slots`` rows
  (a power of two: the slot is the row's low bits) of {slot, column, group} words, with a bitmap and a row tag
  per slot in registers.
- Site finder (gen/sparse_finder.py): per output row, once its input rows are complete, looks the window rows
  up by tag, copies their bitmaps, then hands on sites chunk by chunk (one-hots over ``cfg.finder_chunk``
  columns, never a priority encoder over the row), each with its tap mask, through a small queue.
- MAC sequencer (gen/sparse_sequencer.py): a next-site register, then one step per cycle over active taps only
  (output group outer, tap, input group inner; depthwise group outer, tap inner); loop ends on registered
  flags; addresses are concatenations, registered before the memories.
- MAC array (gen/sparse_mac.py): operands registered from the memories, each product a registered multiply
  (a MULT18X18D with its own registers when elaborated for ``platform="ecp5"``), one adder-tree level per
  stage, accumulate.
- Requantiser (gen/sparse_requant.py): bias add, scale as registered 18 x 18 partial products and their sum,
  round, clamp.

Nothing after the sequencer stalls: the output queue has room for every beat in flight and the sequencer holds
a beat's last step until there is room (credits), so backpressure reaches one register's enable, not the
pipeline. The output stream leaves from a register. The end of a frame travels the pipeline as a marker; the
next frame is taken once it reaches the output queue.

Timing. The numbers the cycle model (golden/sparse_rtl_cycles.py) reads are properties of the config;
`_built` refuses a config whose number differs from what is built, so a change to the structure must change
the config, and the model follows.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.config import ConfigError, require
from accelkit.config.sparse_conv import SparseChainConfig, SparseConvConfig

from .memory import READ_LATENCY, RegisteredRam
from .pipeline import delay
from .sparse_finder import SiteFinder
from .sparse_line_buffer import LineBuffer, accepted_layout, token_layout
from .sparse_mac import MacArray, mac_array_latency
from .sparse_requant import Requantiser, identity_layout, requantiser_latency
from .sparse_sequencer import SEQUENCER_LATENCY, MacSequencer

__all__ = ["token_layout", "in_token_layout", "out_token_layout", "engine_signature", "SparseConvEngine",
           "SparseConvChain", "engine_latency"]


def in_token_layout(cfg: SparseConvConfig) -> data.StructLayout:
    return token_layout(cfg.pi, cfg.feature_bits, cfg.y_bits, cfg.x_bits)


def out_token_layout(cfg: SparseConvConfig) -> data.StructLayout:
    return token_layout(cfg.po, cfg.feature_bits, cfg.out_y_bits, cfg.out_x_bits)


def engine_signature(cfg: SparseConvConfig, identity_out: bool = False) -> wiring.Signature:
    ports = {
        "params": In(stream.Signature(unsigned(cfg.param_bits))),
        "sites_in": In(stream.Signature(in_token_layout(cfg))),
        "sites_out": Out(stream.Signature(out_token_layout(cfg))),
    }
    if cfg.residual:  # the block input's beats, for the identity add (gen/sparse_requant.py)
        ports["identity"] = In(stream.Signature(identity_layout(cfg)))
    if identity_out:  # this layer starts a residual block: the beats it accepted, then each frame's end
        ports["identity_out"] = Out(stream.Signature(accepted_layout(cfg.pi, cfg.feature_bits), always_ready=True))
    return wiring.Signature(ports)


def _built(cfg: SparseConvConfig, prop: str, built: int, what: str) -> None:
    """The config's timing number `prop` must be what the generator builds (`what`)."""
    require(getattr(cfg, prop) == built, prop, f"{built}: gen/sparse_conv.py builds {what}", getattr(cfg, prop))


def engine_latency(cfg: SparseConvConfig) -> int:
    """Registers from the sequencer's issue of a beat's last step to the beat written into the output queue:
    step registers, memory read, MAC array, requantiser."""
    return SEQUENCER_LATENCY + READ_LATENCY + mac_array_latency(cfg) + requantiser_latency(cfg)


class SparseConvEngine(wiring.Component):
    """One layer engine of `cfg` (see the module docstring for the streams), composed of the line buffer,
    site finder, MAC sequencer, MAC array and requantiser (gen/sparse_*.py)."""

    def __init__(self, cfg: SparseConvConfig, identity_out: bool = False):
        """`identity_out`: also hand on the beats the line buffer accepts (this layer starts a residual block)."""
        if not isinstance(cfg, SparseConvConfig):
            raise ConfigError(f"cfg={type(cfg).__name__} is invalid: a SparseConvConfig")
        self.cfg = cfg
        super().__init__(engine_signature(cfg, identity_out))

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        s, h, S = cfg.stride, cfg.halo, cfg.buffer_slots
        _built(cfg, "mac_pipeline_depth", engine_latency(cfg) + 2,
               "the step, memory, MAC array and requantiser registers, the output queue, the output register")
        m.submodules.line_buffer = lb = LineBuffer(cfg)
        m.submodules.finder = fd = SiteFinder(cfg)
        _built(cfg, "finder_row_stages", 4, "the site finder's issue, slot look-up, bitmap copy and scan stages")
        _built(cfg, "finder_chunk_stages", 3, "the site finder's chunk stages A, A2, A3")
        m.submodules.sequencer = sq = MacSequencer(cfg)
        m.submodules.mac_array = mac = MacArray(cfg)
        m.submodules.requantiser = rq = Requantiser(cfg)
        m.submodules.weights = wmem = RegisteredRam(cfg.weight_word_bits, cfg.weight_depth)
        m.submodules.requant = rqmem = RegisteredRam(cfg.requant_word_bits, cfg.requant_groups)

        # ---- params load: counters address the padded weight layout; each word is written from a register
        pw = self.params.payload
        pfire = self.params.valid & self.params.ready
        pcount = Signal(range(cfg.param_words))
        loaded = Signal()
        height_m1, width_m1 = Signal(cfg.y_bits), Signal(cfg.x_bits)
        nw = cfg.weight_words
        Gi, Go = cfg.in_groups, cfg.requant_groups
        gib, gob = (Gi - 1).bit_length(), (Go - 1).bit_length()
        c_in = Signal(max(1, gib))
        c_out = Signal(max(1, gob))
        c_tap = Signal(4)
        p_data = Signal(cfg.param_bits, reset_less=True)  # written with p_wv / p_rv, which have a reset
        p_wv, p_rv = Signal(), Signal()
        p_waddr = Signal(cfg.w_addr_bits, reset_less=True)
        p_raddr = Signal(range(max(2, Go)), reset_less=True)
        three = cfg.kernel == 3
        if cfg.depthwise:
            fields = ([c_in[:gib]] if gib else []) + ([c_tap] if three else [])
        else:
            fields = ([c_in[:gib]] if gib else []) + ([c_out[:gob]] if gob else []) + ([c_tap] if three else [])
        m.d.comb += self.params.ready.eq(~lb.busy)
        m.d.sync += [p_wv.eq(0), p_rv.eq(0)]
        with m.If(pfire):
            m.d.sync += p_data.eq(pw)
            with m.If(pcount == cfg.param_words - 1):
                m.d.sync += [pcount.eq(0), loaded.eq(1)]
            with m.Else():
                m.d.sync += pcount.eq(pcount + 1)
            with m.If(pcount == 0):
                m.d.sync += [loaded.eq(0), height_m1.eq(pw[:cfg.y_bits]),
                             width_m1.eq(pw[cfg.y_bits:cfg.y_bits + cfg.x_bits]),
                             c_in.eq(0), c_out.eq(0), c_tap.eq(0), p_raddr.eq(0)]
            with m.Elif(pcount <= nw):
                m.d.sync += [p_wv.eq(1), p_waddr.eq(Cat(*fields) if fields else 0)]
                in_last = c_in == Gi - 1
                out_last = c_out == (0 if cfg.depthwise else Go - 1)
                m.d.sync += c_in.eq(Mux(in_last, 0, c_in + 1))
                with m.If(in_last):
                    m.d.sync += c_out.eq(Mux(out_last, 0, c_out + 1))
                    with m.If(out_last):
                        m.d.sync += c_tap.eq(c_tap + 1)
            with m.Else():
                m.d.sync += [p_rv.eq(1), p_raddr.eq(pcount - 1 - nw)]
        m.d.comb += [wmem.w_addr.eq(p_waddr), wmem.w_data.eq(p_data[:cfg.weight_word_bits]), wmem.w_en.eq(p_wv),
                     rqmem.w_addr.eq(p_raddr), rqmem.w_data.eq(p_data[:cfg.requant_word_bits]),
                     rqmem.w_en.eq(p_rv)]

        # ---- line buffer -> finder -> sequencer
        frame_reset = Signal()
        permit_row = Signal(cfg.y_bits + 2)
        wiring.connect(m, wiring.flipped(self.sites_in), lb.sites_in)
        m.d.comb += [lb.loaded.eq(loaded), lb.hold.eq(self.params.valid & ~lb.busy), lb.height_m1.eq(height_m1),
                     lb.width_m1.eq(width_m1), lb.permit_row.eq(permit_row), lb.frame_reset.eq(frame_reset)]
        m.d.comb += [fd.bitmaps.eq(lb.bitmaps), fd.tags.eq(lb.tags), fd.done_rows.eq(lb.done_rows),
                     fd.eof_seen.eq(lb.eof_seen), fd.has_last.eq(lb.has_last), fd.last_y.eq(lb.last_y),
                     fd.error.eq(lb.error), fd.frame_reset.eq(frame_reset)]
        wiring.connect(m, fd.sites, sq.sites)
        # ingest may write input rows whose slots no output row still being read needs (registered)
        use_row = Mux(sq.busy, sq.row, fd.row)
        m.d.sync += permit_row.eq((use_row * s if s > 1 else use_row) + (S - h))
        with m.If(frame_reset):  # the next frame starts from row 0 (the finder's row resets this cycle too)
            m.d.sync += permit_row.eq(S - h)
        _built(cfg, "permit_latency", 2, "the permit_row register, then the input queue's permit verdicts")

        # ---- steps -> memories -> MAC array -> requantiser
        step = sq.steps.payload
        m.d.comb += [lb.rd_addr.eq(step.lb_addr), wmem.r_addr.eq(step.w_addr)]
        side_v = delay(m, sq.steps.valid, READ_LATENCY, "read_v")
        side_first = delay(m, step.first, READ_LATENCY, "read_first", reset_less=True)
        side_last = delay(m, step.last, READ_LATENCY, "read_last", reset_less=True)
        side_meta = delay(m, step.meta, READ_LATENCY, "read_meta", reset_less=True)
        m.d.comb += [mac.steps.valid.eq(side_v), mac.steps.payload.x.eq(lb.rd_data),
                     mac.steps.payload.w.eq(wmem.r_data), mac.steps.payload.first.eq(side_first),
                     mac.steps.payload.last.eq(side_last), mac.steps.payload.meta.eq(side_meta)]
        wiring.connect(m, mac.sums, rq.sums)
        if cfg.residual:
            wiring.connect(m, wiring.flipped(self.identity), rq.identity)
        if "identity_out" in self.signature.members:
            wiring.connect(m, lb.accepted, wiring.flipped(self.identity_out))
        m.d.comb += [rqmem.r_addr.eq(rq.rq_addr), rq.rq_data.eq(rqmem.r_data)]

        # ---- output queue; the sequencer holds a beat until the queue has room for it (credits)
        out_l = out_token_layout(cfg)
        depth = cfg.output_queue_depth
        m.submodules.out_queue = oq = fifo.SyncFIFO(width=out_l.size, depth=depth)
        feats = rq.feats.payload
        tok = Signal(out_l)
        with m.If(~feats.meta.eof):
            m.d.comb += [tok.data.eq(feats.data), tok.y.eq(feats.meta.oy), tok.x.eq(feats.meta.ox)]
        m.d.comb += [tok.eof.eq(feats.meta.eof), tok.error.eq(feats.meta.error)]
        m.d.comb += [oq.w_en.eq(rq.feats.valid), oq.w_data.eq(tok)]
        # the output register: the stream's valid and payload are registers, held until taken
        out = self.sites_out
        load = oq.r_rdy & (~out.valid | out.ready)
        m.d.comb += oq.r_en.eq(load)
        out_reg = Signal(out_l, name="out_reg", reset_less=True)
        m.d.comb += out.payload.eq(out_reg)
        with m.If(load):
            m.d.sync += [out.valid.eq(1), out_reg.eq(oq.r_data)]
        with m.Elif(out.ready):
            m.d.sync += out.valid.eq(0)
        inflight = Signal(range(depth + 1))
        out_fire = self.sites_out.valid & self.sites_out.ready
        # the count with this cycle's issue comes from local registers; the consumer's ready (through out_fire)
        # only selects it or it minus one, after the carry chains, not into them
        issued = Signal(range(depth + 2))
        m.d.comb += issued.eq(inflight + sq.beat)
        m.d.sync += inflight.eq(Mux(out_fire, issued - 1, issued))
        m.d.comb += sq.can_emit.eq(inflight < depth)
        m.d.comb += frame_reset.eq(rq.feats.valid & feats.meta.eof)
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
