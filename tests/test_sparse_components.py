"""Each component of the sparse convolution engine (gen/sparse_*.py, gen/memory.py, gen/pipeline.py) simulated
alone with Amaranth's own simulator, its real RTL against independent expectations (Python ints, numpy, the
golden `requant`, the cycle model's `frame_plan`), never against itself.

The frames and beat counts are small: the whole file runs in well under a minute (quick tier, no marker).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from amaranth.hdl import Elaboratable, Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from accelkit.config.sparse_conv import SparseConvConfig, signed_bits
from accelkit.gen.memory import READ_LATENCY, RegisteredRam
from accelkit.gen.pipeline import (
    LIMB,
    MULTIPLY_LATENCY,
    lowest_one_hot,
    one_hot_index,
    registered_multiply,
    saturate,
    split_multiply,
)
from accelkit.gen.sparse_finder import SiteFinder
from accelkit.gen.sparse_line_buffer import LineBuffer
from accelkit.gen.sparse_mac import MacArray, mac_array_latency
from accelkit.gen.sparse_requant import Requantiser, requantiser_latency
from accelkit.gen.sparse_sequencer import SEQUENCER_LATENCY, MacSequencer
from accelkit.golden.sparse_conv import requant
from accelkit.golden.sparse_rtl_cycles import frame_plan


def simulate(dut, tb, clock: bool = True) -> None:
    sim = Simulator(dut)
    if clock:
        sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def to_signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def pack(values, bits: int) -> int:
    out = 0
    for i, v in enumerate(values):
        out |= (int(v) & ((1 << bits) - 1)) << (i * bits)
    return out


def unpack(word: int, n: int, bits: int, is_signed: bool) -> list[int]:
    vals = [(word >> (i * bits)) & ((1 << bits) - 1) for i in range(n)]
    return [to_signed(v, bits) for v in vals] if is_signed else vals


# =========================================================================== 1. RegisteredRam, pipeline helpers


@pytest.mark.parametrize("width,depth", [(8, 16), (37, 40), (5, 2)])
def test_registered_ram_read_latency_is_two(width, depth):
    rng = random.Random(width * 1000 + depth)
    ram = RegisteredRam(width, depth)
    contents = [rng.randrange(1 << width) for _ in range(ram.depth)]
    reads = [rng.randrange(ram.depth) for _ in range(3 * ram.depth)]
    seen: list[int] = []

    async def tb(ctx):
        for a, v in enumerate(contents):
            ctx.set(ram.w_en, 1)
            ctx.set(ram.w_addr, a)
            ctx.set(ram.w_data, v)
            await ctx.tick()
        ctx.set(ram.w_en, 0)
        for a in reads + [0] * 3:
            ctx.set(ram.r_addr, a)
            seen.append(ctx.get(ram.r_data))
            await ctx.tick()

    simulate(ram, tb)
    assert READ_LATENCY == 2
    # the data of the address applied in cycle t is on r_data in cycle t + 2 (and not in t + 1)
    got = seen[2:2 + len(reads)]
    assert got == [contents[a] for a in reads]
    early = seen[1:1 + len(reads)]
    assert early != [contents[a] for a in reads]


class _MulHarness(Elaboratable):
    def __init__(self, a_shape, b_shape, width: int | None, split: bool):
        self.a, self.b = Signal(a_shape), Signal(b_shape)
        self.split = split
        self.width = width if split else len(self.a) + len(self.b)
        self.p = Signal(signed(self.width + 1))  # one bit more than the RTL's: its own result, sign-extended
        self.stages = None

    def elaborate(self, platform):
        m = Module()
        if self.split:
            p, self.stages = split_multiply(m, self.a, self.b, self.width, "dut")
        else:
            p, self.stages = registered_multiply(m, self.a, self.b, "dut"), MULTIPLY_LATENCY
        m.d.comb += self.p.eq(p)
        return m


def _range(shape) -> tuple[int, int]:
    n = shape.width
    return (-(1 << (n - 1)), (1 << (n - 1)) - 1) if shape.signed else (0, (1 << n) - 1)


def _operands(a_shape, b_shape, seed: int, n: int = 40):
    rng = random.Random(seed)
    (al, ah), (bl, bh) = _range(a_shape), _range(b_shape)
    ext_a = sorted({al, ah, 0, 1, -1 if al < 0 else 0, al + 1, ah - 1, (1 << LIMB) - 1 if ah >= (1 << LIMB) else ah,
                    (1 << (LIMB - 1)) if ah >= (1 << (LIMB - 1)) else ah})
    ext_b = sorted({bl, bh, 0, 1, bh - 1, (bh + 1) // 2})
    pairs = [(a, b) for a in ext_a for b in ext_b]
    pairs += [(rng.randint(al, ah), rng.randint(bl, bh)) for _ in range(n)]
    return pairs


def _run_multiply(h: _MulHarness, pairs):
    out: list[int] = []

    async def tb(ctx):
        for a, b in pairs + [(0, 0)] * 8:
            ctx.set(h.a, a)
            ctx.set(h.b, b)
            out.append(ctx.get(h.p))
            await ctx.tick()

    sim = Simulator(h)  # elaborates: h.stages is known from here
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return out


# The operand shapes of the generators' multiplies: the requantiser's (acc + bias) x scale (signed psum_bits x
# unsigned scale_bits), wider ones with several limbs on each side, and unsigned x unsigned.
SPLIT_CASES = [
    (signed(23), unsigned(16)),  # the default config's requant multiply (psum_bits 23, scale_bits 16)
    (signed(17), unsigned(17)),  # one limb each
    (signed(30), unsigned(24)),  # 2 x 2 partial products
    (signed(40), unsigned(35)),  # 3 x 3 partial products: a three-level tree
    (unsigned(20), unsigned(20)),
]


@pytest.mark.parametrize("a_shape,b_shape", SPLIT_CASES, ids=lambda s: repr(s))
def test_split_multiply_vs_python(a_shape, b_shape):
    (al, ah), (bl, bh) = _range(a_shape), _range(b_shape)
    width = signed_bits(min(al * bh, ah * bl, al * bl, 0), max(ah * bh, al * bl, 0))
    h = _MulHarness(a_shape, b_shape, width, split=True)
    pairs = _operands(a_shape, b_shape, seed=a_shape.width * 100 + b_shape.width)
    out = _run_multiply(h, pairs)
    parts = -(-a_shape.width // 17) * -(-b_shape.width // 17)
    assert h.stages == 2 + (parts - 1).bit_length()
    got = out[h.stages:h.stages + len(pairs)]
    bad = [(a, b, a * b, g) for (a, b), g in zip(pairs, got, strict=True) if g != a * b]
    assert not bad, f"{len(bad)} of {len(pairs)} products wrong, e.g. (a, b, a*b, rtl) = {bad[:4]}"


@pytest.mark.parametrize("a_shape,b_shape", [(signed(8), signed(8)), (signed(18), signed(18)),
                                             (signed(18), unsigned(17)), (unsigned(17), signed(18)),
                                             (unsigned(17), unsigned(17))], ids=lambda s: repr(s))
def test_registered_multiply_vs_python(a_shape, b_shape):
    """registered_multiply's contract: each operand at most 18 bits signed or 17 unsigned, latency 2."""
    h = _MulHarness(a_shape, b_shape, None, split=False)
    pairs = _operands(a_shape, b_shape, seed=a_shape.width * 7 + b_shape.width)
    out = _run_multiply(h, pairs)
    assert h.stages == MULTIPLY_LATENCY == 2
    got = out[2:2 + len(pairs)]
    bad = [(a, b, a * b, g) for (a, b), g in zip(pairs, got, strict=True) if g != a * b]
    assert not bad, f"{len(bad)} of {len(pairs)} products wrong, e.g. (a, b, a*b, rtl) = {bad[:4]}"


