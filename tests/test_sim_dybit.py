"""The DyBit MAC array's RTL under Verilator, bit-exact against the golden model."""

from __future__ import annotations

import re

import pytest
import torch

from accelkit.config import ConfigError
from accelkit.config.dybit import DyBitArrayConfig
from accelkit.golden.dybit import QuantError, dybit_matmul
from accelkit.golden.dybit_cycles import matmul_cycles
from accelkit.sim.dybit import pack_job, run_dybit_array
from accelkit.sim.runner import SimulationMismatch, run_streams

pytestmark = pytest.mark.sim

DEFAULT = DyBitArrayConfig()  # 4 x 4, A dybit8k4 (activations), B dybit4k3 (weights): W4A8


def codes(cfg_bits: int, shape, seed: int) -> torch.Tensor:
    return torch.randint(0, 1 << cfg_bits, shape, generator=torch.Generator().manual_seed(seed))


def check(cfg: DyBitArrayConfig, a: torch.Tensor, b: torch.Tensor, **kw):
    run = run_dybit_array(cfg, a, b, **kw)  # the testbench compares every beat with the golden model
    assert torch.equal(run.c, dybit_matmul(a, cfg.a_fmt, b, cfg.b_fmt))  # and so does the host
    return run


@pytest.mark.parametrize("a_format,b_format", [("dybit4k3", "dybit4k3"), ("dybit4k2", "dybit4k1"),
                                               ("dybit3k2", "dybit4k3"), ("dybit3k1", "int4")])
def test_every_code_pair(a_format, b_format):
    """All 2^na x 2^nb products (K = 1 outer product), then random sums over K = 5."""
    cfg = DyBitArrayConfig(rows=4, cols=4, a_format=a_format, b_format=b_format, max_k=64)
    na, nb = cfg.a_bits, cfg.b_bits
    a = torch.arange(1 << na).reshape(-1, 1)
    b = torch.arange(1 << nb).reshape(1, -1)
    run = check(cfg, a, b)
    assert run.c.shape == (1 << na, 1 << nb)
    check(cfg, codes(na, (7, 5), 1), codes(nb, (5, 10), 2))


@pytest.mark.parametrize("a_format,b_format", [("dybit8k7", "dybit8k1"), ("int8", "int8"), ("dybit8k4", "int8")])
def test_random_8bit(a_format, b_format):
    cfg = DyBitArrayConfig(rows=4, cols=4, a_format=a_format, b_format=b_format, max_k=256)
    a, b = codes(8, (12, 64), 3), codes(8, (64, 8), 4)
    a[0, :] = 0x80  # negative zero in DyBit, -128 in INT8
    b[:, 0] = 0x80
    check(cfg, a, b)


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), pytest.param(3, 5, 7, marks=pytest.mark.quick), (9, 17, 6), (13, 2, 5),
                                   (4, 4, 4), (8, 40, 12)])
def test_odd_shapes_and_cycle_model(m, k, n):
    """M, N not multiples of R, C; K below R + 1 (the drain-bound case) too. The cycle model is exact."""
    run = check(DEFAULT, codes(8, (m, k), m), codes(4, (k, n), n))
    assert run.cycles == run.predicted == matmul_cycles(DEFAULT, m, k, n)


def test_stalls_and_gaps():
    a, b = codes(8, (9, 20, ), 5), codes(4, (20, 11), 6)
    for gap, stall, seed in ((0.3, 0.0, 1), (0.0, 0.5, 2), (0.4, 0.4, 3), (0.8, 0.8, 4)):
        run = check(DEFAULT, a, b, gap=gap, stall=stall, seed=seed)
        assert run.cycles > run.predicted  # gaps and stalls cost cycles, and are survived
    # K < R + 1: a finished tile waits for the bank to drain while the output stalls
    check(DEFAULT, codes(8, (16, 2), 7), codes(4, (2, 16), 8), gap=0.2, stall=0.6, seed=5)


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 8), (8, 8)])
def test_array_shapes(rows, cols):
    cfg = DyBitArrayConfig(rows=rows, cols=cols)
    a, b = codes(8, (11, 9), 9), codes(4, (9, 19), 10)
    run = check(cfg, a, b, stall=0.3, seed=rows)
    assert run.c.shape == (11, 19)
    assert check(cfg, a, b).cycles == matmul_cycles(cfg, 11, 9, 19)


