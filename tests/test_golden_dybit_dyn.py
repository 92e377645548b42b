"""The runtime-format DyBit array's config, golden model (decode, packing) and cycle model, without the RTL."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch

from accelkit.config import ConfigError
from accelkit.config.dybit import OperandFormat
from accelkit.config.dybit_dyn import (
    SHIFT_STEP,
    DyBitDynConfig,
    format_byte,
    header_word,
    macs_per_pe,
    mode_lanes,
    shift_max,
)
from accelkit.golden.dybit import parse_format
from accelkit.golden.dybit_dyn import check_job_formats, decode_normalised, job_matmul, pack_k
from accelkit.golden.dybit_dyn_cycles import JobShape, macs_per_cycle, run_cycles, schedule, utilisation

CFG = DyBitDynConfig()


@pytest.mark.parametrize("fmt", CFG.formats, ids=lambda f: f.name)
def test_normalised_decode_is_exact(fmt):
    """Every code: sign, significand of at most n bits and residual shift give exactly I (docs/specs/dybit.md)."""
    ints = parse_format(fmt).int_table
    for code in range(1 << fmt.n):
        neg, sig, sh = decode_normalised(fmt, code)
        assert 0 <= sig < 1 << fmt.n and 0 <= sh <= shift_max(fmt.n)
        assert (-1 if neg else 1) * (sig << sh) == int(ints[code]), (fmt.name, code)


def test_shifts_are_short_and_even():
    """Normalised significands leave at most 6 bits of shift per 8-bit operand and 2 per 4-bit one, always even."""
    assert (shift_max(8), shift_max(4)) == (6, 2)
    assert [CFG.lane_shift_max(lane) for lane in range(4)] == [12, 4, 8, 4]
    assert all(decode_normalised(f, c)[2] % SHIFT_STEP == 0 for f in CFG.formats for c in range(1 << f.n))


def test_modes_lanes_and_widths():
    assert {m: macs_per_pe(*m) for m in CFG.modes} == {(4, 4): 4, (4, 8): 2, (8, 4): 2, (8, 8): 1}
    assert mode_lanes(8, 8) == (0,) and mode_lanes(8, 4) == (0, 2) and mode_lanes(4, 4) == (0, 1, 2, 3)
    assert CFG.product_max == 4096 * 4096 and CFG.acc_bits == (4096 * 4096 * 4096).bit_length() + 1
    assert DyBitDynConfig(widths=(8,)).lanes_used == (0,)
    assert DyBitDynConfig(widths=(4,)).product_max == 256


def test_header_encoding():
    assert format_byte(OperandFormat("dybit", 4, 3)) == 3 | (3 << 3)
    assert format_byte(OperandFormat("int", 8)) == 7 | (1 << 6)
    assert header_word(OperandFormat("dybit", 8, 7), OperandFormat("int", 4)) == (7 | 7 << 3) | ((3 | 1 << 6) << 8)


def test_pack_k_puts_code_p_at_bits_p_n():
    a = np.arange(2 * 7).reshape(2, 7) % 16
    lanes = pack_k(a, 4, 4, axis=1)
    assert lanes.shape == (2, 2)
    assert lanes[0, 0] == a[0, 0] | a[0, 1] << 4 | a[0, 2] << 8 | a[0, 3] << 12
    assert lanes[1, 1] == a[1, 4] | a[1, 5] << 4 | a[1, 6] << 8  # K padded with zero codes
    b = np.arange(3 * 2).reshape(3, 2) + 200
    assert pack_k(b, 8, 2, axis=0).tolist() == [[200 | 202 << 8, 201 | 203 << 8], [204, 205]]


def test_zero_padding_leaves_the_result():
    """Code 0 is +0 in every format, so K padded with zero codes does not change C."""
    for fmt in CFG.formats:
        assert decode_normalised(fmt, 0)[1] == 0


def test_job_matmul_mixed_formats():
    a = torch.tensor([[0x7F, 0x81]])  # DyBit(8, 7): +64, -1/64
    b = torch.tensor([[0x7], [0x7]])  # DyBit(4, 3): +4
    assert job_matmul(a, "dybit8k7", b, "dybit4k3").tolist() == [[64 * 64 * 4 * 4 - 1 * 4 * 4]]


@pytest.mark.parametrize("kw,message", [
    ({"widths": (4, 16)}, "widths=(4, 16) is invalid"), ({"widths": (8, 4)}, "widths=(8, 4) is invalid"),
    ({"widths": ()}, "widths=() is invalid"), ({"widths": "4,x"}, "widths='4,x' is invalid"),
    ({"rows": 0}, "rows=0 is invalid"), ({"cols": 33}, "cols=33 is invalid"), ({"max_k": 0}, "max_k=0 is invalid"),
])
def test_invalid_parameters(kw, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        DyBitDynConfig(**kw)
    assert "\n" not in str(e.value)


def test_widths_from_the_command_line_and_json():
    assert DyBitDynConfig(widths="4,8") == CFG
    assert DyBitDynConfig.from_dict(CFG.to_dict()) == CFG


@pytest.mark.parametrize("a_fmt,b_fmt,message", [
    ("dybit3k2", "dybit4k3", "a_format='dybit3k2' is invalid: this array was generated for operand widths 4, 8"),
    ("int8", "dybit4k4", "kmax=4 is invalid"), ("int8", "fp8", "b_format='fp8' is invalid"),
])
def test_job_formats_refused_in_one_line(a_fmt, b_fmt, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        check_job_formats(CFG, a_fmt, b_fmt)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="generated for operand widths 8, not 4"):
        check_job_formats(DyBitDynConfig(widths=(8,)), "int8", "int4")


def test_cycle_model_closed_form_equals_schedule():
    rng = random.Random(5)
    for cfg in (CFG, DyBitDynConfig(rows=1, cols=3), DyBitDynConfig(rows=8, cols=2)):
        for _ in range(50):
            jobs = [JobShape(rng.randint(1, 20), rng.randint(1, 40), rng.randint(1, 20), rng.choice((4, 8)),
                             rng.choice((4, 8))) for _ in range(rng.randint(1, 5))]
            s = schedule(cfg, jobs)
            assert s.cycles == run_cycles(cfg, jobs)
            assert len(s.job_spans) == len(jobs) and s.job_spans[-1] <= s.cycles
    # one job, one tile of K = 1 at 8 x 8: header, the beat, D stages, R rows
    assert run_cycles(CFG, [JobShape(4, 1, 4, 8, 8)]) == 1 + 1 + CFG.pipeline_depth + CFG.rows + CFG.output_stages


@pytest.mark.parametrize("na,nb", [(8, 8), (8, 4), (4, 4)])
def test_model_utilisation_of_the_reference_matmul(na, nb):
    jobs = [JobShape(64, 256, 64, na, nb)]
    cycles = run_cycles(CFG, jobs)
    assert utilisation(CFG, jobs, cycles) >= 0.95
    assert macs_per_cycle(jobs, cycles) == pytest.approx(16 * macs_per_pe(na, nb), rel=0.002)


@pytest.mark.parametrize("n", [4, 8])
def test_edge_decoder_matches_the_golden_decode(n):
    """The generator's decoder (leading ones, body shift, select) against decode_normalised, every code of every
    format of width n, in the Amaranth simulator."""
    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator

    from accelkit.gen.dybit_dyn import FormatLayout, decode_code

    m = Module()
    code, fmt = Signal(n), Signal(FormatLayout())
    out = decode_code(m, code, n, fmt, "d")
    seen = []

    async def bench(ctx):
        for f in CFG.formats:
            if f.n != n:
                continue
            ctx.set(fmt.is_int, int(not f.is_dybit))
            ctx.set(fmt.kmax, f.kmax if f.is_dybit else 0)
            for c in range(1 << n):
                ctx.set(code, c)
                neg, sig, sh = decode_normalised(f, c)
                seen.append((f.name, c, tuple(ctx.get(x) for x in out), (neg, sig, sh // SHIFT_STEP)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert len(seen) == (n if n == 4 else 8) * (1 << n)
    assert [s for s in seen if s[2] != s[3]] == []
