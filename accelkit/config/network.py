"""A compiled sparse network: one layer engine per layer, the residual spans, the global sum pool.

What `accelkit.flows.compile` produces and `gen/network.py` builds: the layers' `SparseConvConfig`s
in execution order (each with its own PI and PO), named as in the network, and the residual blocks
as (first, last) layer indices: layer `last` (a pw1x1 with residual=True) adds the input of layer
`first`. Consecutive engines are wired stream to stream, so they agree on channels, grid and feature
width; their beat widths differ only by a whole factor (pi divides the previous po or is a multiple of
it: a gearbox re-beats the stream between them); the identity stream of a residual block carries the
block input's beats, so the block's last layer emits beats of that width (its po == the first's pi).
"""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar

from .base import BlockConfig, ConfigError, require
from .sparse_conv import SparseConvConfig

# beats the register slice after every link and identity FIFO holds (gen/stream_slice.py; the cycle model's too)
SLICE_BEATS = 2
# Every link and identity FIFO is a RegisteredFifo (gen/reg_fifo.py: its memory read through a register, then a
# prefetch queue; ready, valid and payload all registers). Up to this many beats its memory is LUT RAM (one
# TRELLIS_DPR16X4 deep), beyond it block RAM (DP16KD with the output register)
LUTRAM_FIFO_DEPTH = 16
# cycles from a beat entering a FIFO to the beat offered: the RAM write, the read issue, the registered read
# (gen/memory.py READ_LATENCY = 2 cycles), the prefetch queue (gen/reg_fifo.py LATENCY, which the generator checks
# against this)
REG_FIFO_LATENCY = 4

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclasses.dataclass(frozen=True)
class SparseNetworkConfig(BlockConfig):
    block: ClassVar[str] = "sparse-network"
    # ECP5 synthesis maps the LUTs with plain abc (flows/synth.py yosys_script): yowasp's abc9 dies silently on
    # a network top (from the 4-layer default up), as it does in every Xilinx synthesis
    synth_plain_abc: ClassVar[bool] = True

    layers: tuple = (
        SparseConvConfig(kind="conv3x3s2", max_height=16, max_width=16, cin=2, cout=8, pi=2, po=4, relu=True),
        SparseConvConfig(kind="pw1x1", max_height=8, max_width=8, cin=8, cout=16, pi=8, po=4, relu=True),
        SparseConvConfig(kind="dw3x3", max_height=8, max_width=8, cin=16, cout=16, pi=4, po=4, relu=True),
        SparseConvConfig(kind="pw1x1", max_height=8, max_width=8, cin=16, cout=8, pi=4, po=8, residual=True),
    )
    names: tuple = ("conv1", "block_0_0", "block_0_1", "block_0_2")
    residual: tuple = ((1, 3),)  # (first, last) layer index of each residual block
    pool: bool = True  # end in the global sum pool (one vector per frame)
    # beats of FIFO between consecutive engines (0: wired directly): one depth for every link, or a tuple of one
    # per link (entry i - 1 is the link into layer i), as the compiler chooses them (flows/compile.py)
    link_depth: int | tuple = 0

    def validate(self) -> None:
        require(isinstance(self.layers, tuple) and len(self.layers) >= 1, "layers",
                "a non-empty tuple of SparseConvConfig", self.layers)
        n = len(self.layers)
        require(isinstance(self.names, tuple) and len(self.names) == n, "names", f"a tuple of {n} layer names",
                self.names)
        for i, nm in enumerate(self.names):
            require(isinstance(nm, str) and bool(_NAME.match(nm)), f"names[{i}]", "an identifier", nm)
        require(len(set(self.names)) == n, "names", "distinct", self.names)
        require(isinstance(self.pool, bool), "pool", "True or False", self.pool)
        def depth_ok(d) -> bool:
            # (at least 3: what the compiler and the tests have always used)
            return isinstance(d, int) and not isinstance(d, bool) and (d == 0 or 3 <= d <= 65536)

        if isinstance(self.link_depth, tuple):
            require(len(self.link_depth) == n - 1, "link_depth", f"one depth per link: a tuple of {n - 1}",
                    self.link_depth)
            for i, d in enumerate(self.link_depth):
                require(depth_ok(d), f"link_depth[{i}]", "0 (wired directly) or a FIFO depth in 3..65536", d)
        else:
            require(depth_ok(self.link_depth), "link_depth",
                    "0 (engines wired directly), a FIFO depth in 3..65536, or a tuple of one per link",
                    self.link_depth)
        require(isinstance(self.residual, tuple), "residual", "a tuple of (first, last) pairs", self.residual)
        ends: set[int] = set()
        prev_last = -1
        for j, span in enumerate(self.residual):
            ok = (isinstance(span, tuple) and len(span) == 2 and all(isinstance(v, int) for v in span)
                  and 0 <= span[0] < span[1] < n)
            require(ok, f"residual[{j}]", f"a (first, last) pair of layer indices, first < last < {n}", span)
            first, last = span
            require(first > prev_last, f"residual[{j}]", "after the previous span, not overlapping it", span)
            prev_last = last
            ends.add(last)
            a, b = self.layers[first], self.layers[last]
            where = f"residual[{j}] ({self.names[first]}..{self.names[last]})"
            require(all(self.layers[k].stride == 1 for k in range(first, last + 1)), where,
                    "stride-1 layers only (the identity has the block's sites)", span)
            require(a.cin == b.cout, where, f"block input channels {a.cin} == output channels", b.cout)
            require(a.pi == b.po, where, f"the last layer's po equal to the first layer's pi ({a.pi}): the identity "
                                         "beats are added as they arrive", b.po)
        for i, l in enumerate(self.layers):
            where = f"layers[{i}] ({self.names[i]})"
            require(isinstance(l, SparseConvConfig), where, "a SparseConvConfig", type(l).__name__)
            require(l.residual == (i in ends), f"{where}.residual",
                    f"{i in ends}: True exactly on the last layer of a residual span", l.residual)
            if i == 0:
                continue
            p = self.layers[i - 1]
            require(l.pi % p.po == 0 or p.po % l.pi == 0, f"{where}.pi",
                    f"a divisor or multiple of the previous layer's po ({p.po}): a beat gearbox joins them", l.pi)
            for name, want, why in (("cin", p.cout, "the previous layer's cout"),
                                    ("max_height", p.max_out_height, "the previous layer's output grid"),
                                    ("max_width", p.max_out_width, "the previous layer's output grid"),
                                    ("feature_bits", p.feature_bits, "the previous layer's feature_bits"),
                                    ("signed_input", True, "True after the first layer (requantised outputs)")):
                require(getattr(l, name) == want, f"{where}.{name}", f"{want!r}: {why}", getattr(l, name))

    @property
    def first(self) -> SparseConvConfig:
        return self.layers[0]

    @property
    def last(self) -> SparseConvConfig:
        return self.layers[-1]

    def retimed(self, retime: int) -> SparseNetworkConfig:
        """This network with `retime` fabric registers after every product of every engine
        (`SparseConvConfig.retime`: 2 where the engines fill most of the part's multipliers)."""
        return self.replace(layers=tuple(l.replace(retime=retime) for l in self.layers))

    @property
    def link_depths(self) -> tuple[int, ...]:
        """The depth of every link FIFO: entry i - 1 joins layer i - 1 to layer i (0: wired directly)."""
        if isinstance(self.link_depth, tuple):
            return self.link_depth
        return (self.link_depth,) * (len(self.layers) - 1)

    @staticmethod
    def fifo_block_ram(depth: int) -> bool:
        """Whether a link or identity FIFO of `depth` beats keeps its beats in block RAM (else LUT RAM)."""
        return depth > LUTRAM_FIFO_DEPTH

    @staticmethod
    def fifo_latency(depth: int) -> int:
        """Cycles from a beat entering a FIFO of `depth` beats to the beat offered at its output (the earliest)."""
        return REG_FIFO_LATENCY

    def link_latency(self, i: int) -> int:
        """Cycles from a beat written into the link FIFO before layer i to the beat offered at its output, 0 for a
        direct wire."""
        d = self.link_depths[i - 1]
        return self.fifo_latency(d) if d else 0

    def identity_depth(self, span: tuple[int, int]) -> int:
        """Beats the identity FIFO of residual block `span` holds: every beat its first engine has accepted and
        its last has not yet added. An engine holds at most `buffer_slots` input rows, and the block's rows
        between its engines, queues and links are bounded by the same rows plus one in the works, each row
        of at most `max_width` sites of (first pi)-lane beats: (sum of slots + 1) rows, plus every queue,
        link and gearbox register in the block counted as a whole site, plus the end of frame. Never full,
        so the block's input never waits for its identity."""
        first, last = span
        a = self.layers[first]
        block = self.layers[first:last + 1]
        rows = sum(l.buffer_slots for l in block) + 1
        queued = (sum(l.output_queue_depth + l.input_queue_depth + 2 for l in block)
                  + sum(d + SLICE_BEATS for d in self.link_depths[first:last] if d))
        return (rows * a.max_width + queued) * a.in_groups + 1

    @property
    def mac_units(self) -> int:
        return sum(l.mac_units for l in self.layers)

    def to_dict(self) -> dict:
        return {"block": self.block, "layers": [l.to_dict() for l in self.layers], "names": list(self.names),
                "residual": [list(s) for s in self.residual], "pool": self.pool,
                "link_depth": list(self.link_depth) if isinstance(self.link_depth, tuple) else self.link_depth}

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        block = d.pop("block", cls.block)
        if block != cls.block:
            raise ConfigError(f"block={block!r} is invalid: this config is for {cls.block!r}")
        unknown = sorted(set(d) - {"layers", "names", "residual", "pool", "link_depth"})
        if unknown:
            raise ConfigError(f"{unknown[0]}={d[unknown[0]]!r} is invalid: {cls.__name__} has no such parameter")
        layers = d.get("layers", [])
        require(isinstance(layers, list | tuple), "layers", "a list of layer configs", layers)
        kw = {"layers": tuple(l if isinstance(l, SparseConvConfig) else SparseConvConfig.from_dict(l)
                              for l in layers)}
        if "names" in d:
            kw["names"] = tuple(d["names"]) if isinstance(d["names"], list | tuple) else d["names"]
        if "residual" in d:
            r = d["residual"]
            kw["residual"] = tuple(tuple(s) if isinstance(s, list | tuple) else s for s in r) \
                if isinstance(r, list | tuple) else r
        for k in ("pool", "link_depth"):
            if k in d:
                kw[k] = tuple(d[k]) if isinstance(d[k], list) else d[k]
        return cls(**kw)
