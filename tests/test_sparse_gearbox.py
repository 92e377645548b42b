"""The beat gearbox (gen/sparse_gearbox.py) alone under Amaranth's simulator: random site tokens through splits and
merges, with random valid gaps and ready stalls, against beats built independently in Python; the handshake
rules (a beat offered stays offered and unchanged until taken) checked every cycle."""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator
from amaranth_streams import run_stream

from accelkit.config import ConfigError
from accelkit.gen.sparse_gearbox import BeatGearbox

FB, YB, XB = 8, 4, 5


def frame_beats(rng: random.Random, channels: int, lanes: int, sites: int, error: bool = False):
    """(beats, per-site channel values): a frame of `sites` sites of `channels` features, `lanes` per beat."""
    beats, feats = [], []
    y = x = 0
    for _ in range(sites):
        x += rng.randrange(1, 4)
        if x >= 32:
            y, x = y + 1, x - 32
        f = [rng.randrange(256) for _ in range(channels)]
        feats.append((y, x, f))
        for g in range(channels // lanes):
            beats.append({"data": f[g * lanes:(g + 1) * lanes], "y": y, "x": x, "eof": 0, "error": 0})
    beats.append({"data": None, "y": None, "x": None, "eof": 1, "error": int(error)})
    return beats, feats


def _write(ctx, p, b: dict) -> None:
    ctx.set(p.eof, b["eof"])
    ctx.set(p.error, b["error"])
    if not b["eof"]:
        ctx.set(p.y, b["y"])
        ctx.set(p.x, b["x"])
        for l, v in enumerate(b["data"]):
            ctx.set(p.data[l], v)


def run(box: BeatGearbox, beats_in: list[dict], n_out: int, seed: int, gap: float, stall: float) -> list[dict]:
    def read(ctx, p) -> dict:
        beat = {"eof": ctx.get(p.eof), "error": ctx.get(p.error)}
        if not beat["eof"]:
            beat.update(y=ctx.get(p.y), x=ctx.get(p.x), data=[ctx.get(p.data[l]) for l in range(box.lanes_out)])
        return beat

    return run_stream(box, box.sites_in, box.sites_out, beats_in, _write, read, n_out, seed, gap, stall, "the gearbox")


def expected(feats, lanes: int, error: bool = False) -> list[dict]:
    out = []
    for y, x, f in feats:
        for g in range(len(f) // lanes):
            out.append({"eof": 0, "error": 0, "y": y, "x": x, "data": f[g * lanes:(g + 1) * lanes]})
    out.append({"eof": 1, "error": int(error)})
    return out


@pytest.mark.parametrize("lanes_in,lanes_out,channels", [(8, 2, 16), (2, 8, 16), (3, 6, 12), (6, 2, 12),
                                                          (1, 4, 4), (4, 1, 8)])
@pytest.mark.parametrize("gap,stall", [(0.0, 0.0), (0.3, 0.4)])
def test_gearbox_rebeats_every_site(lanes_in, lanes_out, channels, gap, stall):
    rng = random.Random(lanes_in * 100 + lanes_out)
    box = BeatGearbox(lanes_in, lanes_out, channels, FB, YB, XB)
    beats, feats = [], []
    for k in range(3):  # three frames back to back, one of them empty, one flagged
        b, f = frame_beats(rng, channels, lanes_in, 0 if k == 1 else 7, error=k == 2)
        beats += b
        feats.append(f)
    want = sum((expected(f, lanes_out, error=k == 2) for k, f in enumerate(feats)), [])
    got = run(box, beats, len(want), seed=channels, gap=gap, stall=stall)
    assert got == want


def test_gearbox_full_rate():
    """No gaps, no stalls: one output beat per cycle after the first."""
    box = BeatGearbox(2, 8, 16, FB, YB, XB)
    rng = random.Random(1)
    beats, feats = frame_beats(rng, 16, 2, 10)
    want = expected(feats, 8)
    cycles = []

    async def source(ctx):
        for b in beats:
            ctx.set(box.sites_in.valid, 1)
            ctx.set(box.sites_in.payload.eof, b["eof"])
            if not b["eof"]:
                for l, v in enumerate(b["data"]):
                    ctx.set(box.sites_in.payload.data[l], v)
            await ctx.tick().until(box.sites_in.ready)
        ctx.set(box.sites_in.valid, 0)

    async def sink(ctx):
        ctx.set(box.sites_out.ready, 1)
        t = 0
        while len(cycles) < len(want):
            await ctx.delay(1e-9)
            if ctx.get(box.sites_out.valid):
                cycles.append(t)
            await ctx.tick()
            t += 1

    sim = Simulator(box)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    # a merge of 4 input beats per output beat: site beats every 4 cycles, the end of frame right after
    gaps = [b - a for a, b in zip(cycles, cycles[1:], strict=False)]
    assert gaps[:-1] == [4] * (len(want) - 2) and gaps[-1] == 1


def test_gearbox_merge_resyncs_on_a_short_site():
    """An end of frame in the middle of a merge group drops the partial beat and flags the frame."""
    box = BeatGearbox(2, 4, 4, FB, YB, XB)
    beats = [{"data": [1, 2], "y": 0, "x": 0, "eof": 0, "error": 0},
             {"data": None, "y": None, "x": None, "eof": 1, "error": 0},
             {"data": [5, 6], "y": 0, "x": 1, "eof": 0, "error": 0},
             {"data": [7, 8], "y": 0, "x": 1, "eof": 0, "error": 0},
             {"data": None, "y": None, "x": None, "eof": 1, "error": 0}]
    got = run(box, beats, 3, seed=0, gap=0.0, stall=0.0)
    assert got == [{"eof": 1, "error": 1}, {"eof": 0, "error": 0, "y": 0, "x": 1, "data": [5, 6, 7, 8]},
                   {"eof": 1, "error": 0}]


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")  # the refused objects are never elaborated
def test_gearbox_refuses_impossible_widths():
    with pytest.raises(ConfigError, match="lanes_out=3 is invalid"):
        BeatGearbox(2, 3, 6, FB, YB, XB)
    with pytest.raises(ConfigError, match="channels=6 is invalid"):
        BeatGearbox(2, 4, 6, FB, YB, XB)
    with pytest.raises(ConfigError, match="wired directly"):
        BeatGearbox(4, 4, 8, FB, YB, XB)
