"""The registered-RAM FIFO (gen/reg_fifo.py) under Amaranth's simulator: every beat through in order under random
valid gaps and ready stalls, and every handshake in the cycle the network's cycle model (golden/sparse_rtl_cycles.py
`_Fifo` with the config's depth and latency) puts it."""

from __future__ import annotations

import random

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator
from amaranth_streams import run_stream

from accelkit.config.network import REG_FIFO_LATENCY, SparseNetworkConfig
from accelkit.gen.memory import READ_LATENCY
from accelkit.gen.reg_fifo import LATENCY, RegisteredFifo
from accelkit.golden.sparse_rtl_cycles import _Fifo


def test_latency_is_the_configs():
    assert LATENCY == REG_FIFO_LATENCY == READ_LATENCY + 2
    cfg = SparseNetworkConfig(link_depth=(0, 16, 256))
    assert cfg.fifo_latency(16) == cfg.fifo_latency(256) == LATENCY
    assert cfg.link_latency(1) == 0 and cfg.link_latency(2) == cfg.link_latency(3) == LATENCY
    assert not cfg.fifo_block_ram(16) and cfg.fifo_block_ram(17)


@pytest.mark.parametrize("depth, gap, stall, seed", [(2, 0.2, 0.3, 7), (3, 0.3, 0.4, 8), (5, 0.3, 0.4, 1),
                                                      (8, 0.0, 0.0, 2), (9, 0.5, 0.1, 3), (20, 0.1, 0.6, 4),
                                                      (33, 0.2, 0.2, 5)])
@pytest.mark.parametrize("lutram", [False, True], ids=["bram", "lutram"])
def test_every_beat_in_order(depth, gap, stall, seed, lutram):
    rng = random.Random(seed)
    beats = [rng.randrange(1 << 7) for _ in range(300)]
    dut = RegisteredFifo(7, depth, lutram=lutram)
    got = run_stream(dut, dut.i, dut.o, beats, lambda ctx, p, b: ctx.set(p, b), lambda ctx, p: ctx.get(p),
                     len(beats), seed=seed, gap=gap, stall=stall, what="the registered FIFO")
    assert got == beats


class _Sink:
    """The consumer of the cycle model: takes a beat offered in cycle t in the first cycle >= t it is ready."""

    down = None

    def __init__(self, ready: list[bool]):
        self.ready, self.taken = ready, []

    def offer(self, valid: int, eof: bool = False) -> int:
        t = valid
        while not self.ready[t]:
            t += 1
        self.taken.append(t)
        return t


def _simulate(depth: int, gaps: list[int], ready: list[bool], lutram: bool = False) -> tuple[list[int], list[int]]:
    """Beat k offered `gaps[k]` cycles after the cycle beat k - 1 entered (+ 1), the output ready in cycle c when
    ready[c]: the cycles of the input and output handshakes."""
    dut = RegisteredFifo(16, depth, lutram=lutram)
    enter: list[int] = []
    taken: list[int] = []
    n = len(gaps)

    async def bench(ctx):
        k, wait, cycle = 0, gaps[0], 0
        while len(taken) < n:
            assert cycle < len(ready) - 1, "the FIFO stopped"
            offer = k < n and wait == 0
            ctx.set(dut.i.valid, offer)
            ctx.set(dut.i.payload, k if offer else 0)
            ctx.set(dut.o.ready, ready[cycle])
            await ctx.delay(1e-9)
            if offer and ctx.get(dut.i.ready):
                enter.append(cycle)
                k += 1
                wait = gaps[k] if k < n else 0
            elif not offer:
                wait -= 1
            if ctx.get(dut.o.valid) and ready[cycle]:
                assert ctx.get(dut.o.payload) == len(taken)
                taken.append(cycle)
            cycle += 1
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return enter, taken


@pytest.mark.parametrize("depth, gap, stall, seed", [(3, 0.1, 0.3, 7), (4, 0.0, 0.2, 8), (5, 0.0, 0.0, 1),
                                                      (6, 0.3, 0.5, 2), (12, 0.1, 0.7, 3), (16, 0.05, 0.4, 9),
                                                      (20, 0.5, 0.2, 4), (17, 0.0, 0.5, 5), (40, 0.05, 0.3, 6)])
def test_handshakes_are_the_cycle_models(depth, gap, stall, seed):
    rng = random.Random(seed)
    n = 250
    gaps = [0 if rng.random() >= gap else rng.randrange(1, 6) for _ in range(n)]
    # stalls in runs, so that the FIFO fills and drains
    ready: list[bool] = []
    while len(ready) < 40 * n:
        ready += [rng.random() >= stall] * rng.choice((1, 1, 2, 5, 30))
    enter, taken = _simulate(depth, gaps, ready, lutram=depth <= 16)
    sink = _Sink(ready)
    fifo = _Fifo(depth, LATENCY, sink)
    model_enter: list[int] = []
    for k, g in enumerate(gaps):
        valid = (model_enter[-1] + 1 if k else 0) + g
        model_enter.append(fifo.offer(valid))
    assert enter == model_enter
    assert taken == sink.taken


def test_full_rate_and_capacity():
    """Back to back with the output always ready: a beat a cycle, each offered LATENCY cycles after it entered;
    with the output never ready it takes exactly `depth` beats."""
    enter, taken = _simulate(9, [0] * 50, [True] * 200)
    assert enter == list(range(50)) and taken == [t + LATENCY for t in enter]
    enter, _ = _simulate_held(9)
    assert enter == list(range(9))


def _simulate_held(depth: int):
    dut = RegisteredFifo(4, depth)
    enter: list[int] = []

    async def bench(ctx):
        ctx.set(dut.i.valid, 1)
        for cycle in range(3 * depth):
            await ctx.delay(1e-9)
            if ctx.get(dut.i.ready):
                enter.append(cycle)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return enter, None


def test_ecp5_netlist_reads_through_the_output_register():
    """On ECP5 the RAM is DP16KD blocks with the output register on (gen/memory.py), sized for the depth: 40-bit
    beats, 300 deep (512 words: the 1K x 18 mode), three blocks."""
    text = verilog.convert(RegisteredFifo(40, 300), name="top", emit_src=False, platform="ecp5")
    assert text.count("DP16KD #(") == 3 and text.count('.REGMODE_B("OUTREG")') == 3


def test_lutram_netlist_has_no_block_ram():
    """Shallow: the memory is an inferred one marked for distributed RAM, no DP16KD."""
    text = verilog.convert(RegisteredFifo(40, 16, lutram=True), name="top", emit_src=False, platform="ecp5")
    assert "DP16KD" not in text and 'ram_style = "distributed"' in text


def test_bad_depth():
    with pytest.raises(ValueError, match=r"depth=1 is invalid: a RegisteredFifo holds at least 2 beats"):
        RegisteredFifo(8, 1)
