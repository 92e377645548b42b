"""The registry of accelkit's blocks: what the CLI, runner, sweeps and reports know of each.

Every entry names its config class, its generator and its cocotb testbench by
import path, so importing the registry stays cheap.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from accelkit.config import BlockConfig, ConfigError


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


@dataclasses.dataclass(frozen=True)
class Block:
    name: str
    config: str  # "module:Class" of the frozen config dataclass
    generator: str  # "module:callable" taking the config, returning an amaranth wiring.Component
    testbench: str  # cocotb module run by the simulator
    summary: str

    @property
    def config_cls(self) -> type[BlockConfig]:
        return _load(self.config)

    def build(self, cfg: BlockConfig):
        return _load(self.generator)(cfg)

    def default_config(self) -> BlockConfig:
        return self.config_cls()


BLOCKS: dict[str, Block] = {}


def register(block: Block) -> Block:
    BLOCKS[block.name] = block
    return block


register(Block(
    name="dybit-array",
    config="accelkit.config.dybit:DyBitArrayConfig",
    generator="accelkit.gen.dybit_array:DyBitMacArray",
    testbench="accelkit.sim.tb_dybit",
    summary="R x C MAC array for DyBit operands (INT8 baseline from the same code path)",
))


def get_block(name: str) -> Block:
    if name not in BLOCKS:
        raise ConfigError(f"block={name!r} is invalid: known blocks are {', '.join(sorted(BLOCKS))}")
    return BLOCKS[name]


def block_for_config(cfg: BlockConfig) -> Block:
    return get_block(cfg.block)