def test_accumulator_holds_the_extremes():
    """max_k products of the largest magnitude, all of one sign, fit the generated accumulator exactly."""
    cfg = DyBitArrayConfig(rows=2, cols=2, a_format="dybit8k7", b_format="dybit8k7", max_k=37)
    big_pos, big_neg = 0x7F, 0xFF  # +-64 in DyBit(8,7): I = 2^12
    a = torch.tensor([[big_pos] * 37, [big_neg] * 37])
    b = torch.full((37, 2), big_pos)
    b[:, 1] = big_neg
    run = check(cfg, a, b)
    assert int(run.c.abs().max()) == 37 * (1 << 12) ** 2
    assert cfg.acc_bits == (37 * (1 << 24)).bit_length() + 1


def test_k_above_max_k_is_refused():
    cfg = DyBitArrayConfig(max_k=16)
    with pytest.raises(QuantError, match=r"^K=17 is above max_k=16"):
        run_dybit_array(cfg, codes(8, (4, 17), 0), codes(4, (17, 4), 0))


def test_bad_operands_are_refused():
    with pytest.raises(QuantError, match="codes must lie in 0 .. 15"):
        run_dybit_array(DEFAULT, codes(8, (4, 3), 0), torch.full((3, 4), 16))
    with pytest.raises(QuantError, match="do not make a matmul"):
        run_dybit_array(DEFAULT, codes(8, (4, 3), 0), codes(4, (4, 4), 0))


@pytest.mark.parametrize("field,value,message", [
    ("a_format", "dybit9k2", "n=9 is invalid"), ("b_format", "dybit4k4", "kmax=4 is invalid"),
    ("a_format", "float8", "format='float8' is invalid"), ("rows", 0, "rows=0 is invalid"),
    ("cols", 33, "cols=33 is invalid"), ("max_k", 0, "max_k=0 is invalid"),
])
def test_invalid_parameters(field, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        DyBitArrayConfig(**{field: value})
    assert "\n" not in str(e.value)


def test_mismatch_names_the_waveform():
    a, b = codes(8, (4, 3), 11), codes(4, (3, 4), 12)
    a_beats, b_beats, c_beats = pack_job(DEFAULT, a, b)
    c_beats[2] ^= 1  # corrupt one expected word
    job = {"sources": [{"name": "a", "beats": a_beats}, {"name": "b", "beats": b_beats}],
           "sinks": [{"name": "c", "count": len(c_beats), "expect": c_beats}], "timeout": 1000}
    with pytest.raises(SimulationMismatch, match=r"stream c beat 2 of 4: expected .*waveform: (\S+dump\.vcd)") as e:
        run_streams(DEFAULT, job, waves=True)
    vcd = re.search(r"waveform: (\S+)", str(e.value)).group(1)
    with open(vcd) as fh:
        assert "$enddefinitions" in fh.read(100_000)


def test_dropped_beats_are_reported_not_hung():
    a, b = codes(8, (4, 3), 11), codes(4, (3, 4), 12)
    a_beats, b_beats, c_beats = pack_job(DEFAULT, a, b)
    job = {"sources": [{"name": "a", "beats": a_beats}, {"name": "b", "beats": b_beats}],
           "sinks": [{"name": "c", "count": len(c_beats) + 1}], "timeout": 200}
    with pytest.raises(SimulationMismatch, match="4 of 5 beats after 200 cycles"):
        run_streams(DEFAULT, job)
