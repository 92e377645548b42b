"""The DyBit golden model against the spec's tables and its special cases."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from accelkit.config import ConfigError
from accelkit.golden.dybit import (
    FP4_E2M1,
    DyBitFormat,
    IntFormat,
    QuantError,
    dybit_matmul,
    parse_format,
    quantise_dybit,
    quantise_grid,
    sqnr_db,
)


def test_spec_table_dybit_4_3():
    fmt = DyBitFormat(4, 3)
    assert fmt.decode(torch.arange(8)).tolist() == [0, 0.25, 0.5, 0.75, 1, 1.5, 2, 4]
    assert fmt.decode(torch.arange(8, 16)).tolist() == [0, -0.25, -0.5, -0.75, -1, -1.5, -2, -4]


def test_dybit_8_7_steps_from_spec():
    mags = DyBitFormat(8, 7).magnitudes
    steps = mags[1:] - mags[:-1]
    # 64 steps of 1/64 in [0, 1), 32 of 1/32 in [1, 2), 16 of 1/8 in [2, 4), 8 of 1/2 in [4, 8),
    # 4 of 2 in [8, 16), 2 of 8 in [16, 32), then 32 and 64
    expect = [1 / 64] * 64 + [1 / 32] * 32 + [1 / 8] * 16 + [1 / 2] * 8 + [2] * 4 + [8] * 2 + [32]
    assert steps.tolist() == expect
    assert mags[-1] == 64


@pytest.mark.parametrize("n", range(3, 9))
def test_kmax_1_is_sign_magnitude_integer(n):
    fmt = DyBitFormat(n, 1)
    codes = torch.arange(1 << n)
    mag = codes & ((1 << (n - 1)) - 1)
    sign = codes >> (n - 1)
    assert torch.equal(fmt.to_int(codes), torch.where(sign == 1, -mag, mag))


def test_dybit_4_2_is_fp4_e2m1_scaled_by_half():
    assert torch.equal(DyBitFormat(4, 2).magnitudes * 2, FP4_E2M1.magnitudes)


@pytest.mark.parametrize("n,kmax", [(n, k) for n in range(3, 9) for k in range(1, n)])
def test_every_format_is_monotonic_exact_and_bounded(n, kmax):
    fmt = DyBitFormat(n, kmax)
    pos = fmt.int_table[: 1 << (n - 1)]
    assert bool((pos[1:] > pos[:-1]).all()), "positive codes must increase strictly"
    assert int(fmt.int_table.abs().max()) < 1 << fmt.int_bits
    # encode(decode(c)) == c for every code but negative zero
    codes = torch.arange(1 << n)
    codes = codes[codes != 1 << (n - 1)]
    assert torch.equal(fmt.encode(fmt.decode(codes)), codes)


def test_encode_ties_go_to_smaller_magnitude_and_saturate():
    fmt = DyBitFormat(4, 3)
    x = torch.tensor([0.125, 0.1250001, 0.375, 1.25, 3.0, 100.0, -0.375, -100.0, -0.1])
    assert fmt.decode(fmt.encode(x)).tolist() == [0, 0.25, 0.25, 1, 2, 4, -0.25, -4, 0]
    assert int(fmt.encode(torch.tensor([-0.1]))) == 0, "never negative zero"


@settings(max_examples=200, deadline=None)
@given(st.integers(3, 8).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n - 1))),
       st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=20))
def test_encode_is_nearest(fmt_nk, xs):
    fmt = DyBitFormat(*fmt_nk)
    x = torch.tensor(xs, dtype=torch.float64)
    got = fmt.decode(fmt.encode(x))
    grid = torch.cat([-fmt.magnitudes.flip(0), fmt.magnitudes])
    best = (x[:, None] - grid[None, :]).abs().min(dim=1).values
    assert torch.allclose((x - got).abs(), best)


@pytest.mark.parametrize("bad", [dict(n=2, kmax=1), dict(n=9, kmax=1), dict(n=4, kmax=0), dict(n=4, kmax=4)])
def test_invalid_format_is_one_line_config_error(bad):
    with pytest.raises(ConfigError) as e:
        DyBitFormat(**bad)
    msg = str(e.value)
    assert "\n" not in msg and ("kmax" in msg or "n=" in msg)


def test_parse_format():
    assert parse_format("dybit4k3") == DyBitFormat(4, 3)
    assert isinstance(parse_format("int8"), IntFormat)
    with pytest.raises(ConfigError, match="format='fp8'"):
        parse_format("fp8")


def test_codes_out_of_range_and_float_codes_rejected():
    fmt = DyBitFormat(4, 3)
    with pytest.raises(QuantError, match="0 .. 15"):
        fmt.decode(torch.tensor([16]))
    with pytest.raises(QuantError, match="integer tensor"):
        fmt.decode(torch.tensor([1.0]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_quantiser_rejects_non_finite_with_one_line(bad):
    x = torch.randn(16)
    x[3] = bad
    with pytest.raises(QuantError) as e:
        quantise_dybit(x, 4)
    assert "\n" not in str(e.value) and "non-finite" in str(e.value)


def test_matmul_exact_every_code_pair_n4():
    fa, fb = DyBitFormat(4, 3), DyBitFormat(4, 2)
    pairs = torch.tensor(list(itertools.product(range(16), range(16))))
    a = pairs[:, :1]
    b = pairs[:, 1:].T
    c = dybit_matmul(a, fa, b, fb)  # outer product: every code pair once
    ref = (fa.decode(a) @ fb.decode(b)) * (1 << (fa.f + fb.f))
    assert torch.equal(c.to(torch.float64), ref)


def test_quantiser_deterministic_and_beats_int_at_4_bits_on_gaussian():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 256, generator=g)
    q1 = quantise_dybit(w, 4, axis=0)
    q2 = quantise_dybit(w, 4, axis=0)
    assert q1.fmt == q2.fmt and torch.equal(q1.codes, q2.codes) and torch.equal(q1.scale, q2.scale)
    assert q1.scale.shape == (64, 1)
    s_dy = sqnr_db(w, q1.dequantise())
    s_int = sqnr_db(w, quantise_grid(w, IntFormat(4), axis=0))
    assert s_dy > s_int, (s_dy, s_int)
