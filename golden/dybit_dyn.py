"""Golden model of the runtime-format DyBit array (`dybit-dyn`, docs/dybit-dyn.md): results, decode, packing.

A job is (A codes, A's format, B codes, B's format); its result is `dybit_matmul` with the job's formats,
exact integers in units of 2^-(fa + fb). This module adds what is particular to the array: the normalised
decode of a code (sign, significand of at most n bits, residual shift) that its edge decoders compute, and the
packing of P codes of n bits per 16-bit lane along K (the beats' contents).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from accelkit.config.dybit import OperandFormat, parse_operand_format
from accelkit.config.dybit_dyn import DyBitDynConfig, decode_case, macs_per_pe

from .dybit import DyBitFormat, IntFormat, QuantError, dybit_matmul, parse_format


def operand_format(fmt, param: str = "format") -> OperandFormat:
    """'dybit4k3', an OperandFormat or a golden format -> OperandFormat (a one-line ConfigError naming `param`
    if invalid)."""
    if isinstance(fmt, OperandFormat):
        return fmt
    if isinstance(fmt, DyBitFormat | IntFormat):
        return fmt.operand
    return parse_operand_format(fmt, param)


def decode_normalised(fmt: OperandFormat, code: int) -> tuple[int, int, int]:
    """(neg, significand, shift) of one code as the edge decoder computes it: |I| = significand << shift,
    significand < 2^n."""
    n = fmt.n
    neg = (code >> (n - 1)) & 1
    if not fmt.is_dybit:
        return neg, (-(code - (1 << n)) if neg else code), 0
    k, w, m = DyBitFormat(n, fmt.kmax).fields(code & ((1 << (n - 1)) - 1))
    w2, hidden, pre, sh = decode_case(n, fmt.kmax, k)
    assert w2 == w
    return neg, ((hidden << w) | m) << pre, sh


def job_matmul(a: torch.Tensor, a_fmt, b: torch.Tensor, b_fmt) -> torch.Tensor:
    """One job's exact result: M x N int64 in units of 2^-(fa + fb)."""
    return dybit_matmul(a, parse_format(operand_format(a_fmt)), b, parse_format(operand_format(b_fmt)))


def job_p(a_fmt, b_fmt) -> int:
    """MACs per PE per cycle of a job."""
    return macs_per_pe(operand_format(a_fmt).n, operand_format(b_fmt).n)


def pack_k(codes: np.ndarray, n: int, p: int, axis: int) -> np.ndarray:
    """Pack P consecutive codes along `axis` (K) into one lane value, code p at bits p * n; K is padded with
    zero codes to a multiple of P. (M, K) with axis 1 -> (M, ceil(K / P)); (K, N) with axis 0 -> (ceil(K / P), N)."""
    codes = np.asarray(codes, dtype=np.int64)
    k = codes.shape[axis]
    kb = math.ceil(k / p)
    pad = [(0, 0), (0, 0)]
    pad[axis] = (0, kb * p - k)
    c = np.pad(codes, pad)
    if axis == 1:
        c = c.reshape(c.shape[0], kb, p)
        return sum(c[:, :, q] << (q * n) for q in range(p))
    c = c.reshape(kb, p, c.shape[1])
    return sum(c[:, q, :] << (q * n) for q in range(p))


def check_job_formats(cfg: DyBitDynConfig, a_fmt, b_fmt) -> tuple[OperandFormat, OperandFormat]:
    """The job's formats if the array runs them, else a one-line ConfigError naming the operand."""
    return (cfg.check_format(operand_format(a_fmt, "a_format"), "a_format"),
            cfg.check_format(operand_format(b_fmt, "b_format"), "b_format"))


__all__ = ["QuantError", "check_job_formats", "decode_normalised", "job_matmul", "job_p", "operand_format",
           "pack_k"]
