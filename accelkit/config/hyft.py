"""The Hyft softmax unit's parameters and every width they imply (docs/specs/hyft.md).

The golden model (`accelkit.golden.hyft`), the generator and the testbench all
read their widths and tables from here, so none of them restates a width.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

from .base import BlockConfig, require
from .float_softmax import float_pipeline, working_float_bits

# Register stages of the Hyft unit's datapaths (the float baseline's depend on lanes and format:
# float_softmax.float_pipeline). gen/hyft.py builds these; golden/hyft_cycles.py counts cycles from them.
#   b_wb   B: read data -> the word written back in place
#   b_p    B: read data -> the lane's contribution to the sum
#   b_beat B: the lanes' contributions -> the beat's sum
#   fin    B: the vector's total -> the per-vector value C needs (log2 of the sum, or 1/sum)
#   c_out  C: read data -> the input of the output register
# Hyft's, by piece (gen/hyft.py builds each piece from the same numbers):
HYFT_STAGES: dict[str, int] = {
    "decode": 3,  # B: decode and the larger exponent; the grid's base and the limits; k and z
    "align": 4,  # B: both shift amounts clamped; the two shifts with their sticky bits; the signs; max - x
    "ceil": 3,  # B: + 2^z - 1; >> z; the saturation
    "exp2": 3,  # 2^r by the segment table: the table into the multiplier's operands, the product, base + it
    "grid": 1,  # B: p onto the sum's grid: the shift (its amounts beside the exp2 table)
    "lead": 2,  # fin: the leading one of the sum by groups of 8, then the group
    "log2": 6,  # fin: normalise; the table's index; the table into the multiplier, the product, base + it; Lsum
    "negate": 1,  # fin: -Lsum, what C adds
    "round": 1,  # C: the rounding's shift, round bit and sticky bit (its add feeds the output register)
}
# Hand-over latencies of the bank ring's control, the same for both architectures:
# Each phase starts on a bank from a registered flag of it (FREE for A, FULL for B, SUMMED for C), a cycle after
# the bank's state: in a_full, b_done and C_FREE
RING_FLAG = 1


def a_full(lanes: int) -> int:
    """A's last input handshake -> B may start on the bank: the beat register, the lanes' keys, the max tree (a
    register after each level), the merge (the bank is FULL), B's start flag."""
    return 3 + (lanes - 1).bit_length() + RING_FLAG


# A bank read, issue -> the word in a register: the address register, the block RAM's address and output registers
# (gen/memory.py RegisteredRam, READ_LATENCY = 2), the bank select
RING_READ = 4
# C's last read -> A may start on the bank: the word has left the bank select register (the bank is FREE), A's flag
C_FREE = RING_READ + 1 + RING_FLAG


