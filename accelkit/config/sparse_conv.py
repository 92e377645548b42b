"""Parameters of the sparse-dataflow convolution engine (docs/specs/sparse-conv.md), and what they imply.

One layer engine per config. Depthwise kinds (dw3x3, dw3x3s2) have cin == cout and
P lanes, one MAC each: `po` must equal `pi` (output beats carry the same P channels the
input beats did), and the engine has `pi` MAC units, not pi * po.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from .base import BlockConfig, ConfigError, require

KINDS = ("subm3x3", "dw3x3", "pw1x1", "conv3x3s2", "dw3x3s2")
DEPTHWISE_KINDS = ("dw3x3", "dw3x3s2")
STRIDE2_KINDS = ("conv3x3s2", "dw3x3s2")
MAX_DIM = 4096  # frame side and channel count limit of the generator


def signed_bits(lo: int, hi: int) -> int:
    """Smallest two's-complement width holding every integer in lo..hi."""
    b = 1
    while lo < -(1 << (b - 1)) or hi > (1 << (b - 1)) - 1:
        b += 1
    return b


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class SparseConvConfig(BlockConfig):
    """One sparse convolution layer engine: kind, largest frame, channels, parallelism, arithmetic."""

    block: ClassVar[str] = "sparse-conv"

    kind: str = "subm3x3"
    max_height: int = 128
    max_width: int = 128
    cin: int = 16
    cout: int = 16
    pi: int = 4  # input channels per cycle (channels per input beat)
    po: int = 4  # output channels per cycle (channels per output beat); == pi for depthwise kinds
    signed_input: bool = True  # False: a first layer fed raw event counts (unsigned features)
    relu: bool = False
    residual: bool = False  # pw1x1 only: add the block input with one id_scale
    feature_bits: int = 8
    weight_bits: int = 8
    bias_bits: int = 16
    scale_bits: int = 16
    shift: int = 16
    # Rows of input the engine buffers beyond the 3-row window (stride-2 kinds: pairs of rows), so that
    # tokens of the next rows are taken while the current output row is computed. 0: the bare 3-row buffer.
    prefetch_rows: int = 1
    # Fabric registers after every product (MAC array, requantiser, identity): where a design fills most of the
    # part's multipliers (a network top), the placer spreads them along the DSP rows, and a product's route to
    # the adder that takes it can cross the part; each register splits that route (gen/pipeline.py).
    retime: int = 1

    def validate(self) -> None:
        require(self.kind in KINDS, "kind", f"one of {', '.join(KINDS)}", self.kind)
        for name in ("signed_input", "relu", "residual"):
            require(isinstance(getattr(self, name), bool), name, "True or False", getattr(self, name))
        for name, lo, hi in (("max_height", 1, MAX_DIM), ("max_width", 1, MAX_DIM), ("cin", 1, MAX_DIM),
                             ("cout", 1, MAX_DIM), ("feature_bits", 2, 16), ("weight_bits", 2, 16),
                             ("bias_bits", 1, 32), ("scale_bits", 1, 32), ("shift", 1, 62),
                             ("prefetch_rows", 0, 4), ("retime", 0, 4)):
            v = getattr(self, name)
            require(_is_int(v) and lo <= v <= hi, name, f"an integer in {lo}..{hi}", v)
        require(_is_int(self.pi) and 1 <= self.pi <= self.cin and self.cin % self.pi == 0, "pi",
                f"a divisor of cin={self.cin}", self.pi)
        if self.depthwise:
            require(self.cout == self.cin, "cout", f"equal to cin={self.cin} for depthwise {self.kind}",
                    self.cout)
            require(self.po == self.pi, "po", f"equal to pi={self.pi} for depthwise {self.kind} (P lanes)",
                    self.po)
        else:
            require(_is_int(self.po) and 1 <= self.po <= self.cout and self.cout % self.po == 0, "po",
                    f"a divisor of cout={self.cout}", self.po)
        if self.residual:
            require(self.kind == "pw1x1", "residual",
                    "only with kind='pw1x1' (end of an inverted-residual block)", self.residual)
            require(self.signed_input, "signed_input", "True with residual (the block's features are signed)",
                    self.signed_input)
        require(self.requant_bits <= 64, "scale_bits",
                f"small enough that the requant product fits 64 bits (needs {self.requant_bits})",
                self.scale_bits)

    # ----- shape of the layer

    @property
    def depthwise(self) -> bool:
        return self.kind in DEPTHWISE_KINDS

    @property
    def stride(self) -> int:
        return 2 if self.kind in STRIDE2_KINDS else 1

    @property
    def kernel(self) -> int:
        return 1 if self.kind == "pw1x1" else 3

    @property
    def taps(self) -> int:
        return self.kernel * self.kernel

    def output_grid(self, height: int, width: int) -> tuple[int, int]:
        """Output grid of an H x W input: ceil(H/2) x ceil(W/2) for the stride-2 kinds."""
        if self.stride == 2:
            return _ceil_div(height, 2), _ceil_div(width, 2)
        return height, width

    @property
    def max_out_height(self) -> int:
        return self.output_grid(self.max_height, self.max_width)[0]

    @property
    def max_out_width(self) -> int:
        return self.output_grid(self.max_height, self.max_width)[1]

    def fits(self, height: int, width: int) -> bool:
        return 1 <= height <= self.max_height and 1 <= width <= self.max_width

    # ----- parallelism

    @property
    def in_groups(self) -> int:
        """Input beats per site (channel groups of pi)."""
        return _ceil_div(self.cin, self.pi)

    @property
    def out_groups(self) -> int:
        """Output channel groups of po (1 for depthwise: the lanes follow the input group)."""
        return 1 if self.depthwise else _ceil_div(self.cout, self.po)

    @property
    def mac_units(self) -> int:
        return self.pi if self.depthwise else self.pi * self.po

    def cycles_per_site(self, neighbours: int) -> int:
        """The spec's estimate for one output site with |N(p)| active neighbours (no pipeline fill)."""
        if self.depthwise:
            return neighbours * self.in_groups
        return max(1, neighbours) * self.in_groups * self.out_groups

    # ----- widths

    @property
    def input_range(self) -> tuple[int, int]:
        b = self.feature_bits
        return (-(1 << (b - 1)), (1 << (b - 1)) - 1) if self.signed_input else (0, (1 << b) - 1)

    @property
    def weight_range(self) -> tuple[int, int]:
        return -(1 << (self.weight_bits - 1)), (1 << (self.weight_bits - 1)) - 1

    @property
    def bias_range(self) -> tuple[int, int]:
        return -(1 << (self.bias_bits - 1)), (1 << (self.bias_bits - 1)) - 1

    @property
    def scale_max(self) -> int:
        return (1 << self.scale_bits) - 1

    @property
    def products_per_output(self) -> int:
        """Products summed into one output feature at worst: 9 * cin (depthwise 9, pw1x1 cin)."""
        return self.taps * (1 if self.depthwise else self.cin)

    @property
    def psum_range(self) -> tuple[int, int]:
        """Exact range of psum + bias over all inputs, weights and biases."""
        (xl, xh), (wl, wh), (bl, bh) = self.input_range, self.weight_range, self.bias_range
        prods = (xl * wl, xl * wh, xh * wl, xh * wh)
        n = self.products_per_output
        return n * min(prods) + bl, n * max(prods) + bh

    @property
    def psum_bits(self) -> int:
        """Accumulator width: psum plus bias, exact in the worst case."""
        return signed_bits(*self.psum_range)

    @property
    def requant_bits(self) -> int:
        """Width of (psum + bias) * scale + 2^(E-1) (and of the residual product), exact in the worst case."""
        lo, hi = self.psum_range
        half = 1 << (self.shift - 1)
        bits = signed_bits(lo * self.scale_max + half, hi * self.scale_max + half)
        if self.residual:  # x_id * id_scale + 2^(E-1), shifted separately then added
            q = 1 << (self.feature_bits - 1)
            bits = max(bits, signed_bits(-q * self.scale_max + half, (q - 1) * self.scale_max + half))
        return bits

    @property
    def y_bits(self) -> int:
        return max(1, (self.max_height - 1).bit_length())

    @property
    def x_bits(self) -> int:
        return max(1, (self.max_width - 1).bit_length())

    @property
    def out_y_bits(self) -> int:
        return max(1, (self.max_out_height - 1).bit_length())

    @property
    def out_x_bits(self) -> int:
        return max(1, (self.max_out_width - 1).bit_length())

    # ----- line buffer: the rows of input the 3x3 window spans (none for pw1x1)

    @property
    def line_buffer_rows(self) -> int:
        return 0 if self.kind == "pw1x1" else 3

    @property
    def line_buffer_depth(self) -> int:
        """Words: one per site of the buffered rows."""
        return self.line_buffer_rows * self.max_width

    @property
    def line_buffer_word_bits(self) -> int:
        """One site's features: cin x feature_bits."""
        return self.cin * self.feature_bits

    @property
    def bitmap_bits(self) -> int:
        """The active-site bitmap of the buffered rows."""
        return self.line_buffer_rows * self.max_width

    @property
    def line_buffer_bits(self) -> int:
        """Feature storage plus the active-site bitmap."""
        return self.line_buffer_depth * self.line_buffer_word_bits + self.bitmap_bits

    # ----- the RTL engine's storage (gen/sparse_conv.py): window rows plus prefetch rows

    @property
    def buffer_slots(self) -> int:
        """Rows of input the RTL line buffer holds: the kernel's window plus stride * prefetch_rows, rounded up to
        a power of two so that a row's slot is its low bits (no modulo)."""
        return _pow2_at_least(self.kernel + self.stride * self.prefetch_rows)

    @property
    def slot_bits(self) -> int:
        return (self.buffer_slots - 1).bit_length()

    @property
    def tag_bits(self) -> int:
        """A slot's row tag: an input row, or all ones for none."""
        return self.y_bits + 1

    @property
    def buffer_words(self) -> int:
        """Words of the RTL line buffer that hold features: one per (slot, column, input channel group)."""
        return self.buffer_slots * self.max_width * self.in_groups

    @property
    def lb_addr_bits(self) -> int:
        """Line-buffer address {slot, column, group}: each field padded to a power of two."""
        return self.slot_bits + self.x_bits + (self.in_groups - 1).bit_length()

    @property
    def buffer_depth(self) -> int:
        """Depth of the line-buffer memory (the padded address space)."""
        return 1 << self.lb_addr_bits

    @property
    def buffer_word_bits(self) -> int:
        return self.pi * self.feature_bits

    @property
    def weight_word_bits(self) -> int:
        """One weight memory word: a PO x PI block of a tap (depthwise: P lanes of a tap)."""
        return (self.pi if self.depthwise else self.pi * self.po) * self.weight_bits

    @property
    def weight_words(self) -> int:
        """Weight memory depth: taps x output groups x input groups (depthwise: taps x groups)."""
        if self.depthwise:
            return self.taps * self.in_groups
        return self.taps * self.out_groups * self.in_groups

    @property
    def requant_groups(self) -> int:
        """Output beats per site: cout / po (depthwise: the C / P channel groups)."""
        return self.cout // self.po

    @property
    def w_addr_bits(self) -> int:
        """Weight address {tap, output group, input group} (depthwise {tap, group}), fields padded to powers of 2."""
        taps = 4 if self.kernel == 3 else 0
        if self.depthwise:
            return taps + (self.in_groups - 1).bit_length()
        return taps + (self.in_groups - 1).bit_length() + (self.requant_groups - 1).bit_length()

    @property
    def weight_depth(self) -> int:
        """Depth of the weight memory (the padded address space)."""
        return 1 << self.w_addr_bits

    @property
    def requant_word_bits(self) -> int:
        """One requant word: po biases (low bits) then po scales (then, with residual, the id_scale)."""
        return self.po * (self.bias_bits + self.scale_bits) + (self.scale_bits if self.residual else 0)

    @property
    def shape_word_bits(self) -> int:
        """The frame-shape word: height - 1 (y_bits, low) then width - 1 (x_bits)."""
        return self.y_bits + self.x_bits

    @property
    def param_bits(self) -> int:
        """Width of the params stream: the widest of the shape, weight and requant words."""
        return max(self.shape_word_bits, self.weight_word_bits, self.requant_word_bits)

    @property
    def param_words(self) -> int:
        """Beats of one params load: the shape word, the weight words, the requant words."""
        return 1 + self.weight_words + self.requant_groups

    # ----- the RTL engine's timing: the numbers the cycle model (golden/sparse_rtl_cycles.py) reads and the
    # generator (gen/sparse_conv.py) builds to (it refuses a config whose numbers differ from what it builds)

    @property
    def halo(self) -> int:
        """Input rows above and below an output site's centre row that its window reads (kernel // 2)."""
        return self.kernel // 2

    @property
    def row_lead(self) -> int:
        """Input rows the line buffer holds beyond the window (stride * prefetch_rows): how far ingest can run
        ahead of the oldest output row still being computed."""
        return self.buffer_slots - self.kernel

    @property
    def mac_pipeline_depth(self) -> int:
        """Registers from the MAC sequencer's issue of a beat's last step to the beat at the output, inclusive: the
        sequencer's tap and address registers (2), the memory read (2: address, output register), the MAC
        array (operands, products, one per adder-tree level, accumulate), the requantiser (beat while the
        requant word is read (2), bias add, partial products and their tree, rounding, with residual the
        identity add, clamp), the output queue (1) and the output register (1). The last step of an output
        beat issued in cycle t is offered in cycle t + mac_pipeline_depth."""
        tree = 0 if self.depthwise else (self.pi - 1).bit_length()
        partials = -(-self.psum_bits // 17) * -(-self.scale_bits // 17)
        mul = 2 + self.retime  # a multiply's registered operands and product, and its fabric retiming registers
        ram = 2  # a registered block RAM read (gen/memory.py)
        add = 1 if self.residual else 0
        return 2 + ram + (2 + mul + tree) + (ram + 1 + mul + (partials - 1).bit_length() + 2 + add) + 1 + 1

    @property
    def output_queue_depth(self) -> int:
        """Beats the output queue holds: room for every beat in flight, so the sequencer runs at full rate while
        the output is ready; when it is not, the sequencer holds (credits), the pipeline does not."""
        return _pow2_at_least(self.mac_pipeline_depth + 3)

    @property
    def finder_chunk(self) -> int:
        """Output columns the site finder takes at a time (its one-hots span a chunk, not the row)."""
        return min(16, _pow2_at_least(self.max_out_width))

    @property
    def input_queue_depth(self) -> int:
        """Beats the line buffer's input queue holds (a SyncFIFO: ``sites_in.ready`` is its not-full flag, a
        register). A beat enters while the queue has room, i.e. once the beat two before it was taken."""
        return 2

    @property
    def input_queue_latency(self) -> int:
        """Cycles from a beat entering the input queue to it being at the queue's head (the queue's pointer and
        level registers)."""
        return 1

    @property
    def row_ready_latency(self) -> int:
        """Cycles from a good first beat at the input queue's head (taken or not), or the end-of-frame beat
        taken, to the finder seeing the rows it completes: the ``done_rows`` / ``eof_seen`` registers, then the
        finder's registered compares (its issue decision starts from flip-flops)."""
        return 2

    @property
    def permit_latency(self) -> int:
        """Cycles from the oldest output row in use (the sequencer's, else the finder's) reaching a row to a
        token that row frees being taken: the ``permit_row`` register, then the input queue's per-entry permit
        verdict (a register, so the take decision starts from flip-flops). The cycle ingest reopens after a
        frame the verdicts still come from the finished frame's row count
        (``rows * stride + buffer_slots - halo``)."""
        return 2

    @property
    def finder_row_stages(self) -> int:
        """The site finder's row stages, one row each: issue (the row ready), slot look-up by tag, bitmap copy,
        scan (centre row and chunk mask). The bitmap-copy and scan stages load once they are free (their row
        moving on that cycle); the issue and look-up stages once they are empty or the stage after them is,
        so a row waits a cycle more where the one ahead moves into a stage that empties that same cycle. The
        next rows load while the scanned row's chunks are handed on; the scan stage is free once the row's
        last non-empty chunk has left the chunk stage A."""
        return 4

    @property
    def finder_chunk_stages(self) -> int:
        """The site finder's chunk stages before its emit stage B: A (the lowest chunk left, a one-hot), A2 (its
        bits and window columns), A3 (its lowest site and the rest). B hands on one site a cycle into the last
        stage C1, which writes it into the site queue."""
        return 3

    @property
    def finder_row_cycles(self) -> int:
        """Cycles from the site finder issuing a row with sites to the row's first site in its last stage C1,
        when nothing holds it: the slot look-up, bitmap copy and scan stages, the chunk stages, B and C1."""
        return self.finder_row_stages - 1 + self.finder_chunk_stages + 3

    @property
    def site_queue_depth(self) -> int:
        """Sites the finder's output queue (a SyncFIFO) holds for the sequencer: the finder's last stage writes a
        site once the site two before it was read."""
        return 2

    @property
    def site_queue_latency(self) -> int:
        """Cycles from a site written into the site queue to the sequencer's next-site register reading it."""
        return 1

    @property
    def sequencer_next_latency(self) -> int:
        """Cycles from the next-site register reading a site to the site moving into the sequencer's site
        registers, when they are free (the next-site register); a busy sequencer moves it there the cycle of the
        previous site's last step."""
        return 1

    @property
    def sequencer_site_latency(self) -> int:
        """Cycles from a site moving into the sequencer's site registers to its first MAC step (the site
        registers): steps then follow one a cycle."""
        return 1

    @property
    def site_handoff_latency(self) -> int:
        """Cycles from a site written into the site queue to its first MAC step when the sequencer is idle: the
        queue, the next-site register and the site registers."""
        return self.site_queue_latency + self.sequencer_next_latency + self.sequencer_site_latency

    @property
    def eof_latency(self) -> int:
        """Cycles from the finder seeing the frame's rows over (ROW state, end of frame seen, past the last output
        row) to the eof site in its last stage (the ``eof_pend`` register); it then goes through the site queue
        and the sequencer as a site of one step, which waits for a credit like an output beat."""
        return 1

    @property
    def frame_reset_latency(self) -> int:
        """Cycles from the eof step's issue to the first cycle the next frame's beats may be taken and its rows
        found: the eof marker is written into the output queue mac_pipeline_depth - 2 cycles after its issue
        (the output queue and the output register are the pipeline's last two registers) and resets the frame;
        the line buffer's and the finder's registers clear the next cycle."""
        return self.mac_pipeline_depth - 2 + 1

    def implied(self) -> dict:
        """Everything the parameters imply, for reports."""
        return {
            "stride": self.stride, "taps": self.taps, "mac_units": self.mac_units,
            "in_groups": self.in_groups, "out_groups": self.out_groups,
            "max_out_height": self.max_out_height, "max_out_width": self.max_out_width,
            "y_bits": self.y_bits, "x_bits": self.x_bits, "out_y_bits": self.out_y_bits,
            "out_x_bits": self.out_x_bits, "psum_bits": self.psum_bits, "requant_bits": self.requant_bits,
            "line_buffer_rows": self.line_buffer_rows, "line_buffer_depth": self.line_buffer_depth,
            "line_buffer_word_bits": self.line_buffer_word_bits, "bitmap_bits": self.bitmap_bits,
            "line_buffer_bits": self.line_buffer_bits, "buffer_slots": self.buffer_slots,
            "buffer_words": self.buffer_words, "buffer_word_bits": self.buffer_word_bits,
            "weight_words": self.weight_words, "weight_word_bits": self.weight_word_bits,
            "param_words": self.param_words, "param_bits": self.param_bits,
            "halo": self.halo, "row_lead": self.row_lead, "mac_pipeline_depth": self.mac_pipeline_depth,
            "site_queue_depth": self.site_queue_depth,
            "output_queue_depth": self.output_queue_depth,
            "finder_chunk": self.finder_chunk, "buffer_depth": self.buffer_depth, "weight_depth": self.weight_depth,
            "site_handoff_latency": self.site_handoff_latency,
            "finder_row_cycles": self.finder_row_cycles, "finder_row_stages": self.finder_row_stages,
            "finder_chunk_stages": self.finder_chunk_stages,
            "row_ready_latency": self.row_ready_latency, "eof_latency": self.eof_latency,
            "input_queue_depth": self.input_queue_depth, "input_queue_latency": self.input_queue_latency,
            "permit_latency": self.permit_latency, "site_queue_latency": self.site_queue_latency,
            "sequencer_next_latency": self.sequencer_next_latency,
            "sequencer_site_latency": self.sequencer_site_latency, "frame_reset_latency": self.frame_reset_latency,
        }


@dataclasses.dataclass(frozen=True)
class SparseChainConfig(BlockConfig):
    """Layer engines in sequence, each one's output stream feeding the next one's input.

    Consecutive layers must agree: channels (cin == previous cout), beat width (pi == previous po),
    grid (max_height/max_width == the previous layer's output grid), feature bits; layers after the
    first take signed features (they are requantised outputs). Residual blocks need an identity path
    the chain does not have: residual layers are refused.
    """

    block: ClassVar[str] = "sparse-chain"

    layers: tuple = (
        SparseConvConfig(kind="conv3x3s2", max_height=32, max_width=32, cin=4, cout=8, pi=4, po=4,
                         signed_input=False, relu=True),
        SparseConvConfig(kind="subm3x3", max_height=16, max_width=16, cin=8, cout=8, pi=4, po=4, relu=True),
        SparseConvConfig(kind="pw1x1", max_height=16, max_width=16, cin=8, cout=4, pi=4, po=4),
    )

    def validate(self) -> None:
        require(isinstance(self.layers, tuple) and len(self.layers) >= 1, "layers",
                "a non-empty tuple of SparseConvConfig", self.layers)
        for i, l in enumerate(self.layers):
            require(isinstance(l, SparseConvConfig), f"layers[{i}]", "a SparseConvConfig", type(l).__name__)
            require(not l.residual, f"layers[{i}].residual", "False: the chain has no identity path",
                    l.residual)
            if i == 0:
                continue
            p = self.layers[i - 1]
            for name, want, why in (("cin", p.cout, "the previous layer's cout"),
                                    ("pi", p.po, "the previous layer's po (beat width)"),
                                    ("max_height", p.max_out_height, "the previous layer's output grid"),
                                    ("max_width", p.max_out_width, "the previous layer's output grid"),
                                    ("feature_bits", p.feature_bits, "the previous layer's feature_bits"),
                                    ("signed_input", True, "True after the first layer (requantised outputs)")):
                require(getattr(l, name) == want, f"layers[{i}].{name}", f"{want!r}: {why}", getattr(l, name))

    @property
    def link_latency(self) -> int:
        """Cycles between one engine's output register and the next engine's input: 0, the streams are wired
        directly (gen/sparse_conv.py, SparseConvChain)."""
        return 0

    @property
    def first(self) -> SparseConvConfig:
        return self.layers[0]

    @property
    def last(self) -> SparseConvConfig:
        return self.layers[-1]

    def to_dict(self) -> dict:
        return {"block": self.block, "layers": [l.to_dict() for l in self.layers]}

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        block = d.pop("block", cls.block)
        if block != cls.block:
            raise ConfigError(f"block={block!r} is invalid: this config is for {cls.block!r}")
        unknown = sorted(set(d) - {"layers"})
        if unknown:
            raise ConfigError(f"{unknown[0]}={d[unknown[0]]!r} is invalid: {cls.__name__} has no such parameter")
        layers = d.get("layers", [])
        require(isinstance(layers, list | tuple), "layers", "a list of layer configs", layers)
        return cls(layers=tuple(l if isinstance(l, SparseConvConfig) else SparseConvConfig.from_dict(l)
                                for l in layers))