class _OneHotHarness(Elaboratable):
    def __init__(self, n: int):
        self.vec, self.oh_in = Signal(n), Signal(n)
        self.n = n
        self.oh = self.idx = None

    def elaborate(self, platform):
        m = Module()
        self.oh = lowest_one_hot(m, self.vec, "oh")
        self.idx = one_hot_index(m, self.oh_in, "idx")
        return m


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_lowest_one_hot_and_index_exhaustive(n):
    h = _OneHotHarness(n)
    got_oh, got_idx = {}, {}

    async def tb(ctx):
        for v in range(1 << n):
            ctx.set(h.vec, v)
            got_oh[v] = ctx.get(h.oh)
        for i in range(n):
            ctx.set(h.oh_in, 1 << i)
            got_idx[i] = ctx.get(h.idx)
        ctx.set(h.oh_in, 0)
        got_idx[None] = ctx.get(h.idx)

    simulate(h, tb, clock=False)
    for v in range(1 << n):
        want = 0 if v == 0 else 1 << ((v & -v).bit_length() - 1)
        assert got_oh[v] == want, (v, got_oh[v], want)
    assert [got_idx[i] for i in range(n)] == list(range(n))
    assert got_idx[None] == 0


class _SatHarness(Elaboratable):
    def __init__(self, in_bits: int, bits: int, relu: bool):
        self.v = Signal(signed(in_bits))
        self.bits, self.relu = bits, relu
        self.out = Signal(bits)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.out.eq(saturate(m, self.v, self.bits, self.relu, "sat"))
        return m


@pytest.mark.parametrize("in_bits,bits,relu", [(12, 8, True), (12, 8, False), (9, 8, False), (8, 8, True),
                                               (8, 8, False), (6, 8, False), (10, 4, False), (10, 4, True)])
def test_saturate_exhaustive(in_bits, bits, relu):
    """The requantiser's clamp (bit reductions, no compare) against min(max(v, lo), q), every input value."""
    h = _SatHarness(in_bits, bits, relu)
    got = {}

    async def tb(ctx):
        for v in range(-(1 << (in_bits - 1)), 1 << (in_bits - 1)):
            ctx.set(h.v, v)
            got[v] = to_signed(ctx.get(h.out), bits)

    simulate(h, tb, clock=False)
    q = (1 << (bits - 1)) - 1
    lo = 0 if relu else -q
    bad = [(v, g) for v, g in got.items() if g != min(max(v, lo), q)]
    assert not bad, f"{len(bad)} values clamped wrong, e.g. (v, rtl) = {bad[:4]}"


# =========================================================================== 2. MacArray

MAC_CFGS = {
    "subm": SparseConvConfig(kind="subm3x3", max_height=8, max_width=8, cin=8, cout=8, pi=4, po=4),
    "subm_unsigned": SparseConvConfig(kind="subm3x3", max_height=8, max_width=8, cin=8, cout=8, pi=4, po=4,
                                      signed_input=False),
    "dw": SparseConvConfig(kind="dw3x3", max_height=8, max_width=8, cin=8, cout=8, pi=4, po=4),
}


