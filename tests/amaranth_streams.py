"""Driving one stream in and one stream out of a component under Amaranth's simulator, with random valid gaps and
ready stalls, and the handshake rule checked every cycle: a beat offered stays offered, unchanged, until taken;
and driving a fixed-latency pipeline without a handshake (`run_pipeline`)."""

from __future__ import annotations

import random
from collections.abc import Callable

from amaranth.sim import Simulator


def run_stream(dut, source, sink, beats: list, write: Callable, read: Callable, n_out: int, seed: int = 0,
               gap: float = 0.0, stall: float = 0.0, what: str = "the component") -> list:
    """Offer `beats` on stream `source` (``write(ctx, payload, beat)`` sets a beat), take `n_out` beats from
    stream `sink` (``read(ctx, payload)`` returns one) and return them in order."""
    rng = random.Random(seed)
    got: list = []

    async def drive(ctx):
        for b in beats:
            while rng.random() < gap:
                ctx.set(source.valid, 0)
                await ctx.tick()
            ctx.set(source.valid, 1)
            write(ctx, source.payload, b)
            await ctx.tick().until(source.ready)
        ctx.set(source.valid, 0)

    async def take(ctx):
        held, cycles = None, 0  # the beat offered and not yet taken
        while len(got) < n_out:
            cycles += 1
            assert cycles < 20 * (n_out + len(beats)) + 100, f"{what} stopped"
            ready = rng.random() >= stall
            ctx.set(sink.ready, ready)
            await ctx.delay(1e-9)
            valid = ctx.get(sink.valid)
            beat = read(ctx, sink.payload) if valid else None
            if held is not None:
                assert valid and beat == held, "a beat offered was withdrawn or changed before it was taken"
            held = beat if (valid and not ready) else None
            if valid and ready:
                got.append(beat)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(drive, background=True)
    sim.add_testbench(take)
    sim.run()
    return got


def run_pipeline(dut, latency: int, inputs: list[dict], outputs: list[str]) -> list[dict]:
    """Drive one input set a cycle into a fixed-latency pipeline (no handshake); return the outputs `latency`
    cycles after each."""
    got: list[dict] = []

    async def bench(ctx):
        for i in range(len(inputs) + latency):
            if i < len(inputs):
                for k, v in inputs[i].items():
                    ctx.set(getattr(dut, k), v)
            await ctx.tick()
            if i >= latency - 1 and len(got) < len(inputs):
                got.append({k: ctx.get(getattr(dut, k)) for k in outputs})

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got
