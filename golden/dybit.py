"""DyBit numbers, bit-exact (docs/specs/dybit.md), and the quantisers built on them.

Codes are integer tensors of raw n-bit words (0 .. 2^n - 1): bit n-1 is the
sign, the n-1 bits below it the body. Every DyBit value is an integer multiple
of 2^-f with f = n - 2; `to_int` gives that integer, I(v) = v * 2^f, which is
what the MAC array multiplies and accumulates exactly.

Besides DyBit, this module has the plain formats the accuracy study compares
against (symmetric INT, FP4 E2M1, FP8 E4M3), all as `GridFormat`s: a format is
its sorted grid of non-negative magnitudes, and encoding is round to nearest,
ties to the smaller magnitude, saturating.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch

from accelkit.config.dybit import OperandFormat, parse_operand_format


class QuantError(ValueError):
    """Data a quantiser cannot take (NaN, infinities, codes out of range)."""


def _check_finite(x: torch.Tensor, what: str) -> None:
    if not torch.is_tensor(x):
        raise QuantError(f"{what} must be a torch tensor, got {type(x).__name__}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = x[~torch.isfinite(x)].flatten()[0].item()
        n_bad = int((~torch.isfinite(x)).sum())
        raise QuantError(f"{what} has {n_bad} non-finite value(s) (first: {bad}); DyBit cannot encode NaN or inf")


def _check_codes(codes: torch.Tensor, n: int, fmt: str) -> torch.Tensor:
    if not torch.is_tensor(codes) or codes.is_floating_point() or codes.is_complex():
        raise QuantError(f"codes must be an integer tensor of raw {n}-bit words")
    codes = codes.to(torch.int64)
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 1 << n):
        raise QuantError(f"codes must lie in 0 .. {(1 << n) - 1} for {fmt}; got "
                         f"{int(codes.min())} .. {int(codes.max())}")
    return codes


class GridFormat:
    """A signed number format given by its non-negative magnitudes (sign-magnitude, symmetric)."""

    name: str = "grid"

    @functools.cached_property
    def magnitudes(self) -> torch.Tensor:  # sorted, unique, float64, starting at 0
        raise NotImplementedError

    @property
    def max_value(self) -> float:
        return float(self.magnitudes[-1])

    def round_to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest grid value of x (float64); exact ties go to the smaller magnitude; saturates."""
        _check_finite(x, "input")
        x = x.to(torch.float64)
        g = self.magnitudes
        ax = x.abs()
        hi = torch.searchsorted(g, ax.contiguous(), right=False).clamp(max=len(g) - 1)
        lo = (hi - 1).clamp(min=0)
        mid = (g[lo] + g[hi]) / 2  # exact: grid values are dyadic
        pick = torch.where(ax <= mid, g[lo], g[hi])
        pick = torch.where(ax >= g[-1], g[-1], pick)
        return torch.where(x < 0, -pick, pick)

    def quantise(self, x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
        """Fake-quantise: scale * nearest grid value of x / scale."""
        return self.round_to_grid(x / scale) * scale


class DyBitFormat(GridFormat):
    """DyBit(n, kmax): a sign bit, a unary prefix of up to kmax ones, and a mantissa."""

    def __init__(self, n: int, kmax: int):
        self.operand = OperandFormat("dybit", n, kmax)  # checks n and kmax; what the hardware sees
        self.n = n
        self.kmax = kmax
        self.name = self.operand.name

    def __repr__(self) -> str:
        return f"DyBitFormat(n={self.n}, kmax={self.kmax})"

    def __eq__(self, other) -> bool:
        return isinstance(other, DyBitFormat) and (self.n, self.kmax) == (other.n, other.kmax)

    def __hash__(self) -> int:
        return hash((self.n, self.kmax))

    @property
    def f(self) -> int:
        """Fraction width of the format: every value is a multiple of 2^-f."""
        return self.n - 2

    @property
    def int_bits(self) -> int:
        """|I| < 2^int_bits for every code."""
        return self.kmax + self.n - 2

    def fields(self, body: int) -> tuple[int, int, int]:
        """(k, w, m) of a body word, straight from the spec."""
        nb = self.n - 1
        k = 0
        while k < self.kmax and (body >> (nb - 1 - k)) & 1:
            k += 1
        w = self.operand.mantissa_bits(k)
        m = body & ((1 << w) - 1)
        return k, w, m

    def _int_of_code(self, code: int) -> int:
        s = code >> (self.n - 1)
        k, w, m = self.fields(code & ((1 << (self.n - 1)) - 1))
        # k = 0: |v| = m 2^-f;  k >= 1: |v| = 2^(k-1) (1 + m 2^-w); I = |v| 2^f
        mag = m if k == 0 else ((1 << w) + m) << (k - 1 + self.f - w)
        return -mag if s else mag

    @functools.cached_property
    def int_table(self) -> torch.Tensor:
        """I of every code 0 .. 2^n - 1 (int64)."""
        return torch.tensor([self._int_of_code(c) for c in range(1 << self.n)], dtype=torch.int64)

    @functools.cached_property
    def magnitudes(self) -> torch.Tensor:
        pos = self.int_table[: 1 << (self.n - 1)]
        return pos.to(torch.float64) / (1 << self.f)

    def to_int(self, codes: torch.Tensor) -> torch.Tensor:
        """The integer form I = v * 2^f of each code (int64)."""
        return self.int_table[_check_codes(codes, self.n, repr(self))]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The value of each code (float64, exact)."""
        return self.to_int(codes).to(torch.float64) / (1 << self.f)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of the nearest values (ties to the smaller magnitude, saturating); never negative zero."""
        v = self.round_to_grid(torch.as_tensor(x))
        mag_codes = torch.round(v.abs() * (1 << self.f)).to(torch.int64)
        # positive codes are monotonic in magnitude, so a magnitude's code is its rank in the grid
        ints = self.int_table[: 1 << (self.n - 1)]
        code = torch.searchsorted(ints, mag_codes)
        sign = ((v < 0) & (code != 0)).to(torch.int64) << (self.n - 1)
        return code | sign


class IntFormat(GridFormat):
    """Symmetric n-bit integer, -(2^(n-1) - 1) .. 2^(n-1) - 1 (as weight quantisers use it)."""

    def __init__(self, n: int):
        self.operand = OperandFormat("int", n)  # checks n
        self.n = n
        self.name = self.operand.name

    @functools.cached_property
    def magnitudes(self) -> torch.Tensor:
        return torch.arange(0, 1 << (self.n - 1), dtype=torch.float64)

    f = 0  # integers: the code's value is its integer form

    @functools.cached_property
    def int_table(self) -> torch.Tensor:
        """Two's complement value of every code 0 .. 2^n - 1 (code 2^(n-1) is -2^(n-1), never encoded)."""
        c = torch.arange(1 << self.n, dtype=torch.int64)
        return torch.where(c >= 1 << (self.n - 1), c - (1 << self.n), c)

    def to_int(self, codes: torch.Tensor) -> torch.Tensor:
        """The two's complement integer of each n-bit code (int64)."""
        return self.int_table[_check_codes(codes, self.n, repr(self))]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.to_int(codes).to(torch.float64)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """n-bit two's complement codes of the nearest integers (ties to the smaller magnitude, saturating)."""
        v = self.round_to_grid(torch.as_tensor(x)).to(torch.int64)
        return v & ((1 << self.n) - 1)

    def __repr__(self) -> str:
        return f"IntFormat(n={self.n})"

    def __eq__(self, other) -> bool:
        return isinstance(other, IntFormat) and self.n == other.n

    def __hash__(self) -> int:
        return hash(("int", self.n))


class MiniFloatFormat(GridFormat):
    """Sign, e exponent and m mantissa bits with subnormals and no inf/NaN codes (FP4 E2M1, FP8 E4M3)."""

    def __init__(self, e: int, m: int, bias: int | None = None, max_value: float | None = None):
        self.e, self.m = e, m
        self.bias = (1 << (e - 1)) - 1 if bias is None else bias
        self._max = max_value
        self.name = f"fp{1 + e + m}e{e}m{m}"

    @functools.cached_property
    def magnitudes(self) -> torch.Tensor:
        vals = set()
        for ex in range(1 << self.e):
            for mt in range(1 << self.m):
                if ex == 0:
                    v = mt / (1 << self.m) * 2.0 ** (1 - self.bias)
                else:
                    v = (1 + mt / (1 << self.m)) * 2.0 ** (ex - self.bias)
                if self._max is None or v <= self._max:
                    vals.add(v)
        return torch.tensor(sorted(vals), dtype=torch.float64)


FP4_E2M1 = MiniFloatFormat(2, 1)
FP8_E4M3 = MiniFloatFormat(4, 3, max_value=448.0)  # OCP E4M3: the all-ones code is NaN, max 448

def _as_format(fmt) -> DyBitFormat | IntFormat:
    return fmt if isinstance(fmt, DyBitFormat | IntFormat) else parse_format(fmt)


def parse_format(spec: str | OperandFormat) -> DyBitFormat | IntFormat:
    """'dybit4k3' (or its OperandFormat) -> DyBitFormat(4, 3); 'int8' -> IntFormat(8)."""
    op = spec if isinstance(spec, OperandFormat) else parse_operand_format(spec)
    return DyBitFormat(op.n, op.kmax) if op.is_dybit else IntFormat(op.n)


# ---------------------------------------------------------------------------------------------
# The exact matmul


def dybit_matmul(a_codes: torch.Tensor, a_fmt: DyBitFormat | IntFormat | OperandFormat | str,
                 b_codes: torch.Tensor, b_fmt: DyBitFormat | IntFormat | OperandFormat | str) -> torch.Tensor:
    """C = A x B exactly, as int64 in units of 2^-(fa + fb) (either operand may be an INT format)."""
    a = _as_format(a_fmt).to_int(a_codes)
    b = _as_format(b_fmt).to_int(b_codes)
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise QuantError(f"shapes {tuple(a.shape)} x {tuple(b.shape)} do not make a matmul")
    return a @ b


# ---------------------------------------------------------------------------------------------
# Quantisers: scale (and DyBit's kmax) by lowest mean squared error


@dataclasses.dataclass(frozen=True)
class Quantised:
    """x ~= scale * fmt.decode(codes); scale broadcasts over x (per tensor or per channel)."""

    codes: torch.Tensor
    scale: torch.Tensor
    fmt: DyBitFormat

    def dequantise(self) -> torch.Tensor:
        return self.fmt.decode(self.codes) * self.scale


SCALE_CANDIDATES = 16  # fractions of the max-abs scale searched, from 0.25 to 1


def _scale_search(x: torch.Tensor, fmt: GridFormat, axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Best scale (lowest MSE) per channel along `axis` (or per tensor); returns (scale, mse per channel)."""
    x = x.to(torch.float64)
    if axis is None:
        xs = x.reshape(1, -1)
    else:
        xs = x.movedim(axis, 0).reshape(x.shape[axis], -1)
    amax = xs.abs().amax(dim=1, keepdim=True)
    amax = torch.where(amax > 0, amax, torch.ones_like(amax))
    best_s = amax / fmt.max_value
    best_e = torch.full_like(amax, math.inf)
    for i in range(SCALE_CANDIDATES):
        frac = 1.0 - 0.75 * i / (SCALE_CANDIDATES - 1)
        s = amax * frac / fmt.max_value
        err = ((fmt.round_to_grid(xs / s) * s - xs) ** 2).mean(dim=1, keepdim=True)
        better = err < best_e  # strict: the first (largest) scale wins ties, so the search is deterministic
        best_s = torch.where(better, s, best_s)
        best_e = torch.where(better, err, best_e)
    shape = [1] * x.dim()
    if axis is not None:
        shape[axis] = x.shape[axis]
    return best_s.reshape(shape) if axis is not None else best_s.reshape(()), best_e.flatten()


def quantise_grid(x: torch.Tensor, fmt: GridFormat, axis: int | None = None) -> torch.Tensor:
    """Fake-quantise x in `fmt` with the MSE-best scale per tensor (axis None) or per channel along axis."""
    _check_finite(x, "tensor to quantise")
    scale, _ = _scale_search(x, fmt, axis)
    return fmt.quantise(x.to(torch.float64), scale)


def quantise_dybit(x: torch.Tensor, n: int, axis: int | None = None, kmax: int | None = None) -> Quantised:
    """DyBit-quantise x: kmax per tensor and scale per tensor or per channel, by lowest MSE.

    With `kmax` given, only the scale is searched (a generated array fixes kmax).
    Deterministic: ties go to the smaller kmax and the larger scale.
    """
    _check_finite(x, "tensor to quantise")
    choices = [kmax] if kmax is not None else list(range(1, n))
    best = None
    for k in choices:
        fmt = DyBitFormat(n, k)
        scale, err = _scale_search(x, fmt, axis)
        total = float(err.sum())
        if best is None or total < best[0]:
            best = (total, fmt, scale)
    _, fmt, scale = best
    codes = fmt.encode(x.to(torch.float64) / scale)
    return Quantised(codes=codes, scale=scale, fmt=fmt)


def sqnr_db(x: torch.Tensor, xq: torch.Tensor) -> float:
    x = x.to(torch.float64)
    noise = ((x - xq.to(torch.float64)) ** 2).sum()
    return float(10 * torch.log10((x**2).sum() / noise)) if noise > 0 else math.inf


def fake_quantise_model(model: torch.nn.Module, quantiser) -> torch.nn.Module:
    """Replace every Linear and Conv weight of `model` (in place) by quantiser(weight) (per output channel).

    `quantiser(w)` returns the fake-quantised weight; e.g.
    `lambda w: quantise_dybit(w, 4, axis=0).dequantise()`.
    """
    convs = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, convs):
                mod.weight.copy_(quantiser(mod.weight.detach()).to(mod.weight.dtype))
    return model
