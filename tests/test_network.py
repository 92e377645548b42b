"""Whole networks: the golden SparseNetwork (against a dense conv2d reference), its files, ESDA's format,
the eye-frame generator, the compiled config and the allocation (against brute force)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from accelkit.config import ConfigError
from accelkit.config.network import SparseNetworkConfig
from accelkit.config.sparse_conv import SparseConvConfig
from accelkit.flows.compile import (
    LINK_DEPTH_STEPS,
    allocate,
    choose_link_depths,
    compile_network,
    layer_work,
    network_config,
    predicted_interval,
)
from accelkit.golden.esda import EsdaFormatError, read_esda, write_esda
from accelkit.golden.events import EYE_FEATURE_MAX, eye_frames
from accelkit.golden.network import SEE_A, NetworkFileError, SparseNetwork, StageSpec
from accelkit.golden.sparse_conv import SparseFrame
from accelkit.sim.sparse_conv import random_frame

# A small network with every kind of stage: a stride-2 conv, a stride-2 block, a residual block, a pw conv.
SMALL = (
    StageSpec("conv1", "conv", (3, 8), stride=2),
    StageSpec("block_0", "block", (8, 16, 8), stride=2),
    StageSpec("block_1", "block", (8, 12, 8), stride=1, residual=True),
    StageSpec("conv8", "conv", (8, 6)),
)


@pytest.fixture(scope="module")
def small():
    frames = [random_frame(20, 24, d, 3, -4, 4, seed=s) for s, d in enumerate((0.3, 0.15, 0.5))]
    return SparseNetwork.random(SMALL, 20, 24, frames=frames, seed=7), frames


# ----------------------------------------------------------------------------- golden, against dense conv2d


def _dense_layer(layer, x: torch.Tensor, mask: torch.Tensor, identity: torch.Tensor | None):
    """One layer by dense conv2d on a (C, H, W) frame with its mask: returns (out dense, out mask)."""
    stride = layer.stride
    pad = 0 if layer.kind == "pw1x1" else 1
    groups = layer.cin if layer.depthwise else 1
    psum = F.conv2d(x.unsqueeze(0).double(), layer.weight.double(), stride=stride, padding=pad,
                    groups=groups)[0].round().to(torch.int64)
    out_mask = mask if stride == 1 else F.max_pool2d(mask[None, None].double(), 2, ceil_mode=True)[0, 0].bool()
    half = 1 << (layer.shift - 1)
    y = ((psum + layer.bias[:, None, None]) * layer.scale[:, None, None] + half) >> layer.shift
    if identity is not None:
        y = y + ((identity * layer.id_scale + half) >> layer.shift)
    y = y.clamp(-127, 127)
    if layer.relu:
        y = y.clamp(min=0)
    return y * out_mask, out_mask


def test_network_matches_dense_conv2d(small):
    net, frames = small
    for f in frames:
        x, mask = f.to_dense(), f.mask
        outs = net.trace(f)
        li = 0
        for _, body in net.stages:
            layers = body.layers if hasattr(body, "layers") else [body]
            block_in = x
            for j, layer in enumerate(layers):
                ident = block_in if (getattr(body, "residual", False) and j == len(layers) - 1) else None
                x, mask = _dense_layer(layer, x, mask, ident)
                assert torch.equal(outs[li].to_dense(), x), net.names[li]
                assert torch.equal(outs[li].mask, mask), net.names[li]
                li += 1
        assert torch.equal(net(f), x.sum((1, 2)))


def test_network_structure(small):
    net, _ = small
    assert net.names == ["conv1", "block_0_0", "block_0_1", "block_0_2", "block_1_0", "block_1_1", "block_1_2",
                         "conv8"]
    assert net.residual_spans() == [(4, 6)]
    assert net.grids() == [(20, 24), (10, 12), (10, 12), (5, 6), (5, 6), (5, 6), (5, 6), (5, 6), (5, 6)]
    assert net.layout() == list(SMALL)
    empty = SparseFrame(20, 24, torch.zeros(0, 2, dtype=torch.int64), torch.zeros(0, 3, dtype=torch.int64))
    assert torch.equal(net(empty), torch.zeros(6, dtype=torch.int64))


def test_network_refuses_bad_input(small):
    net, frames = small
    with pytest.raises(ValueError, match="20 x 24 frames"):
        net(random_frame(10, 10, 0.3, 3, -4, 4))
    with pytest.raises(ConfigError, match="cin"):
        SparseNetwork(20, 24, [net.stages[1], net.stages[0]])
    with pytest.raises(ConfigError, match="Cin == Cout"):
        StageSpec("b", "block", (8, 16, 4), residual=True)
    with pytest.raises(ConfigError, match="unique"):
        SparseNetwork(20, 24, [("a", net.stages[0][1]), ("a", net.stages[1][1])])


def test_see_a_topology():
    net = SparseNetwork.random(SEE_A, seed=0)
    assert len(net.layers) == 23 and net.cin == 3 and net.cout == 128
    assert net.residual_spans() == [(7, 9), (16, 18), (19, 21)]
    assert [l.kind for l in net.layers[:4]] == ["conv3x3s2", "pw1x1", "dw3x3s2", "pw1x1"]


# ----------------------------------------------------------------------------- files


def test_save_load_round_trip(small, tmp_path):
    net, frames = small
    js, npz = net.save(tmp_path / "net")
    back = SparseNetwork.load(js)
    for f in frames:
        assert torch.equal(back(f), net(f))
    assert back.to_dict() == net.to_dict()


def test_load_errors_name_the_file(small, tmp_path):
    net, _ = small
    js, npz = net.save(tmp_path / "net")
    npz.unlink()
    with pytest.raises(NetworkFileError, match=r"net\.npz: no such file"):
        SparseNetwork.load(js)
    net.save(tmp_path / "net")
    js.write_text("{not json")
    with pytest.raises(NetworkFileError, match=r"net\.json: not JSON"):
        SparseNetwork.load(js)
    d = net.to_dict()
    d["stages"][0]["layers"][0]["kind"] = "conv5x5"
    js.write_text(json.dumps(d))
    with pytest.raises(NetworkFileError, match=r"net\.json: kind='conv5x5' is invalid"):
        SparseNetwork.load(js)


# ----------------------------------------------------------------------------- ESDA's format


def test_esda_round_trip(small, tmp_path):
    net, frames = small
    write_esda(net, tmp_path / "esda", frames[0])
    ex = read_esda(tmp_path / "esda")
    assert ex.frame == frames[0]
    for (name, _), out in zip(net.leaves, net.trace(frames[0]), strict=True):
        assert torch.equal(ex.layer_outputs[name], out.features), name
    assert torch.equal(ex.pooled, net(frames[0]))
    for f in frames:
        assert torch.equal(ex.network(f), net(f))
    assert torch.equal(SparseNetwork.from_esda(tmp_path / "esda")(frames[1]), net(frames[1]))


def test_esda_weight_layout_is_esdas(tmp_path):
    """[ky][kx][cin][cout] for 3x3 convs, [cout][cin] for pw, [ky][kx][c] for depthwise: written by hand here."""
    frame = random_frame(6, 6, 0.5, 3, -4, 4, seed=1)
    net = SparseNetwork.random((StageSpec("conv1", "conv", (3, 4), stride=2),
                                StageSpec("block_0", "block", (4, 4, 2), stride=1)), 6, 6, frames=[frame], seed=3)
    write_esda(net, tmp_path, frame)
    w1 = [int(v) for v in (tmp_path / "data" / "conv1_weight.txt").read_text().split()]
    c1 = net.layers[0].weight
    assert w1[:4] == [int(c1[co, 0, 0, 0]) for co in range(4)]  # ky=-1, kx=-1, cin 0, cout 0..3
    assert w1[4] == int(c1[0, 1, 0, 0])  # then cin 1
    assert w1[12] == int(c1[0, 0, 0, 1])  # then kx 0
    wd = [int(v) for v in (tmp_path / "data" / "block_0_1_weight.txt").read_text().split()]
    dw = net.layers[2].weight
    assert wd[:4] == [int(dw[c, 0, 0, 0]) for c in range(4)] and wd[4] == int(dw[0, 0, 0, 1])
    wp = [int(v) for v in (tmp_path / "data" / "block_0_0_weight.txt").read_text().split()]
    assert wp[:4] == [int(net.layers[1].weight[0, ci, 0, 0]) for ci in range(4)]


def _esda_folder(tmp_path, small):
    net, frames = small
    return write_esda(net, tmp_path / "esda", frames[0])


@pytest.mark.parametrize("fault, match", [
    ("missing", r"block_0_1_weight\.txt: missing"),
    ("count", r"conv1_bias\.txt: 7 integers, 8 biases needs 8"),
    ("weight_range", r"block_1_2_weight\.txt: value 200 outside 8-bit signed weights"),
    ("scale_range", r"conv8_scale\.txt: value -1 outside 16-bit unsigned scales"),
    ("residual", r"layer 'block_1'.*Cin == Cout"),
    ("chain", r"layer 'block_1'.*do not chain"),
    ("json", r"cfg\.json: not JSON"),
    ("not_int", r"conv1_scale\.txt: not whitespace-separated decimal integers"),
    ("mask", r"tb_spatial_mask\.txt: 479 integers"),
])
def test_esda_malformed_folder(tmp_path, small, fault, match):
    folder = _esda_folder(tmp_path, small)
    data = folder / "data"
    cfg = json.loads((folder / "cfg.json").read_text())
    if fault == "missing":
        (data / "block_0_1_weight.txt").unlink()
    elif fault == "count":
        vals = (data / "conv1_bias.txt").read_text().split()
        (data / "conv1_bias.txt").write_text("\n".join(vals[:-1]))
    elif fault == "weight_range":
        vals = (data / "block_1_2_weight.txt").read_text().split()
        (data / "block_1_2_weight.txt").write_text("\n".join(["200"] + vals[1:]))
    elif fault == "scale_range":
        vals = (data / "conv8_scale.txt").read_text().split()
        (data / "conv8_scale.txt").write_text("\n".join(["-1"] + vals[1:]))
    elif fault == "residual":
        cfg["layers"][2]["channels"] = [8, 12, 6]
    elif fault == "chain":
        cfg["layers"][2]["channels"] = [6, 12, 6]
        cfg["layers"][2]["residual"] = False
    elif fault == "json":
        (folder / "cfg.json").write_text("{")
    elif fault == "not_int":
        (data / "conv1_scale.txt").write_text("1 2 x")
    elif fault == "mask":
        vals = (data / "tb_spatial_mask.txt").read_text().split()
        (data / "tb_spatial_mask.txt").write_text("\n".join(vals[:-1]))
    if fault in ("residual", "chain"):
        (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(EsdaFormatError, match=match) as e:
        read_esda(folder)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- eye frames


def test_eye_frames():
    frames = eye_frames(4, seed=1)
    assert len(frames) == 4
    for f in frames:
        assert f.shape == (60, 80) and f.channels == 3
        assert 0.15 <= f.density <= 0.25 + 1 / 4800
        assert int(f.features.abs().max()) <= EYE_FEATURE_MAX
        on, off, diff = f.features.T
        assert torch.equal(diff, (on - off).clamp(-EYE_FEATURE_MAX, EYE_FEATURE_MAX)) or int(on.max()) >= 15
    again = eye_frames(4, seed=1)
    assert all(a == b for a, b in zip(frames, again, strict=True))


# ----------------------------------------------------------------------------- compiled config


def test_network_config_checks():
    cfg = SparseNetworkConfig()
    assert SparseNetworkConfig.from_dict(json.loads(cfg.to_json())) == cfg
    a = SparseConvConfig(kind="conv3x3s2", max_height=8, max_width=8, cin=2, cout=12, pi=2, po=3)
    b = SparseConvConfig(kind="pw1x1", max_height=4, max_width=4, cin=12, cout=4, pi=4, po=4)
    with pytest.raises(ConfigError, match=r"layers\[1\] \(b\)\.pi=4 is invalid: a divisor or multiple"):
        SparseNetworkConfig(layers=(a, b), names=("a", "b"), residual=())
    SparseNetworkConfig(layers=(a, b.replace(pi=6)), names=("a", "b"), residual=())  # 6 = 2 x 3: a gearbox
    assert cfg.residual == ((1, 3),) and cfg.layers[3].residual  # the default has a residual block
    with pytest.raises(ConfigError, match=r"layers\[3\] \(block_0_2\)\.residual"):
        SparseNetworkConfig(residual=())
    with pytest.raises(ConfigError, match=r"residual\[0\] \(block_0_0..block_0_2\)=4 is invalid: the last layer's po"):
        SparseNetworkConfig(layers=cfg.layers[:3] + (cfg.layers[3].replace(po=4),))
    with pytest.raises(ConfigError, match="residual\\[0\\]"):
        SparseNetworkConfig(residual=((2, 1),))
    with pytest.raises(ConfigError, match="names"):
        SparseNetworkConfig(names=("a", "a", "b", "c"))
    # link FIFOs: one depth for all, or one per link
    per = cfg.replace(link_depth=(0, 16, 256))
    assert per.link_depths == (0, 16, 256) and cfg.replace(link_depth=8).link_depths == (8, 8, 8)
    assert SparseNetworkConfig.from_dict(json.loads(per.to_json())) == per
    assert per.link_latency(1) == 0 and per.link_latency(2) == per.link_latency(3) == 4  # gen/reg_fifo.py
    # a residual block's identity FIFO holds the beats of the links inside it
    assert per.identity_depth((1, 3)) - cfg.identity_depth((1, 3)) == (16 + 2) + (256 + 2)  # and their slices
    with pytest.raises(ConfigError, match=r"link_depth=\(0, 16\) is invalid: one depth per link: a tuple of 3"):
        cfg.replace(link_depth=(0, 16))
    with pytest.raises(ConfigError, match=r"link_depth\[1\]=1 is invalid: 0 \(wired directly\) or a FIFO depth"):
        cfg.replace(link_depth=(0, 1, 4))


# ----------------------------------------------------------------------------- allocation


def _brute_force(work, budget, spans, links):
    opts = [w.options(budget) for w in work]
    best = math.inf
    for choice in itertools.product(*opts):
        if sum(w.macs(a, b) for w, (a, b) in zip(work, choice, strict=True)) > budget:
            continue
        ok = all((c[0] == p[1]) if links == "equal" else (c[0] % p[1] == 0 or p[1] % c[0] == 0)
                 for p, c in zip(choice, choice[1:], strict=False))
        ok = ok and all(choice[b][1] == choice[a][0] for a, b in spans)
        if ok:
            best = min(best, max(w.estimate(a, b) for w, (a, b) in zip(work, choice, strict=True)))
    return best


@pytest.mark.parametrize("links", ["equal", "multiple"])
def test_allocation_is_optimal(links):
    """The MILP's bottleneck (estimate costs) equals a brute-force search over every allocation."""
    from accelkit.flows import compile as C
    layout = (StageSpec("conv1", "conv", (2, 4), stride=2), StageSpec("block_0", "block", (4, 6, 4), residual=True),
              StageSpec("conv8", "conv", (4, 6)))
    frames = [random_frame(12, 12, 0.4, 2, -4, 4, seed=s) for s in range(2)]
    net = SparseNetwork.random(layout, 12, 12, frames=frames, seed=1)
    work = layer_work(net, frames)
    for budget in (8, 20, 40):
        opts = [w.options(budget) for w in work]
        est = [[w.estimate(a, b) for a, b in o] for w, o in zip(work, opts, strict=True)]
        ch = C._solve(work, opts, est, budget, net.residual_spans(), links)
        got = max(est[i][k] for i, k in enumerate(ch))
        assert got == pytest.approx(_brute_force(work, budget, net.residual_spans(), links))
        assert sum(work[i].macs(*opts[i][k]) for i, k in enumerate(ch)) <= budget


