"""rtl/: the emitted Verilog of every block's default config, kept in the repository for FPGA users.

`python -m accelkit.flows.rtl` rewrites it; tests/test_rtl_fresh.py fails when
a generator changed and rtl/ was not regenerated.
"""

from __future__ import annotations

import sys
from pathlib import Path

from accelkit.blocks import BLOCKS, Block
from accelkit.sim.build import emit_verilog

RTL_DIR = Path(__file__).resolve().parents[1] / "rtl"


def rtl_files(block: Block) -> tuple[Path, Path]:
    stem = block.name.replace("-", "_")
    return RTL_DIR / f"{stem}.v", RTL_DIR / f"{stem}.json"


def expected(block: Block) -> tuple[str, str]:
    cfg = block.default_config()
    return emit_verilog(cfg, block), cfg.to_json() + "\n"


def regenerate() -> list[Path]:
    RTL_DIR.mkdir(exist_ok=True)
    written = []
    for block in BLOCKS.values():
        v, j = rtl_files(block)
        text, cfg = expected(block)
        v.write_text(text)
        j.write_text(cfg)
        written += [v, j]
    return written


if __name__ == "__main__":
    for p in regenerate():
        print(p.relative_to(RTL_DIR.parent))
    sys.exit(0)
