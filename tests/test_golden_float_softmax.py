"""The float baseline's golden model (golden/float_softmax.py): correct rounding where the design says so,
special values as the Hyft unit's, and accuracy against float64 at least Hyft's on the accuracy study's inputs."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
import torch

from accelkit.config.float_softmax import GUARD_BITS, baseline
from accelkit.config.hyft import SoftmaxConfig
from accelkit.flows.hyft_accuracy import ErrorStats, random_vectors
from accelkit.golden import float_softmax as gf
from accelkit.golden.hyft import decode_float, float_to_bits, hyft_softmax, softmax_ref

pytestmark = pytest.mark.quick

FMTS = ["bf16", "fp16", "fp32"]
INF, NAN = float("inf"), float("nan")


def cfg_of(fmt: str, **kw) -> SoftmaxConfig:
    return SoftmaxConfig(arch="float", fmt=fmt, **kw)


def rne(v: Fraction, p: int) -> Fraction:
    """v > 0 rounded to p significant bits, to nearest, ties to even."""
    e = math.floor(math.log2(v))
    while Fraction(2) ** e > v:
        e -= 1
    while Fraction(2) ** (e + 1) <= v:
        e += 1
    scaled = v / Fraction(2) ** (e - p + 1)
    q = math.floor(scaled)
    rem = scaled - q
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and q % 2):
        q += 1
    return q * Fraction(2) ** (e - p + 1)


def wf_value(m, E, P) -> Fraction:
    return Fraction(int(m)) * Fraction(2) ** (int(E) - P)


@pytest.mark.parametrize("fmt", FMTS)
def test_subtract_is_correctly_rounded(fmt):
    cfg = cfg_of(fmt)
    fb = baseline(cfg)
    rnd = random.Random(1)
    vals = [rnd.gauss(0, 1) * 10 ** rnd.uniform(-3, 3) for _ in range(3000)]
    x = torch.tensor(vals, dtype=torch.float64).to(cfg.torch_dtype)
    mx = torch.maximum(x, torch.tensor([rnd.gauss(0, 1) * 10 ** rnd.uniform(-3, 3) for _ in vals],
                                       dtype=torch.float64).to(cfg.torch_dtype))
    mx[::7] = x[::7]  # equal operands
    mx[1::9] = torch.nextafter(x[1::9], torch.tensor(INF, dtype=x.dtype))  # one ulp apart
    s, E, m, _, _ = decode_float(float_to_bits(x), cfg.float_format)
    sm, Em, mm, _, _ = decode_float(float_to_bits(mx), cfg.float_format)
    sm = torch.where(mm == 0, 0, sm)
    dm, dE, dz = gf.subtract(s, E, m, sm, Em, mm, fb)
    for i in range(len(vals)):
        exact = Fraction(float(mx[i])) - Fraction(float(x[i]))
        if m[i] == 0:  # zeros and subnormals read as zero
            exact = Fraction(float(mx[i])) if mm[i] else Fraction(0)
        if mm[i] == 0:
            exact = -Fraction(float(x[i])) if m[i] else Fraction(0)
        if exact == 0:
            assert dz[i]
        else:
            assert not dz[i] and wf_value(dm[i], dE[i], fb.P) == rne(exact, fb.P + 1), (float(x[i]), float(mx[i]))


@pytest.mark.parametrize("fmt", FMTS)
def test_fadd_is_correctly_rounded(fmt):
    fb = baseline(cfg_of(fmt))
    P = fb.P
    rnd = random.Random(2)
    n = 4000
    ma = torch.tensor([rnd.randrange(1 << P, 2 << P) for _ in range(n)])
    mb = torch.tensor([rnd.randrange(1 << P, 2 << P) for _ in range(n)])
    Ea = torch.tensor([rnd.randrange(-30, 12) for _ in range(n)])
    Eb = Ea - torch.tensor([rnd.choice([0, 0, 1, 2, 3, P, P + 1, P + 2, P + 5, rnd.randrange(40)]) for _ in range(n)])
    za = torch.tensor([rnd.random() < 0.05 for _ in range(n)])
    zb = torch.tensor([rnd.random() < 0.05 for _ in range(n)])
    m, E, z = gf.fadd((ma, Ea, za), (mb, Eb, zb), fb)
    m2, E2, z2 = gf.fadd((mb, Eb, zb), (ma, Ea, za), fb)
    assert torch.equal(m, m2) and torch.equal(E, E2) and torch.equal(z, z2)  # commutative, bit for bit
    for i in range(n):
        exact = (0 if za[i] else wf_value(ma[i], Ea[i], P)) + (0 if zb[i] else wf_value(mb[i], Eb[i], P))
        if exact == 0:
            assert z[i]
        else:
            assert not z[i] and wf_value(m[i], E[i], P) == rne(exact, P + 1)


@pytest.mark.parametrize("fmt", FMTS)
def test_exp_is_within_its_error_bound(fmt):
    """e = 2^-|t| for every t on a dense grid: within 2^-(P+1) (rounding) + 2^-(P+2) (table) relative."""
    fb = baseline(cfg_of(fmt))
    tfix = torch.arange(0, fb.flush << fb.fix_bits, max(1, (fb.flush << fb.fix_bits) // 200_000), dtype=torch.int64)
    m, E = gf.exp_stage(tfix, fb)
    got = m.double() * torch.pow(2.0, (E - fb.P).double())
    ref = torch.pow(2.0, -tfix.double() / 2**fb.fix_bits)
    assert float(((got - ref).abs() / ref).max()) < 2.0 ** -(fb.P + 1) + 2.0 ** -(fb.P + 2)
    assert (m[0], E[0]) == (1 << fb.P, 0)


@pytest.mark.parametrize("fmt", FMTS)
def test_special_values_as_the_hyft_unit(fmt):
    cfg = cfg_of(fmt)
    dt = cfg.torch_dtype

    def sm(v):
        return gf.float_softmax(torch.tensor(v, dtype=torch.float64).to(dt), cfg)

    assert sm([3.0]).item() == 1.0
    assert sm([-7.5]).item() == 1.0
    assert sm([2.0, 2.0, 2.0, 2.0, -INF]).tolist() == [0.25, 0.25, 0.25, 0.25, 0.0]
    assert sm([0.0, -0.0]).tolist() == [0.5, 0.5]
    assert sm([1.0, -INF]).tolist() == [1.0, 0.0]
    for bad in ([1.0, NAN, 2.0], [1.0, INF], [-INF, -INF]):
        out = float_to_bits(sm(bad))
        assert (out == cfg.float_format.nan_bits).all()
    y = sm([0.0, -100.0, -1e4])  # exp underflow: subnormal or zero outputs, never negative
    assert y[0].item() == 1.0 and (y >= 0).all()


@pytest.mark.parametrize("fmt", ["bf16", "fp16"])
def test_trailing_neg_inf_padding_changes_nothing(fmt):
    """The partial sums are combined by slot, so padding (what the accuracy study does) is harmless."""
    cfg = cfg_of(fmt, lanes=4)
    g = torch.Generator().manual_seed(4)
    for n in (1, 3, 5, 17, 40):
        x = (torch.randn(n, generator=g, dtype=torch.float64) * 3).to(cfg.torch_dtype)
        padded = torch.cat([x, torch.full((64 - n,), -INF, dtype=x.dtype)])
        assert torch.equal(gf.float_softmax(padded, cfg)[:n], gf.float_softmax(x, cfg))


@pytest.mark.parametrize("fmt", FMTS)
def test_accuracy_against_float64_at_least_hyfts(fmt):
    """On 1500 of the accuracy study's random vectors: max |y - ref|, max relative error (ref >= 2^-10) and
    max |sum - 1| no worse than the most accurate Hyft row (S = 32), and close to exact rounding."""
    batches = random_vectors(1500, seed=0)
    cfg = cfg_of(fmt)
    stats = {k: ErrorStats() for k in ("float", "hyft", "exact")}
    for b in batches:
        x = b["x"].to(cfg.torch_dtype)
        ref, valid = softmax_ref(x), torch.isfinite(b["x"])
        stats["float"].add(gf.float_softmax(x, cfg), ref, valid)
        stats["hyft"].add(hyft_softmax(x, SoftmaxConfig(fmt=fmt, segments=32)), ref, valid)
        stats["exact"].add(ref.to(cfg.torch_dtype), ref, valid)
    r = {k: v.result() for k, v in stats.items()}
    for metric in ("max_abs", "max_rel", "max_sum_dev", "mean_abs"):
        assert r["float"][metric] <= r["hyft"][metric], (metric, r)
    assert r["float"]["max_abs"] <= {"bf16": 1.1, "fp16": 1.15, "fp32": 3}[fmt] * r["exact"]["max_abs"]
    assert GUARD_BITS[fmt] == baseline(cfg).guard
