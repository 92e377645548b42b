"""Configuration of the DyBit MAC array (docs/specs/dybit.md), and the widths it implies.

One frozen dataclass drives the generator, the golden model, the cycle model,
the testbench and the reports. Operand formats are strings parsed by
`parse_operand_format`: ``dybit<n>k<kmax>`` or ``int<n>``; the INT8 baseline is
``a_format="int8", b_format="int8"`` from the same generator. What a format is
to the hardware (its width, prefix length and fraction bits) lives here in
`OperandFormat`; its values and quantisers are the golden model's
(`accelkit.golden.dybit`, which builds on the same `OperandFormat`).
"""

from __future__ import annotations

import dataclasses
import functools
import re

from .base import BlockConfig, ConfigError, require

MAX_DIM = 32  # rows, cols: beyond this the broadcast fan-out of one operand register is unreasonable
MAX_K_LIMIT = 1 << 20
PIPELINE_DEPTH = 2  # register stages before the accumulators: operand decode, then the product


@dataclasses.dataclass(frozen=True)
class OperandFormat:
    """An operand format as the hardware sees it: DyBit(n, kmax) (sign, unary prefix of up to kmax ones,
    mantissa) or two's complement INT n. Values are integers I in units of 2^-f."""

    kind: str  # "dybit" or "int"
    n: int
    kmax: int = 0  # DyBit only

    def __post_init__(self) -> None:
        require(self.kind in ("dybit", "int"), "kind", "'dybit' or 'int'", self.kind)
        if self.kind == "dybit":
            require(isinstance(self.n, int) and 3 <= self.n <= 8, "n", "DyBit needs 3 <= n <= 8", self.n)
            require(isinstance(self.kmax, int) and 1 <= self.kmax <= self.n - 1, "kmax",
                    f"DyBit({self.n}, kmax) needs 1 <= kmax <= {self.n - 1}", self.kmax)
        else:
            require(isinstance(self.n, int) and 2 <= self.n <= 16, "n", "INT needs 2 <= n <= 16", self.n)

    @property
    def is_dybit(self) -> bool:
        return self.kind == "dybit"

    @property
    def name(self) -> str:
        return f"dybit{self.n}k{self.kmax}" if self.is_dybit else f"int{self.n}"

    @property
    def f(self) -> int:
        """Fraction width: every value is a multiple of 2^-f (DyBit: n - 2; INT: 0)."""
        return self.n - 2 if self.is_dybit else 0

    def mantissa_bits(self, k: int) -> int:
        """w, the mantissa width of a DyBit body with prefix length k (0 .. kmax)."""
        return self.n - 2 - k if k < self.kmax else self.n - 1 - self.kmax

    @property
    def max_int(self) -> int:
        """The largest |I| of any code: DyBit's all-ones body, INT's -2^(n-1)."""
        if not self.is_dybit:
            return 1 << (self.n - 1)
        w = self.mantissa_bits(self.kmax)
        return ((2 << w) - 1) << (self.kmax - 1 + self.f - w)


_FORMAT_RE = re.compile(r"^(?:dybit(\d)k(\d)|int(\d+))$")


def parse_operand_format(spec: str, param: str = "format") -> OperandFormat:
    """'dybit4k3' -> OperandFormat('dybit', 4, 3); 'int8' -> OperandFormat('int', 8). Errors name `param`."""
    m = _FORMAT_RE.match(str(spec))
    if not m:
        raise ConfigError(f"{param}={spec!r} is invalid: write dybit<n>k<kmax> (e.g. dybit4k3) or int<n> (e.g. int8)")
    if m.group(3):
        return OperandFormat("int", int(m.group(3)))
    return OperandFormat("dybit", int(m.group(1)), int(m.group(2)))


@dataclasses.dataclass(frozen=True)
class DyBitArrayConfig(BlockConfig):
    """An R x C output-stationary MAC array computing C = A x B exactly for A (M x K) and B (K x N).

    rows, cols: the array shape R x C (one output tile of R x C per pass over K).
    a_format, b_format: operand formats of A and B, chosen independently (mixed precision).
    max_k: the largest K the accumulators are sized for; a longer K is refused by the host.
    """

    block = "dybit-array"

    rows: int = 4
    cols: int = 4
    a_format: str = "dybit8k4"
    b_format: str = "dybit4k3"
    max_k: int = 4096

    def validate(self) -> None:
        for name in ("rows", "cols"):
            v = getattr(self, name)
            require(isinstance(v, int) and 1 <= v <= MAX_DIM, name, f"an integer in 1..{MAX_DIM}", v)
        for name in ("a_format", "b_format"):
            parse_operand_format(getattr(self, name), name)
        require(isinstance(self.max_k, int) and 1 <= self.max_k <= MAX_K_LIMIT, "max_k",
                f"an integer in 1..{MAX_K_LIMIT}", self.max_k)

    # ---- derived quantities (the generator, the host and the reports share these)

    @functools.cached_property
    def a_fmt(self) -> OperandFormat:
        return parse_operand_format(self.a_format)

    @functools.cached_property
    def b_fmt(self) -> OperandFormat:
        return parse_operand_format(self.b_format)

    @property
    def a_bits(self) -> int:
        return self.a_fmt.n

    @property
    def b_bits(self) -> int:
        return self.b_fmt.n

    @property
    def is_int_baseline(self) -> bool:
        return self.a_format.startswith("int") and self.b_format.startswith("int")

    @property
    def product_max(self) -> int:
        """Largest |I(a) * I(b)| over all code pairs."""
        return self.a_fmt.max_int * self.b_fmt.max_int

    @property
    def acc_bits(self) -> int:
        """Signed accumulator width that holds any sum of max_k products exactly."""
        return (self.product_max * self.max_k).bit_length() + 1

    @property
    def pipeline_depth(self) -> int:
        """Register stages from the operand handshake to the accumulators (the cycle model reads it)."""
        return PIPELINE_DEPTH

    @property
    def frac_bits(self) -> int:
        """The results are integers in units of 2^-frac_bits."""
        return self.a_fmt.f + self.b_fmt.f

