"""The runtime-format DyBit array's RTL under Verilator: bit-exact per job, formats changing between jobs, the
cycle model, MACs per cycle that scale with precision, and the error flag."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch

from accelkit.config import ConfigError
from accelkit.config.dybit import OperandFormat
from accelkit.config.dybit_dyn import DyBitDynConfig, format_byte
from accelkit.golden.dybit import QuantError
from accelkit.golden.dybit_dyn import job_matmul
from accelkit.golden.dybit_dyn_cycles import macs_per_cycle, utilisation
from accelkit.sim.dybit_dyn import LANE_BITS, c_error_flags, check_jobs, pack_run, run_dybit_dyn
from accelkit.sim.payload import pack_lanes, unpack_lanes
from accelkit.sim.runner import run_streams

pytestmark = pytest.mark.sim

CFG = DyBitDynConfig()  # 4 x 4, widths 4 and 8
F4 = ["dybit4k1", "dybit4k2", "dybit4k3", "int4"]
F8 = ["dybit8k1", "dybit8k2", "dybit8k4", "dybit8k6", "dybit8k7", "int8"]


def width(fmt: str) -> int:
    return int(re.search(r"(\d)(?:k\d)?$", fmt).group(1))


def codes(n: int, shape, seed: int) -> torch.Tensor:
    return torch.randint(0, 1 << n, shape, generator=torch.Generator().manual_seed(seed))


def check(cfg: DyBitDynConfig, jobs, **kw):
    run = run_dybit_dyn(cfg, jobs, **kw)  # the testbench compares every beat with the golden model
    for (a, fa, b, fb), c in zip(jobs, run.c, strict=True):
        assert torch.equal(c, job_matmul(a, fa, b, fb))  # and so does the host
    if not kw.get("gap") and not kw.get("stall"):
        assert run.cycles == run.predicted and run.job_cycles == run.job_predicted
    return run


def every_pair_jobs() -> list:
    """All 16 x 16 code pairs of every format pair of width 4, as outer products over K = 3 (P = 4 pads K: the
    first k holds every pair, the others random codes)."""
    jobs = []
    for i, (fa, fb) in enumerate(itertools.product(F4, F4)):
        a = torch.cat([torch.arange(16).reshape(-1, 1), codes(4, (16, 2), i)], dim=1)
        b = torch.cat([torch.arange(16).reshape(1, -1), codes(4, (2, 16), 100 + i)], dim=0)
        jobs.append((a, fa, b, fb))
    return jobs


def test_every_code_pair_n4_formats_changing():
    """16 format pairs back to back on one array, every pair of codes; no gaps (exact cycles), then gaps and
    stalls under the Python testbench."""
    jobs = every_pair_jobs()
    check(CFG, jobs, streams="native")
    run = check(CFG, jobs[:6], gap=0.3, stall=0.4, seed=2)
    assert run.cycles > run.predicted


def test_random_8bit_and_mixed_formats_changing():
    """Random 8-bit codes (negative zero / -128 included), each 8-bit and mixed format pair, formats changing
    at every job, with and without gaps and stalls."""
    pairs = [(fa, fb) for fa in F8 for fb in ("dybit8k7", "int8", "dybit8k3")]
    pairs += [("dybit8k4", "dybit4k3"), ("int8", "int4"), ("dybit4k3", "dybit8k5"), ("int4", "int8"),
              ("dybit4k2", "dybit4k1"), ("dybit8k7", "dybit4k3")]
    jobs = []
    for i, (fa, fb) in enumerate(pairs):
        m, k, n = 3 + i % 6, 1 + (7 * i) % 23, 2 + (5 * i) % 7
        a, b = codes(width(fa), (m, k), i), codes(width(fb), (k, n), 50 + i)
        a[0, 0] = 1 << (width(fa) - 1)
        b[0, -1] = 1 << (width(fb) - 1)
        jobs.append((a, fa, b, fb))
    check(CFG, jobs, streams="native")
    for gap, stall, seed in ((0.3, 0.4, 3), (0.8, 0.1, 4), (0.1, 0.8, 5)):
        assert check(CFG, jobs, gap=gap, stall=stall, seed=seed, streams="native").cycles > 0


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (4, 2, 4), (13, 3, 5), (9, 17, 6), (8, 5, 12)])
def test_cycle_model_is_exact(m, k, n):
    """Odd shapes, K at or below R + 1 beats (the drain-bound case, with headers in between): every mode,
    the run's cycles and every job's span equal the model's."""
    jobs = [(codes(width(fa), (m, k), i), fa, codes(width(fb), (k, n), 9 + i), fb)
            for i, (fa, fb) in enumerate([("dybit8k4", "dybit8k4"), ("dybit4k3", "int4"), ("int8", "dybit4k2"),
                                          ("dybit4k1", "dybit8k7"), ("dybit4k3", "dybit4k3")])]
    check(CFG, jobs, streams="native")


