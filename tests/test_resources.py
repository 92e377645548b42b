"""The ECP5 hard-block counts the network compiler budgets with are the generator's own: the MULT18X18D and
DP16KD instances of the engine elaborated for ECP5 (no synthesis needed to check them)."""

from __future__ import annotations

import collections

import pytest
from amaranth.hdl import Fragment, Instance

from accelkit.config import ConfigError
from accelkit.config.network import SparseNetworkConfig
from accelkit.config.sparse_conv import SparseConvConfig
from accelkit.flows.resources import device_budget, engine_resources, network_resources
from accelkit.gen.network import SparseNetworkTop
from accelkit.gen.sparse_conv import SparseConvEngine


def instances(component) -> collections.Counter:
    out = collections.Counter()

    def walk(frag):
        if isinstance(frag, Instance):
            out[frag.type] += 1
            return
        for sub, *_ in frag.subfragments:
            walk(sub)

    walk(Fragment.get(component, "ecp5"))
    return out


CONFIGS = [
    SparseConvConfig(),
    SparseConvConfig(pi=8, po=8),
    SparseConvConfig(kind="dw3x3", pi=8, po=8),
    SparseConvConfig(kind="pw1x1", cin=32, cout=64, pi=2, po=16),
    SparseConvConfig(kind="conv3x3s2", cin=3, cout=16, pi=1, po=4, max_height=180, max_width=240),
    SparseConvConfig(kind="dw3x3s2", cin=96, cout=96, pi=4, po=4, max_height=60, max_width=80),  # a deep buffer
    SparseConvConfig(kind="pw1x1", cin=64, cout=16, pi=16, po=4, residual=True),
    SparseConvConfig(max_height=180, max_width=240, prefetch_rows=2, scale_bits=20, bias_bits=24),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.kind}-{c.cin}x{c.cout}-pi{c.pi}po{c.po}"
                         f"{'-res' if c.residual else ''}-{c.max_height}x{c.max_width}")
def test_engine_counts_are_the_elaborated_instances(cfg):
    got = instances(SparseConvEngine(cfg))
    res = engine_resources(cfg)
    assert res["mult18"] == got["MULT18X18D"]
    assert res["ebr"] - res["ebr_inferred"] == got["DP16KD"]


def test_network_engines_add_up():
    cfg = SparseNetworkConfig()
    got = instances(SparseNetworkTop(cfg))
    res = network_resources(cfg)
    assert res["mult18"] == got["MULT18X18D"]
    assert res["ebr"] - res["ebr_estimated"] == got["DP16KD"]
    assert [r["mult18"] for r in res["layers"]] == [engine_resources(c)["mult18"] for c in cfg.layers]


def test_unknown_device_is_named():
    assert device_budget("ecp5-85k") == {"mult18": 156, "ebr": 208, "lut4": 83_640}
    with pytest.raises(ConfigError, match=r"device='xc7' is invalid: one of ecp5-25k, ecp5-45k, ecp5-85k"):
        device_budget("xc7")


def test_a_buffer_deeper_than_one_block_is_counted_as_inferred():
    cfg = SparseConvConfig(kind="dw3x3s2", cin=96, cout=96, pi=4, po=4, max_height=60, max_width=80)
    assert cfg.buffer_depth > 16384
    res = engine_resources(cfg)
    assert res["ebr_inferred"] == cfg.buffer_depth // 16384 * cfg.buffer_word_bits
    assert res["ebr_inferred"] * 18 * 1024 >= cfg.buffer_depth * cfg.buffer_word_bits  # it holds the buffer
