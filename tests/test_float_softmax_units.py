"""The float baseline's pieces (gen/float_softmax.py), each alone in Amaranth's simulator, bit-exact against
the golden model's functions (golden/float_softmax.py) on random and edge-case operands, one operand a cycle."""

from __future__ import annotations

import random

import pytest
import torch
from amaranth_streams import run_pipeline

from accelkit.config.float_softmax import ADD_STAGES, C_STAGES, baseline
from accelkit.config.hyft import SoftmaxConfig
from accelkit.gen.float_softmax import ExpUnit, FloatAdder, OutputRound, Reciprocal
from accelkit.golden import float_softmax as gf
from accelkit.golden.hyft import decode_float

CFGS = [SoftmaxConfig(arch="float", fmt=f, lanes=1, max_len=64) for f in ("bf16", "fp16", "fp32")]
IDS = [c.fmt for c in CFGS]


def _t(v):
    return torch.tensor(v, dtype=torch.int64)


def _float_bits(cfg, rnd: random.Random, n: int) -> list[int]:
    """Raw bit patterns: random values over many scales, zeros, subnormals, extremes, infinities and NaN."""
    f = cfg.float_format
    out = []
    for _ in range(n):
        u = rnd.random()
        if u < 0.6:
            x = torch.tensor(rnd.gauss(0, 1) * 10 ** rnd.uniform(-3, 3)).to(cfg.torch_dtype)
            out.append(int(gf.float_to_bits(x.reshape(1))[0]))
        elif u < 0.9:
            out.append(rnd.randrange(1 << f.width))  # any pattern, subnormals and specials included
        else:
            out.append(rnd.choice([0, 1 << (f.width - 1), f.exp_max << f.man_bits,
                                   (1 << (f.width - 1)) | (f.exp_max << f.man_bits), f.nan_bits,
                                   ((f.exp_max - 1) << f.man_bits) | ((1 << f.man_bits) - 1), 1 << f.man_bits]))
    return out


def _key(bits, cfg):
    s, E, m, nan, inf = decode_float(_t([bits]), cfg.float_format)
    return gf._order_key(s, m, E, cfg.float_format)[0].item()


@pytest.mark.parametrize("cfg", CFGS, ids=IDS)
def test_exp_unit_matches_golden(cfg):
    fb = baseline(cfg)
    rnd = random.Random(3)
    xs = _float_bits(cfg, rnd, 300)
    ins = []
    f = cfg.float_format
    for i, x in enumerate(xs):
        y = xs[(i * 7 + 3) % len(xs)]
        # the max: the larger finite one (canonical: +0 for any zero or subnormal); x itself half the time
        cands = [v for v in (x, y) if ((v >> f.man_bits) & f.exp_max) != f.exp_max] or [0]
        mx = max(cands, key=lambda v: _key(v, cfg)) if rnd.random() < 0.5 else cands[0]
        if ((mx >> f.man_bits) & f.exp_max) == 0:
            mx = 0
        if _key(mx, cfg) < _key(x, cfg) and ((x >> f.man_bits) & f.exp_max) != f.exp_max:
            x, mx = mx, x if ((x >> f.man_bits) & f.exp_max) != 0 else 0
        if rnd.random() < 0.5:  # close operands: x - max within the range where e is neither 1 nor dead
            scale = 10 ** rnd.uniform(-2, 2)
            a = rnd.gauss(0, 1) * scale
            pair = torch.tensor([a, a + abs(rnd.gauss(0, 1)) * scale * rnd.choice([0.01, 0.3, 3])]).to(cfg.torch_dtype)
            x, mx = gf.float_to_bits(pair).tolist()
            mx = mx if ((mx >> f.man_bits) & f.exp_max) != 0 else 0
        ins.append({"x": x, "max": mx, "ok": int(rnd.random() < 0.95)})
    dut = ExpUnit(cfg)
    got = run_pipeline(dut, fb.b_wb, ins, ["e"])
    bits = _t([i["x"] for i in ins])
    mbits = _t([i["max"] for i in ins])
    s, E, m, nan, inf = decode_float(bits, f)
    sm, Em, mm, _, _ = decode_float(mbits, f)
    dm, dE, dz = gf.subtract(s, E, m, sm, Em, mm, fb)
    tfix, dead = gf.to_fixed(dm, dE, dz, fb)
    em, eE = gf.exp_stage(tfix, fb)
    ez = dead | nan | inf | (_t([i["ok"] for i in ins]) == 0)
    want = (em & ((1 << fb.P) - 1)) | ((-eE) << fb.P) | (ez.to(torch.int64) << (fb.P + fb.e_exp_bits))
    for i, (g, w) in enumerate(zip(got, want.tolist(), strict=True)):
        assert g["e"] == w, f"{cfg.fmt} element {i}: x={ins[i]['x']:#x} max={ins[i]['max']:#x}: {g['e']:#x} != {w:#x}"


