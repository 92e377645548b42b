"""The network top's params demux (gen/network.py ParamsDemux) alone under Amaranth's simulator: tagged beats
with random gaps, every output with its own random stalls; each engine gets its beats in order, a beat for
no engine is dropped, every output keeps a beat offered until it is taken, and ready ignores the payload."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import unsigned
from amaranth.lib import data
from amaranth.sim import Simulator

from accelkit.gen.network import ParamsDemux

WIDTHS = [12, 7, 16]
LAYOUT = data.StructLayout({"word": unsigned(16), "layer": unsigned(2)})  # index 3: no engine


@pytest.mark.parametrize("gap,stall,seed", [(0.0, 0.0, 1), (0.3, 0.0, 2), (0.0, 0.6, 3), (0.4, 0.5, 4)])
def test_each_engine_gets_its_beats_in_order(gap, stall, seed):
    rng = random.Random(seed)
    beats = [(rng.randrange(1 << 16), rng.randrange(4)) for _ in range(300)]
    want = [[w & ((1 << WIDTHS[i]) - 1) for w, l in beats if l == i] for i in range(len(WIDTHS))]
    dut = ParamsDemux(LAYOUT, WIDTHS)
    outs = [getattr(dut, f"out{i}") for i in range(len(WIDTHS))]
    got = [[] for _ in WIDTHS]
    cycles = 0

    async def drive(ctx):
        for w, l in beats:
            while rng.random() < gap:
                ctx.set(dut.params.valid, 0)
                await ctx.tick()
            ctx.set(dut.params.valid, 1)
            ctx.set(dut.params.payload.word, w)
            ctx.set(dut.params.payload.layer, l)
            await ctx.tick().until(dut.params.ready)
        ctx.set(dut.params.valid, 0)

    async def take(ctx):
        nonlocal cycles
        held = [None] * len(outs)
        while [len(g) for g in got] != [len(w) for w in want]:
            cycles += 1
            assert cycles < 20 * len(beats), "the demux stopped"
            ready = [rng.random() >= stall for _ in outs]
            for o, r in zip(outs, ready, strict=True):
                ctx.set(o.ready, r)
            await ctx.delay(1e-9)
            for i, (o, r) in enumerate(zip(outs, ready, strict=True)):
                valid, beat = ctx.get(o.valid), ctx.get(o.payload)
                if held[i] is not None:
                    assert valid and beat == held[i], f"out{i}: a beat offered was withdrawn or changed"
                held[i] = beat if valid and not r else None
                if valid and r:
                    got[i].append(beat)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(drive, background=True)
    sim.add_testbench(take)
    sim.run()
    assert got == want
    if gap == stall == 0.0:
        assert cycles <= len(beats) + 2  # a beat a cycle


def test_ready_does_not_depend_on_the_payload():
    dut = ParamsDemux(LAYOUT, WIDTHS)

    async def bench(ctx):
        ctx.set(dut.params.valid, 1)
        ctx.set(dut.params.payload.layer, 1)
        await ctx.tick()  # a beat for out1 is held; out1 is not ready
        for layer in range(4):
            ctx.set(dut.params.payload.layer, layer)
            ctx.set(dut.params.payload.word, 0xFFFF * (layer & 1))
            await ctx.delay(1e-9)
            assert ctx.get(dut.params.ready) == 0
        ctx.set(dut.out1.ready, 1)
        await ctx.delay(1e-9)
        assert ctx.get(dut.params.ready) == 1  # taken this cycle: the register is free for the next beat

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