def test_drain_bound_with_stalls():
    """K of one beat, the output stalling: finished tiles wait for the bank, nothing is lost."""
    jobs = [(codes(4, (16, 4), 1), "dybit4k3", codes(4, (4, 16), 2), "dybit4k3"),
            (codes(8, (8, 1), 3), "int8", codes(8, (1, 8), 4), "int8")]
    check(CFG, jobs, gap=0.2, stall=0.6, seed=7, streams="native")


def test_throughput_scales_with_precision():
    """64 x 256 x 64 at 4 x 4 in every mode, the three jobs back to back in one run: each job's span (its header
    to its last row) is the model's, utilisation >= 95 %, W4A8 at least 2x and 4 x 4 at least 4x the MACs per
    cycle of 8 x 8 (to the fixed fill and drain cycles of each job: >= 1.99x and 3.99x)."""
    modes = [("dybit8k4", "dybit8k4"), ("dybit8k4", "dybit4k3"), ("dybit4k3", "dybit4k3")]
    jobs = [(codes(width(fa), (64, 256), i), fa, codes(width(fb), (256, 64), 10 + i), fb)
            for i, (fa, fb) in enumerate(modes)]
    run = check(CFG, jobs, streams="native")
    mpc = {}
    for shape, span in zip(run.shapes, run.job_cycles, strict=True):
        mpc[(shape.na, shape.nb)] = macs_per_cycle([shape], span)
        assert utilisation(CFG, [shape], span) >= 0.95
        assert mpc[(shape.na, shape.nb)] <= 16 * shape.p
    assert mpc[(8, 4)] >= 1.99 * mpc[(8, 8)]
    assert mpc[(4, 4)] >= 3.99 * mpc[(8, 8)]


# ---------------------------------------------------------------------------------------------- errors


def a_beat(lanes, last=0, header=0) -> int:
    return pack_lanes(np.array([list(lanes)]), LANE_BITS, [(np.array([last]), 1), (np.array([header]), 1)])[0]


def header(cfg, byte_a: int, byte_b: int, other=0) -> int:
    return a_beat([byte_a | byte_b << 8] + [other] * (cfg.rows - 1), header=1)


def raw_job(cfg, a_hdr: int, tiles: int, kb: int, lane_a=0x11, lane_b=0x22) -> tuple[list[int], list[int]]:
    """A header beat and `tiles` tiles of `kb` beats of constant lanes."""
    a, b = [a_hdr], []
    for _ in range(tiles):
        for kk in range(kb):
            a.append(a_beat([lane_a] * cfg.rows, last=int(kk == kb - 1)))
            b.append(pack_lanes(np.array([[lane_b] * cfg.cols]), LANE_BITS)[0])
    return a, b


def run_raw(cfg, parts, **kw):
    """Stream raw (a, b) parts back to back; return the c beats' error flags per part and the c beats."""
    a = [x for p, _ in parts for x in p]
    b = [x for _, p in parts for x in p]
    counts = [cfg.rows * sum(1 for x in p if x >> (LANE_BITS * cfg.rows) & 1) for p, _ in parts]
    job = {"sources": [{"name": "a", "beats": a, "gap": kw.get("gap", 0)},
                       {"name": "b", "beats": b, "gap": kw.get("gap", 0)}],
           "sinks": [{"name": "c", "count": sum(counts), "stall": kw.get("stall", 0)}], "timeout": 5000,
           "seed": kw.get("seed", 1)}
    res = run_streams(cfg, job, streams=kw.get("streams", "native"))
    beats = res["sinks"]["c"]
    flags = c_error_flags(cfg, beats)
    out, start = [], 0
    for cnt in counts:
        out.append(flags[start:start + cnt].tolist())
        start += cnt
    return out, beats


DY4K3 = format_byte(OperandFormat("dybit", 4, 3))
INT8 = format_byte(OperandFormat("int", 8))