def test_allocation_within_a_device_is_optimal():
    """With MULT18X18D and DP16KD limits as well, the MILP's bottleneck equals a brute-force search."""
    from accelkit.flows import compile as C
    layout = (StageSpec("conv1", "conv", (2, 4), stride=2), StageSpec("block_0", "block", (4, 6, 4), residual=True),
              StageSpec("conv8", "conv", (4, 6)))
    frames = [random_frame(12, 12, 0.4, 2, -4, 4, seed=s) for s in range(2)]
    net = SparseNetwork.random(layout, 12, 12, frames=frames, seed=1)
    work = layer_work(net, frames)
    opts = [w.options(64) for w in work]
    est = [[w.estimate(a, b) for a, b in o] for w, o in zip(work, opts, strict=True)]
    use = C._device_limits(net, opts, "ecp5-25k")
    spans = net.residual_spans()
    for mult18, ebr in ((40, 60), (28, 56), (20, 40)):
        limits = {"mult18": (use["mult18"][0], mult18), "ebr": (use["ebr"][0], ebr)}
        ch = C._solve(work, opts, est, None, spans, "multiple", limits)
        got = max(est[i][k] for i, k in enumerate(ch))
        best = math.inf
        for choice in itertools.product(*[range(len(o)) for o in opts]):
            if (sum(use["mult18"][0][i][k] for i, k in enumerate(choice)) > mult18
                    or sum(use["ebr"][0][i][k] for i, k in enumerate(choice)) > ebr):
                continue
            pick = [opts[i][k] for i, k in enumerate(choice)]
            ok = all(c[0] % p[1] == 0 or p[1] % c[0] == 0 for p, c in zip(pick, pick[1:], strict=False))
            if ok and all(pick[b][1] == pick[a][0] for a, b in spans):
                best = min(best, max(est[i][k] for i, k in enumerate(choice)))
        assert got == pytest.approx(best)
    with pytest.raises(ConfigError, match=r"mult18 <= 5 is invalid: no allocation fits it"):
        C._solve(work, opts, est, None, spans, "multiple", {"mult18": (use["mult18"][0], 5)})


