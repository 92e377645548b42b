"""Build keys cannot go stale: they cover every module a generator's output depends on, and nothing else.

Each case edits (in memory, as `Path.read_bytes` sees it) a value that a block's generator reads from a
module other than its own, and checks that the key of the block's build changes; an edit to a golden or
cycle model, which no generator may import, leaves it alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from accelkit.blocks import BLOCKS
from accelkit.config.dybit import DyBitArrayConfig
from accelkit.config.hyft import SoftmaxConfig
from accelkit.config.sparse_conv import SparseChainConfig, SparseConvConfig
from accelkit.sim.build import build_key, generator_sources

ROOT = Path(__file__).resolve().parents[1]

# (config, file outside the generator's module, text in it, its replacement)
EDITS = {
    "hyft-float-stages": (SoftmaxConfig(arch="float"), "accelkit/config/float_softmax.py",
                          "ADD_STAGES = 5", "ADD_STAGES = 6"),
    "hyft-pipeline": (SoftmaxConfig(), "accelkit/config/hyft.py", '"decode": 3', '"decode": 4'),
    "hyft-float-helpers": (SoftmaxConfig(arch="float"), "gen/hyft.py", "def leading_one(", "def leading_one2("),
    "dybit-formats": (DyBitArrayConfig(), "accelkit/config/dybit.py", "return self.n - 2 - k if",
                      "return self.n - 3 - k if"),
    "sparse-config": (SparseConvConfig(), "accelkit/config/sparse_conv.py", "MAX_DIM = 4096", "MAX_DIM = 4095"),
    "chain-engine": (SparseChainConfig(), "gen/sparse_finder.py", "K = cfg.finder_chunk",
                     "K = cfg.finder_chunk * 1"),  # a component
}


def _edited(monkeypatch, rel: str, old: str, new: str) -> None:
    target = (ROOT / rel).resolve()
    text = target.read_bytes()
    assert old.encode() in text, f"{rel} no longer contains {old!r}: update this test"
    real = Path.read_bytes

    def read_bytes(self):
        data = real(self)
        return data.replace(old.encode(), new.encode()) if self.resolve() == target else data

    monkeypatch.setattr(Path, "read_bytes", read_bytes)


@pytest.mark.parametrize("case", sorted(EDITS))
def test_editing_what_a_generator_reads_changes_the_key(monkeypatch, case):
    cfg, rel, old, new = EDITS[case]
    before = {flavour: build_key(cfg, flavour) for flavour in ("rtl", "verilator", "synth")}
    _edited(monkeypatch, rel, old, new)
    after = {flavour: build_key(cfg, flavour) for flavour in before}
    for flavour in before:
        assert before[flavour] != after[flavour], f"{case}: editing {rel} left the {flavour} key unchanged"


@pytest.mark.parametrize("rel", ["golden/hyft_cycles.py", "golden/dybit.py", "golden/sparse_conv.py"])
def test_golden_and_cycle_models_are_not_in_any_key(monkeypatch, rel):
    keys = {name: build_key(b.default_config(), "rtl") for name, b in BLOCKS.items()}
    _edited(monkeypatch, rel, "from __future__ import annotations", "from __future__ import annotations  # x")
    assert {name: build_key(b.default_config(), "rtl") for name, b in BLOCKS.items()} == keys


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_no_generator_imports_a_golden_or_cycle_model(name):
    """What the hardware is lives in the config or the generator; golden and cycle models read it from there."""
    modules = [m for m, _ in generator_sources(BLOCKS[name])]
    assert f"accelkit.config.{BLOCKS[name].config.split(':')[0].rsplit('.', 1)[1]}" in modules
    assert not [m for m in modules if m.startswith(("accelkit.golden", "accelkit.sim", "accelkit.flows"))], modules


def test_a_generator_edited_after_import_is_refused(monkeypatch):
    """A process that imported a generator before its file changed would cache the old code's Verilog under the
    new key: the key refuses, naming the module."""
    from accelkit import _loaded
    from accelkit.sim.build import StaleSourceError

    cfg = SparseConvConfig()
    build_key(cfg, "verilator")  # the loaded modules are the files on disk
    assert "accelkit.gen.sparse_finder" in _loaded.LOADED
    mtime, size = _loaded.LOADED["accelkit.gen.sparse_finder"]
    monkeypatch.setitem(_loaded.LOADED, "accelkit.gen.sparse_finder", (mtime - 1, size))  # as if edited since
    with pytest.raises(StaleSourceError, match=r"accelkit\.gen\.sparse_finder .* changed on disk"):
        build_key(cfg, "verilator")


def test_a_verilator_model_is_keyed_on_the_cocotb_libraries_it_links(monkeypatch):
    """A model links cocotb's VPI library by absolute path: another environment's model must not be reused (it
    failed with 'libcocotbvpi_verilator.so: cannot open shared object file' once the other venv was gone).
    Synthesis does not link anything, and keeps its key."""
    from accelkit.config.sparse_conv import SparseConvConfig
    from accelkit.sim import build

    cfg = SparseConvConfig()
    before = {f: build.build_key(cfg, f) for f in ("verilator", "verilator-waves", "synth")}
    monkeypatch.setattr(build, "_cocotb_libs", lambda: "/elsewhere/.venv/lib/python3.11/site-packages/cocotb/libs")
    after = {f: build.build_key(cfg, f) for f in before}
    assert after["verilator"] != before["verilator"] and after["verilator-waves"] != before["verilator-waves"]
    assert after["synth"] == before["synth"]
