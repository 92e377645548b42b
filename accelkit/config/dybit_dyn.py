"""Configuration of the runtime-format DyBit array (`dybit-dyn`, docs/dybit-dyn.md), and what it implies.

The array is generated for a set of operand widths (``widths``, a subset of
{4, 8}); every job brings its own formats in a header beat: DyBit(n, kmax) or
INT n for each operand, with n in ``widths``. A job of widths (na, nb) computes
P = (8 / na) * (8 / nb) MACs per PE per cycle (8 x 8: 1; 8 x 4 and 4 x 8: 2;
4 x 4: 4) on four 4 x 4-bit sub-multipliers per PE.

Everything the generator, the host, the golden and cycle models share lives
here: the header encoding, the normalised decode of a code (significand and
residual shift), the product lanes and their widths, the accumulator width.
"""

from __future__ import annotations

import dataclasses
import functools

from .base import BlockConfig, ConfigError, require
from .dybit import MAX_DIM, MAX_K_LIMIT, OperandFormat

WIDTHS_ALLOWED = (4, 8)
LANE_BITS = 16  # every a and b lane: P codes of n bits, P * n <= 16
SUB_BITS = 4  # the sub-multipliers are 4 x 4 bits
SHIFT_STEP = 2  # residual shifts are multiples of 2: the shifters have half the levels' worth of amounts
# Register stages before the accumulators (docs/dybit-dyn.md, "Pipeline"); the generator builds exactly these
# and checks it against the config (gen/dybit_dyn.py), the cycle model reads `pipeline_depth`.
FRONT_STAGES = 2  # the edge decoders: (1) each code's prefix, shift and value, (2) the decoded, placed operands
BROADCAST_FANOUT = 4  # PEs one broadcast register drives; wider arrays get a register tree (`broadcast_stages`)
PE_MUL_STAGES = 2  # the 4 x 4 sub-multiply: (1) partial-product pairs, (2) their sum
PE_FUSE_STAGES = 2  # (1) pairs of sub-products (8 x 4, 4 x 8) and the middle pair of 8 x 8, (2) the 8 x 8 sum
PE_SHIFT_STAGES = 1  # each lane's residual shift and sign (ones' complement)
OUTPUT_STAGES = 1  # a register slice on ``c``: the drain sees a registered ready, ``c.ready`` reaches only the slice

# header: lane 0 of the header beat holds A's format byte (bits 0..7) and B's (bits 8..15)
FMT_N_BITS = (0, 3)  # n - 1
FMT_KMAX_BITS = (3, 6)  # kmax (0 for INT)
FMT_KIND_BITS = (6, 8)  # 0 DyBit, 1 INT, 2 and 3 reserved (an error)
KIND_CODES = {"dybit": 0, "int": 1}


