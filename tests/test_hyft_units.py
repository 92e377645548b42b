"""The Hyft unit's pieces (gen/hyft.py), each alone in Amaranth's simulator, bit-exact against the golden model's
functions (golden/hyft.py: exp2_fixed, leading_one, log2_fixed, round_to_format, and steps 2 to 5 for one lane),
one operand a cycle, at the latency the cycle model counts."""

from __future__ import annotations

import random

import pytest
import torch
from amaranth_streams import run_pipeline

from accelkit.config.hyft import SoftmaxConfig
from accelkit.gen.hyft import BLane, Exp2Unit, LeadingOne, Log2Unit, RoundUnit
from accelkit.golden import hyft as gh

CFGS = [SoftmaxConfig(fmt=f, lanes=1, max_len=64) for f in ("bf16", "fp16", "fp32")]
IDS = [c.fmt for c in CFGS]


def _t(v):
    return torch.tensor(v, dtype=torch.int64)


@pytest.mark.parametrize("cfg", CFGS, ids=IDS)
def test_exp2_unit_matches_golden(cfg):
    rnd = random.Random(1)
    F = cfg.frac_bits
    us = [0, -1, -(1 << F), -(1 << F) + 1, -(1 << 22)] + [-rnd.randrange(1 << 22) for _ in range(300)] + \
        [-rnd.randrange(1 << (F + 2)) for _ in range(100)]
    dut = Exp2Unit(cfg)
    got = run_pipeline(dut, dut.latency, [{"u": u} for u in us], ["q", "P"])
    q, P = gh.exp2_fixed(_t(us), cfg)
    assert [g["q"] for g in got] == q.tolist()
    assert [g["P"] for g in got] == P.tolist()


@pytest.mark.parametrize("width", [1, 3, 9, 24, 31])
def test_leading_one_matches_golden(width):
    rnd = random.Random(2 + width)
    vs = [0, 1, (1 << width) - 1, 1 << (width - 1)] + [rnd.randrange(1 << rnd.randrange(1, width + 1))
                                                        for _ in range(300)]
    dut = LeadingOne(width)
    got = run_pipeline(dut, dut.latency, [{"v": v} for v in vs], ["k"])
    assert [g["k"] for g in got] == gh.leading_one(_t(vs)).tolist()


@pytest.mark.parametrize("cfg", CFGS, ids=IDS)
def test_log2_unit_matches_golden(cfg):
    rnd = random.Random(3)
    B, S = cfg.sum_frac_bits, cfg.sum_bits
    totals = [1 << B, (1 << B) + 1, (1 << S) - 1, 1 << (S - 1), 3 << B] + \
        [rnd.randrange(1 << B, 1 << rnd.randrange(B + 1, S + 1)) for _ in range(300)]
    dut = Log2Unit(cfg)
    got = run_pipeline(dut, dut.latency, [{"total": t} for t in totals], ["nlsum"])
    assert [g["nlsum"] for g in got] == (-gh.log2_fixed(_t(totals), cfg)).tolist()


@pytest.mark.parametrize("cfg", CFGS, ids=IDS)
def test_round_unit_matches_golden(cfg):
    rnd = random.Random(4)
    W, f = cfg.table_bits, cfg.float_format
    lo = -(f.bias + f.man_bits + W + 4)  # well below the smallest subnormal
    ins = [(q, P) for q in (0, -1, 1 - f.bias, -f.bias, -f.bias - f.man_bits, lo)
           for P in (1 << W, (1 << (W + 1)) - 1, (1 << W) + (1 << (W - f.man_bits - 1)) if W > f.man_bits else 1 << W)]
    ins += [(rnd.randrange(lo, 1), rnd.randrange(1 << W, 1 << (W + 1))) for _ in range(400)]
    dut = RoundUnit(cfg)
    got = run_pipeline(dut, dut.latency, [{"q": q, "P": P} for q, P in ins], ["y"])
    want = gh.round_to_format(_t([q for q, _ in ins]), _t([P for _, P in ins]), cfg) & ((1 << f.width) - 1)
    assert [g["y"] for g in got] == want.tolist()


@pytest.mark.parametrize("cfg", CFGS, ids=IDS)
def test_b_lane_matches_golden(cfg):
    """Steps 2 to 5 for one element against its vector's max: the written-back (live, |T|) and p."""
    rnd = random.Random(5)
    f = cfg.float_format
    W, B = cfg.table_bits, cfg.sum_frac_bits
    ins, want_wb, want_p = [], [], []
    for v in range(40):
        n = 8
        x = torch.randn(n, dtype=torch.float64) * 10 ** rnd.uniform(-3, 3)
        if v % 5 == 1:
            x[rnd.randrange(n)] = float("-inf")
        if v % 5 == 2:
            x = x * 10 ** rnd.uniform(0, 5)  # saturating differences
        if v % 5 == 3:
            x[rnd.randrange(n)] = x.max()  # ties
        bits = gh.float_to_bits(x.to(cfg.torch_dtype))
        sign, E, m, is_nan, is_inf = gh.decode_float(bits, f)
        finite = ~(is_nan | is_inf)
        key = torch.where(finite, gh._order_key(sign, m, E, f), torch.full_like(m, -(1 << 40)))
        i = int(key.argmax())
        max_bits = int(bits[i]) if int(m[i]) != 0 else 0
        D = gh.fixed_difference(sign, E, m, sign[i], E[i], m[i], cfg)
        T = (D * cfg.log2e_const) >> cfg.log2e_frac_bits
        live = finite & (T >= -cfg.d_sat)
        T = torch.where(live, T, torch.zeros_like(T))
        q, P = gh.exp2_fixed(T, cfg)
        s = q - W + B
        p = torch.where(s >= 0, P << s.clamp(min=0), P >> (-s).clamp(min=0, max=W + 2))
        for k in range(n):
            ins.append({"word": int(bits[k]), "max": max_bits, "ok": 1})
            want_wb.append(int(-T[k]) | (int(live[k]) << cfg.t_mag_bits))
            want_p.append(int(p[k]) if bool(live[k]) else 0)
    dut = BLane(cfg)
    st = cfg.pipeline
    got_wb = run_pipeline(dut, st["b_wb"], ins, ["wb"])
    got_p = run_pipeline(BLane(cfg), st["b_p"], ins, ["p"])
    assert [g["wb"] for g in got_wb] == want_wb
    assert [g["p"] for g in got_p] == want_p
