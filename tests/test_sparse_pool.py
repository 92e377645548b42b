"""The global sum pool (gen/sparse_pool.py) alone under Amaranth's simulator: random frames of signed features,
with valid gaps and ready stalls, against sums computed in Python; the handshake rules checked every cycle."""

from __future__ import annotations

import random

import pytest
from amaranth_streams import run_stream

from accelkit.gen.sparse_pool import SumPool, pool_sum_bits

FB, YB, XB = 8, 4, 5


def _write(ctx, p, b: dict) -> None:
    ctx.set(p.eof, b["eof"])
    ctx.set(p.error, b["error"])
    for l, v in enumerate(b["data"]):
        ctx.set(p.data[l], v & 0xFF)


def run(pool: SumPool, beats: list[dict], n_out: int, seed: int, gap: float, stall: float) -> list[dict]:
    def read(ctx, p) -> dict:
        return {"data": [ctx.get(p.data[l]) for l in range(pool.lanes)], "last": ctx.get(p.last),
                "error": ctx.get(p.error)}

    return run_stream(pool, pool.sites_in, pool.pooled, beats, _write, read, n_out, seed, gap, stall, "the pool")


def frame(rng, channels, lanes, sites, lo=-127, hi=127, error=False, short=False):
    beats, sums = [], [0] * channels
    for s in range(sites):
        f = [rng.randint(lo, hi) for _ in range(channels)]
        sums = [a + b for a, b in zip(sums, f, strict=True)]
        groups = channels // lanes
        if short and s == sites - 1:
            groups -= 1  # the last site loses its last beat: malformed
        for g in range(groups):
            beats.append({"data": f[g * lanes:(g + 1) * lanes], "eof": 0, "error": 0})
    beats.append({"data": [0] * lanes, "eof": 1, "error": int(error)})
    return beats, sums


def expected(sums, lanes, error):
    G = len(sums) // lanes
    return [{"data": sums[g * lanes:(g + 1) * lanes], "last": int(g == G - 1), "error": int(error)} for g in range(G)]


@pytest.mark.parametrize("channels,lanes", [(8, 2), (6, 6), (12, 4), (4, 1)])
@pytest.mark.parametrize("gap,stall", [(0.0, 0.0), (0.3, 0.5)])
def test_pool_sums_every_frame(channels, lanes, gap, stall):
    rng = random.Random(channels * 10 + lanes)
    max_sites = 40
    pool = SumPool(channels, lanes, FB, YB, XB, max_sites)
    beats, want = [], []
    for k, (sites, lo, hi) in enumerate([(40, 127, 127), (0, 0, 0), (17, -127, 127), (40, -127, -127), (5, 0, 9)]):
        b, s = frame(rng, channels, lanes, sites, lo, hi, error=k == 4)
        beats += b
        want += expected(s, lanes, error=k == 4)
    assert pool.sum_bits == pool_sum_bits(FB, max_sites) == 14  # 40 x 127 = 5080 fits 14 signed bits
    got = run(pool, beats, len(want), seed=lanes, gap=gap, stall=stall)
    assert got == want


def test_pool_flags_a_frame_that_ends_mid_site_and_resyncs():
    rng = random.Random(5)
    pool = SumPool(8, 2, FB, YB, XB, 16)
    b1, s1 = frame(rng, 8, 2, 3, short=True)
    b2, s2 = frame(rng, 8, 2, 4)
    got = run(pool, b1 + b2, 8, seed=0, gap=0.0, stall=0.0)
    assert all(g["error"] == 1 for g in got[:4]) and got[4:] == expected(s2, 2, False)