def _wf(fb, rnd: random.Random):
    if rnd.random() < 0.1:
        return 1 << fb.P, 0, 1
    return rnd.randrange(1 << fb.P, 2 << fb.P), rnd.randrange(-fb.flush - 1, 12), 0


@pytest.mark.parametrize("cfg", CFGS, ids=IDS)
def test_float_adder_matches_golden(cfg):
    fb = baseline(cfg)
    rnd = random.Random(5)
    ins = []
    for _ in range(400):
        a = _wf(fb, rnd)
        b = _wf(fb, rnd)
        if rnd.random() < 0.3:  # close exponents, equal operands, carries out of the rounding
            b = (rnd.choice([a[0], (2 << fb.P) - 1, rnd.randrange(1 << fb.P, 2 << fb.P)]), a[1] - rnd.randrange(3), 0)
        ins.append({"a_m": a[0], "a_E": a[1], "a_z": a[2], "b_m": b[0], "b_E": b[1], "b_z": b[2]})
    got = run_pipeline(FloatAdder(cfg), ADD_STAGES, ins, ["o_m", "o_E", "o_z"])
    col = {k: _t([i[k] for i in ins]) for k in ins[0]}
    wm, wE, wz = gf.fadd((col["a_m"], col["a_E"], col["a_z"] == 1), (col["b_m"], col["b_E"], col["b_z"] == 1), fb)
    for i, g in enumerate(got):
        assert (g["o_m"], g["o_E"], g["o_z"]) == (wm[i].item(), wE[i].item(), int(wz[i])), f"{cfg.fmt} {ins[i]}"


@pytest.mark.parametrize("cfg", CFGS, ids=IDS)
def test_reciprocal_matches_golden_and_is_close(cfg):
    fb = baseline(cfg)
    rnd = random.Random(7)
    sms = [1 << fb.P, (2 << fb.P) - 1, (1 << fb.P) + 1, 3 << (fb.P - 1)] + \
        [rnd.randrange(1 << fb.P, 2 << fb.P) for _ in range(300)]
    got = run_pipeline(Reciprocal(cfg), fb.recip_stages, [{"sm": v} for v in sms], ["r"])
    want = gf.reciprocal(_t(sms), fb)
    assert [g["r"] for g in got] == want.tolist()
    exact = torch.tensor([2.0 ** (fb.R + fb.P) / v for v in sms], dtype=torch.float64)
    assert float(((want - exact).abs() / exact).max()) < 4 * 2.0 ** -fb.R
    assert want[0] == 1 << fb.R


@pytest.mark.parametrize("cfg", CFGS, ids=IDS)
def test_output_rounding_matches_golden(cfg):
    fb = baseline(cfg)
    rnd = random.Random(9)
    ins, cols = [], {"em": [], "eE": [], "r": [], "SE": [], "z": []}
    sms = [rnd.randrange(1 << fb.P, 2 << fb.P) for _ in range(400)]
    rs = gf.reciprocal(_t(sms), fb).tolist()
    for i in range(400):
        em = rnd.randrange(1 << fb.P, 2 << fb.P)
        eE = -rnd.randrange(0, fb.flush + 1) if rnd.random() < 0.5 else -rnd.randrange(0, 12)
        z = int(rnd.random() < 0.05)
        r = rs[i] if rnd.random() < 0.9 else 1 << fb.R
        SE = rnd.randrange(0, (cfg.max_len - 1).bit_length() + 1)
        e = (em & ((1 << fb.P) - 1)) | ((-eE) << fb.P) | (z << (fb.P + fb.e_exp_bits))
        vec = r | ((SE & ((1 << fb.sum_exp_bits) - 1)) << (fb.R + 1))
        ins.append({"e": e, "vec": vec})
        for k, v in (("em", em), ("eE", eE), ("r", r), ("SE", SE), ("z", z)):
            cols[k].append(v)
    got = run_pipeline(OutputRound(cfg), C_STAGES, ins, ["y", "live"])
    c = {k: _t(v) for k, v in cols.items()}
    want = gf.output(c["em"], c["eE"], c["r"], c["SE"], fb, cfg)
    for i, g in enumerate(got):
        assert g["live"] == 1 - cols["z"][i]
        assert g["y"] == want[i].item(), f"{cfg.fmt} {i}: {ins[i]}: {g['y']:#x} != {want[i].item():#x}"