@pytest.mark.parametrize("streams", ["native", "cocotb"])
def test_invalid_header_is_answered_with_the_error_flag(streams):
    """Before any header, n outside the widths, kmax out of range, INT with a kmax, an unknown kind, nonzero
    reserved lanes: every tile is consumed and answered with error = 1, and the next valid header resynchronises
    (its job bit-exact, error = 0)."""
    good_a, good_b = codes(4, (4, 8), 1), codes(4, (8, 4), 2)
    good = check_jobs(CFG, [(good_a, "dybit4k3", good_b, "dybit4k3")])
    packed = pack_run(CFG, good)
    bad_headers = [
        (5 - 1) | 2 << 3,  # DyBit(5, 2): n not generated
        (4 - 1) | 0 << 3,  # DyBit(4, 0)
        (4 - 1) | 4 << 3,  # DyBit(4, 4)
        (8 - 1) | 0 << 3,  # DyBit(8, 0)
        (8 - 1) | 1 << 3 | 1 << 6,  # INT8 with kmax 1
        (4 - 1) | 2 << 3 | 2 << 6,  # kind 2
        (4 - 1) | 1 << 3 | 3 << 6,  # kind 3
    ]
    parts = [raw_job(CFG, a_beat([0x11] * CFG.rows), 0, 0)]  # a data beat with no header before it:
    parts[0] = ([a_beat([0x11] * CFG.rows, last=1)], [pack_lanes(np.array([[3] * CFG.cols]), LANE_BITS)[0]])
    for i, byte in enumerate(bad_headers):
        hdr = header(CFG, byte, DY4K3) if i % 2 == 0 else header(CFG, DY4K3, byte)
        parts.append(raw_job(CFG, hdr, tiles=1 + i % 2, kb=1 + i % 3))
    parts.append(raw_job(CFG, header(CFG, DY4K3, DY4K3, other=1), tiles=1, kb=2))  # reserved lane not zero
    parts.append((packed.a, packed.b))
    flags, beats = run_raw(CFG, parts, gap=0.3, stall=0.4, seed=3, streams=streams)
    for i, f in enumerate(flags[:-1]):
        assert f and all(f), f"part {i}: expected every beat flagged, got {f}"
    assert flags[-1] == [0] * len(packed.c)
    assert beats[-len(packed.c):] == packed.c  # the job after the bad ones, bit-exact


def test_codes_wider_than_the_job_are_flagged():
    """A data beat with bits above its P codes flags its tile and the job's later tiles (not earlier ones); the
    next header clears it. 8 x 8: a lanes above bit 8; 8 x 4: b lanes above bit 8 (2 codes of 4 bits)."""
    hdr88 = header(CFG, INT8, INT8)
    hdr84 = header(CFG, INT8, DY4K3)
    clean = raw_job(CFG, hdr88, tiles=2, kb=3)
    wide_a = raw_job(CFG, hdr88, tiles=3, kb=3)
    wide_a[0][5] = a_beat([0x11, 0x100] + [0] * (CFG.rows - 2))  # tile 1 (beats 4..6), k = 1: bit 8 of row 1
    wide_b = raw_job(CFG, hdr84, tiles=2, kb=2)
    wide_b[1][0] = pack_lanes(np.array([[0x22] * (CFG.cols - 1) + [0x122]]), LANE_BITS)[0]
    ok84 = raw_job(CFG, hdr84, tiles=1, kb=2, lane_a=0xFFFF, lane_b=0xFF)  # 8 x 4 uses all 16 a bits, 8 b bits
    flags, beats = run_raw(CFG, [clean, wide_a, wide_b, ok84, clean])
    R = CFG.rows
    assert flags[0] == [0] * 2 * R
    assert flags[1] == [0] * R + [1] * 2 * R
    assert flags[2] == [1] * 2 * R
    assert flags[3] == [0] * R and flags[4] == [0] * 2 * R
    # ok84: every a lane is two INT8 codes 0xFF (-1), every b lane two DyBit(4, 3) codes 0xF (-4, I = -16):
    # 2 beats x 2 MACs x 16 = 64 per output, in units of 2^-(0 + 2)
    vals = unpack_lanes(beats[7 * R:8 * R], CFG.acc_bits, CFG.cols)
    assert (vals == 64).all()