def macs_per_pe(na: int, nb: int) -> int:
    """P: MACs per PE per cycle in a job of operand widths na x nb."""
    return (8 // na) * (8 // nb)


def mode_lanes(na: int, nb: int) -> tuple[int, ...]:
    """The product lanes a job's P MACs use: MAC p goes to lane p * (4 // P)."""
    p = macs_per_pe(na, nb)
    return tuple(range(0, 4, 4 // p))


@functools.cache
def decode_case(n: int, kmax: int, k: int) -> tuple[int, int, int, int]:
    """How a DyBit(n, kmax) body with prefix length k decodes, normalised into an n-bit significand:
    (w, hidden, pre, sh). The significand is ((hidden << w) | m) << pre (hidden is 0 for k = 0, else 1) and
    the residual left shift is sh, so that |I| = significand << sh: the significand takes as much of the shift
    as n bits hold, less one when that leaves an odd residual (a multiple of SHIFT_STEP; a significand with
    a residual shift is left-aligned with w <= n - 2, so it has a zero to give)."""
    f = n - 2
    w = n - 2 - k if k < kmax else n - 1 - kmax
    if k == 0:
        return w, 0, 0, 0
    shift = k - 1 + f - w
    pre = min(shift, n - (w + 1))
    if (shift - pre) % SHIFT_STEP:
        pre -= 1
    return w, 1, pre, shift - pre


@functools.cache
def shift_max(n: int) -> int:
    """Largest residual shift of any n-bit operand (INT: 0)."""
    return max(decode_case(n, kmax, k)[3] for kmax in range(1, n) for k in range(kmax + 1))


def int_max(n: int) -> int:
    """Largest |I| of any format of width n (DyBit(n, n - 1)'s all-ones body, or INT n's -2^(n-1))."""
    return max(OperandFormat("dybit", n, n - 1).max_int, OperandFormat("int", n).max_int)


@dataclasses.dataclass(frozen=True)
class DyBitDynConfig(BlockConfig):
    """An R x C output-stationary MAC array whose operand formats come with each job.

    rows, cols: the array shape R x C (one output tile of R x C per pass over K).
    widths: the operand widths it is generated for, a subset of (4, 8) (e.g. "4,8" on the command line); a job
        uses DyBit(n, kmax) or INT n with n in widths for each operand.
    max_k: the largest K (MACs per output) the accumulators are sized for; a longer K is refused by the host.
    """

    block = "dybit-dyn"

    rows: int = 4
    cols: int = 4
    widths: tuple = (4, 8)
    max_k: int = 4096

    def __post_init__(self) -> None:
        w = self.widths
        if isinstance(w, str):
            try:
                w = tuple(int(x) for x in w.replace(" ", "").split(",") if x)
            except ValueError:
                raise ConfigError(f"widths={self.widths!r} is invalid: a list of widths from {WIDTHS_ALLOWED}, "
                                  "e.g. 4,8") from None
        elif isinstance(w, list | tuple):
            w = tuple(w)
        object.__setattr__(self, "widths", w)
        super().__post_init__()

    def validate(self) -> None:
        for name in ("rows", "cols"):
            v = getattr(self, name)
            require(isinstance(v, int) and 1 <= v <= MAX_DIM, name, f"an integer in 1..{MAX_DIM}", v)
        w = self.widths
        require(isinstance(w, tuple) and len(w) > 0 and all(isinstance(x, int) and x in WIDTHS_ALLOWED for x in w)
                and list(w) == sorted(set(w)), "widths",
                f"distinct increasing widths from {WIDTHS_ALLOWED}, e.g. (4, 8)", w)
        require(isinstance(self.max_k, int) and 1 <= self.max_k <= MAX_K_LIMIT, "max_k",
                f"an integer in 1..{MAX_K_LIMIT}", self.max_k)

    # ---- formats and the header

    def check_format(self, fmt: OperandFormat, param: str = "format") -> OperandFormat:
        """`fmt` if this array runs it, else a one-line ConfigError naming `param`."""
        if fmt.n not in self.widths:
            raise ConfigError(f"{param}={fmt.name!r} is invalid: this array was generated for operand widths "
                              f"{', '.join(map(str, self.widths))}, not {fmt.n}")
        return fmt

    @functools.cached_property
    def formats(self) -> tuple[OperandFormat, ...]:
        """Every operand format a job may use."""
        out = []
        for n in self.widths:
            out += [OperandFormat("dybit", n, k) for k in range(1, n)] + [OperandFormat("int", n)]
        return tuple(out)

    @property
    def modes(self) -> tuple[tuple[int, int], ...]:
        """Every (na, nb) a job may have."""
        return tuple((na, nb) for na in self.widths for nb in self.widths)

    # ---- the datapath's widths (generator, host and reports share them)

    @property
    def lanes_used(self) -> tuple[int, ...]:
        return tuple(sorted({lane for na, nb in self.modes for lane in mode_lanes(na, nb)}))

    def lane_modes(self, lane: int) -> tuple[tuple[int, int], ...]:
        return tuple((na, nb) for na, nb in self.modes if lane in mode_lanes(na, nb))

    def lane_product_max(self, lane: int) -> int:
        """Largest |I(a) * I(b)| a product in `lane` can have."""
        return max((int_max(na) * int_max(nb) for na, nb in self.lane_modes(lane)), default=0)

    def lane_fused_max(self, lane: int) -> int:
        """Largest unsigned significand product (before its shift) in `lane`."""
        return max((((1 << na) - 1) * ((1 << nb) - 1) for na, nb in self.lane_modes(lane)), default=0)

    def lane_shift_max(self, lane: int) -> int:
        """Largest residual shift of a product in `lane` (the sum of its operands' residual shifts)."""
        return max((shift_max(na) + shift_max(nb) for na, nb in self.lane_modes(lane)), default=0)

    def lane_shift_steps(self, lane: int) -> int:
        """lane_shift_max in units of SHIFT_STEP (what the PE's shifter takes)."""
        return self.lane_shift_max(lane) // SHIFT_STEP

    def side_shift_max(self, lane: int, side: str) -> int:
        """Largest residual shift of one operand (side "a" or "b") in `lane`."""
        return max((shift_max(na if side == "a" else nb) for na, nb in self.lane_modes(lane)), default=0)

    @property
    def product_max(self) -> int:
        """Largest |I(a) * I(b)| of one MAC over every job format pair."""
        return max(int_max(na) * int_max(nb) for na, nb in self.modes)

    @property
    def sum_max(self) -> int:
        """Largest |sum of one cycle's P products| of one PE."""
        return max(macs_per_pe(na, nb) * int_max(na) * int_max(nb) for na, nb in self.modes)

    @property
    def acc_bits(self) -> int:
        """Signed accumulator width that holds any sum of max_k products exactly."""
        return (self.product_max * self.max_k).bit_length() + 1

    @property
    def front_stages(self) -> int:
        """Register stages of the edge decoders (the last one is the front end's output, stream ``d``)."""
        return FRONT_STAGES

    @property
    def broadcast_stages(self) -> int:
        """Registers between the front end and the PEs: a tree in which each register drives at most
        BROADCAST_FANOUT PEs of its row (a row's operand) or column (a column's); none up to 4 x 4."""
        groups, stages = -(-max(self.rows, self.cols) // BROADCAST_FANOUT), 0
        while groups > 1:
            groups, stages = -(-groups // 2), stages + 1
        return stages

    @property
    def lane_sum_stages(self) -> int:
        """The PE's lane sum: one registered level of two-operand adds per halving (at least one register)."""
        return max(1, (len(self.lanes_used) - 1).bit_length())

    @property
    def pe_stages(self) -> int:
        """Register stages inside a PE, from its operands to the sum it hands the accumulator."""
        return PE_MUL_STAGES + PE_FUSE_STAGES + PE_SHIFT_STAGES + self.lane_sum_stages

    @property
    def pipeline_depth(self) -> int:
        """Register stages from the operand handshake to the accumulators (the cycle model reads it)."""
        return self.front_stages + self.broadcast_stages + self.pe_stages

    @property
    def output_stages(self) -> int:
        """Register stages from the shadow bank to ``c`` (the cycle model adds them to every output's time)."""
        return OUTPUT_STAGES

    @property
    def peak_macs_per_cycle(self) -> dict[tuple[int, int], int]:
        return {(na, nb): self.rows * self.cols * macs_per_pe(na, nb) for na, nb in self.modes}


def format_byte(fmt: OperandFormat) -> int:
    """The 8-bit header field of one operand format: n - 1, kmax (0 for INT) and the kind."""
    kmax = fmt.kmax if fmt.is_dybit else 0
    return ((fmt.n - 1) << FMT_N_BITS[0]) | (kmax << FMT_KMAX_BITS[0]) | (KIND_CODES[fmt.kind] << FMT_KIND_BITS[0])


def header_word(a_fmt: OperandFormat, b_fmt: OperandFormat) -> int:
    """Lane 0 of a job's header beat."""
    return format_byte(a_fmt) | (format_byte(b_fmt) << 8)
