"""The standalone backward unit's RTL (gen/hyft_backward.py `BackwardUnit`) under Verilator and cocotb: every
output beat bit-exact against golden/hyft.py's `hyft_softmax_backward_bits` (checked inside the testbench), with
random gaps on both input streams and stalls on the output; malformed lengths; cycles against
golden/hyft_backward_cycles.py."""

from __future__ import annotations

import random

import pytest
from test_hyft_backward_units import _bits, random_vectors

from accelkit.config.hyft import SoftmaxConfig
from accelkit.golden.hyft_backward_cycles import vector_cycles
from accelkit.sim.hyft_backward import expected_dx, run_hyft_backward

pytestmark = pytest.mark.sim

CFG = SoftmaxConfig(fmt="bf16", lanes=4, max_len=64)


def test_backward_unit_rtl_bit_exact_with_gaps_and_stalls():
    rnd = random.Random(31)
    vecs = random_vectors(CFG, rnd, 80)
    vecs += [random_vectors(CFG, rnd, 1, specials=False)[0] for _ in range(10)]
    y = _bits([0.25, 0.25, 0.25, 0.125, 0.125], "bf16")
    d = _bits([1, -2, 3, 0.5, 7, 9, 11], "bf16")
    vecs += [(y, d[:4]), (y, d[:7]), (y, d[:1]), ([y[0]] * 65, [d[0]] * 65)]  # malformed lengths, too long
    n = 64
    vecs.append((_bits([1 / 64] * n, "bf16"), [rnd.randrange(1 << 15) for _ in range(n)]))
    run = run_hyft_backward(CFG, vecs, gap=0.3, stall=0.3, seed=2)
    for i, (yv, dv) in enumerate(vecs):
        dx, err = expected_dx(CFG, yv, dv)
        assert run.outputs[i] == dx and run.errors[i] == err, f"vector {i}"
    nan = CFG.float_format.nan_bits
    for i in range(len(vecs) - 5, len(vecs) - 2):  # the malformed ones: all NaN, error set, y's length
        assert run.errors[i] and run.outputs[i] == [nan] * len(vecs[i][0])


def test_backward_unit_rtl_cycles_match_the_model():
    rnd = random.Random(32)
    vecs = [random_vectors(CFG, rnd, 1, specials=False)[0] for _ in range(4)]
    vecs += [([_bits([0.5], "bf16")[0]] * n, [_bits([1.0], "bf16")[0]] * n) for n in (1, 5, 64, 65)]
    run = run_hyft_backward(CFG, vecs, seed=3)
    assert run.latency == [vector_cycles(CFG, len(y)) for y, _ in vecs]
    assert run.cycles == sum(run.latency)
