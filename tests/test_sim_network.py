"""Whole networks on the RTL (gen/network.py under Verilator): pooled vectors bit-exact against the golden
network, with gaps and stalls; latencies and interval equal to the cycle model's without them; gearboxes and
link FIFOs in the path."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from accelkit.config.network import SparseNetworkConfig
from accelkit.flows.compile import compile_network
from accelkit.golden.network import SparseNetwork, StageSpec
from accelkit.sim.network import run_network
from accelkit.sim.sparse_conv import random_frame

LAYOUT = (StageSpec("conv1", "conv", (3, 8), stride=2), StageSpec("block_0", "block", (8, 16, 8), stride=2),
          StageSpec("conv8", "conv", (8, 6)))


@pytest.fixture(scope="module")
def small():
    frames = [random_frame(20, 24, d, 3, -8, 8, seed=s) for s, d in enumerate((0.25, 0.15, 0.2, 0.05))]
    net = SparseNetwork.random(LAYOUT, 20, 24, frames=frames[:2], seed=3)
    cfg, summary = compile_network(net, frames, 48)
    return net, frames, cfg


def test_compiled_small_network_has_a_gearbox(small):
    _, _, cfg = small
    assert any(b.pi != a.po for a, b in zip(cfg.layers, cfg.layers[1:], strict=False)), \
        [(l.pi, l.po) for l in cfg.layers]


@pytest.mark.parametrize("link_depth", [0, 16, "per link"])
def test_network_rtl_matches_golden_and_model(small, link_depth):
    net, frames, cfg = small
    if link_depth == "per link":  # as the compiler chooses them: a direct wire and FIFOs of several depths (24 beats
        link_depth = tuple([0, 24, 16, 3, 8][:len(cfg.layers) - 1])  # in block RAM, the others in LUT RAM)
        assert cfg.fifo_block_ram(24) and not cfg.fifo_block_ram(16)
    cfg = dataclasses.replace(cfg, link_depth=link_depth)
    run = run_network(cfg, net, frames)
    for k, f in enumerate(frames):
        assert torch.equal(run.pooled[k], net(f)), k
    assert run.errors == [False] * len(frames)
    assert run.latency == run.predicted_latency
    assert run.interval == pytest.approx(run.predicted_interval)


def test_network_rtl_with_gaps_and_stalls(small):
    net, frames, cfg = small
    links = tuple([24, 16, 3, 20][:len(cfg.layers) - 1])  # FIFOs in block RAM and in LUT RAM
    run = run_network(dataclasses.replace(cfg, link_depth=links), net, frames, gap=0.3, stall=0.4, seed=5)
    for k, f in enumerate(frames):
        assert torch.equal(run.pooled[k], net(f)), k


def test_esda_folder_runs_bit_exact_on_the_rtl(small, tmp_path):
    """An ESDA export (written here) read back and run on the compiled top: ESDA's own pooled output."""
    from accelkit.golden.esda import read_esda, write_esda

    net, frames, cfg = small
    ex = read_esda(write_esda(net, tmp_path / "esda", frames[0]))
    run = run_network(cfg, ex.network, [ex.frame] + frames[1:])
    assert torch.equal(run.pooled[0], ex.pooled)
    for k, f in enumerate(frames[1:], start=1):
        assert torch.equal(run.pooled[k], net(f))


def test_network_cli_compile(small, tmp_path, capsys):
    from accelkit.cli import main

    net, frames, _ = small
    js, _ = net.save(tmp_path / "net")
    (tmp_path / "frames").mkdir()
    for k, f in enumerate(frames):
        f.to_npz(tmp_path / "frames" / f"f{k}.npz")
    assert main(["network", "compile", str(js), "--budget", "48", "--frames", str(tmp_path / "frames"),
                 "-o", str(tmp_path / "out")]) == 0
    assert "bottleneck" in capsys.readouterr().out
    cfg = SparseNetworkConfig.from_dict(json.loads((tmp_path / "out" / "config.json").read_text()))
    # link depths chosen per link by the compiler (--link-depth auto, the default)
    assert isinstance(cfg.link_depth, tuple) and len(cfg.link_depth) == len(cfg.layers) - 1
    assert cfg.names == tuple(net.names)
    assert main(["network", "compile", str(tmp_path / "nothing.json"), "--budget", "48", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nothing.json: no such file" in err and len(err.strip().splitlines()) == 1
    # the compiled config on the RTL, its streams inside the simulator (the default): bit-exact, the model's cycles
    assert main(["network", "sim", str(js), "--config", str(tmp_path / "out" / "config.json"),
                 "--frames", str(tmp_path / "frames")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bit_exact"] and out["frames"] == len(frames)
    assert out["latency"] == out["predicted_latency"] and out["interval"] == out["predicted_interval"]


# A residual block (stride 1: the block input is added by its last pw1x1) between a stride-2 conv and a
# stride-2 block; a dense frame fills every line buffer, the identity FIFO's worst case.
RES_LAYOUT = (StageSpec("conv1", "conv", (3, 8), stride=2),
              StageSpec("block_0", "block", (8, 16, 8), stride=1, residual=True),
              StageSpec("block_1", "block", (8, 16, 8), stride=2), StageSpec("conv8", "conv", (8, 6)))


@pytest.fixture(scope="module")
def residual_net():
    frames = [random_frame(20, 24, d, 3, -8, 8, seed=10 + s) for s, d in enumerate((0.2, 1.0, 0.1, 0.3))]
    net = SparseNetwork.random(RES_LAYOUT, 20, 24, frames=frames[:2], seed=4)
    cfg, _ = compile_network(net, frames, 64)
    assert cfg.residual == ((1, 3),) and cfg.layers[3].residual
    return net, frames, cfg


def test_residual_network_rtl_matches_golden_and_model(residual_net):
    net, frames, cfg = residual_net
    run = run_network(cfg, net, frames)
    for k, f in enumerate(frames):
        assert torch.equal(run.pooled[k], net(f)), k
    assert run.latency == run.predicted_latency
    assert run.interval == pytest.approx(run.predicted_interval)


def test_residual_network_rtl_with_gaps_and_stalls(residual_net):
    """With two retiming registers after every product (`retime=2`, as for a network filling the part's
    multipliers): the identity's delay follows the main path's."""
    net, frames, cfg = residual_net
    cfg = cfg.retimed(2)
    run = run_network(cfg, net, frames, gap=0.3, stall=0.5, seed=7)
    for k, f in enumerate(frames):
        assert torch.equal(run.pooled[k], net(f)), k


def test_residual_identity_matters(residual_net):
    """The residual add is not a no-op on these weights: without the identity the pooled vectors differ."""
    net, frames, _ = residual_net
    from accelkit.golden.sparse_conv import SparseFrame

    xs = net.layer_inputs(frames[0])
    block_in = xs[1]
    zero = SparseFrame(block_in.height, block_in.width, block_in.coords, torch.zeros_like(block_in.features))
    with_id = net.layers[3](xs[3], identity=block_in)
    without = net.layers[3](xs[3], identity=zero)
    assert not torch.equal(with_id.features, without.features)
    assert torch.equal(with_id.features, net.trace(frames[0])[3].features)
