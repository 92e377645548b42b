"""The sparse convolution engine's RTL (gen/sparse_conv.py) against the golden model, and its cycle model.

Every `run_sparse_conv` call below checks every output beat and the end-of-frame error flag against the
golden layer (or chain) inside the testbench: a difference raises SimulationMismatch. Without gaps and
stalls the RTL's cycles must equal the cycle model's (golden/sparse_rtl_cycles.py, a dataflow model that
reads the engine's timing numbers from the config) exactly: it has been exact on every unstalled run,
single layers of every kind and chains, malformed frames included (docs/cycle-models.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from accelkit.config import ConfigError
from accelkit.config.sparse_conv import SparseChainConfig, SparseConvConfig
from accelkit.flows.bench_sparse import REAL_FRAME_CONFIG, real_frames, render
from accelkit.gen.sparse_conv import SparseConvChain, SparseConvEngine
from accelkit.golden.sparse_conv import SparseFrame, load_frames, useful_macs
from accelkit.golden.sparse_rtl_cycles import dense_frame_cycles, frame_cycles, frames_cycles
from accelkit.sim.sparse_conv import (
    TokenFrame,
    random_chain,
    random_frame,
    random_layer,
    run_sparse_conv,
    with_channels,
)

FRAMES = load_frames()


def crop_densest(frame: SparseFrame, h: int, w: int) -> SparseFrame:
    """The h x w window of `frame` holding the most active sites."""
    m = frame.mask.to(torch.int64)
    c = torch.nn.functional.pad(m.cumsum(0).cumsum(1), (1, 0, 1, 0))
    h, w = min(h, frame.height), min(w, frame.width)
    counts = c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]
    best = int(counts.argmax())
    y0, x0 = divmod(best, counts.shape[1])
    return SparseFrame.from_dense(frame.to_dense()[:, y0:y0 + h, x0:x0 + w], frame.mask[y0:y0 + h, x0:x0 + w])


def sites_frame(h: int, w: int, sites, channels: int, lo: int, hi: int, seed: int = 0) -> SparseFrame:
    g = torch.Generator().manual_seed(seed)
    sites = sorted(set(sites))
    coords = torch.tensor(sites, dtype=torch.int64).reshape(-1, 2)
    return SparseFrame(h, w, coords, torch.randint(lo, hi + 1, (len(sites), channels), generator=g))


def edge_frames(h: int, w: int, channels: int, lo: int, hi: int) -> list[SparseFrame]:
    """Empty, one site in each corner and inside, every border site, first and last row only."""
    corners = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, w // 2)]
    border = [(y, x) for y in range(h) for x in range(w) if y in (0, h - 1) or x in (0, w - 1)]
    frames = [sites_frame(h, w, [], channels, lo, hi)]
    frames += [sites_frame(h, w, [c], channels, lo, hi, seed=i) for i, c in enumerate(corners)]
    frames.append(sites_frame(h, w, border, channels, lo, hi, seed=7))
    frames.append(sites_frame(h, w, [(0, x) for x in range(0, w, 2)] + [(h - 1, x) for x in range(1, w, 3)],
                              channels, lo, hi, seed=8))
    return frames


def density_frames(h: int, w: int, channels: int, lo: int, hi: int, densities=(0.01, 0.05, 0.25, 0.6, 1.0)):
    return [random_frame(h, w, d, channels, lo, hi, seed=10 + i) for i, d in enumerate(densities)]


def assert_exact_cycles(run) -> None:
    assert run.cycles == run.predicted, (run.cycles, run.predicted)
    assert run.total_cycles == run.predicted_total


# --------------------------------------------------------------------------- without the simulator


def test_residual_engine_ports_and_wrong_configs():
    # a residual engine takes the block input's beats (po lanes); a block's first engine can hand them on
    res = SparseConvEngine(SparseConvConfig(kind="pw1x1", residual=True))
    assert "identity" in res.signature.members and "identity_out" not in res.signature.members
    first = SparseConvEngine(SparseConvConfig(kind="pw1x1"), identity_out=True)
    assert "identity_out" in first.signature.members and "identity" not in first.signature.members
    with pytest.raises(ConfigError, match=r"^cfg="):
        SparseConvChain(SparseConvConfig())


@pytest.mark.parametrize("changes,param", [
    ({"prefetch_rows": 5}, "prefetch_rows"),
    ({"prefetch_rows": -1}, "prefetch_rows"),
])
def test_engine_config_errors(changes, param):
    with pytest.raises(ConfigError) as ei:
        SparseConvConfig(**changes)
    assert str(ei.value).startswith(f"{param}=") and "\n" not in str(ei.value)


def test_chain_config_checks_and_round_trip():
    cfg = SparseChainConfig()
    assert [l.kind for l in cfg.layers] == ["conv3x3s2", "subm3x3", "pw1x1"]
    assert SparseChainConfig.from_dict(cfg.to_dict()) == cfg
    a, b = cfg.layers[0], cfg.layers[1]
    cases = [
        ((a, b.replace(cin=4, pi=4)), "layers[1].cin="),
        ((a, b.replace(pi=2)), "layers[1].pi="),
        ((a, b.replace(max_height=32)), "layers[1].max_height="),
        ((a, b.replace(max_width=17)), "layers[1].max_width="),
        ((a, a.replace(signed_input=False, max_height=16, max_width=16, cin=8)), "layers[1].signed_input="),
        ((SparseConvConfig(kind="pw1x1", residual=True),), "layers[0].residual="),
        ((), "layers="),
        ((a, "subm3x3"), "layers[1]="),
    ]
    for layers, start in cases:
        with pytest.raises(ConfigError) as ei:
            SparseChainConfig(layers=layers)
        assert str(ei.value).startswith(start), str(ei.value)
    with pytest.raises(ConfigError, match=r"^bogus="):
        SparseChainConfig.from_dict({"block": "sparse-chain", "bogus": 1})


def test_token_frame_prefix():
    feats = np.arange(8).reshape(4, 2)
    ok, err = TokenFrame(4, 4, [(0, 1), (1, 0), (1, 3), (3, 3)], feats).valid_prefix()
    assert not err and ok.n_active == 4
    for coords, n in (([(0, 1), (0, 1), (1, 3), (3, 3)], 1), ([(0, 1), (1, 0), (0, 3), (3, 3)], 2),
                      ([(0, 1), (1, 4), (2, 0), (3, 3)], 1), ([(4, 0), (1, 4), (2, 0), (3, 3)], 0)):
        prefix, err = TokenFrame(4, 4, coords, feats).valid_prefix()
        assert err and prefix.n_active == n


@pytest.mark.parametrize("pi", [4, 8])
@pytest.mark.parametrize("name", sorted(FRAMES))
def test_cycle_model_real_frames_utilisation(name, pi):
    """The bench's real-frame engine spends about |N(p)| * Cin/PI * Cout/PO cycles per site: >= 95% of its MACs
    are useful (issue 9's target; the RTL's cycles are the model's, test_real_frames_full_size_figures)."""
    f = FRAMES[name]
    cfg = REAL_FRAME_CONFIG.replace(pi=pi, po=pi)
    cycles = frame_cycles(cfg, f)
    assert useful_macs(f, "subm3x3", 16, 16) / (cfg.mac_units * cycles) >= 0.95
    assert dense_frame_cycles(cfg, f.height, f.width) / cycles > 4


def test_cycle_model_by_hand():
    """Inactive neighbours cost nothing: each active tap of a site costs (Cin/PI) * (Cout/PO) = 16 cycles."""
    cfg = SparseConvConfig(max_height=4, max_width=4)
    one = sites_frame(4, 4, [(1, 1)], 16, -1, 1)
    two = sites_frame(4, 4, [(1, 1), (1, 2)], 16, -1, 1)
    c1, c2 = frame_cycles(cfg, one), frame_cycles(cfg, two)
    # a second neighbouring site adds its own 2 taps x 16 steps, 1 more tap x 16 to the first, and its 4 input
    # beats (the row is computed once the end of the frame shows it complete)
    assert c2 - c1 == 3 * 16 + 4
    empty = sites_frame(4, 4, [], 16, -1, 1)  # the eof beat, then the eof site down finder, sequencer, pipeline
    assert frame_cycles(cfg, empty) == (cfg.input_queue_latency + cfg.row_ready_latency + cfg.eof_latency
                                        + cfg.site_handoff_latency + cfg.mac_pipeline_depth + 1)
    # the second frame's first beats enter the input queue at once and wait there for the first frame's reset
    both = frames_cycles(cfg, [one, one])
    assert both["frames"][0] == c1 and both["frames"][1] > c1 and both["total"] > 2 * c1 - 10


# --------------------------------------------------------------------------- subm3x3, 16 -> 16, PI = PO = 4

SUBM = SparseConvConfig(max_height=34, max_width=34)  # the default engine on frames up to N-MNIST's size


@pytest.mark.sim
@pytest.mark.parametrize("p", [4, 8])
def test_subm_real_frames_back_to_back(p):
    """All five real frames (cropped to their densest 34 x 34 window; N-MNIST whole), back to back, at
    PI = PO = 4 and 8: the cheap check of the cycle model on real frames (the whole frames: below, slow)."""
    cfg = SUBM.replace(pi=p, po=p)
    frames = [with_channels(crop_densest(f, 34, 34), 16, -128, 127, seed=i)
              for i, f in enumerate(FRAMES.values())]
    assert [f.shape for f in frames] == [(34, 34)] * 5 and min(f.n_active for f in frames) > 20
    layer = random_layer(cfg, 1)
    run = run_sparse_conv(cfg, layer, frames)
    assert not any(run.errors)
    assert all(o == layer(f) for o, f in zip(run.outputs, frames, strict=True))
    assert_exact_cycles(run)


@pytest.mark.sim
def test_subm_densities_edges_smaller_frames_and_stalls():
    layer = random_layer(SUBM, 2)
    small = density_frames(13, 22, 16, -128, 127)  # below the generated 34 x 34
    edges = edge_frames(34, 34, 16, -128, 127)
    for frames in (small, edges):
        run = run_sparse_conv(SUBM, layer, frames)
        assert_exact_cycles(run)
        assert [o.n_active for o in run.outputs] == [f.n_active for f in frames]
    stalled = run_sparse_conv(SUBM, layer, small[:3] + small[-1:], gap=0.3, stall=0.5, seed=5)
    assert stalled.outputs[-1] == layer(small[-1]) and not any(stalled.errors)
    stalled = run_sparse_conv(SUBM, layer, edges[:3] + edges[-2:], gap=0.5, stall=0.3, seed=6)
    assert stalled.outputs[-1] == layer(edges[-1]) and not any(stalled.errors)


@pytest.mark.sim
def test_subm_weights_reload_through_the_port():
    """The same generated engine runs two different layers: weights come through the params stream."""
    f = random_frame(10, 10, 0.4, 16, -128, 127, seed=3)
    a, b = random_layer(SUBM, 10), random_layer(SUBM, 11)
    ra, rb = run_sparse_conv(SUBM, a, f), run_sparse_conv(SUBM, b, f)
    assert ra.outputs[0] == a(f) and rb.outputs[0] == b(f) and ra.outputs[0] != rb.outputs[0]


@pytest.mark.sim
def test_subm_bad_tokens_flag_and_resynchronise():
    """Out of raster order, duplicate, outside the frame (W and H of the runtime shape, below the maximum),
    a lone bad token: the frame's end-of-frame beat carries the error flag, the output is the layer on the
    tokens before the bad one, and the next frame is right."""
    layer = random_layer(SUBM, 4)
    good = random_frame(20, 30, 0.2, 16, -128, 127, seed=4)
    c, x = good.coords.numpy().copy(), good.features.numpy()
    bad = []
    for i, coord in ((40, c[20]), (15, c[15 - 1]), (30, (5, 30)), (len(c) - 1, (20, 0)), (0, (25, 3))):
        cc = c.copy()
        cc[i] = coord
        bad.append(TokenFrame(20, 30, cc, x))
    frames = []
    for b in bad:
        frames += [b, good]
    run = run_sparse_conv(SUBM, layer, frames)
    assert run.errors == [True, False] * len(bad)
    assert all(run.outputs[2 * k + 1] == layer(good) for k in range(len(bad)))
    assert run.outputs[0].n_active == 40 and run.outputs[8].n_active == 0
    assert_exact_cycles(run)
    stalled = run_sparse_conv(SUBM, layer, frames[:4], gap=0.4, stall=0.4, seed=9)
    assert stalled.errors == [True, False, True, False]


# --------------------------------------------------------------------------- the other kinds, PI = PO = 8

KIND_CFGS = {
    "dw3x3": SparseConvConfig(kind="dw3x3", max_height=13, max_width=11, cin=8, cout=8, pi=4, po=4, relu=True),
    "pw1x1": SparseConvConfig(kind="pw1x1", max_height=13, max_width=11, cin=8, cout=12, pi=4, po=6,
                              signed_input=False),
    "conv3x3s2": SparseConvConfig(kind="conv3x3s2", max_height=13, max_width=11, cin=4, cout=8, pi=2, po=4,
                                  signed_input=False, relu=True),
    "dw3x3s2": SparseConvConfig(kind="dw3x3s2", max_height=13, max_width=11, cin=8, cout=8, pi=2, po=2),
    "subm3x3-p8": SparseConvConfig(max_height=13, max_width=11, pi=8, po=8, signed_input=False, relu=True),
    # no retiming register after the products (a small design), and two (a network filling the part's DSPs)
    "subm3x3-3rows": SparseConvConfig(max_height=13, max_width=11, cin=8, cout=8, prefetch_rows=0, retime=0),
    "pw1x1-retime2": SparseConvConfig(kind="pw1x1", max_height=13, max_width=11, cin=8, cout=8, pi=4, po=4,
                                      retime=2),
}


@pytest.mark.sim
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.quick) if n == "dw3x3" else n for n in KIND_CFGS])
def test_kinds(name):
    cfg = KIND_CFGS[name]
    layer = random_layer(cfg, 5)
    lo, hi = cfg.input_range
    frames = density_frames(13, 11, cfg.cin, lo, hi) + edge_frames(13, 11, cfg.cin, lo, hi)
    run = run_sparse_conv(cfg, layer, frames)
    assert all(o == layer(f) for o, f in zip(run.outputs, frames, strict=True))
    assert_exact_cycles(run)
    odd = density_frames(7, 5, cfg.cin, lo, hi, densities=(0.3, 1.0))  # odd sizes below the maximum
    assert_exact_cycles(run_sparse_conv(cfg, layer, odd))
    # with gaps and stalls, and a bad token mid-frame followed by a good frame
    f = frames[3]
    cc = f.coords.numpy().copy()
    cc[f.n_active // 2] = cc[0]
    mixed = frames[2:4] + [TokenFrame(13, 11, cc, f.features.numpy())] + frames[6:8]
    stalled = run_sparse_conv(cfg, layer, mixed, gap=0.3, stall=0.5, seed=2)
    assert stalled.errors == [False, False, True, False, False] and stalled.outputs[3] == layer(frames[6])
    # scales in the top half of their range: most outputs clamp, and the requant multiply's partial products run
    # at full width (the exact small-negative cases are in tests/test_sparse_components.py)
    wide = random_layer(cfg, 6, scale_range=(1 << (cfg.scale_bits - 1), cfg.scale_max))
    run = run_sparse_conv(cfg, wide, frames[:4])
    assert all(o == wide(f) for o, f in zip(run.outputs, frames[:4], strict=True))


# --------------------------------------------------------------------------- chain


@pytest.mark.sim
def test_chain_conv_s2_subm_pw():
    cfg = SparseChainConfig()
    chain = random_chain(cfg, 6)
    frames = density_frames(32, 32, 4, 0, 255, densities=(0.01, 0.1, 0.4, 1.0)) + [
        sites_frame(32, 32, [], 4, 0, 255), sites_frame(32, 32, [(31, 31)], 4, 0, 255)]
    frames.append(with_channels(crop_densest(FRAMES["dvsgesture_128x128"], 32, 32), 4, 0, 255))
    run = run_sparse_conv(cfg, chain, frames)
    assert all(o == chain(f) for o, f in zip(run.outputs, frames, strict=True))
    assert_exact_cycles(run)
    odd = [random_frame(29, 31, 0.2, 4, 0, 255, seed=1)]  # smaller, odd: every layer's grid shrinks with it
    assert run_sparse_conv(cfg, chain, odd).outputs[0].shape == (15, 16)
    cc = frames[1].coords.numpy().copy()
    cc[3] = cc[1]
    bad = TokenFrame(32, 32, cc, frames[1].features.numpy())
    stalled = run_sparse_conv(cfg, chain, [frames[2], bad, frames[1]], gap=0.3, stall=0.5, seed=4)
    assert stalled.errors == [False, True, False]


# --------------------------------------------------------------------------- full real frames (long)


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("pi", [4, 8])
def test_real_frames_full_size_figures(pi):
    """The five real frames whole on the bench's 180 x 240 engine (flows/bench_sparse.py, about a minute and a
    half at each PI = PO with the Verilator build): the cycle model is exact on every frame (and on N-MNIST's
    dense frame), the report's model-error column says so, and the acceptance figures hold."""
    rows = real_frames((pi,))
    assert len(rows) == len(FRAMES)
    for r in rows:
        assert r["rtl_cycles"] == r["model_cycles"], r
        assert r["utilisation"] >= 0.95 and r["speedup"] > 4, r
        if "dense_cycles_rtl" in r:
            assert r["dense_cycles_rtl"] == r["dense_cycles_model"], r
    assert sum("dense_cycles_rtl" in r for r in rows) == 1
    area = dict.fromkeys(("ecp5_lut4", "ecp5_ff", "ecp5_mult18", "ecp5_ebr", "xilinx_lut", "xilinx_ff",
                          "xilinx_dsp", "xilinx_bram", "fmax_mhz"), 0)
    table = render({"default_config": REAL_FRAME_CONFIG.to_dict(), "default_area": area, "real_frames": rows})
    assert "| model error |" in table and table.count("| +0.00% |") == len(FRAMES)
