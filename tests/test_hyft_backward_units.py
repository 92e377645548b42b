"""The Hyft backward pass's components (gen/hyft_backward.py), each alone in Amaranth's simulator with random
valid gaps and ready stalls, bit-exact against the golden model's step functions (golden/hyft.py
`backward_decode`, `backward_vector`, `backward_products`, `normalised_sum`, and the whole
`hyft_softmax_backward_bits` for the output stage), on random, subnormal, cancelling and special-value vectors.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from amaranth.sim import Simulator
from amaranth_streams import run_stream

from accelkit.config.hyft import SoftmaxConfig
from accelkit.gen.hyft_backward import (
    BackwardDecode,
    BackwardFinalise,
    BackwardOutput,
    BackwardProduct,
    BackwardUnit,
    backward_dims,
)
from accelkit.golden.hyft import (
    backward_decode,
    backward_products,
    backward_vector,
    float_to_bits,
    hyft_softmax_backward_bits,
    normalised_sum,
)
from accelkit.golden.hyft_backward_cycles import backward_unit_cycles

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
INF, NAN = float("inf"), float("nan")
NARROW = dict(segments=1, frac_bits=5, int_bits=3, table_bits=4, sum_frac_bits=3, log2e_bits=6)
WIDE = dict(segments=32, frac_bits=24, int_bits=8, table_bits=30, sum_frac_bits=40, log2e_bits=29, max_len=16)
CFGS = {
    "bf16": SoftmaxConfig(fmt="bf16", lanes=2),
    "fp16": SoftmaxConfig(fmt="fp16", lanes=4, max_len=256),
    "fp32": SoftmaxConfig(fmt="fp32", lanes=1),
    "bf16-narrow": SoftmaxConfig(fmt="bf16", lanes=2, **NARROW),
    "fp32-wide": SoftmaxConfig(fmt="fp32", lanes=2, **WIDE),
}
SPEC_ROWS = [  # the spec's table of special values (docs/specs/hyft.md, step 0), and a few more
    ([0.5, 0.5, 0], [1, 2, 3]), ([0.5, 0.5, 0], [1, 2, -3]), ([0.5, 0.5, -0.0], [1, 2, 3]), ([1, 0], [2, 5]),
    ([1, 0], [-0.0, 5]), ([0.5, 0.5], [-0.0, -0.0]), ([0.5, 0.5], [0.0, -0.0]), ([-0.0], [3]), ([1], [3]),
    ([0.5, 0.5, 0], [INF, 2, 3]), ([0.5, 0.5, 0], [-INF, 2, 3]), ([0.5, 0.5, 0], [INF, -INF, 3]),
    ([0.5, 0.5, 0], [1, 2, INF]), ([0.5, 0.5, 0], [NAN, 2, 3]), ([NAN, NAN, NAN], [1, 2, 3]),
    ([0.5, INF, 0], [1, 2, 3]), ([0.5, INF, 0], [1, 0, 3]), ([0.5, -0.5, 0], [1, 2, 3]), ([2, 0.5], [1, 3]),
    ([-0.0, 1], [INF, 1]), ([0.25, 0.75, 0], [0, 0, 0]), ([0.5, 0.5], [1e30, -1e30]),
]


def _bits(vals, fmt) -> list[int]:
    return float_to_bits(torch.tensor(vals, dtype=torch.float64).to(DTYPES[fmt])).tolist()


def random_vectors(cfg: SoftmaxConfig, rnd: random.Random, n: int, specials: bool = True):
    """(y bits, dy bits) vectors: softmax outputs over many scales, one-hot and flat rows, subnormals, nearly
    constant dy (cancellation), zero dy, raw bits, and (with `specials`) the spec's special-value rows."""
    f = cfg.float_format
    dt = DTYPES[cfg.fmt]
    out = []
    if specials:
        out += [(_bits(y, cfg.fmt), _bits(d, cfg.fmt)) for y, d in SPEC_ROWS]
    while len(out) < n:
        N = rnd.choice([1, 2, 3, 4, 5, 7, 8, 13])
        mode = rnd.choice(["softmax", "softmax", "softmax", "onehot", "flat", "subnormal", "zero_dy", "bits"]
                          + (["special"] if specials else []))
        logits = torch.tensor([rnd.gauss(0, 1) * 10 ** rnd.uniform(-1, 1.5) for _ in range(N)], dtype=torch.float64)
        y = torch.softmax(logits, -1).to(dt)
        scale = 10 ** rnd.uniform(-4, 4)
        dy = torch.tensor([rnd.gauss(0, 1) * scale for _ in range(N)], dtype=torch.float64).to(dt)
        if mode == "onehot":
            y = torch.zeros(N, dtype=dt)
            y[rnd.randrange(N)] = 1.0
        elif mode == "flat":
            dy = (torch.full((N,), scale, dtype=torch.float64) * (1 + torch.randn(N, dtype=torch.float64) * 2.0**-10)
                  ).to(dt)
        elif mode == "zero_dy":
            dy = torch.zeros(N, dtype=dt) * rnd.choice([1, -1])
        yb, db = float_to_bits(y).tolist(), float_to_bits(dy).tolist()
        if mode == "subnormal":
            yb = [rnd.randrange(1 << (f.man_bits + 1)) for _ in range(N)]
            db = [rnd.randrange(1 << (f.man_bits + 2)) | (rnd.randrange(2) << (f.width - 1)) for _ in range(N)]
        elif mode == "bits":
            yb = [rnd.randrange(1 << (f.width - 1)) for _ in range(N)]
            db = [rnd.randrange(1 << f.width) for _ in range(N)]
        elif mode == "special":
            pool = [INF, -INF, NAN, 0.0, -0.0]
            for _ in range(rnd.randrange(1, 3)):
                db[rnd.randrange(N)] = _bits([rnd.choice(pool)], cfg.fmt)[0]
            if rnd.random() < 0.5:
                yb[rnd.randrange(N)] = _bits([rnd.choice(pool)], cfg.fmt)[0]
        out.append((yb, db))
    return out


