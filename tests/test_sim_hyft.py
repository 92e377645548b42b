"""The softmax unit's RTL under Verilator: bit-exact against golden/hyft.py, cycles against golden/hyft_cycles.py.

Every run_hyft call below checks each output beat against the golden model
inside the testbench (a difference raises SimulationMismatch naming the vector
and elements); the tests also compare the returned tensors, flags and cycles.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from accelkit.config.hyft import SoftmaxConfig
from accelkit.golden.hyft import float_to_bits, hyft_softmax
from accelkit.golden.hyft_cycles import LATENCY_OVERHEAD, sustained_rate
from accelkit.sim.hyft import float_baseline_errors, run_hyft

pytestmark = pytest.mark.sim

INF = float("inf")
DEFAULT = SoftmaxConfig()
KINDS = ["randn", "randn", "uniform", "ties", "neginf", "special", "tiny", "wide"]


def vector(cfg: SoftmaxConfig, n: int, rnd: random.Random, kind: str | None = None) -> torch.Tensor:
    """n logits in cfg's dtype: a random scale in 0.01..100 and a random kind of special content."""
    kind = kind or rnd.choice(KINDS)
    g = torch.Generator().manual_seed(rnd.randrange(1 << 30))
    x = torch.randn(n, generator=g, dtype=torch.float64) * 10 ** rnd.uniform(-2, 2)
    if kind == "uniform":
        x = (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 10 ** rnd.uniform(-2, 2)
    elif kind == "ties":  # repeated maxima
        x[torch.randint(0, n, (max(1, n // 4),), generator=g)] = x.max()
    elif kind == "neginf":
        x[torch.randint(0, n, (max(1, n // 3),), generator=g)] = -INF
    elif kind == "special":
        x[rnd.randrange(n)] = rnd.choice([INF, float("nan")])
    elif kind == "tiny":  # subnormal and zero inputs
        x = x * 1e-38
    elif kind == "wide":  # differences that saturate at -2^I
        x = x * 10 ** rnd.uniform(0, 4)
    elif kind == "allneginf":
        x[:] = -INF
    return x.to(cfg.torch_dtype)


def batch(cfg: SoftmaxConfig, lengths: list[int], seed: int) -> list[torch.Tensor]:
    rnd = random.Random(seed)
    vecs = [vector(cfg, n, rnd) for n in lengths]
    # every kind at least once, and a vector of only -inf
    vecs += [vector(cfg, rnd.randrange(1, min(cfg.max_len, 3 * cfg.lanes) + 1), rnd, k) for k in KINDS]
    vecs.append(vector(cfg, min(5, cfg.max_len), rnd, "allneginf"))
    return vecs


def assert_matches_golden(cfg: SoftmaxConfig, vectors, run) -> None:
    for i, (v, out, err) in enumerate(zip(vectors, run.outputs, run.errors, strict=True)):
        if len(v) > cfg.max_len:
            assert err and out.numel() == 0, f"vector {i}: N={len(v)} > max_len must give only the error flag"
        else:
            assert not err, f"vector {i}: unexpected error flag"
            assert torch.equal(float_to_bits(out), float_to_bits(hyft_softmax(v, cfg))), f"vector {i} differs"


def assert_cycles_match_model(run) -> None:
    assert len(run.in_fires) == sum(p.beats_in for p in run.predicted)
    i_in = i_out = 0
    for v, p in enumerate(run.predicted):
        ins = run.in_fires[i_in:i_in + p.beats_in]
        outs = run.out_fires[i_out:i_out + p.beats_out]
        assert ins == list(range(p.in_first, p.in_last + 1)), f"vector {v}: input handshakes {ins[:3]}.."
        assert outs == list(range(p.out_first, p.out_last + 1)), f"vector {v}: output handshakes {outs[:3]}.."
        i_in += p.beats_in
        i_out += p.beats_out
    assert run.latency == [p.latency for p in run.predicted]
    assert run.cycles == run.predicted_cycles


# ---- the default unit: bf16, 4 lanes, 8 segments, max_len 1024 -----------------------------------------

def test_default_bit_exact_with_stalls_and_special_values():
    rnd = random.Random(11)
    lengths = [1, 2, 3, 4, 5, 1023, 1024] + [rnd.randrange(1, 1025) for _ in range(8)] + \
        [rnd.randrange(1, 40) for _ in range(12)]
    vecs = batch(DEFAULT, lengths, seed=12)
    for gap, stall, seed in ((0.3, 0.3, 1), (0.0, 0.6, 2), (0.5, 0.0, 3)):
        run = run_hyft(DEFAULT, vecs, gap=gap, stall=stall, seed=seed)
        assert_matches_golden(DEFAULT, vecs, run)
        assert run.cycles > sum(len(v) for v in vecs) / DEFAULT.lanes


def test_default_cycles_equal_the_model_and_meet_the_latency_bound():
    lengths = [1024, 1, 7, 256, 3, 255, 1, 1, 1, 1, 500, 64]
    vecs = batch(DEFAULT, lengths, seed=21)
    run = run_hyft(DEFAULT, vecs)
    assert_matches_golden(DEFAULT, vecs, run)
    assert_cycles_match_model(run)
    # a vector alone in the unit: at most 3N/L + LATENCY_OVERHEAD cycles
    for n in (1, 5, 256, 1024):
        alone = run_hyft(DEFAULT, [vector(DEFAULT, n, random.Random(n))])
        assert alone.latency[0] == alone.predicted[0].latency <= 3 * n / DEFAULT.lanes + LATENCY_OVERHEAD


@pytest.mark.parametrize("n", [256, 1024])
def test_default_sustained_throughput(n):
    vecs = [vector(DEFAULT, n, random.Random(100 + i), "randn") for i in range(12 if n == 256 else 6)]
    run = run_hyft(DEFAULT, vecs)
    assert_matches_golden(DEFAULT, vecs, run)
    assert_cycles_match_model(run)
    # steady state: the period between the last output beats of vectors in the second half of the batch
    ends, seen = [], 0
    for t in run.predicted:
        seen += t.beats_out
        ends.append(run.out_fires[seen - 1])
    k = len(ends) // 2
    rate = n * (len(ends) - 1 - k) / (ends[-1] - ends[k])
    assert rate >= 0.9 * DEFAULT.lanes
    assert rate == pytest.approx(sustained_rate(DEFAULT, n), rel=0.02)


def test_oversize_vector_flags_error_and_the_next_vector_is_right():
    rnd = random.Random(5)
    vecs = [vector(DEFAULT, 33, rnd), vector(DEFAULT, 1025, rnd), vector(DEFAULT, 3, rnd),
            vector(DEFAULT, 4000, rnd), vector(DEFAULT, 1024, rnd), vector(DEFAULT, 1, rnd)]
    run = run_hyft(DEFAULT, vecs, gap=0.2, stall=0.3, seed=9)
    assert run.errors == [False, True, False, True, False, False]
    assert_matches_golden(DEFAULT, vecs, run)
    clean = run_hyft(DEFAULT, vecs)
    assert_cycles_match_model(clean)


# ---- other lanes and formats ---------------------------------------------------------------------------

OTHERS = [
    pytest.param(SoftmaxConfig(lanes=1, fmt="fp16", max_len=64), marks=pytest.mark.quick),
    SoftmaxConfig(lanes=16, max_len=256),
    SoftmaxConfig(lanes=2, fmt="fp32", max_len=128, segments=4),
]


@pytest.mark.parametrize("cfg", OTHERS, ids=lambda c: f"{c.fmt}-L{c.lanes}-S{c.segments}")  # the first: quick tier
def test_other_configs_bit_exact_cycles_and_oversize(cfg):
    rnd = random.Random(cfg.lanes)
    lengths = [1, cfg.lanes, cfg.max_len, cfg.max_len - 1, cfg.max_len + 1] + \
        [rnd.randrange(1, cfg.max_len + 1) for _ in range(8)] + [2 * cfg.max_len + 3, 2]
    vecs = batch(cfg, lengths, seed=cfg.lanes + 1)
    run = run_hyft(cfg, vecs, gap=0.25, stall=0.35, seed=4)
    assert_matches_golden(cfg, vecs, run)
    assert sum(run.errors) == 2
    clean = run_hyft(cfg, vecs)
    assert_matches_golden(cfg, vecs, clean)
    assert_cycles_match_model(clean)
    n = cfg.max_len
    assert clean.latency[2] <= 3 * n / cfg.lanes + LATENCY_OVERHEAD


# ---- longer regressions --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("cfg", [DEFAULT, SoftmaxConfig(lanes=8, segments=1, centring=False, max_len=512),
                                 SoftmaxConfig(fmt="fp16", lanes=4, frac_bits=10, sum_frac_bits=14)],
                         ids=lambda c: f"{c.fmt}-L{c.lanes}-S{c.segments}")
def test_long_regression(cfg):
    rnd = random.Random(77)
    lengths = [rnd.randrange(1, cfg.max_len + 1) for _ in range(40)] + [rnd.randrange(1, 17) for _ in range(60)]
    vecs = batch(cfg, lengths, seed=78)
    run = run_hyft(cfg, vecs, gap=0.1, stall=0.2, seed=5)
    assert_matches_golden(cfg, vecs, run)
    if cfg.lanes == 8:
        same = [vector(cfg, 256, rnd, "randn") for _ in range(10)]
        fast = run_hyft(cfg, same)
        assert_cycles_match_model(fast)
        # the sustained rate from the RTL: the steady-state period between the last outputs of vectors 4 and 9
        beats = 256 // cfg.lanes
        last = [fast.out_fires[(k + 1) * beats - 1] for k in range(10)]
        assert 256 / ((last[9] - last[4]) / 5) >= 0.9 * cfg.lanes


# ---- the conventional floating-point baseline (arch="float"): bit-exact against golden/float_softmax.py ------

def adversarial(cfg: SoftmaxConfig, rnd: random.Random) -> list[torch.Tensor]:
    """Vectors aimed at the baseline's corners: ties, a huge element, -inf, NaN, +inf, length 1, exp near its
    flush and outputs in the subnormal range, zeros and subnormal inputs, the largest finite inputs."""
    dt, f = cfg.torch_dtype, cfg.float_format
    big = float(torch.finfo(dt).max)
    # x - max where y = e^d falls in the format's subnormal range, and where e is flushed
    sub_d = -(f.bias + f.man_bits / 2) * math.log(2)
    flush_d = -(f.bias + f.man_bits + 1) * math.log(2)

    def v(vals):
        return torch.tensor(vals, dtype=torch.float64).to(dt)

    n = min(cfg.max_len, 3 * cfg.lanes + 1)
    return [
        v([1.5] * n), v([2.0] * 4), v([0.0] * 3 + [-0.0]), v([40.0] + [0.0] * (n - 1)),
        v([7.0]), v([-3.0]), v([1.0, -INF, 2.0, -INF]), v([-INF] * 3 + [0.5]),
        v([1.0, float("nan"), 2.0]), v([1.0, INF]), v([-INF, INF]), v([-INF] * 2),
        v([0.0, sub_d, sub_d - 1.0, sub_d + 2.0, flush_d, flush_d + 0.05, flush_d - 0.05, -1e30]),
        v([1e-40, -1e-40, 0.0, 3e-39] if cfg.fmt != "fp16" else [1e-7, -1e-7, 0.0, 3e-5]),
        v([big, -big, big / 2, 0.0]), v([-big, -big]), v([-big, -big / 2]),
        v([rnd.gauss(0, 1) * 1e4 for _ in range(n)]),
    ]


def assert_float_bit_exact(cfg, vecs, run) -> None:
    from accelkit.golden.float_softmax import float_softmax

    for i, (v, out, err) in enumerate(zip(vecs, run.outputs, run.errors, strict=True)):
        assert err == (len(v) > cfg.max_len), f"vector {i}: error flag {err}"
        if not err:
            assert torch.equal(float_to_bits(out), float_to_bits(float_softmax(v, cfg))), f"vector {i} differs"


FLOAT_CFGS = [
    pytest.param(SoftmaxConfig(arch="float", fmt="bf16", lanes=1, max_len=32), marks=pytest.mark.quick),
    SoftmaxConfig(arch="float", fmt="bf16", lanes=4, max_len=256),  # the throughput test's build too
    SoftmaxConfig(arch="float", fmt="fp16", lanes=1, max_len=32),
    SoftmaxConfig(arch="float", fmt="fp16", lanes=4, max_len=128),
]


@pytest.mark.parametrize("cfg", FLOAT_CFGS, ids=lambda c: f"{c.fmt}-L{c.lanes}")
def test_float_baseline_bit_exact_every_beat_cycles_and_oversize(cfg):
    """Every beat (data, count, last, error) against the golden model, with gaps and stalls and without; the
    unstalled run's handshakes exactly the cycle model's."""
    rnd = random.Random(cfg.lanes * 7 + len(cfg.fmt))
    lengths = [1, cfg.lanes, cfg.max_len, cfg.max_len - 1, cfg.max_len + 1, 2 * cfg.max_len + 3, 2] + \
        [rnd.randrange(1, cfg.max_len + 1) for _ in range(6)]
    vecs = batch(cfg, lengths, seed=cfg.lanes + 3) + adversarial(cfg, rnd)
    run = run_hyft(cfg, vecs, gap=0.3, stall=0.4, seed=4)  # check=True: every beat against the golden model
    assert_float_bit_exact(cfg, vecs, run)
    assert sum(run.errors) == 2
    ones = [out for v, out in zip(vecs, run.outputs, strict=True) if len(v) == 1 and torch.isfinite(v).all()]
    assert len(ones) >= 2 and all(o.item() == 1.0 for o in ones)
    clean = run_hyft(cfg, vecs)
    assert_float_bit_exact(cfg, vecs, clean)
    assert_cycles_match_model(clean)
    for v, out, err in zip(vecs, clean.outputs, clean.errors, strict=True):
        if not err and not torch.isnan(out).any():  # and the outputs are close to float64's
            a, _, _ = float_baseline_errors(cfg, v, out)
            assert a <= 2.0 ** -cfg.man_bits


def test_float_baseline_sustained_throughput():
    cfg = FLOAT_CFGS[1]
    n = 256
    # 12 vectors: the bank hand-over reaches its steady state (at 8 the second half still runs at 4.0)
    vecs = [vector(cfg, n, random.Random(200 + i), "randn") for i in range(12)]
    run = run_hyft(cfg, vecs)
    assert_float_bit_exact(cfg, vecs, run)
    assert_cycles_match_model(run)
    ends, seen = [], 0
    for t in run.predicted:
        seen += t.beats_out
        ends.append(run.out_fires[seen - 1])
    k = len(ends) // 2
    rate = n * (len(ends) - 1 - k) / (ends[-1] - ends[k])
    assert rate == pytest.approx(sustained_rate(cfg, n), rel=0.02)
    assert rate >= 0.9 * cfg.lanes


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [SoftmaxConfig(arch="float", fmt="fp32", lanes=2, max_len=128),
                                 SoftmaxConfig(arch="float", fmt="bf16", lanes=8, max_len=256)],
                         ids=lambda c: f"{c.fmt}-L{c.lanes}")
def test_float_baseline_other_formats(cfg):
    rnd = random.Random(41)
    lengths = [1, cfg.lanes, cfg.max_len, cfg.max_len + 5] + [rnd.randrange(1, cfg.max_len + 1) for _ in range(10)]
    vecs = batch(cfg, lengths, seed=42) + adversarial(cfg, rnd)
    run = run_hyft(cfg, vecs, gap=0.2, stall=0.2, seed=7)
    assert_float_bit_exact(cfg, vecs, run)
    clean = run_hyft(cfg, vecs)
    assert_cycles_match_model(clean)