def mult_stages(a_bits: int, b_bits: int) -> int:
    """Register stages of gen/pipeline.py `split_multiply` of unsigned a_bits x b_bits operands: the partial
    products' operand and product registers, then a registered adder tree over them."""
    limb = 17
    pps = -(-a_bits // limb) * -(-b_bits // limb)
    return 2 + (pps - 1).bit_length()


def hyft_pipeline(cfg: SoftmaxConfig) -> dict[str, int]:
    """Hyft's register stages (the keys of `SoftmaxConfig.pipeline`), summed from HYFT_STAGES; the |D| * log2e
    multiply's depth from its operands' widths."""
    s = HYFT_STAGES
    log2e = mult_stages(cfg.d_mag_bits, cfg.log2e_const.bit_length()) + 2  # the product, then the ceiling, live
    b_wb = s["decode"] + s["align"] + s["ceil"] + log2e
    return {"b_wb": b_wb, "b_p": b_wb + 1 + s["exp2"] + s["grid"],  # 1: -|T|
            "b_beat": max(1, (cfg.lanes - 1).bit_length()),  # the lanes' adder tree, a register after each level
            "fin": s["lead"] + s["log2"] + s["negate"],
            "c_out": 1 + s["exp2"] + s["round"]}  # 1: U = -Lsum - |T|


def b_done(p: dict[str, int]) -> int:
    """B's last read -> C may start on the bank: the read, lane stages, the beat's sum, the accumulator, fin,
    the state write (SUMMED), C's start flag (p: the pipeline's stages)."""
    return RING_READ + p["b_p"] + p["b_beat"] + 1 + p["fin"] + 1 + RING_FLAG


def c_fire(p: dict[str, int]) -> int:
    """C's read -> its output handshake: the read, c_out stages, the output register."""
    return RING_READ + p["c_out"] + 1


@dataclasses.dataclass(frozen=True)
class FloatFormat:
    """An IEEE-style binary format: 1 sign bit, `exp_bits` exponent bits, `man_bits` stored mantissa bits."""

    name: str
    exp_bits: int
    man_bits: int

    @property
    def width(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def bias(self) -> int:
        return (1 << (self.exp_bits - 1)) - 1

    @property
    def exp_max(self) -> int:
        """The biased exponent of inf and NaN."""
        return (1 << self.exp_bits) - 1

    @property
    def nan_bits(self) -> int:
        """The canonical quiet NaN the unit emits (positive, top mantissa bit set)."""
        return (self.exp_max << self.man_bits) | (1 << (self.man_bits - 1))


FORMATS: dict[str, FloatFormat] = {
    "bf16": FloatFormat("bf16", 8, 7),
    "fp16": FloatFormat("fp16", 5, 10),
    "fp32": FloatFormat("fp32", 8, 23),
}
LANES = (1, 2, 4, 8, 16)
SEGMENTS = (1, 2, 4, 8, 16, 32)
MAX_LEN_LIMIT = 4096
ARCHS = ("hyft", "float")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# The golden model computes in int64; the widest intermediate must fit with a sign bit to spare.
GOLDEN_INT_BITS = 62


@dataclasses.dataclass(frozen=True)
class SoftmaxConfig(BlockConfig):
    """One Hyft softmax unit.

    fmt            input and output float format: "bf16", "fp16" or "fp32"
    lanes          elements accepted and produced per cycle
    max_len        the longest vector (each vector's own length comes with the stream)
    frac_bits      F: fraction bits of the fixed-point domain (d, t, r, log2 of the sum)
    int_bits       I: d saturates at -2^I; an element with t < -2^I contributes exactly 0
    segments       S: segments of the piecewise-linear 2^r and log2(1+r) tables
    log2e_bits     width of the unsigned fixed-point log2(e) constant (1 integer bit)
    table_bits     fraction bits of the 2^r table entries: the mantissa width of p and y before rounding
    sum_frac_bits  fraction bits of the exact fixed-point sum of the p_i
    centring       add `log2_bias` to log2(sum) unless the sum is a power of two, which centres the
                   error band of y (both chord tables push y up); False: the plain chords
    arch           the generated architecture: "hyft" (this unit) or "float", the conventional
                   floating-point softmax of the same format, lanes and throughput (docs/float-baseline.md:
                   the format's precision plus guard bits, exp by range reduction and a table, pipelined
                   float adders with interleaved partial sums, one reciprocal per vector, L multipliers);
                   "float" reads only fmt, lanes, max_len
    """

    block: ClassVar[str] = "hyft"

    fmt: str = "bf16"
    lanes: int = 4
    max_len: int = 1024
    frac_bits: int = 12
    int_bits: int = 7
    segments: int = 8
    log2e_bits: int = 16
    table_bits: int = 12
    sum_frac_bits: int = 20
    centring: bool = True
    arch: str = "hyft"

    def validate(self) -> None:
        require(isinstance(self.fmt, str) and self.fmt in FORMATS, "fmt", f"one of {', '.join(FORMATS)}", self.fmt)
        require(_is_int(self.lanes) and self.lanes in LANES, "lanes", f"one of {LANES}", self.lanes)
        require(_is_int(self.max_len) and 1 <= self.max_len <= MAX_LEN_LIMIT, "max_len",
                f"an integer in 1..{MAX_LEN_LIMIT}", self.max_len)
        require(self.max_len % self.lanes == 0, "max_len", f"a multiple of lanes={self.lanes}", self.max_len)
        require(_is_int(self.segments) and self.segments in SEGMENTS, "segments", f"one of {SEGMENTS}", self.segments)
        require(_is_int(self.int_bits) and 1 <= self.int_bits <= 8, "int_bits",
                "an integer in 1..8 (d saturates at -2^int_bits; 2^-256 is below every format)",
                self.int_bits)
        lo = self.seg_bits + 2
        require(_is_int(self.frac_bits) and lo <= self.frac_bits <= 24, "frac_bits",
                f"an integer in {lo}..24 (at least log2(segments)+2 so the log2 table rises strictly)",
                self.frac_bits)
        require(_is_int(self.table_bits) and lo <= self.table_bits <= 30, "table_bits",
                f"an integer in {lo}..30 (at least log2(segments)+2 so the 2^r table rises strictly)",
                self.table_bits)
        require(_is_int(self.log2e_bits) and 2 <= self.log2e_bits <= 32, "log2e_bits",
                "an integer in 2..32", self.log2e_bits)
        require(self.product_bits <= GOLDEN_INT_BITS, "log2e_bits",
                f"at most {GOLDEN_INT_BITS - self.d_mag_bits} with int_bits={self.int_bits}, "
                f"frac_bits={self.frac_bits} (the product d*log2e must stay under {GOLDEN_INT_BITS} bits)",
                self.log2e_bits)
        require(_is_int(self.sum_frac_bits) and 1 <= self.sum_frac_bits <= 40, "sum_frac_bits",
                "an integer in 1..40", self.sum_frac_bits)
        require(isinstance(self.centring, bool), "centring", "True or False", self.centring)
        require(isinstance(self.arch, str) and self.arch in ARCHS, "arch", f"one of {', '.join(ARCHS)}", self.arch)

    # ---- the float format -------------------------------------------------------------------
    @property
    def float_format(self) -> FloatFormat:
        return FORMATS[self.fmt]

    @property
    def width(self) -> int:
        """Bits of one input or output element."""
        return self.float_format.width

    @property
    def exp_bits(self) -> int:
        return self.float_format.exp_bits

    @property
    def man_bits(self) -> int:
        return self.float_format.man_bits

    @property
    def bias(self) -> int:
        return self.float_format.bias

    @property
    def torch_dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.fmt]

    # ---- step 2: d = x - mx -----------------------------------------------------------------
    @property
    def align_exp_limit(self) -> int:
        """H: if the larger operand's unbiased exponent is >= H and x != mx, then mx - x > 2^I (saturate)."""
        return self.int_bits + self.man_bits + 2

    @property
    def align_bits(self) -> int:
        """Unsigned width of |A2|, the aligned difference in half units of the alignment grid."""
        return self.man_bits + self.int_bits + self.frac_bits + 4

    @property
    def d_mag_bits(self) -> int:
        """|d| * 2^F is in 0..2^(I+F): I+F+1 bits unsigned."""
        return self.int_bits + self.frac_bits + 1

    @property
    def d_sat(self) -> int:
        """2^(I+F): the saturation magnitude of d in units of 2^-F."""
        return 1 << (self.int_bits + self.frac_bits)

    # ---- step 3: t = d * log2(e) ------------------------------------------------------------
    @property
    def log2e_frac_bits(self) -> int:
        return self.log2e_bits - 1

    @property
    def log2e_const(self) -> int:
        """round(log2(e) * 2^(log2e_bits-1)), unsigned, log2e_bits wide."""
        return log2e_constant(self.log2e_frac_bits)

    @property
    def product_bits(self) -> int:
        """Unsigned width of |d| * 2^F * log2e_const."""
        return self.d_mag_bits + self.log2e_bits

    @property
    def t_mag_bits(self) -> int:
        """Live elements have |t| * 2^F <= 2^(I+F): I+F+1 bits unsigned (the sign is always minus)."""
        return self.int_bits + self.frac_bits + 1

    @property
    def q_bits(self) -> int:
        """q in -2^I..0: I+1 bits two's complement."""
        return self.int_bits + 1

    # ---- the tables (step 4, 6, 7) -----------------------------------------------------------
    @property
    def seg_bits(self) -> int:
        """log2(S): the top bits of r that index a segment."""
        return self.segments.bit_length() - 1

    @property
    def interp_bits(self) -> int:
        """F - log2(S): the bits of r below the segment index, the interpolation weight."""
        return self.frac_bits - self.seg_bits

    @property
    def exp2_table(self) -> tuple[int, ...]:
        """S+1 entries round(2^(j/S) * 2^table_bits), j = 0..S: 2^table_bits .. 2^(table_bits+1)."""
        return exp2_table(self.segments, self.table_bits)

    @property
    def exp2_entry_bits(self) -> int:
        return self.table_bits + 2

    @property
    def log2_table(self) -> tuple[int, ...]:
        """S+1 entries round(log2(1 + j/S) * 2^F), j = 0..S: 0 .. 2^F."""
        return log2_table(self.segments, self.frac_bits)

    @property
    def log2_bias(self) -> int:
        """Added to log2(sum) (units 2^-F) when the sum is not a power of two; 0 without centring."""
        return log2_centring_bias(self.segments, self.frac_bits) if self.centring else 0

    @property
    def log2_entry_bits(self) -> int:
        return self.frac_bits + 1

    @property
    def mant_bits(self) -> int:
        """Width of the 2^r mantissa P (hidden one included): values 2^table_bits .. 2^(table_bits+1)-1."""
        return self.table_bits + 1

    # ---- step 5 and 6: the sum and its log -------------------------------------------------
    @property
    def sum_int_bits(self) -> int:
        """Each p < 2, so the sum of max_len of them is < 2^(clog2(max_len)+1)."""
        return (self.max_len - 1).bit_length() + 1

    @property
    def sum_bits(self) -> int:
        """Width of the exact fixed-point sum (sum_frac_bits fraction bits), unsigned."""
        return self.sum_int_bits + self.sum_frac_bits

    @property
    def log2_sum_int_bits(self) -> int:
        """The integer part of log2(sum) is in 0..sum_int_bits-1."""
        return max(1, (self.sum_int_bits - 1).bit_length())

    @property
    def len_bits(self) -> int:
        """Width of an element count 1..max_len."""
        return self.max_len.bit_length()

    # ---- the RTL's buffering and stream packing (gen/hyft.py) ---------------------------------
    @property
    def depth(self) -> int:
        """Beats of one vector buffer bank: max_len / lanes."""
        return self.max_len // self.lanes

    @property
    def banks(self) -> int:
        """Vector buffer banks in the ring (fill, sum and output phases each hold one).

        Three suffice for 0.9 L elements/cycle at N = 256 up to 4 lanes; with 8 and 16 lanes a vector of
        256 is only 32 or 16 beats, shorter than the pipelines' hand-over time, so a fourth bank keeps
        the phases busy (golden/hyft_cycles.py predicts both). The float baseline's sum and reciprocal take
        longer (`float_pipeline`), so it gets as many banks as keep it at 0.9 L elements per cycle on back-to-back
        vectors of RATE_N = 256 too: a bank is busy for about 3n beats plus the pipelines' hand-over time.
        """
        base = 3 if self.lanes <= 4 else 4
        n = max(1, 256 // self.lanes)
        p = self.pipeline
        busy = 3 * n + a_full(self.lanes) + b_done(p) + c_fire(p) + C_FREE + 1
        return max(base, -(-busy * 9 // (10 * n)))

    @property
    def count_bits(self) -> int:
        """Width of a beat's `count` field: the number of valid lanes, 1..lanes."""
        return self.lanes.bit_length()

    @property
    def word_bits(self) -> int:
        """Bits per element in a buffer bank: the input float, later overwritten by its live flag and |t|."""
        if self.arch == "float":  # the baseline writes back e = exp(x - max) as a packed working float
            return max(self.width, working_float_bits(self))
        return max(self.width, self.t_mag_bits + 1)

    @property
    def pipeline(self) -> dict[str, int]:
        """Register stages of the datapaths (keys: see the comment above HYFT_STAGES); the generator builds
        exactly these and golden/hyft_cycles.py counts cycles from them."""
        return float_pipeline(self) if self.arch == "float" else hyft_pipeline(self)

    def implies(self) -> dict[str, int]:
        """Every derived width, by name (what the generator and the report read)."""
        names = ["width", "exp_bits", "man_bits", "bias", "align_exp_limit", "align_bits", "d_mag_bits",
                 "log2e_const", "product_bits", "t_mag_bits", "q_bits", "seg_bits", "interp_bits",
                 "exp2_entry_bits", "log2_entry_bits", "log2_bias", "mant_bits", "sum_int_bits", "sum_bits",
                 "log2_sum_int_bits", "len_bits", "depth", "banks", "count_bits", "word_bits"]
        return {n: getattr(self, n) for n in names}


# ---- the constants, computed once to 60 significant digits, then rounded to nearest -------------
# The RTL generator calls these same functions, so the ROM contents cannot drift from the golden model.

def _decimal_context():
    import decimal

    return decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN)


def _round_decimal(v) -> int:
    import decimal

    return int(v.to_integral_value(rounding=decimal.ROUND_HALF_EVEN))


@functools.cache
def log2e_constant(frac_bits: int) -> int:
    """round(log2(e) * 2^frac_bits) (ties cannot occur: log2(e) is irrational)."""
    import decimal

    ctx = _decimal_context()
    with decimal.localcontext(ctx):
        return _round_decimal(decimal.Decimal(2) ** frac_bits / decimal.Decimal(2).ln())


@functools.cache
def exp2_table(segments: int, table_bits: int) -> tuple[int, ...]:
    """round(2^(j/S) * 2^table_bits) for j = 0..S; entries 0 and S are exact powers of two."""
    import decimal

    ctx = _decimal_context()
    with decimal.localcontext(ctx):
        ln2 = decimal.Decimal(2).ln()
        return tuple(_round_decimal((ln2 * j / segments).exp() * (decimal.Decimal(2) ** table_bits))
                     for j in range(segments + 1))


@functools.cache
def log2_table(segments: int, frac_bits: int) -> tuple[int, ...]:
    """round(log2(1 + j/S) * 2^frac_bits) for j = 0..S; entry 0 is 0 and entry S is 2^frac_bits."""
    import decimal

    ctx = _decimal_context()
    with decimal.localcontext(ctx):
        ln2 = decimal.Decimal(2).ln()
        return tuple(_round_decimal((decimal.Decimal(segments + j) / segments).ln() / ln2
                                    * (decimal.Decimal(2) ** frac_bits))
                     for j in range(segments + 1))


@functools.cache
def log2_centring_bias(segments: int, frac_bits: int) -> int:
    """round(2^F * (e_log + e_exp) / 2), the centre of the error band of y in log2 units.

    e_log = max over r of log2(1+r) minus its S-segment chord (the log table reads low), and
    e_exp = max over r of log2(chord of 2^r) - r (the 2^r table reads high), both for the exact
    (unrounded) chords, from the closed-form maximum on each segment.
    """
    import decimal

    ctx = _decimal_context()
    with decimal.localcontext(ctx):
        D = decimal.Decimal
        ln2 = D(2).ln()
        e_log = e_exp = D(0)
        for j in range(segments):
            a, b = D(j) / segments, D(j + 1) / segments
            # log2(1+r) - chord: stationary where 1/((1+r) ln2) equals the chord's slope
            fa, fb = (1 + a).ln() / ln2, (1 + b).ln() / ln2
            s = (fb - fa) * segments
            r = 1 / (s * ln2) - 1
            e_log = max(e_log, (1 + r).ln() / ln2 - (fa + s * (r - a)))
            # log2(chord of 2^r) - r: stationary where the chord equals its slope / ln2
            ea, eb = (ln2 * a).exp(), (ln2 * b).exp()
            s = (eb - ea) * segments
            r = a + (s / ln2 - ea) / s
            e_exp = max(e_exp, (s / ln2).ln() / ln2 - r)
        return _round_decimal((e_log + e_exp) / 2 * (D(2) ** frac_bits))