def beats_of(cfg: SoftmaxConfig, rnd: random.Random, n: int, fill):
    """Split n elements into beats of L lanes: (lane indices or None, count, last); count 0 stands for L."""
    L = cfg.lanes
    nb = -(-n // L)
    out = []
    for b in range(nb):
        idx = [b * L + k if b * L + k < n else None for k in range(L)]
        last = b == nb - 1
        cnt = n - b * L if last else rnd.randrange(L + 1)  # count is read on the last beat only
        if last and cnt == L and rnd.random() < 0.5:
            cnt = 0
        out.append((idx, cnt, int(last)))
    return out


def _t(v):
    return torch.tensor(v, dtype=torch.int64)


def _set_pair(ctx, pay, dec, i, rnd):
    """Set decoded pair `pay` from golden decode row i (random junk when i is None)."""
    for op, pre in (("y", "y"), ("dy", "d")):
        o = pay[op]
        if i is None:
            vals = {"s": rnd.randrange(2), "e": rnd.randrange(1, 8), "m": rnd.randrange(2), "nan": 0, "inf": 0,
                    "zero": 0}
        else:
            s = "sy" if op == "y" else "sd"
            E = "Ey" if op == "y" else "Edy"
            mt = "myt" if op == "y" else "mdt"
            vals = {"s": int(dec[s][i]), "e": int(dec[E][i]) + dec["bias"], "m": int(dec[mt][i]),
                    "nan": int(dec[f"nan_{pre}"][i]), "inf": int(dec[f"inf_{pre}"][i]),
                    "zero": int(dec[f"zero_{pre}"][i])}
        for k, v in vals.items():
            ctx.set(o[k], v)


def _dec(cfg, yb, db):
    dec = backward_decode(_t([yb]), _t([db]), cfg)
    vec = backward_vector(dec, cfg)
    dec = {k: v[0] for k, v in dec.items()}
    dec["bias"] = cfg.bias
    return dec, {k: v[0, 0] for k, v in vec.items()}


# ---- (a) decode ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bf16", "fp16", "fp32", "bf16-narrow"])
def test_decode_matches_golden(name):
    cfg = CFGS[name]
    rnd = random.Random(11)
    f = cfg.float_format
    beats, want = [], []
    vecs = random_vectors(cfg, rnd, 40)
    vecs += [([rnd.randrange(1 << f.width) for _ in range(5)], [rnd.randrange(1 << f.width) for _ in range(5)])
             for _ in range(20)]
    for yb, db in vecs:
        dec, _ = _dec(cfg, yb, db)
        for idx, cnt, last in beats_of(cfg, rnd, len(yb), None):
            ys = [yb[i] if i is not None else rnd.randrange(1 << f.width) for i in idx]
            ds = [db[i] if i is not None else rnd.randrange(1 << f.width) for i in idx]
            beats.append({"y": ys, "dy": ds, "count": cnt, "last": last})
            valid = [i for i in idx if i is not None]
            lanes = []
            for i in idx:
                if i is None:
                    lanes.append(None)
                    continue
                lanes.append(tuple(int(dec[k][i]) for k in ("sy", "myt", "nan_y", "inf_y", "zero_y",
                                                            "sd", "mdt", "nan_d", "inf_d", "zero_d"))
                             + (int(dec["Ey"][i]) + cfg.bias, int(dec["Edy"][i]) + cfg.bias))
            red = (any(bool(dec["p_nan"][i]) for i in valid),
                   any(bool(dec["p_inf"][i]) and int(dec["ps"][i]) == 0 for i in valid),
                   any(bool(dec["p_inf"][i]) and int(dec["ps"][i]) == 1 for i in valid),
                   all(bool(dec["negzero_p"][i]) for i in valid), any(bool(dec["bad_y"][i]) for i in valid),
                   max(int(dec["e_dy"][i]) for i in valid))
            want.append((lanes, cnt, last, tuple(int(v) for v in red)))

    def write(ctx, pay, b):
        for k in range(cfg.lanes):
            ctx.set(pay.y[k], b["y"][k])
            ctx.set(pay.dy[k], b["dy"][k])
        ctx.set(pay.count, b["count"])
        ctx.set(pay.last, b["last"])

    def read(ctx, pay):
        lanes = []
        for k in range(cfg.lanes):
            pr = pay.data[k]
            lanes.append(tuple(ctx.get(pr[op][f]) for op, fl in (("y", ("s", "m", "nan", "inf", "zero")),
                                                                 ("dy", ("s", "m", "nan", "inf", "zero")))
                               for f in fl) + (ctx.get(pr.y.e), ctx.get(pr.dy.e)))
        return (lanes, ctx.get(pay.count), ctx.get(pay.last),
                tuple(ctx.get(pay[n]) for n in ("p_nan", "pos", "neg", "negzero", "bad_y", "ed")))

    dut = BackwardDecode(cfg)
    got = run_stream(dut, dut.i, dut.o, beats, write, read, len(beats), seed=3, gap=0.3, stall=0.3,
                     what="BackwardDecode")
    for j, (g, w) in enumerate(zip(got, want, strict=True)):
        lanes_w = w[0]
        for k, lw in enumerate(lanes_w):
            if lw is not None:
                assert g[0][k] == lw, f"{name} beat {j} lane {k}: {g[0][k]} != {lw} ({beats[j]})"
        assert g[1:] == w[1:], f"{name} beat {j}: {g[1:]} != {w[1:]} ({beats[j]})"


# ---- (b) products -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CFGS))
def test_products_match_golden(name):
    cfg = CFGS[name]
    rnd = random.Random(12)
    beats, want = [], []
    for yb, db in random_vectors(cfg, rnd, 60, specials=False):
        dec, vec = _dec(cfg, yb, db)
        if bool(dec["bad_y"].any()):
            continue  # P and Yj are don't-care there (the vector's outputs are all NaN)
        P, Yj = backward_products({k: v.unsqueeze(0) for k, v in dec.items() if k != "bias"},
                                  vec["base"].reshape(1, 1), cfg)
        for idx, cnt, last in beats_of(cfg, rnd, len(yb), None):
            beats.append({"idx": idx, "dec": dec, "count": cnt, "last": last, "ed": int(vec["ed"])})
            want.append(([int(P[0, i]) if i is not None else 0 for i in idx],
                         [int(Yj[0, i]) if i is not None else 0 for i in idx], last))

    def write(ctx, pay, b):
        for k in range(cfg.lanes):
            _set_pair(ctx, pay.data[k], b["dec"], b["idx"][k], rnd)
        ctx.set(pay.count, b["count"])
        ctx.set(pay.last, b["last"])
        ctx.set(pay.ed, b["ed"])

    def read(ctx, pay):
        return ([ctx.get(pay.p[k]) for k in range(cfg.lanes)], [ctx.get(pay.yj[k]) for k in range(cfg.lanes)],
                ctx.get(pay.last))

    dut = BackwardProduct(cfg)
    got = run_stream(dut, dut.i, dut.o, beats, write, read, len(beats), seed=5, gap=0.3, stall=0.3,
                     what="BackwardProduct")
    assert len(beats) > 40
    for j, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"{name} beat {j}: {g} != {w}"


# ---- (c) finalise -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bf16", "fp16", "bf16-narrow", "fp32-wide"])
def test_finalise_matches_golden(name):
    cfg = CFGS[name]
    d = backward_dims(cfg)
    rnd = random.Random(13)
    one = 1 << d.B
    ins = [(0, 0), (0, one), (5, one), (-5, one), (-(1 << d.SB), one), ((1 << d.SB) - 1, one // 2),
           (rnd.randrange(-(1 << d.SB), 1 << d.SB), one + (one >> 3)),
           (rnd.randrange(-(1 << d.SB), 1 << d.SB), one - (one >> 3)),
           (rnd.randrange(-(1 << d.SB), 1 << d.SB), one + (one >> 3) + 1)]
    for _ in range(40):
        S = rnd.randrange(-(1 << d.SB), 1 << d.SB) >> rnd.randrange(d.SB)
        u = rnd.random()
        Y = (one + rnd.randrange(-(one >> 3), (one >> 3) + 1) if u < 0.7 else
             rnd.randrange(0, 1 << d.SB) if u < 0.9 else one + rnd.randrange(-3, 4))
        ins.append((S, max(Y, 0)))
    want = normalised_sum(_t([s for s, _ in ins]), _t([y for _, y in ins]), cfg).tolist()

    def write(ctx, pay, b):
        ctx.set(pay.s, b[0])
        ctx.set(pay.y, b[1])

    dut = BackwardFinalise(cfg)
    got = run_stream(dut, dut.i, dut.o, ins, write, lambda ctx, pay: ctx.get(pay.sn), len(ins), seed=7, gap=0.3,
                     stall=0.5, what="BackwardFinalise")
    assert got == want


def test_finalise_cycles():
    """An input taken to its S' offered: `cycles` (the cycle model's figure), once per vector."""
    cfg = CFGS["bf16"]
    dut = BackwardFinalise(cfg)
    seen = {}

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload.s, 1000)
        ctx.set(dut.i.payload.y, 1 << cfg.sum_frac_bits)
        await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        n = 0
        while not ctx.get(dut.o.valid):
            await ctx.tick()
            n += 1
        seen["n"] = n
        seen["sn"] = ctx.get(dut.o.payload.sn)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen == {"n": dut.cycles, "sn": 1000}


# ---- (d) output -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CFGS))
def test_output_gives_the_golden_dx(name):
    """Given the vector's values (from the golden fill and sum phases), the output stage's dx is the golden
    model's, bit for bit: special-value rows, out-of-range y, subnormals and signed zeros included."""
    cfg = CFGS[name]
    rnd = random.Random(14)
    beats, want = [], []
    for yb, db in random_vectors(cfg, rnd, 70):
        dec, vec = _dec(cfg, yb, db)
        bdec = {k: v.unsqueeze(0) for k, v in dec.items() if k != "bias"}
        P, Yj = backward_products(bdec, vec["base"].reshape(1, 1), cfg)
        sn = int(normalised_sum(P.sum(-1, keepdim=True), Yj.sum(-1, keepdim=True), cfg)[0, 0])
        dx, _ = hyft_softmax_backward_bits(_t([yb]), _t([db]), cfg)
        v = {"ed": int(vec["ed"]), "sn": sn, "s_negzero": int(vec["s_negzero"]), "s_special": int(vec["s_special"]),
             "s_nan": int(vec["s_nan"]), "s_inf_sign": int(vec["s_inf_sign"]), "out_of_range": int(vec["out_of_range"])}
        for idx, cnt, last in beats_of(cfg, rnd, len(yb), None):
            beats.append({"idx": idx, "dec": dec, "count": cnt, "last": last, "vec": v})
            want.append(([int(dx[0, i]) if i is not None else 0 for i in idx], cnt, last))

    def write(ctx, pay, b):
        for k in range(cfg.lanes):
            _set_pair(ctx, pay.data[k], b["dec"], b["idx"][k], rnd)
        ctx.set(pay.count, b["count"])
        ctx.set(pay.last, b["last"])
        for k, val in b["vec"].items():
            ctx.set(pay.vec[k], val)

    def read(ctx, pay):
        return [ctx.get(pay.data[k]) for k in range(cfg.lanes)], ctx.get(pay.count), ctx.get(pay.last)

    dut = BackwardOutput(cfg)
    got = run_stream(dut, dut.i, dut.o, beats, write, read, len(beats), seed=9, gap=0.3, stall=0.3,
                     what="BackwardOutput")
    for j, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"{name} beat {j}: {[hex(v) for v in g[0]]} != {[hex(v) for v in w[0]]} ({beats[j]['vec']})"


# ---- the standalone unit: y and dy streams in, dx out --------------------------------------------------------------

def run_unit(cfg, vectors, seed: int, gap: float, stall: float):
    """Drive `vectors` [(y bits, dy bits)] on the unit's y and dy streams (each with its own random gaps), take
    the output beats under random stalls (checking that an offered beat is held), return (beats, cycle of each)."""
    rng = random.Random(seed)
    dut = BackwardUnit(cfg)
    L = cfg.lanes
    got, when = [], []

    def beats(vals):
        n = len(vals)
        out = []
        for b in range(max(1, -(-n // L))):
            chunk = vals[b * L:(b + 1) * L]
            last = b == max(1, -(-n // L)) - 1
            out.append((chunk + [rng.randrange(1 << cfg.width) for _ in range(L - len(chunk))],
                        len(chunk) if last else rng.randrange(L + 1), int(last)))
        return out

    def driver(port, key):
        async def drive(ctx):
            for v in vectors:
                for data_, cnt, last in beats(v[key]):
                    while rng.random() < gap:
                        ctx.set(port.valid, 0)
                        await ctx.tick()
                    ctx.set(port.valid, 1)
                    for k in range(L):
                        ctx.set(port.payload.data[k], data_[k])
                    ctx.set(port.payload.count, cnt)
                    ctx.set(port.payload.last, last)
                    await ctx.tick().until(port.ready)
            ctx.set(port.valid, 0)
        return drive

    n_out = sum(max(1, -(-len(y) // L)) if len(y) <= cfg.max_len else 1 for y, _ in vectors)

    async def take(ctx):
        held, cycle = None, 0
        while len(got) < n_out:
            cycle += 1
            assert cycle < 400 * n_out + 2000, "the unit stopped"
            ready = rng.random() >= stall
            ctx.set(dut.o.ready, ready)
            await ctx.delay(1e-9)
            valid = ctx.get(dut.o.valid)
            p = dut.o.payload
            beat = ([ctx.get(p.data[k]) for k in range(L)], ctx.get(p.count), ctx.get(p.last), ctx.get(p.error)) \
                if valid else None
            if held is not None:
                assert valid and beat == held, "a beat offered was withdrawn or changed before it was taken"
            held = beat if (valid and not ready) else None
            if valid and ready:
                got.append(beat)
                when.append(cycle)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver(dut.y, 0), background=True)
    sim.add_testbench(driver(dut.dy, 1), background=True)
    sim.add_testbench(take)
    sim.run()
    return got, when


def expected_beats(cfg, y, dy):
    """The golden answer as output beats: dx in y's length (dy cut or padded with NaN when its length differs)."""
    L, n, nan = cfg.lanes, len(y), cfg.float_format.nan_bits
    if n > cfg.max_len:
        return [([0] * L, 0, 1, 1)]
    dyf = (dy + [nan] * n)[:n] if len(dy) != n else dy
    if len(dy) > n:
        dyf = dy[:n - 1] + [nan]
    dx, err = hyft_softmax_backward_bits(_t([y]), _t([dyf]), cfg)
    dx = dx[0].tolist()
    out = []
    nb = -(-n // L)
    for b in range(nb):
        chunk = dx[b * L:(b + 1) * L]
        last = b == nb - 1
        out.append((chunk + [0] * (L - len(chunk)), len(chunk) if last else L, int(last), int(err[0])))
    return out


@pytest.mark.parametrize("name", ["bf16", "fp16", "fp32", "bf16-narrow"])
def test_unit_matches_golden_with_gaps_and_stalls(name):
    cfg = dataclasses.replace(CFGS[name], max_len=16)
    rnd = random.Random(21)
    vecs = random_vectors(cfg, rnd, 45)
    vecs.append(([_bits([0.5], cfg.fmt)[0]] * 17, [_bits([1.0], cfg.fmt)[0]] * 17))  # longer than max_len
    vecs.append(random_vectors(cfg, rnd, 1, specials=False)[0])
    got, _ = run_unit(cfg, vecs, seed=4, gap=0.3, stall=0.3)
    want = [b for y, dy in vecs for b in expected_beats(cfg, y, dy)]
    assert len(got) == len(want)
    for j, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"{name} beat {j}: {g} != {w}"


def test_unit_malformed_lengths_give_nan_and_error():
    """dy shorter or longer than y (by lanes or by beats), and NaN in dy: every dx NaN, error 1, y's length;
    the next vector is unaffected."""
    cfg = dataclasses.replace(CFGS["bf16"], max_len=16)
    rnd = random.Random(22)
    good = random_vectors(cfg, rnd, 1, specials=False)[0]
    y = _bits([0.25, 0.25, 0.25, 0.125, 0.125], "bf16")
    d = _bits([1, -2, 3, 0.5, 7, 9, 11], "bf16")
    vecs = [(y, d[:5]), (y, d[:4]), (y, d[:2]), (y, d[:6]), (y, d[:7]), (y[:4], d[:2] + d[3:4] + [0x7FC0]),
            good, (y, d[:1]), good]
    got, _ = run_unit(cfg, vecs, seed=6, gap=0.2, stall=0.2)
    want = [b for yv, dv in vecs for b in expected_beats(cfg, yv, dv)]
    assert got == want
    nan = cfg.float_format.nan_bits
    k = 0
    for i, (yv, dv) in enumerate(vecs):
        nb = -(-len(yv) // cfg.lanes)
        beats = got[k:k + nb]
        k += nb
        if len(dv) != len(yv) or nan in dv:
            assert all(b[3] == 1 for b in beats)
            vals = [v for b in beats for v in b[0][:b[1]]]
            assert vals == [nan] * len(yv), f"vector {i}"


@pytest.mark.parametrize("lanes", [1, 4])
def test_unit_cycles_match_the_model(lanes):
    """Back-to-back vectors, no gaps or stalls: the cycle of each vector's last output beat, RTL == model."""
    cfg = SoftmaxConfig(fmt="bf16", lanes=lanes, max_len=64)
    rnd = random.Random(23)
    vecs = [random_vectors(cfg, rnd, 1, specials=False)[0] for _ in range(3)]
    vecs += [([_bits([0.5], "bf16")[0]] * n, [_bits([1.0], "bf16")[0]] * n) for n in (1, 7, 64)]
    got, when = run_unit(cfg, vecs, seed=1, gap=0.0, stall=0.0)
    lasts = [when[i] for i, b in enumerate(got) if b[2]]
    model = backward_unit_cycles(cfg, [len(y) for y, _ in vecs])
    assert lasts == model