def test_host_refuses_bad_jobs_in_one_line():
    a, b = codes(4, (4, 3), 0), codes(4, (3, 4), 1)
    cases = [
        ([(a, "dybit4k3", b, "dybit4k3"), (a, "dybit3k2", b, "int4")], ConfigError,
         "job 1: a_format='dybit3k2' is invalid: this array was generated for operand widths 4, 8, not 3"),
        ([(a, "dybit4k3", b, "dybit4k4")], ConfigError, "job 0: kmax=4 is invalid"),
        ([(a, "int4", b, "dybit8k9")], ConfigError, "job 0: kmax=9 is invalid"),
        ([(a, "dybit4k3", b * 2, "dybit4k3")], QuantError, "job 0: codes must lie in 0 .. 15"),
        ([(codes(8, (4, 3), 0), "dybit4k3", b, "dybit4k3")], QuantError, "job 0: codes must lie in 0 .. 15"),
        ([(a, "int4", b[:2], "int4")], QuantError, "job 0: shapes (4, 3) x (2, 4) do not make a matmul"),
        ([], QuantError, "jobs must be a non-empty list"),
    ]
    for jobs, exc, message in cases:
        with pytest.raises(exc, match=re.escape(message)) as e:
            run_dybit_dyn(CFG, jobs)
        assert "\n" not in str(e.value)
    with pytest.raises(QuantError, match=r"^job 0: K=9 is above max_k=8"):
        run_dybit_dyn(DyBitDynConfig(max_k=8), [(codes(4, (4, 9), 0), "int4", codes(4, (9, 4), 0), "int4")])


@pytest.mark.parametrize("cfg", [DyBitDynConfig(rows=1, cols=3, max_k=64), DyBitDynConfig(rows=2, cols=2,
                                                                                        widths=(8,), max_k=64),
                                 DyBitDynConfig(rows=5, cols=2, max_k=64)],
                         ids=["1x3", "2x2-w8", "5x2-broadcast-tree"])
def test_other_shapes_and_widths(cfg):
    """Odd shapes, one width only, and (5 x 2) a broadcast tree of one level: bit-exact, the cycle model exact
    (its depth from the config's stage counts, which the generator checks it builds)."""
    if cfg.rows == 5:
        assert cfg.broadcast_stages == 1 and cfg.pipeline_depth == DyBitDynConfig().pipeline_depth + 1
    fmts = [f.name for f in cfg.formats]
    jobs = [(codes(width(fa), (5, 9), i), fa, codes(width(fb), (9, 4), 20 + i), fb)
            for i, (fa, fb) in enumerate(zip(fmts, fmts[::-1], strict=True))]
    check(cfg, jobs, streams="native")
    check(cfg, jobs[:3], gap=0.3, stall=0.4, seed=1, streams="native")


# ---------------------------------------------------------------------------------------------- reset


def test_reset_mid_job_then_a_job_is_bit_exact():
    """The datapath registers have no reset (operands, partial products, sums, accumulators, the bank): a reset
    in the middle of a job, with one finished tile waiting in the bank (``c`` not ready) and the next tile's
    partial sums in the accumulators, then a new job: its rows are bit-exact and nothing else comes out. The
    accumulators restart from each PE's `fresh` flag, not from the reset (Amaranth's simulator, the design inside
    a ResetInserter; the Verilator runs above start from the flip-flops' initial values)."""
    from amaranth.hdl import Module, ResetInserter, Signal
    from amaranth.sim import Simulator

    from accelkit.gen.dybit_dyn import DyBitDynArray

    cfg = CFG
    first = pack_run(cfg, check_jobs(cfg, [(codes(8, (8, 24), 1), "int8", codes(8, (24, 4), 2), "int8")]))
    second = pack_run(cfg, check_jobs(cfg, [(codes(4, (4, 8), 3), "dybit4k3", codes(8, (8, 4), 4), "dybit8k4")]))
    kb = (len(first.a) - 1) // 2  # a beats per tile: the header, then 2 tiles
    assert len(first.b) == 2 * kb and kb >= 4
    rst = Signal()
    top = Module()
    top.submodules.dut = dut = ResetInserter(rst)(DyBitDynArray(cfg))
    got, after = [], []

    async def bench(ctx):
        ctx.set(dut.c.ready, 0)
        # the first job's header, its first tile and half of the second; then the pipeline empties into the
        # bank (tile 1, held: c is not ready) and the accumulators (half of tile 2)
        ai = bi = 0
        while bi < kb + kb // 2:
            ctx.set(dut.a.valid, 1)
            ctx.set(dut.a.payload.as_value(), first.a[ai])
            is_hdr = ai == 0
            ctx.set(dut.b.valid, int(not is_hdr))
            if not is_hdr:
                ctx.set(dut.b.payload.as_value(), first.b[bi])
            _, _, a_ready = await ctx.tick().sample(dut.a.ready)
            if a_ready:
                ai += 1
                bi += int(not is_hdr)
        ctx.set(dut.a.valid, 0)
        ctx.set(dut.b.valid, 0)
        await ctx.tick().repeat(cfg.pipeline_depth + 8)
        assert ctx.get(dut.c.valid), "tile 1 should be waiting on c"
        ctx.set(rst, 1)
        await ctx.tick().repeat(2)
        ctx.set(rst, 0)
        # the second job, c always ready
        ctx.set(dut.c.ready, 1)
        ai = bi = 0
        cycles = 0
        while len(after) < len(second.c):
            cycles += 1
            assert cycles < 500, "the second job did not finish"
            if ai < len(second.a):
                is_hdr = ai == 0
                ctx.set(dut.a.valid, 1)
                ctx.set(dut.a.payload.as_value(), second.a[ai])
                ctx.set(dut.b.valid, int(not is_hdr))
                if not is_hdr:
                    ctx.set(dut.b.payload.as_value(), second.b[bi])
            else:
                ctx.set(dut.a.valid, 0)
                ctx.set(dut.b.valid, 0)
            _, _, a_ready, c_valid, c_payload = await ctx.tick().sample(dut.a.ready, dut.c.valid,
                                                                        dut.c.payload.as_value())
            if ai < len(second.a) and a_ready:
                bi += int(ai != 0)
                ai += 1
            if c_valid:
                after.append(c_payload)
        ctx.set(dut.a.valid, 0)
        ctx.set(dut.b.valid, 0)
        for _ in range(cfg.pipeline_depth + 2 * cfg.rows):  # nothing more comes out
            _, _, c_valid = await ctx.tick().sample(dut.c.valid)
            got.append(c_valid)

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert after == second.c
    assert not any(got)
    assert c_error_flags(cfg, after).tolist() == [0] * len(second.c)