@pytest.mark.parametrize("name", list(MAC_CFGS))
def test_mac_array_sums_latency_eof(name):
    cfg = MAC_CFGS[name]
    rng = np.random.default_rng(11)
    PI, PO, fb, wb = cfg.pi, cfg.po, cfg.feature_bits, cfg.weight_bits
    dw = cfg.depthwise
    (xl, xh), (wl, wh) = cfg.input_range, cfg.weight_range
    nw = PI if dw else PI * PO
    max_steps = cfg.taps * (1 if dw else cfg.in_groups)  # the longest beat the engine issues
    gob = max(1, (cfg.requant_groups - 1).bit_length())

    def meta(eof=0, error=0):
        return {"oy": int(rng.integers(0, 1 << cfg.out_y_bits)), "ox": int(rng.integers(0, 1 << cfg.out_x_bits)),
                "go": int(rng.integers(0, 1 << gob)), "eof": eof, "error": error}

    schedule = []  # one entry per cycle: a step dict or None (idle)
    expected = []  # (cycle of the beat's last step, sums or None for eof, meta)
    for b in range(24):
        n = int(rng.integers(1, max_steps + 1))
        if b == 0:  # extremes: the largest positive sum over the longest beat
            n, mode = max_steps, "max"
        elif b == 1:
            n, mode = max_steps, "min"
        else:
            mode = "rand"
        acc = np.zeros(PO, dtype=np.int64)
        mt = meta()
        for k in range(n):
            if mode == "max":
                x = np.full(PI, xl if cfg.signed_input else xh)
                w = np.full(nw, wl if cfg.signed_input else wh)
            elif mode == "min":
                x = np.full(PI, xh)
                w = np.full(nw, wl)
            else:
                x = rng.integers(xl, xh + 1, PI)
                w = rng.integers(wl, wh + 1, nw)
            if dw:
                acc += x * w
            else:
                acc += w.reshape(PO, PI) @ x
            schedule.append({"x": pack(x, fb), "w": pack(w, wb), "first": int(k == 0), "last": int(k == n - 1),
                             "meta": mt if k == n - 1 else meta()})
            if k == n - 1:
                expected.append((len(schedule) - 1, acc.copy(), mt))
            while rng.random() < 0.2:
                schedule.append(None)
        if b in (5, 17):  # an end-of-frame marker between beats (error set on one)
            mt = meta(eof=1, error=int(b == 17))
            schedule.append({"x": pack(rng.integers(xl, xh + 1, PI), fb), "w": pack(rng.integers(wl, wh + 1, nw), wb),
                             "first": int(rng.integers(2)), "last": int(rng.integers(2)), "meta": mt})
            expected.append((len(schedule) - 1, None, mt))
    lo, hi = cfg.psum_range
    assert all(lo <= int(v) <= hi for _, s, _ in expected if s is not None for v in s)

    dut = MacArray(cfg)
    L = mac_array_latency(cfg)
    outs = {}

    async def tb(ctx):
        st = dut.steps.payload
        for t, step in enumerate(schedule + [None] * (L + 2)):
            ctx.set(dut.steps.valid, step is not None)
            if step is not None:
                ctx.set(st.x, step["x"])
                ctx.set(st.w, step["w"])
                ctx.set(st.first, step["first"])
                ctx.set(st.last, step["last"])
                for f, v in step["meta"].items():
                    ctx.set(getattr(st.meta, f), v)
            if ctx.get(dut.sums.valid):
                sp = dut.sums.payload
                outs[t] = ([ctx.get(sp.acc[o]) for o in range(PO)],
                           {f: ctx.get(getattr(sp.meta, f)) for f in ("oy", "ox", "go", "eof", "error")})
            await ctx.tick()

    simulate(dut, tb)
    assert L == 2 + 2 + 1 + (0 if dw else (PI - 1).bit_length())
    assert sorted(outs) == [t + L for t, _, _ in expected], "an output beat at the wrong cycle (latency)"
    for t, sums, mt in expected:
        got_sums, got_meta = outs[t + L]
        assert got_meta == mt
        if sums is not None:
            assert got_sums == [int(v) for v in sums], f"beat ending in cycle {t}"


# =========================================================================== 3. Requantiser


class _RqHarness(Elaboratable):
    """The requantiser with its requant memory as the engine wires it (a RegisteredRam, read latency 2)."""

    def __init__(self, cfg):
        self.rq = Requantiser(cfg)
        self.ram = RegisteredRam(cfg.requant_word_bits, cfg.requant_groups)

    def elaborate(self, platform):
        m = Module()
        m.submodules.rq, m.submodules.ram = self.rq, self.ram
        m.d.comb += [self.ram.r_addr.eq(self.rq.rq_addr), self.rq.rq_data.eq(self.ram.r_data)]
        return m


def _run_requant(cfg, words, beats):
    """words: per output group (biases, scales); beats: (acc list, meta dict) or None. Returns {cycle: ...}."""
    h = _RqHarness(cfg)
    PO, bb, sb = cfg.po, cfg.bias_bits, cfg.scale_bits
    L = requantiser_latency(cfg)
    outs = {}

    async def tb(ctx):
        for g, (bias, scale) in enumerate(words):
            ctx.set(h.ram.w_en, 1)
            ctx.set(h.ram.w_addr, g)
            ctx.set(h.ram.w_data, pack(bias, bb) | (pack(scale, sb) << (PO * bb)))
            await ctx.tick()
        ctx.set(h.ram.w_en, 0)
        await ctx.tick()
        sp, fp = h.rq.sums.payload, h.rq.feats.payload
        for t, beat in enumerate(list(beats) + [None] * (L + 2)):
            ctx.set(h.rq.sums.valid, beat is not None)
            if beat is not None:
                acc, mt = beat
                for o in range(PO):
                    ctx.set(sp.acc[o], acc[o])
                for f, v in mt.items():
                    ctx.set(getattr(sp.meta, f), v)
            if ctx.get(h.rq.feats.valid):
                outs[t] = ([to_signed(ctx.get(fp.data[o]), cfg.feature_bits) for o in range(PO)],
                           {f: ctx.get(getattr(fp.meta, f)) for f in ("oy", "ox", "go", "eof", "error")})
            await ctx.tick()

    simulate(h, tb)
    return outs, L