def test_compile_for_a_device(small):
    """Only the device bounds it: the engines' MULT18X18D and DP16KD fit the part, and the summary says so."""
    net, frames = small
    cfg, s = compile_network(net, frames, device="ecp5-25k")
    assert s["device_budget"] == {"mult18": 28, "ebr": 56, "lut4": 24_288}
    assert s["mult18"] <= 28 and s["ebr"] - s["ebr_estimated"] <= 56
    assert sum(l["mult18"] for l in s["layers"]) == s["mult18"]
    assert s["mac_units"] == cfg.mac_units
    _, roomy = compile_network(net, frames, device="ecp5-85k")
    assert roomy["bottleneck"] <= s["bottleneck"]
    with pytest.raises(ConfigError, match="device='ecp5-12k' is invalid"):
        compile_network(net, frames, device="ecp5-12k")


def test_a_network_too_big_for_the_part_says_what_it_needs():
    frames = [random_frame(12, 12, 0.4, 64, -4, 4, seed=0)]
    layout = tuple(StageSpec(f"conv{i}", "conv", (64, 64)) for i in range(1, 12))
    net = SparseNetwork.random(layout, 12, 12, frames=frames, seed=1)
    # eleven layers of at least 3 multipliers each (one MAC, two for the requant multiply)
    with pytest.raises(ConfigError, match=r"device='ecp5-25k' is invalid: the network's engines need at least 33 "
                                          r"MULT18X18D \(each layer at its fewest\), the part has 28"):
        compile_network(net, frames, device="ecp5-25k")


