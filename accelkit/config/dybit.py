"""Configuration of the DyBit MAC array (docs/specs/dybit.md), and the widths it implies.

One frozen dataclass drives the generator, the golden model, the cycle model,
the testbench and the reports. Operand formats are strings parsed by
`accelkit.golden.dybit.parse_format`: ``dybit<n>k<kmax>`` or ``int<n>``; the
INT8 baseline is ``a_format="int8", b_format="int8"`` from the same generator.
"""

from __future__ import annotations

import dataclasses
import functools

from .base import BlockConfig, require

MAX_DIM = 32  # rows, cols: beyond this the broadcast fan-out of one operand register is unreasonable
MAX_K_LIMIT = 1 << 20


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
        from accelkit.golden.dybit import parse_format  # a ConfigError names the bad format

        for name in ("rows", "cols"):
            v = getattr(self, name)
            require(isinstance(v, int) and 1 <= v <= MAX_DIM, name, f"an integer in 1..{MAX_DIM}", v)
        parse_format(self.a_format)
        parse_format(self.b_format)
        require(isinstance(self.max_k, int) and 1 <= self.max_k <= MAX_K_LIMIT, "max_k",
                f"an integer in 1..{MAX_K_LIMIT}", self.max_k)

    # ---- derived quantities (the generator, the host and the reports share these)

    @functools.cached_property
    def a_fmt(self):
        from accelkit.golden.dybit import parse_format

        return parse_format(self.a_format)

    @functools.cached_property
    def b_fmt(self):
        from accelkit.golden.dybit import parse_format

        return parse_format(self.b_format)

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
        return int(self.a_fmt.int_table.abs().max()) * int(self.b_fmt.int_table.abs().max())

    @property
    def acc_bits(self) -> int:
        """Signed accumulator width that holds any sum of max_k products exactly."""
        return (self.product_max * self.max_k).bit_length() + 1

    @property
    def frac_bits(self) -> int:
        """The results are integers in units of 2^-frac_bits."""
        return self.a_fmt.f + self.b_fmt.f

