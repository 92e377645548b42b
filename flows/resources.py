"""What a sparse engine takes of an ECP5 device's hard blocks, from its config, and the devices' budgets.

The engine instantiates its multipliers and block RAMs itself when elaborated for ECP5
(gen/pipeline.py `registered_multiply`, gen/memory.py `RegisteredRam`), so their counts follow from the
config exactly (tests/test_resources.py checks them against the instances of the ECP5 elaboration):

- MULT18X18D: one per MAC unit (PI x PO, or PI for a depthwise layer); per output lane, the requantiser's
  psum x scale multiply cut into 17-bit limbs (one multiplier per pair of limbs); per output lane of a
  residual layer, the identity x scale multiply.
- DP16KD: the weight memory, the line buffer and the requant memory, each tiled in the widest DP16KD mode
  that holds its depth (`ecp5_tiling`).

LUT4 is not modelled here: it depends on the frame width (the site finder's bitmaps), the parallelism and
what yosys makes of them, and is measured by `accelkit synth`. The network top's link and identity FIFOs
deeper than `LUTRAM_FIFO_DEPTH` beats are `RegisteredFifo`s (gen/reg_fifo.py) on a RegisteredRam of the depth
rounded up to a power of two, counted exactly by the same tiling; shallower ones are LUT RAM (no block).
"""

from __future__ import annotations

import math

from accelkit.config import require
from accelkit.config.network import LUTRAM_FIFO_DEPTH, SparseNetworkConfig
from accelkit.config.sparse_conv import SparseConvConfig

__all__ = ["DEVICES", "engine_resources", "network_resources", "device_budget"]

# LFE5U (speed 6 and 8 alike) per the ECP5 family data sheet: 18 x 18 multipliers, 18 Kbit EBR blocks, LUT4s.
DEVICES = {
    "ecp5-25k": {"mult18": 28, "ebr": 56, "lut4": 24_288},
    "ecp5-45k": {"mult18": 72, "ebr": 108, "lut4": 43_848},
    "ecp5-85k": {"mult18": 156, "ebr": 208, "lut4": 83_640},
}


def device_budget(device: str) -> dict:
    require(device in DEVICES, "device", f"one of {', '.join(DEVICES)}", device)
    return dict(DEVICES[device])


def _blocks(width: int, depth: int) -> tuple[int, bool]:
    """DP16KD blocks of a `width` x `depth` RegisteredRam, and whether yosys infers them (deeper than one
    block: then 16K x 1 blocks side by side and stacked is the estimate)."""
    from accelkit.gen.memory import ecp5_tiling  # the generator's own tiling (imported here: the CLI reads DEVICES)

    depth = max(2, depth)
    t = ecp5_tiling(width, depth)
    if t is not None:
        return t[3], False
    return math.ceil(depth / 16384) * width, True


def engine_resources(cfg: SparseConvConfig) -> dict:
    """MULT18X18D and DP16KD blocks of one engine elaborated for ECP5 (`ebr_inferred`: the part of `ebr` in
    memories too deep for one block, which yosys maps, so an estimate)."""
    from accelkit.gen.pipeline import LIMB

    macs = cfg.pi if cfg.depthwise else cfg.pi * cfg.po
    requant = cfg.po * math.ceil(cfg.psum_bits / LIMB) * math.ceil(cfg.scale_bits / LIMB)
    identity = cfg.po if cfg.residual else 0
    mems = [_blocks(cfg.weight_word_bits, cfg.weight_depth), _blocks(cfg.buffer_word_bits, cfg.buffer_depth),
            _blocks(cfg.requant_word_bits, cfg.requant_groups)]
    return {"mult18": macs + requant + identity, "ebr": sum(b for b, _ in mems),
            "ebr_inferred": sum(b for b, inferred in mems if inferred)}


def network_resources(cfg: SparseNetworkConfig) -> dict:
    """The engines' MULT18X18D and DP16KD and the identity and link FIFOs' block RAM (exact but for memories
    deeper than one block, `ebr_estimated`), in total and per layer (`fifo_ebr`: the FIFOs')."""
    layers = [engine_resources(c) for c in cfg.layers]
    from accelkit.gen.sparse_conv import in_token_layout  # a link FIFO's beat: the next engine's input token
    from accelkit.gen.sparse_line_buffer import accepted_layout  # the identity FIFO's beat (gen/network.py)

    fifos = [(cfg.identity_depth((first, last)), accepted_layout(cfg.layers[first].pi,
                                                                 cfg.layers[first].feature_bits).size)
             for first, last in cfg.residual]
    fifos += [(d, in_token_layout(cfg.layers[i + 1]).size) for i, d in enumerate(cfg.link_depths) if d]
    blocks = [_blocks(width, 1 << (depth - 1).bit_length()) for depth, width in fifos if depth > LUTRAM_FIFO_DEPTH]
    fifo_ebr = sum(b for b, _ in blocks)
    return {"mult18": sum(r["mult18"] for r in layers), "ebr": sum(r["ebr"] for r in layers) + fifo_ebr,
            "ebr_estimated": sum(r["ebr_inferred"] for r in layers) + sum(b for b, inferred in blocks if inferred),
            "fifo_ebr": fifo_ebr, "layers": layers}
