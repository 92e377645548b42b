"""The cocotb testbench of the in-simulator stream harness (accelkit.sim.hdl_streams): same job, same result.

The harness reads its settings (each port's count and gap or stall probability) and its sources' beats from
the run directory. cocotb starts the simulator, calls `accelkit_run()` once (sim/verilator_main.cpp: reset, then
the clock from C++ until the harness has finished: every source sent, every sink has its count, then `drain`
idle cycles; or a stream rule broken; or the timeout), and then checks what the harness dumped against the job
(`accelkit.sim.hdl_result`, the checks of `accelkit.sim.tb_streams`).
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

import cocotb

from .harness import load_job, save_result
from .hdl_result import collect


@cocotb.test()
async def run(dut):
    job = load_job()
    run_dir = Path(os.environ["ACCELKIT_JOB"]).parent
    accelkit_run = ctypes.CDLL(None).accelkit_run  # exported by the simulator's main (linked -rdynamic)
    accelkit_run.restype = ctypes.c_ulonglong
    t0 = time.perf_counter()
    accelkit_run()
    result = collect(job, run_dir, time.perf_counter() - t0)  # the simulation itself, the simulator's start excluded
    save_result(result)
    assert result["error"] is None, result["error"]
