"""rtl/ holds the Verilog of every block's default config; it must match what the generators emit now."""

import pytest

from accelkit.blocks import BLOCKS
from accelkit.flows.rtl import expected, rtl_files


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_rtl_is_fresh(name):
    block = BLOCKS[name]
    v, j = rtl_files(block)
    assert v.exists(), f"{v} is missing: run python -m accelkit.flows.rtl"
    text, cfg = expected(block)
    assert v.read_text() == text, f"{v} is stale: run python -m accelkit.flows.rtl"
    assert j.read_text() == cfg, f"{j} is stale: run python -m accelkit.flows.rtl"