@pytest.mark.parametrize("rows,cols", [(4, 4), (5, 2), (1, 3)])
def test_enable_and_freed_copies_equal_the_originals(rows, cols):
    """The grid's copies of the stall: every copy of `freed` (one register per row, each loaded from the drain's
    `freed_next`) equals the drain's `freed`, and every enable copy equals `advance` (d.ready), in every cycle of
    jobs streamed with gaps at the input and stalls at the output; and the rows come out bit-exact. (Amaranth's
    simulator, so the copies can be read; R = 1 takes the other branch of `freed_next`.)"""
    import random

    from amaranth.sim import Simulator

    from accelkit.gen.dybit_dyn import DyBitDynArray

    cfg = DyBitDynConfig(rows=rows, cols=cols, max_k=64)
    run = pack_run(cfg, check_jobs(cfg, [
        (codes(8, (2 * rows, 9), 1), "int8", codes(8, (9, cols), 2), "int8"),  # kb = 9 > R + 1: no stall
        (codes(4, (3 * rows, 4), 3), "dybit4k3", codes(8, (4, 2 * cols), 4), "dybit8k4"),  # kb = 2: stalls
    ]))
    dut = DyBitDynArray(cfg)
    rng = random.Random(5)
    headers = set(run.header_index)
    got = []
    checked = {"freed": 0, "cycles": 0}

    async def bench(ctx):
        grid, drain = dut.grid, dut.drain
        ai = bi = 0
        for _ in range(2000):
            if len(got) == len(run.c):
                break
            offer = ai < len(run.a) and rng.random() < 0.8
            ctx.set(dut.a.valid, offer)
            if ai < len(run.a):
                ctx.set(dut.a.payload.as_value(), run.a[ai])
            hdr = ai in headers
            b_offer = offer and not hdr and bi < len(run.b)
            ctx.set(dut.b.valid, b_offer)
            if b_offer:
                ctx.set(dut.b.payload.as_value(), run.b[bi])
            ctx.set(dut.c.ready, rng.random() < 0.6)
            freed = ctx.get(drain.freed)
            assert [ctx.get(q) for q in grid.freed_copies] == [freed] * len(grid.freed_copies)
            advance = ctx.get(grid.d.ready)
            assert [ctx.get(e) for e in grid.enable_copies] == [advance] * len(grid.enable_copies)
            checked["freed"] += freed
            checked["cycles"] += 1
            _, _, a_ready, c_valid, c_ready, c_payload = await ctx.tick().sample(
                dut.a.ready, dut.c.valid, dut.c.ready, dut.c.payload.as_value())
            if offer and a_ready:
                ai += 1
                bi += int(not hdr)
            if c_valid and c_ready:
                got.append(c_payload)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == run.c
    assert checked["freed"] == len(run.c) // rows  # one per tile, each seen by every copy