def test_link_depths_are_chosen_per_link(small):
    """Each link the shallowest step that keeps the cycle model's interval within the tolerance of all links at
    the largest depth, and one step shallower on any link breaks it (or it is already a direct wire)."""
    net, frames = small
    cfg, _ = compile_network(net, frames, 64)
    out, r = choose_link_depths(cfg, frames, max_depth=64, tolerance=0.005)
    depths = out.link_depths
    assert len(depths) == len(cfg.layers) - 1 and all(d in LINK_DEPTH_STEPS and d <= 64 for d in depths)
    limit = r["reference"] * 1.005
    assert r["interval"] == predicted_interval(out, frames)["interval"] <= limit
    assert r["reference"] == predicted_interval(cfg.replace(link_depth=64), frames)["interval"]
    for j, d in enumerate(depths):
        if d:
            shallower = list(depths)
            shallower[j] = LINK_DEPTH_STEPS[LINK_DEPTH_STEPS.index(d) - 1]
            assert predicted_interval(out.replace(link_depth=tuple(shallower)), frames)["interval"] > limit, j
    with pytest.raises(ConfigError, match="max_depth=100 is invalid"):
        choose_link_depths(cfg, frames, max_depth=100)


def test_compile_network(small):
    net, frames = small
    cfg, s = compile_network(net, frames, 64)
    assert isinstance(cfg, SparseNetworkConfig) and cfg.names == tuple(net.names)
    assert cfg.mac_units == s["mac_units"] <= 64
    assert s["bottleneck"] >= s["lower_bound"] and 0 < s["balance"] <= 1
    assert [l["pi"] for l in s["layers"]] == [l.pi for l in cfg.layers]
    assert cfg.residual == ((4, 6),) and cfg.layers[6].residual
    with pytest.raises(ConfigError, match="mac_budget"):
        allocate(net, frames, 3)
    # the config is the layers' own: same kinds, channels, grids as the network
    for l, c, (h, w) in zip(net.layers, cfg.layers, net.grids()[:-1], strict=True):
        assert (c.kind, c.cin, c.cout, c.max_height, c.max_width) == (l.kind, l.cin, l.cout, h, w)
    assert network_config(net, [c.pi for c in cfg.layers], [c.po for c in cfg.layers]) == cfg
    assert isinstance(cfg.layers[0], SparseConvConfig)
    assert np.isfinite(s["bottleneck"])