def _requant_case(cfg, seed: int, extremes: bool):
    rng = np.random.default_rng(seed)
    PO, Go, E = cfg.po, cfg.requant_groups, cfg.shift
    (bl, bh), smax = cfg.bias_range, cfg.scale_max
    plo, phi = cfg.psum_range
    alo, ahi = plo - bl, phi - bh  # the range of the bias-free sums the MAC array delivers
    words = []
    for g in range(Go):
        bias = rng.integers(bl, bh + 1, PO)
        if extremes:
            scale = rng.integers(0, smax + 1, PO)
            if g == 0:
                bias, scale = np.array([bl, bh, bl, bh][:PO]), np.full(PO, smax)
            elif g == 1:
                scale = np.array([0, 1, smax, smax - 1][:PO])
        else:  # scales that keep outputs mostly unclamped for sums of a few hundred (as the engine's layers do)
            scale = rng.integers(1, 1 << min(cfg.scale_bits, 10), PO)
            if g == 1:
                scale = np.full(PO, 1 << (E - 1)) if E - 1 < cfg.scale_bits else scale  # ties: half rounds up
        words.append((bias, scale))
    gob = max(1, (Go - 1).bit_length())
    beats, expect = [], []
    for b in range(40):
        if rng.random() < 0.25:
            beats.append(None)
        go = int(rng.integers(0, Go))
        if extremes:
            if b < 8:
                acc = rng.choice([alo, ahi], PO)
                if b == 0:
                    go, acc = 0, np.array([alo, ahi, alo, ahi][:PO])  # exactly psum_range's ends with the bias
            else:
                acc = rng.integers(alo, ahi + 1, PO)
        else:
            bias, scale = words[go]
            lim = np.maximum(1, (160 << E) // scale)  # (acc + bias) * scale >> E within about +-160
            acc = np.clip(rng.integers(-lim, lim + 1) - bias, alo, ahi)
        mt = {"oy": int(rng.integers(0, 1 << cfg.out_y_bits)), "ox": int(rng.integers(0, 1 << cfg.out_x_bits)),
              "go": go, "eof": 0, "error": 0}
        beats.append(([int(a) for a in acc], mt))
        bias, scale = words[go]
        y = requant(torch.tensor(acc, dtype=torch.int64), torch.tensor(bias, dtype=torch.int64),
                    torch.tensor(scale, dtype=torch.int64), E, relu=cfg.relu, out_bits=cfg.feature_bits)
        expect.append((len(beats) - 1, [int(v) for v in y], mt))
    # an eof marker goes through in order
    mt = {"oy": 0, "ox": 0, "go": int(rng.integers(0, 1 << gob)) % Go, "eof": 1, "error": 1}
    beats.append(([0] * PO, mt))
    expect.append((len(beats) - 1, None, mt))
    return words, beats, expect


RQ_CFGS = {
    "subm": SparseConvConfig(kind="subm3x3", max_height=8, max_width=8, cin=16, cout=12, pi=4, po=4),
    "subm_relu": SparseConvConfig(kind="subm3x3", max_height=8, max_width=8, cin=16, cout=12, pi=4, po=4,
                                  relu=True),
    "dw_scale20": SparseConvConfig(kind="dw3x3", max_height=8, max_width=8, cin=8, cout=8, pi=4, po=4,
                                   scale_bits=20, shift=20, relu=True),
    "pw_small": SparseConvConfig(kind="pw1x1", max_height=8, max_width=8, cin=4, cout=8, pi=4, po=4,
                                 bias_bits=8, scale_bits=8, shift=8, signed_input=False),
}


def _check_requant(cfg, outs, L, expect):
    assert sorted(outs) == [t + L for t, _, _ in expect], "a feature beat at the wrong cycle (latency)"
    bad = []
    for t, y, mt in expect:
        got, got_meta = outs[t + L]
        assert got_meta == mt
        if y is not None and got != y:
            bad.append((t, got, y))
    assert not bad, f"{len(bad)} of {len(expect)} beats differ from golden requant, e.g. (cycle, rtl, golden) " \
                    f"= {bad[:3]}"


@pytest.mark.parametrize("name", list(RQ_CFGS))
def test_requantiser_typical_vs_golden(name):
    """Sums and scales of the engine's usual layers (outputs mostly inside +-q), round-half-up ties, ReLU."""
    cfg = RQ_CFGS[name]
    words, beats, expect = _requant_case(cfg, seed=3, extremes=False)
    outs, L = _run_requant(cfg, words, beats)
    assert L == 2 + 1 + 2 + 1 + (-(-cfg.psum_bits // 17) * -(-cfg.scale_bits // 17) - 1).bit_length() + 2
    _check_requant(cfg, outs, L, expect)


def test_requantiser_small_negative_sum_large_scale():
    """The default arithmetic (psum_bits 23, scale_bits 16, shift 16): acc + bias = -1 .. -3 times scales from
    2^15 up (a multiplier of 0.5 and more) must give -1 / -2 / -3 (round half up): the lowest limb of a
    negative sum is large, and its partial product with such a scale needs 33 unsigned bits."""
    cfg = SparseConvConfig(kind="subm3x3", max_height=8, max_width=8, cin=16, cout=4, pi=4, po=4)
    assert (cfg.psum_bits, cfg.scale_bits, cfg.shift) == (23, 16, 16)
    bias, scale = np.zeros(4, dtype=np.int64), np.array([1 << 15, 40000, 50000, 65535])
    beats, expect = [], []
    for acc in ([-1] * 4, [-2] * 4, [-3] * 4, [1] * 4):
        mt = {"oy": 1, "ox": 2, "go": 0, "eof": 0, "error": 0}
        beats.append((acc, mt))
        y = requant(torch.tensor(acc), torch.tensor(bias), torch.tensor(scale), cfg.shift, out_bits=8)
        expect.append((len(beats) - 1, [int(v) for v in y], mt))
    assert [y for _, y, _ in expect] == [[0, -1, -1, -1], [-1, -1, -2, -2], [-1, -2, -2, -3], [1, 1, 1, 1]]
    outs, L = _run_requant(cfg, [(bias, scale)], beats)
    _check_requant(cfg, outs, L, expect)


@pytest.mark.parametrize("name", list(RQ_CFGS))
def test_requantiser_extremes_vs_golden(name):
    """psum_range's ends, full-range random sums, scales 0 / 1 / scale_max: every product the config allows."""
    cfg = RQ_CFGS[name]
    words, beats, expect = _requant_case(cfg, seed=4, extremes=True)
    outs, L = _run_requant(cfg, words, beats)
    _check_requant(cfg, outs, L, expect)


# =========================================================================== 4. MacSequencer

SEQ_CFGS = {
    "subm": SparseConvConfig(kind="subm3x3", max_height=16, max_width=20, cin=12, cout=8, pi=4, po=4),
    "dw": SparseConvConfig(kind="dw3x3", max_height=16, max_width=20, cin=12, cout=12, pi=4, po=4),
    "conv_s2": SparseConvConfig(kind="conv3x3s2", max_height=16, max_width=20, cin=8, cout=12, pi=4, po=4),
    "pw": SparseConvConfig(kind="pw1x1", max_height=16, max_width=20, cin=8, cout=12, pi=4, po=4),
}


def _expected_steps(cfg, site):
    """The steps of one site: (lb_addr, w_addr, first, last, meta) in the documented order."""
    Gi, Go, s, T = cfg.in_groups, cfg.requant_groups, cfg.stride, cfg.taps
    gib, gob, xb, sb = (Gi - 1).bit_length(), (Go - 1).bit_length(), cfg.x_bits, cfg.slot_bits
    taps = [k for k in range(T) if site["taps"] >> k & 1]
    out = []

    def lb(tap, g):
        dy, dx = (tap // 3 - 1, tap % 3 - 1) if cfg.kernel == 3 else (0, 0)
        col = (site["ox"] * s + dx) % (1 << xb)
        slot = (site["oy"] * s + dy) % (1 << sb) if sb else 0
        return g | (col << gib) | (slot << (gib + xb))

    def meta(go):
        return {"oy": site["oy"], "ox": site["ox"], "go": go, "eof": 0, "error": 0}

    tb = 4 if cfg.kernel == 3 else 0
    if cfg.depthwise:
        for g in range(Gi):
            for j, tap in enumerate(taps):
                w = g | ((tap if tb else 0) << gib)
                out.append((lb(tap, g), w, int(j == 0), int(j == len(taps) - 1), meta(g)))
    else:
        for go in range(Go):
            n = len(taps) * Gi
            k = 0
            for tap in taps:
                for gi in range(Gi):
                    w = gi | (go << gib) | ((tap if tb else 0) << (gib + gob))
                    out.append((lb(tap, gi), w, int(k == 0), int(k == n - 1), meta(go)))
                    k += 1
    assert cfg.lb_addr_bits == gib + xb + sb
    assert cfg.w_addr_bits == tb + gib + (0 if cfg.depthwise else gob)
    return out


def _random_sites(cfg, rng, n):
    sites = []
    for _ in range(n):
        taps = 1 if cfg.kernel == 1 else int(rng.integers(1, 1 << cfg.taps))
        sites.append({"oy": int(rng.integers(0, cfg.max_out_height)), "ox": int(rng.integers(0, cfg.max_out_width)),
                      "taps": taps, "eof": 0, "error": 0})
    sites[0]["taps"] = (1 << cfg.taps) - 1  # every tap
    if cfg.kernel == 3:
        sites[1]["taps"] = 1 << 8  # one tap
    sites.append({"oy": 0, "ox": 0, "taps": 0, "eof": 1, "error": 1})
    return sites


@pytest.mark.parametrize("name", list(SEQ_CFGS))
def test_mac_sequencer_order_addresses_credits(name):
    cfg = SEQ_CFGS[name]
    rng = np.random.default_rng(5)
    sites = _random_sites(cfg, rng, 10)
    want = [st for site in sites[:-1] for st in _expected_steps(cfg, site)]
    n_beats = sum(st[3] for st in want)
    dut = MacSequencer(cfg)
    steps, beats, can_log = [], [], []
    stall = (60, 100)  # cycles with can_emit held low

    async def tb(ctx):
        i, t = 0, 0
        sp = dut.sites.payload
        while t < 2000:
            can = 0 if stall[0] <= t < stall[1] else int(rng.random() < 0.7)
            ctx.set(dut.can_emit, can)
            offer = i < len(sites) and rng.random() < 0.8
            ctx.set(dut.sites.valid, offer)
            if offer:
                for f, v in sites[i].items():
                    ctx.set(getattr(sp, f), v)
            fire = offer and ctx.get(dut.sites.ready)
            can_log.append(can)
            if ctx.get(dut.beat):
                beats.append(t)
            if ctx.get(dut.steps.valid):
                p = dut.steps.payload
                steps.append((t, ctx.get(p.lb_addr), ctx.get(p.w_addr), ctx.get(p.first), ctx.get(p.last),
                              {f: ctx.get(getattr(p.meta, f)) for f in ("oy", "ox", "go", "eof", "error")}))
                if steps[-1][5]["eof"]:
                    break
            await ctx.tick()
            t += 1
            i += bool(fire)

    simulate(dut, tb)
    assert steps and steps[-1][5]["eof"] == 1, "no eof step"
    eof_step = steps.pop()
    assert eof_step[5]["error"] == 1
    assert [s[1:] for s in steps] == want
    # a step that ends a beat (and the eof step) is issued only while can_emit is high: it leaves the step
    # registers SEQUENCER_LATENCY cycles after its issue, and `beat` pulses at the issue
    assert SEQUENCER_LATENCY == 2
    ends = [s[0] for s in steps if s[4]] + [eof_step[0]]
    assert all(can_log[t - SEQUENCER_LATENCY] for t in ends)
    assert beats == [t - SEQUENCER_LATENCY for t in ends]
    assert len(beats) == n_beats + 1
    # while can_emit is held low no beat ends (other steps of the beat go on), and steps resume after
    lo, hi = stall
    assert not [s for s in steps if lo + SEQUENCER_LATENCY <= s[0] < hi + SEQUENCER_LATENCY and s[4]]
    assert [s for s in steps if s[0] >= hi + SEQUENCER_LATENCY], "steps did not resume"
    assert [s for s in steps if s[0] < lo], "the stall window starts after the work (make the frame longer)"
    # steps leave one per cycle while nothing holds them: the longest run of consecutive cycles is a beat or more
    assert steps[0][0] <= 20


# =========================================================================== 5. SiteFinder


def _expected_sites(cfg, mask):
    """(oy, ox, tap mask) of every output site of a frame's active-site mask, raster order (numpy)."""
    H, W = mask.shape
    if cfg.kernel == 1:
        ys, xs = np.nonzero(mask)
        return [(int(y), int(x), 1) for y, x in zip(ys, xs, strict=True)]
    s = cfg.stride
    Ho, Wo = cfg.output_grid(H, W)
    pad = np.zeros((H + 3 + s, W + 3 + s), dtype=np.int64)
    pad[1:H + 1, 1:W + 1] = mask
    out = []
    for r in range(Ho):
        for c in range(Wo):
            if s == 1:
                exists = mask[r, c]
            else:
                exists = mask[2 * r:2 * r + 2, 2 * c:2 * c + 2].any()
            if not exists:
                continue
            taps = 0
            for dy in range(3):
                for dx in range(3):
                    if pad[s * r + dy, s * c + dx]:  # input row s*r + dy - 1, column s*c + dx - 1
                        taps |= 1 << (dy * 3 + dx)
            out.append((r, c, taps))
    return out


def _check_against_plan(cfg, mask, sites):
    ys, xs = np.nonzero(mask)
    plan = frame_plan(cfg, mask.shape[0], mask.shape[1], np.stack([ys, xs], 1))
    gs = 1 if cfg.depthwise else cfg.in_groups
    assert [(int(y), int(x)) for y, x in plan.out_coords] == [(y, x) for y, x, _ in sites]
    assert [int(n) for n in plan.acc_steps] == [bin(t).count("1") * gs for _, _, t in sites]


def _finder_frame(rng, H, W, density=0.3):
    mask = (rng.random((H, W)) < density).astype(np.int64)
    mask[0, 0] = mask[H - 1, W - 1] = 1  # the corners, whose windows leave the frame
    mask[H // 2, :] = 1  # a full row: every chunk of it has sites
    return mask


def _run_finder(cfg, mask, progressive: bool, error: int = 0, seed: int = 0):
    """The finder fed a frame's bitmaps and tags: all at once (the frame fits the slots), or row by row as the
    line buffer would (a row written into its slot only below permit = finder.row * stride + slots - halo)."""
    rng = random.Random(seed)
    H, W = mask.shape
    S, s, h = cfg.buffer_slots, cfg.stride, cfg.halo
    no_row = (1 << cfg.tag_bits) - 1
    ys = np.nonzero(mask.any(1))[0]
    dut = SiteFinder(cfg)
    got = []

    async def tb(ctx):
        tags, bms = [no_row] * S, [0] * S

        def write_row(r):
            tags[r % S] = r
            bms[r % S] = pack(mask[r], 1)
            ctx.set(dut.tags[r % S], r)
            ctx.set(dut.bitmaps[r % S], bms[r % S])

        for k in range(S):
            ctx.set(dut.tags[k], no_row)
        nxt = 0
        if not progressive:
            assert H <= S
            for r in range(H):
                write_row(r)
            nxt = H
        ctx.set(dut.error, error)
        for _ in range(3000):
            if progressive:
                permit = ctx.get(dut.row) * s + S - h
                if nxt < H and nxt < permit and rng.random() < 0.5:
                    write_row(nxt)
                    nxt += 1
                ctx.set(dut.done_rows, nxt)
            else:
                ctx.set(dut.done_rows, (1 << (cfg.y_bits + 2)) - 1)
            if nxt == H:
                ctx.set(dut.eof_seen, 1)
                ctx.set(dut.has_last, len(ys) > 0)
                ctx.set(dut.last_y, int(ys[-1]) if len(ys) else 0)
            rdy = int(rng.random() < 0.7)
            ctx.set(dut.sites.ready, rdy)
            if rdy and ctx.get(dut.sites.valid):
                p = dut.sites.payload
                site = {f: ctx.get(getattr(p, f)) for f in ("oy", "ox", "taps", "eof", "error")}
                got.append(site)
                if site["eof"]:
                    return
            await ctx.tick()
        raise AssertionError("no eof site")

    simulate(dut, tb)
    return got


FINDER_CFGS = {  # prefetch_rows=4: slots enough for a whole small frame
    "subm": SparseConvConfig(kind="subm3x3", max_height=16, max_width=40, cin=4, cout=4, pi=4, po=4,
                             prefetch_rows=4),
    "conv_s2": SparseConvConfig(kind="conv3x3s2", max_height=16, max_width=40, cin=4, cout=4, pi=4, po=4,
                                prefetch_rows=4),
    "pw": SparseConvConfig(kind="pw1x1", max_height=16, max_width=40, cin=4, cout=4, pi=4, po=4,
                           prefetch_rows=4),
}


@pytest.mark.parametrize("name,H,W", [("subm", 6, 20), ("subm", 8, 37), ("conv_s2", 7, 36), ("conv_s2", 16, 40),
                                      ("pw", 6, 33)])
def test_site_finder_whole_frame(name, H, W):
    cfg = FINDER_CFGS[name]
    assert cfg.finder_chunk == 16 and cfg.max_out_width > cfg.finder_chunk  # more than one chunk
    assert H <= cfg.buffer_slots
    mask = _finder_frame(np.random.default_rng(H * 100 + W), H, W)
    want = _expected_sites(cfg, mask)
    assert max(x for _, x, _ in want) >= cfg.finder_chunk
    _check_against_plan(cfg, mask, want)
    got = _run_finder(cfg, mask, progressive=False, error=int(name == "pw"), seed=H)
    assert got[-1] == {"oy": 0, "ox": 0, "taps": 0, "eof": 1, "error": int(name == "pw")}
    assert [(g["oy"], g["ox"], g["taps"]) for g in got[:-1]] == want
    assert not any(g["eof"] or g["error"] for g in got[:-1])


@pytest.mark.parametrize("kind,H,W", [("subm3x3", 12, 20), ("conv3x3s2", 11, 21)])
def test_site_finder_rows_fed_progressively(kind, H, W):
    """The default slots (prefetch_rows=1): rows are written as the finder frees their slots."""
    cfg = SparseConvConfig(kind=kind, max_height=16, max_width=24, cin=4, cout=4, pi=4, po=4)
    assert H > cfg.buffer_slots
    mask = _finder_frame(np.random.default_rng(H), H, W)
    mask[3, :] = 0  # an empty row
    want = _expected_sites(cfg, mask)
    _check_against_plan(cfg, mask, want)
    got = _run_finder(cfg, mask, progressive=True, seed=W)
    assert got[-1]["eof"] == 1
    assert [(g["oy"], g["ox"], g["taps"]) for g in got[:-1]] == want


def test_site_finder_empty_frame():
    cfg = FINDER_CFGS["subm"]
    got = _run_finder(cfg, np.zeros((5, 9), dtype=np.int64), progressive=False)
    assert got == [{"oy": 0, "ox": 0, "taps": 0, "eof": 1, "error": 0}]


# =========================================================================== 6. LineBuffer

LB_CFG = SparseConvConfig(kind="subm3x3", max_height=16, max_width=12, cin=8, cout=4, pi=4, po=4, prefetch_rows=4)


def _tokens(cfg, coords, feats, eof_error=0):
    """The beats of a frame: Gi beats per site (channels gi*PI..), then the eof beat."""
    Gi, PI = cfg.in_groups, cfg.pi
    beats = []
    for (y, x), f in zip(coords, feats, strict=True):
        for gi in range(Gi):
            beats.append({"y": int(y), "x": int(x), "eof": 0, "error": 0,
                          "data": [int(v) for v in f[gi * PI:(gi + 1) * PI]]})
    beats.append({"y": 0, "x": 0, "eof": 1, "error": eof_error, "data": [0] * PI})
    return beats


def _lb_open(ctx, cfg, dut, H, W):
    """Weights loaded, an H x W frame shape, every row permitted."""
    ctx.set(dut.loaded, 1)
    ctx.set(dut.height_m1, H - 1)
    ctx.set(dut.width_m1, W - 1)
    ctx.set(dut.permit_row, (1 << (cfg.y_bits + 2)) - 1)


class _LbDriver:
    def __init__(self, cfg, dut, rng):
        self.cfg, self.dut, self.rng = cfg, dut, rng

    async def feed(self, ctx, beats, permit_row=None, cycles_after=6):
        dut = self.dut
        p = dut.sites_in.payload
        i = 0
        while i < len(beats):
            offer = self.rng.random() < 0.8
            ctx.set(dut.sites_in.valid, offer)
            if offer:
                b = beats[i]
                for f in ("y", "x", "eof", "error"):
                    ctx.set(getattr(p, f), b[f])
                for k, v in enumerate(b["data"]):
                    ctx.set(p.data[k], v & ((1 << self.cfg.feature_bits) - 1))
            fire = offer and ctx.get(dut.sites_in.ready)
            await ctx.tick()
            i += bool(fire)
        ctx.set(dut.sites_in.valid, 0)
        await ctx.tick().repeat(cycles_after)

    async def read(self, ctx, addrs):
        seen = []
        for a in list(addrs) + [0, 0]:
            ctx.set(self.dut.rd_addr, a)
            seen.append(ctx.get(self.dut.rd_data))
            await ctx.tick()
        return seen[2:]

    async def status(self, ctx):
        d = self.dut
        S = self.cfg.buffer_slots
        return {"tags": [ctx.get(d.tags[k]) for k in range(S)], "bitmaps": [ctx.get(d.bitmaps[k]) for k in range(S)],
                "done_rows": ctx.get(d.done_rows), "eof_seen": ctx.get(d.eof_seen), "has_last": ctx.get(d.has_last),
                "last_y": ctx.get(d.last_y), "error": ctx.get(d.error), "busy": ctx.get(d.busy)}


def _lb_addr(cfg, y, x, gi):
    gib = (cfg.in_groups - 1).bit_length()
    return int(gi | (x << gib) | ((y % cfg.buffer_slots) << (gib + cfg.x_bits)))


def _lb_frame(cfg, rng, H, W):
    mask = rng.random((H, W)) < 0.35
    mask[1, :] = False  # an empty row keeps no tag
    mask[H - 1, W - 1] = True
    ys, xs = np.nonzero(mask)
    coords = np.stack([ys, xs], 1)
    lo, hi = cfg.input_range
    feats = rng.integers(lo, hi + 1, (len(coords), cfg.cin))
    feats[feats == 0] = 1  # nonzero, so that an unwritten word (0) shows
    return mask, coords, feats


def _word(cfg, f, gi):
    return pack(f[gi * cfg.pi:(gi + 1) * cfg.pi], cfg.feature_bits)


def test_line_buffer_good_frame_then_errors_then_reset():
    cfg = LB_CFG
    H, W = 7, 11
    S, no_row = cfg.buffer_slots, (1 << cfg.tag_bits) - 1
    assert H <= S
    rng = np.random.default_rng(8)
    mask, coords, feats = _lb_frame(cfg, rng, H, W)
    # frame 2: an out-of-order token after five good sites; the tokens after it are dropped until eof
    mask2, coords2, feats2 = _lb_frame(cfg, rng, H, W)
    bad_at = 5
    coords2_bad = np.concatenate([coords2[:bad_at], coords2[bad_at - 2:bad_at - 1], coords2[bad_at:]])
    feats2_bad = np.concatenate([feats2[:bad_at], feats2[bad_at - 2:bad_at - 1] * 0 + 7, feats2[bad_at:]])
    dut = LineBuffer(cfg)
    drv = _LbDriver(cfg, dut, random.Random(1))
    res = {}

    async def tb(ctx):
        _lb_open(ctx, cfg, dut, H, W)
        # ---- a good frame
        await drv.feed(ctx, _tokens(cfg, coords, feats))
        res["good"] = await drv.status(ctx)
        addrs = [_lb_addr(cfg, y, x, gi) for y, x in coords for gi in range(cfg.in_groups)]
        res["good_words"] = await drv.read(ctx, addrs)
        # ---- frame_reset clears the frame's state
        ctx.set(dut.frame_reset, 1)
        await ctx.tick()
        ctx.set(dut.frame_reset, 0)
        res["reset"] = await drv.status(ctx)
        # ---- an out-of-order token: error, the rest dropped; a fresh buffer for the memory check
        await drv.feed(ctx, _tokens(cfg, coords2_bad, feats2_bad))
        res["bad"] = await drv.status(ctx)
        res["bad_words"] = await drv.read(ctx, [_lb_addr(cfg, y, x, gi) for y, x in coords2
                                                for gi in range(cfg.in_groups)])
        ctx.set(dut.frame_reset, 1)
        await ctx.tick()
        ctx.set(dut.frame_reset, 0)
        await ctx.tick()
        res["reset2"] = await drv.status(ctx)

    simulate(dut, tb)
    Gi = cfg.in_groups
    # good frame: tags and bitmaps of the rows with tokens, status flags, every word read back
    g = res["good"]
    rows = sorted(set(int(y) for y in coords[:, 0]))
    for r in range(S):
        if r in rows:
            assert g["tags"][r] == r and g["bitmaps"][r] == pack(mask[r], 1), r
        else:
            assert g["tags"][r] == no_row, r
    assert g["done_rows"] == int(coords[-1, 0])  # the last good first beat's row: rows above it complete
    assert (g["eof_seen"], g["has_last"], g["last_y"], g["error"], g["busy"]) == (1, 1, int(coords[-1, 0]), 0, 1)
    assert res["good_words"] == [_word(cfg, f, gi) for f in feats for gi in range(Gi)]
    r = res["reset"]
    assert (r["eof_seen"], r["has_last"], r["done_rows"], r["error"], r["busy"]) == (0, 0, 0, 0, 0)
    assert r["tags"] == [no_row] * S
    # bad frame: error, the good prefix written, nothing after it (those words keep the first frame's data)
    b = res["bad"]
    assert (b["eof_seen"], b["error"], b["has_last"], b["last_y"]) == (1, 1, 1, int(coords2[bad_at - 1, 0]))
    prefix = {(int(y), int(x)) for y, x in coords2[:bad_at]}
    old = {(int(y), int(x)): f for (y, x), f in zip(coords, feats, strict=True)}
    for r in range(S):
        want_bits = sum(1 << x for (y, x) in prefix if y == r)
        if want_bits:
            assert b["tags"][r] == r and b["bitmaps"][r] == want_bits, r
        else:
            assert b["tags"][r] == no_row, r
    want_words = []
    for (y, x), f in zip(coords2, feats2, strict=True):
        key = (int(y), int(x))
        for gi in range(Gi):
            if key in prefix:
                want_words.append(_word(cfg, f, gi))
            else:
                want_words.append(_word(cfg, old[key], gi) if key in old else 0)
    assert res["bad_words"] == want_words
    r = res["reset2"]
    assert (r["error"], r["eof_seen"], r["has_last"], r["busy"]) == (0, 0, 0, 0)


@pytest.mark.parametrize("case", ["out_of_range", "beats_disagree", "eof_mid_site", "eof_error"])
def test_line_buffer_flags_bad_frames(case):
    cfg = LB_CFG
    H, W = 5, 8
    rng = np.random.default_rng(2)
    mask, coords, feats = _lb_frame(cfg, rng, H, W)
    beats = _tokens(cfg, coords, feats)
    k = 3 * cfg.in_groups  # the first beat of the fourth site
    if case == "out_of_range":
        beats.insert(k, dict(beats[k], x=W, y=int(coords[3, 0])))  # x > width_m1 (after the third site)
        beats.insert(k + 1, dict(beats[k + 1], x=W, y=int(coords[3, 0])))
    elif case == "beats_disagree":
        beats[k + 1] = dict(beats[k + 1], x=(beats[k + 1]["x"] + 1) % W)
    elif case == "eof_mid_site":
        beats = beats[:k + 1] + [beats[-1]]
    else:
        beats[-1]["error"] = 1
    dut = LineBuffer(cfg)
    drv = _LbDriver(cfg, dut, random.Random(3))
    res = {}

    async def tb(ctx):
        _lb_open(ctx, cfg, dut, H, W)
        await drv.feed(ctx, beats)
        res["st"] = await drv.status(ctx)

    simulate(dut, tb)
    st = res["st"]
    assert st["eof_seen"] == 1 and st["error"] == 1
    if case != "eof_error":  # only the three good sites before it are in the bitmaps
        good = {(int(y), int(x)) for y, x in coords[:3]}
        total = sum(bin(st["bitmaps"][r]).count("1") for r in range(cfg.buffer_slots)
                    if st["tags"][r] != (1 << cfg.tag_bits) - 1)
        assert total == len(good)


def test_line_buffer_permit_row_and_hold():
    """Tokens of rows at or past permit_row wait at the head (done_rows shows their row); hold takes nothing."""
    cfg = LB_CFG
    H, W = 6, 9
    rng = np.random.default_rng(4)
    mask, coords, feats = _lb_frame(cfg, rng, H, W)
    mask[2, 3] = True
    ys, xs = np.nonzero(mask)
    coords = np.stack([ys, xs], 1)
    feats = rng.integers(1, 100, (len(coords), cfg.cin))
    dut = LineBuffer(cfg)
    drv = _LbDriver(cfg, dut, random.Random(5))
    res = {}
    beats = _tokens(cfg, coords, feats)

    async def tb(ctx):
        ctx.set(dut.loaded, 1)
        ctx.set(dut.height_m1, H - 1)
        ctx.set(dut.width_m1, W - 1)
        ctx.set(dut.hold, 1)
        ctx.set(dut.permit_row, 2)
        p = dut.sites_in.payload
        i, t = 0, 0
        while i < len(beats):
            if t == 20:
                ctx.set(dut.hold, 0)
            if t == 20:
                res["held"] = (i, await drv.status(ctx))
            if t == 200:
                res["permit2"] = (i, await drv.status(ctx))
                ctx.set(dut.permit_row, 16)
            b = beats[i]
            ctx.set(dut.sites_in.valid, 1)
            for f in ("y", "x", "eof", "error"):
                ctx.set(getattr(p, f), b[f])
            for k, v in enumerate(b["data"]):
                ctx.set(p.data[k], v)
            fire = ctx.get(dut.sites_in.ready)
            await ctx.tick()
            t += 1
            i += bool(fire)
        ctx.set(dut.sites_in.valid, 0)
        await ctx.tick().repeat(6)
        res["open"] = await drv.status(ctx)

    simulate(dut, tb)
    no_row = (1 << cfg.tag_bits) - 1
    taken, held = res["held"]
    assert taken == cfg.input_queue_depth  # the queue filled, nothing left it
    assert held["tags"] == [no_row] * cfg.buffer_slots and held["busy"] == 0 and held["done_rows"] == 0
    _, p2 = res["permit2"]
    assert p2["done_rows"] == 2 and p2["eof_seen"] == 0
    for r in range(cfg.buffer_slots):
        if r < 2 and mask[r].any():
            assert p2["tags"][r] == r and p2["bitmaps"][r] == pack(mask[r], 1)
        else:
            assert p2["tags"][r] == no_row, r
    op = res["open"]
    assert op["eof_seen"] == 1 and op["error"] == 0
    for r in range(H):
        if mask[r].any():
            assert op["tags"][r] == r and op["bitmaps"][r] == pack(mask[r], 1)
