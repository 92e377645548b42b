"""The mixed-precision search (flows/minilm_mixed.py) on a synthetic accuracy model, and the dynamic
activation quantiser against the full search."""

from __future__ import annotations

import itertools

import pytest
import torch

from accelkit.flows import minilm_mixed as mm
from accelkit.golden.dybit import quantise_dybit


def synthetic(shapes, penalty):
    """cosine = 1 - the sum over quantised layers of their mode's penalty (additive, as a first-order model)."""
    def evaluate(modes):
        loss = sum(penalty[name][mode] for name, mode in modes.items())
        return 1.0 - loss, 1.0 - 2 * loss
    return evaluate


def test_the_search_meets_the_budget_and_finds_the_cheapest_modes():
    dims = [(64, 64), (64, 256), (256, 64), (32, 32)]
    shapes = [mm.LinearShape(f"l{i}", k, n, 40) for i, (k, n) in enumerate(dims)]
    g = torch.Generator().manual_seed(1)
    def r(scale):
        return float(torch.rand(1, generator=g)) * scale

    penalty = {s.name: {(8, 8): 0.0005, (8, 4): r(0.006), (4, 8): r(0.02), (4, 4): 0.004 + r(0.02)} for s in shapes}
    cycles = mm.scaled_cycles(4, 4)
    out = mm.choose_modes(shapes, synthetic(shapes, penalty), cycles, budget=0.99)
    ev = synthetic(shapes, penalty)
    assert ev(out["modes"])[0] >= 0.99 and out["cosine"]["mean"] == pytest.approx(ev(out["modes"])[0])
    assert out["cycles"] == mm.layer_cycles(shapes, cycles, out["modes"]) < out["cycles_widest"]
    # against every assignment (4 layers, 4 modes): no cheaper one within the budget exists here
    best = min(mm.layer_cycles(shapes, cycles, dict(zip([s.name for s in shapes], combo, strict=True)))
               for combo in itertools.product(mm.MODES, repeat=len(shapes))
               if ev(dict(zip([s.name for s in shapes], combo, strict=True)))[0] >= 0.99)
    assert out["cycles"] == best


def test_a_budget_the_widest_modes_miss_is_refused():
    shapes = [mm.LinearShape("l0", 8, 8, 8)]
    with pytest.raises(ValueError, match=r"budget=0.999 is invalid: every layer at \(8, 8\) already gives"):
        mm.choose_modes(shapes, lambda modes: (0.99, 0.98), mm.scaled_cycles(), budget=0.999)


@pytest.mark.parametrize("model", ["array", "closed form"])
def test_precision_scales_the_cycles(model):
    c = mm.array_cycles(4, 4) if model == "array" else mm.scaled_cycles(4, 4)
    full, w4a8, a4w4 = c(64, 256, 64, 8, 8), c(64, 256, 64, 8, 4), c(64, 256, 64, 4, 4)
    assert full / w4a8 == pytest.approx(2, rel=0.02) and full / a4w4 == pytest.approx(4, rel=0.05)


def test_the_sampled_activation_quantiser_picks_the_full_searchs_format():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 200, generator=g) * torch.linspace(0.2, 3, 200)  # uneven channels, like activations
    for n in (4, 8):
        q, full = mm.quantise_activation(x, n), quantise_dybit(x, n)
        assert q.fmt == full.fmt
        assert float(q.scale) == pytest.approx(float(full.scale), rel=0.1)
        assert q.codes.shape == x.shape


@pytest.mark.sim
@pytest.mark.parametrize("mode", [(8, 8), (8, 4), (4, 4)])
def test_a_linear_layer_on_the_rtl_gives_the_golden_layers_output(mode):
    """MixedPrecision's matmul hook with the scalable array's RTL (streams inside the simulator): the layer's
    output is bit for bit the golden integer matmul's, scaled the same way."""
    from accelkit.config.dybit_dyn import DyBitDynConfig
    from accelkit.sim.dybit_dyn import run_dybit_dyn

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(24, 12))
    x = torch.randn(7, 24)
    modes = {"0": mode}
    cfg = DyBitDynConfig(rows=2, cols=2, max_k=64)
    seen = []

    def rtl(a_codes, a_fmt, b_codes, b_fmt):
        fa, fb = f"dybit{a_fmt.n}k{a_fmt.kmax}", f"dybit{b_fmt.n}k{b_fmt.kmax}"
        seen.append((fa, fb))
        return run_dybit_dyn(cfg, [(a_codes, fa, b_codes, fb)], streams="native").c[0]

    with mm.MixedPrecision(model, modes):
        golden = model(x)
    with mm.MixedPrecision(model, modes, matmul=rtl):
        on_rtl = model(x)
    assert torch.equal(on_rtl, golden)
    assert seen and seen[0][0].startswith(f"dybit{mode[0]}k") and seen[0][1].startswith(f"dybit{mode[1]}k")
    assert (on_rtl - torch.nn.functional.linear(x, model[0].weight, model[0].bias)).abs().max() < 0.5


def test_the_activation_cache_gives_the_quantiser_s_result_and_hits_on_equal_tensors():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 30, generator=g)
    cache = mm.ActivationCache(size=2)
    first = cache(x, 8)
    direct = mm.quantise_activation(x, 8)
    assert torch.equal(first.codes, direct.codes) and first.fmt == direct.fmt and first.scale == direct.scale
    assert cache(x.clone(), 8) is first and (cache.hits, cache.misses) == (1, 1)
    cache(x, 4)
    cache(x + 1, 8)  # a third entry pushes out the least recently used (x at 8 bits)
    assert cache(x, 4) is not None and (cache.hits, cache.misses) == (2, 3)
    cache(x, 8)
    assert cache.misses == 4


def test_the_tail_spends_at_most_its_tries_and_skips_moves_that_cannot_fit():
    shapes = [mm.LinearShape(f"l{i}", 64, 64, 40) for i in range(12)]
    # the bisection takes every layer to W4A8 (0.0048 in all) and one to 4 x 4 (0.0031 more): a slack of 0.0021
    # is left, and each of the other 11 layers' 4 x 4 moves (0.0035 alone) would break the budget
    penalty = {s.name: {(8, 8): 0.0, (8, 4): 0.0004, (4, 8): 0.0004, (4, 4): 0.0035} for s in shapes}
    ev = synthetic(shapes, penalty)

    def run(**kw):
        calls = []
        out = mm.choose_modes(shapes, lambda m: (calls.append(m), ev(m))[1], mm.scaled_cycles(), budget=0.99, **kw)
        assert ev(out["modes"])[0] >= 0.99 and sorted(out["modes"].values()).count((4, 4)) == 1
        return len(calls)

    none = run(tail_tries=0)
    assert run(tail_slack=2.0, tail_tries=3) == none + 3  # 0.0035 <= 2 x 0.0021: tried, but three at most
    assert run(tail_slack=2.0, tail_tries=100) == none + 11
    assert run(tail_slack=1.0, tail_tries=100) == none  # 0.0035 > 0.0021: none can fit, none is tried
