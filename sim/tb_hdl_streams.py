"""The cocotb testbench of the in-simulator stream harness (accelkit.sim.hdl_streams): same job, same result.

cocotb sets each port's count and gap or stall probability, clocks and resets the harness, and then sleeps
until the harness says it has finished (every source sent, every sink has its count, then `drain` idle
cycles; or a stream rule broken; or the timeout). It then reads the beats and handshake cycles the harness
dumped, and checks them against the job exactly as `accelkit.sim.tb_streams` does.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cocotb
from cocotb.triggers import RisingEdge

from .harness import first_mismatch, load_job, save_result
from .streams import RULE_PAYLOAD, RULE_VALID

# the harness's rule codes (accelkit.sim.hdl_streams): what it saw, and the rule broken
RULES = {1: ("valid fell before the handshake", RULE_VALID),
         2: ("payload changed before the handshake", RULE_PAYLOAD)}

PROB = 1 << 16


def _threshold(p: float) -> int:
    """A probability as the 16-bit threshold the harness compares its draws with (0 never, 65535 almost always)."""
    return min(PROB - 1, max(0, round(p * PROB)))


def read_words(path: Path) -> list[int]:
    """A $writememh file's words (comments and address lines skipped); none if it was not written."""
    if not path.exists():
        return []
    return [int(w, 16) for w in path.read_text().split() if not w.startswith(("//", "@"))]


@cocotb.test()
async def run(dut):
    job = load_job()
    t0 = time.perf_counter()
    run_dir = Path(os.environ["ACCELKIT_JOB"]).parent
    ports = job["ports"]  # [{name, width, is_input}] of the design, in the harness's order
    names = [p["name"] for p in ports]
    srcs = {s["name"]: s for s in job["sources"]}
    snks = {s["name"]: s for s in job["sinks"]}
    src_names = [p["name"] for p in ports if p["is_input"]]
    dut.seed.value = (job["seed"] * 0x2545F491 + 1) & 0xFFFFFFFF or 1
    dut.timeout.value = min(job["timeout"] + 64, (1 << 32) - 1)  # the harness counts cycles in 32 bits
    dut.drain.value = job.get("drain", 16)
    for p in ports:
        n = p["name"]
        getattr(dut, f"{n}_enable").value = int(n in srcs or n in snks)
        if p["is_input"]:
            s = srcs.get(n)
            getattr(dut, f"{n}_count").value = len(s["beats"]) if s else 0
            getattr(dut, f"{n}_gap").value = _threshold(s.get("gap", 0.0)) if s else 0
            after = s.get("after") if s else None
            getattr(dut, f"{n}_after").value = (1 << src_names.index(after)) if after else 0
        else:
            s = snks.get(n)
            getattr(dut, f"{n}_count").value = s["count"] if s else 0
            getattr(dut, f"{n}_stall").value = _threshold(s.get("stall", 0.0)) if s else 0
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.dumped)  # one wake-up: the harness dumped its memories at this edge, files closed
    sinks = {n: read_words(run_dir / f"{n}.hex") for n in snks}
    error = None
    rule = int(dut.err_rule.value)
    if rule:
        what, name = RULES[rule]
        error = f"stream {names[int(dut.err_port.value)]}, cycle {int(dut.err_cycle.value)}: {what} (rule: {name})"
    elif int(dut.timed_out.value):
        short = [f"{n}: {int(getattr(dut, f'{n}_got').value)} of {s['count']} beats" for n, s in snks.items()
                 if int(getattr(dut, f"{n}_got").value) < s["count"]]
        error = (f"stream {', '.join(short) or 'sources'} after {job['timeout']} cycles: the design hangs or "
                 "drops beats")
    else:
        for n, s in snks.items():
            got = int(getattr(dut, f"{n}_got").value)
            if got != s["count"]:
                error = f"stream {n}: {got} beats, expected {s['count']}"
                break
        else:
            error = first_mismatch(job["sinks"], sinks)
    save_result({
        "sinks": sinks,
        "sink_fires": {n: read_words(run_dir / f"{n}.fires.hex") for n in snks},
        "source_fires": {n: read_words(run_dir / f"{n}.fires.hex") for n in srcs},
        "cycles": int(dut.cycle.value),
        "error": error,
        "sim_seconds": time.perf_counter() - t0,  # the simulation itself, the simulator's start excluded
    })
    assert error is None, error
