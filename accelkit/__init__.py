"""accelkit: generators, golden models, Verilator regressions and FPGA flows for edge-AI accelerators."""

from . import _loaded

_loaded.install()  # before any generator is imported: build keys check that the loaded code is the code on disk

__version__ = "0.1.0"
