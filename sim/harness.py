"""What every testbench does the same way: read its job, clock and reset the DUT, report back.

A job is a pickled dict written by `accelkit.sim.runner.run_job`; the testbench
returns a pickled result dict. Mismatches are collected with enough detail to
locate them (which job, which element, expected, got) and the runner turns
them into an exception that names the waveform file.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from .streams import CycleCounter

JOB_ENV = "ACCELKIT_JOB"


def load_job() -> dict:
    return pickle.loads(Path(os.environ[JOB_ENV]).read_bytes())


def save_result(result: dict) -> None:
    Path(os.environ[JOB_ENV]).with_name("result.pkl").write_bytes(pickle.dumps(result))


async def start(dut, seed: int) -> tuple[CycleCounter, random.Random]:
    """Start the clock, hold reset for a few cycles, return the cycle counter and the stimulus RNG."""
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    counter = CycleCounter(dut.clk)
    cocotb.start_soon(counter.run())
    return counter, random.Random(seed)


def first_mismatch(sink_specs: list[dict], beats: dict[str, list[int]]) -> str | None:
    """The first difference between what the sinks collected and the job's expected counts and beats."""
    for s in sink_specs:
        got = beats[s["name"]]
        if len(got) != s["count"]:
            return f"stream {s['name']}: {len(got)} beats, expected {s['count']}"
        expect = s.get("expect")
        if expect is None:
            continue
        for i, (want, have) in enumerate(zip(expect, got, strict=True)):
            if want != have:
                where = f" ({s['labels'][i]})" if s.get("labels") else ""
                return f"stream {s['name']} beat {i} of {s['count']}{where}: expected {want:#x}, got {have:#x}"
    return None
