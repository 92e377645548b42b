"""accelkit: generators, golden models, Verilator regressions and FPGA flows for edge-AI accelerators."""

__version__ = "0.1.0"
