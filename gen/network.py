"""The dataflow top of a compiled network (accelkit/config/network.py): one engine per layer, beat gearboxes
where widths differ, optional link FIFOs, and the global sum pool.

Streams:

- ``params`` in: every engine's load (gen/sparse_conv.py), each beat tagged with its engine's index
  (``layer``) and the word in the low bits of ``word``, through a register stage (`ParamsDemux`). Beats
  of one engine's load must come in its order; loads of different engines may interleave.
- ``sites_in`` in: the first engine's input tokens.
- ``pooled`` out (cfg.pool): one vector per frame, ``cout / po`` beats of the last layer (gen/sparse_pool.py);
  else ``sites_out``: the last engine's output tokens.

Between engine i - 1 and engine i: a `BeatGearbox` when pi differs from the previous po, then a
`RegisteredFifo` (gen/reg_fifo.py) of ``cfg.link_depths[i - 1]`` beats when that is not 0 (the compiler sizes
each; LUT RAM up to ``LUTRAM_FIFO_DEPTH`` beats, accelkit/config/network.py, block RAM beyond), then a
`StreamSlice` (gen/stream_slice.py): every handshake signal between an engine and a FIFO is a register.

Reset: each engine, with the gearbox, FIFO and slice in front of it (and the pool after the last), and the params
demultiplexer, runs from its own registered copy of ``rst`` (`reset_copy`; on ECP5 a TRELLIS_FF instance, which
yosys does not merge with the others), so no net carries the reset to the whole top: the top's reset drives one
flip-flop per part, each copy the few hundred control registers of its part (datapath registers have no reset,
gen/pipeline.py). Every part leaves reset in the same cycle, one after ``rst`` falls; ``sites_in.ready`` and
``params.ready`` are held low until then, so a beat offered in that cycle waits.

Residual blocks: the block's first engine hands on the beats its line buffer accepts (``identity_out``),
which a FIFO of ``cfg.identity_depth(span)`` beats carries beside the block to the last
engine's ``identity`` input (gen/sparse_requant.py). The depth covers every beat the block can hold, so the
FIFO never fills and the main path never waits for it.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockDomain, ClockSignal, DomainRenamer, Instance, Module, ResetSignal, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accelkit.config import ConfigError
from accelkit.config.network import REG_FIFO_LATENCY, SparseNetworkConfig

from .reg_fifo import LATENCY as REG_LATENCY
from .reg_fifo import RegisteredFifo
from .sparse_conv import SparseConvEngine, in_token_layout, out_token_layout
from .sparse_gearbox import BeatGearbox
from .sparse_pool import SumPool, pool_sum_bits, pooled_layout
from .stream_slice import StreamSlice

__all__ = ["SparseNetworkTop", "ParamsDemux", "params_layout", "reset_copy"]


def reset_copy(m: Module, domain: str, platform=None):
    """A clock domain `domain` on ``sync``'s clock whose reset is ``sync``'s reset registered (one cycle later):
    a local reset net for one part of a design. Elaborated for ``platform="ecp5"`` the register is a TRELLIS_FF
    instance, which yosys keeps apart (its opt_merge would make every copy one flip-flop again). Returns the copy
    (1 while the domain is in reset)."""
    r = Signal(name=f"{domain}_rst_q", init=1, reset_less=True)
    if platform == "ecp5":
        m.submodules[f"{domain}_rst_ff"] = Instance(
            "TRELLIS_FF", p_GSR="DISABLED", p_CEMUX="1", p_CLKMUX="CLK", p_LSRMUX="LSR", p_REGSET="RESET",
            p_SRMODE="LSR_OVER_CE", i_CLK=ClockSignal(), i_LSR=0, i_DI=ResetSignal(), o_Q=r)
    else:
        m.d.sync += r.eq(ResetSignal())
    m.domains += ClockDomain(domain, local=True)
    m.d.comb += [ClockSignal(domain).eq(ClockSignal()), ResetSignal(domain).eq(r)]
    return r


def params_layout(cfg: SparseNetworkConfig) -> data.StructLayout:
    return data.StructLayout({"word": unsigned(max(l.param_bits for l in cfg.layers)),
                              "layer": unsigned(max(1, (len(cfg.layers) - 1).bit_length()))})


class SparseNetworkTop(wiring.Component):
    def __init__(self, cfg: SparseNetworkConfig):
        if not isinstance(cfg, SparseNetworkConfig):
            raise ConfigError(f"cfg={type(cfg).__name__} is invalid: a SparseNetworkConfig")
        self.cfg = cfg
        ports = {"params": In(stream.Signature(params_layout(cfg))),
                 "sites_in": In(stream.Signature(in_token_layout(cfg.first)))}
        last = cfg.last
        if cfg.pool:
            h, w = last.max_out_height, last.max_out_width
            ports["pooled"] = Out(stream.Signature(pooled_layout(last.po, pool_sum_bits(last.feature_bits, h * w))))
        else:
            ports["sites_out"] = Out(stream.Signature(out_token_layout(last)))
        super().__init__(wiring.Signature(ports))

    def elaborate(self, platform):
        cfg = self.cfg
        # the cycle model's FIFO latencies (the config's) are what is built here
        assert REG_FIFO_LATENCY == REG_LATENCY, "config/network.py REG_FIFO_LATENCY: gen/reg_fifo.py LATENCY"
        m = Module()
        engines, rst = [], []
        starts = {first for first, _ in cfg.residual}
        for i, l in enumerate(cfg.layers):
            e = SparseConvEngine(l, identity_out=i in starts)
            rst.append(reset_copy(m, f"e{i}", platform))
            m.submodules[f"{cfg.names[i]}"] = DomainRenamer(f"e{i}")(e)
            engines.append(e)

        # params: each engine takes the beats tagged with its index, through one register stage
        demux = ParamsDemux(params_layout(cfg), [l.param_bits for l in cfg.layers])
        demux_rst = reset_copy(m, "params", platform)
        m.submodules.params_demux = DomainRenamer("params")(demux)
        m.d.comb += [demux.params.valid.eq(self.params.valid & ~demux_rst),
                     demux.params.payload.eq(self.params.payload),
                     self.params.ready.eq(demux.params.ready & ~demux_rst)]
        for i, e in enumerate(engines):
            wiring.connect(m, getattr(demux, f"out{i}"), e.params)

        # engine -> [gearbox] -> [link FIFO] -> engine; what is in front of an engine is in its reset domain
        first = engines[0].sites_in
        m.d.comb += [first.valid.eq(self.sites_in.valid & ~rst[0]), first.payload.eq(self.sites_in.payload),
                     self.sites_in.ready.eq(first.ready & ~rst[0])]
        for i in range(1, len(engines)):
            a, b = cfg.layers[i - 1], cfg.layers[i]
            src = engines[i - 1].sites_out
            if b.pi != a.po:
                gb = BeatGearbox(a.po, b.pi, b.cin, b.feature_bits, b.y_bits, b.x_bits)
                m.submodules[f"gearbox{i}"] = DomainRenamer(f"e{i}")(gb)
                wiring.connect(m, src, gb.sites_in)
                src = gb.sites_out
            if cfg.link_depths[i - 1]:
                _through_fifo(m, cfg, f"link{i}", cfg.link_depths[i - 1], src, engines[i].sites_in, f"e{i}")
            else:
                wiring.connect(m, src, engines[i].sites_in)

        # residual blocks: the identity beside the block
        for first, last_i in cfg.residual:
            _through_fifo(m, cfg, f"identity{first}", cfg.identity_depth((first, last_i)), engines[first].identity_out,
                          engines[last_i].identity, f"e{last_i}")

        last = cfg.last
        if cfg.pool:
            pool = SumPool(last.cout, last.po, last.feature_bits, last.out_y_bits, last.out_x_bits,
                           last.max_out_height * last.max_out_width)
            m.submodules.pool = DomainRenamer(f"e{len(engines) - 1}")(pool)
            wiring.connect(m, engines[-1].sites_out, pool.sites_in)
            wiring.connect(m, pool.pooled, wiring.flipped(self.pooled))
        else:
            wiring.connect(m, engines[-1].sites_out, wiring.flipped(self.sites_out))
        return m


class ParamsDemux(wiring.Component):
    """Stream ``params`` (a word and the index of the engine it is for) to stream ``out<i>`` of engine i,
    through one register: the outputs' valid and payload are flip-flops, and ``params.ready`` depends on
    whether the register is free, not on the payload. A beat for an index with no engine is dropped."""

    def __init__(self, layout: data.StructLayout, widths: list[int]):
        self.widths = list(widths)
        ports = {"params": In(stream.Signature(layout))}
        ports |= {f"out{i}": Out(stream.Signature(unsigned(w))) for i, w in enumerate(self.widths)}
        super().__init__(wiring.Signature(ports))

    def elaborate(self, platform):
        m = Module()
        n = len(self.widths)
        p = self.params
        outs = [getattr(self, f"out{i}") for i in range(n)]
        sel = Signal(n)  # one-hot: the engine the held word is for (0: nothing held)
        word = Signal(len(p.payload.word), reset_less=True)
        taken = Signal()
        m.d.comb += taken.eq(Cat(*[sel[i] & o.ready for i, o in enumerate(outs)]).any())
        free = ~sel.any() | taken
        m.d.comb += p.ready.eq(free)
        with m.If(p.valid & free):
            m.d.sync += [word.eq(p.payload.word), sel.eq(Cat(*[p.payload.layer == i for i in range(n)]))]
        with m.Elif(taken):
            m.d.sync += sel.eq(0)
        for i, o in enumerate(outs):
            m.d.comb += [o.valid.eq(sel[i]), o.payload.eq(word[:self.widths[i]])]
        return m


def _through_fifo(m: Module, cfg: SparseNetworkConfig, name: str, depth: int, src, dst, domain: str) -> None:
    """Stream `src` into `dst` through a RegisteredFifo of `depth` beats (LUT RAM unless `cfg.fifo_block_ram(depth)`)
    and a `StreamSlice` (a valid-only `src` is never held): the producer's handshake sees the FIFO's registered
    ready, the consumer the slice's registered valid and payload, and the FIFO's head the slice's registered
    ready. Both in clock domain `domain` (the consumer's reset copy)."""
    width = len(src.payload.as_value())
    sl = StreamSlice(width)
    q = RegisteredFifo(width, depth, lutram=not cfg.fifo_block_ram(depth))
    m.submodules[f"{name}_slice"] = DomainRenamer(domain)(sl)
    m.submodules[name] = DomainRenamer(domain)(q)
    m.d.comb += [q.i.valid.eq(src.valid), q.i.payload.eq(src.payload)]
    wiring.connect(m, q.o, sl.i)
    m.d.comb += [dst.valid.eq(sl.o.valid), dst.payload.eq(sl.o.payload), sl.o.ready.eq(dst.ready)]
    if not src.signature.always_ready:
        m.d.comb += src.ready.eq(q.i.ready)
