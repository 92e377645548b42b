"""The registry of accelkit's blocks: what the CLI, runner, sweeps and reports know of each.

Every entry names its config class and its generator by import path, so
importing the registry stays cheap. Every block is simulated by the shared
stream testbench `accelkit.sim.tb_streams` through `accelkit.sim.runner`.
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
    summary: str
    bench: str | None = None  # module with smoke(), sweep() and report() for the CLI

    @property
    def bench_module(self):
        if self.bench is None:
            raise ConfigError(f"block={self.name!r} has no measurements yet (no sim/sweep/report support)")
        return _load(self.bench)

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
    summary="R x C MAC array for DyBit operands (INT8 baseline from the same code path)",
    bench="accelkit.flows.bench_dybit",
))
register(Block(
    name="dybit-dyn",
    config="accelkit.config.dybit_dyn:DyBitDynConfig",
    generator="accelkit.gen.dybit_dyn:DyBitDynArray",
    summary="R x C MAC array taking each job's DyBit / INT formats in a header; 1, 2 or 4 MACs per PE per cycle "
            "as the operands narrow (8 x 8, 8 x 4, 4 x 4)",
))
register(Block(
    name="hyft",
    config="accelkit.config.hyft:SoftmaxConfig",
    generator="accelkit.gen.hyft:build_softmax",
    summary="Hyft hybrid-format softmax (arch='hyft'), and the conventional floating-point baseline (arch='float')",
    bench="accelkit.flows.bench_hyft",
))
register(Block(
    name="sparse-conv",
    config="accelkit.config.sparse_conv:SparseConvConfig",
    generator="accelkit.gen.sparse_conv:SparseConvEngine",
    summary="one line-buffered submanifold sparse convolution layer engine",
    bench="accelkit.flows.bench_sparse",
))
register(Block(
    name="sparse-chain",
    config="accelkit.config.sparse_conv:SparseChainConfig",
    generator="accelkit.gen.sparse_conv:SparseConvChain",
    summary="several sparse layer engines composed into one dataflow top",
))
register(Block(
    name="sparse-network",
    config="accelkit.config.network:SparseNetworkConfig",
    generator="accelkit.gen.network:SparseNetworkTop",
    summary="a compiled network: layer engines, gearboxes, link FIFOs and the global sum pool (accelkit network)",
))


def get_block(name: str) -> Block:
    if name not in BLOCKS:
        raise ConfigError(f"block={name!r} is invalid: known blocks are {', '.join(sorted(BLOCKS))}")
    return BLOCKS[name]


def block_for_config(cfg: BlockConfig) -> Block:
    return get_block(cfg.block)
