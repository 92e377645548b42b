"""The cocotb testbench every block shares: drive stream ports, collect stream ports, check.

The job (written by `accelkit.sim.runner.run_streams`) lists, for each input
stream, the pre-packed beats, the chance of a valid gap before each beat and
optionally `after`, the name of a source that must finish first,
and for each output stream the number of beats to collect, the chance of a
ready stall per cycle and, when the caller checks against a golden model, the
expected beats. All sources run concurrently, so streams that depend on each
other (operands consumed together, a configuration port written before data)
behave as they would in a system. Every cycle, `StreamMonitor` checks the
stream rules on every port, inputs and outputs (docs/streams.md). The test
fails on the first rule broken (stream, cycle, rule) or else on the first
mismatch with the stream, beat index, expected and received words; the result
file carries every beat and the cycle of every handshake so the host can
measure cycles.
"""

from __future__ import annotations

import time

import cocotb
from cocotb.triggers import ClockCycles, Combine, Event, select

from .harness import first_mismatch, load_job, save_result, start
from .streams import StreamMonitor, StreamSink, StreamSource


@cocotb.test()
async def run(dut):
    job = load_job()
    t0 = time.perf_counter()
    counter, rng = await start(dut, job["seed"])
    sources = [StreamSource(dut, s["name"], dut.clk, counter, rng, s.get("gap", 0.0)) for s in job["sources"]]
    sinks = [StreamSink(dut, s["name"], dut.clk, counter, rng, s.get("stall", 0.0)) for s in job["sinks"]]
    # started where the sinks' own coroutines used to be, so the stimulus RNG draws in the same order
    monitor = cocotb.start_soon(StreamMonitor(dut.clk, counter, sources, sinks).run())
    done = {s["name"]: Event() for s in job["sources"]}

    async def drive(src: StreamSource, spec: dict) -> None:
        if spec.get("after"):  # e.g. data only after the weights are loaded
            await done[spec["after"]].wait()
        await src.send(spec["beats"])
        done[spec["name"]].set()

    drivers = [cocotb.start_soon(drive(src, s)) for src, s in zip(sources, job["sources"], strict=True)]
    waits = [cocotb.start_soon(snk.wait_for(s["count"], job["timeout"]))
             for snk, s in zip(sinks, job["sinks"], strict=True)]

    async def finish() -> str | None:
        await Combine(*drivers, *waits)
        # a design that emits more beats than it should shows them within a few idle cycles
        await ClockCycles(dut.clk, job.get("drain", 16))
        return first_mismatch(job["sinks"], {s.name: s.beats for s in sinks})

    try:
        # the monitor returns only on a broken rule, which comes first: it explains the mismatches that follow
        _, error = await select(monitor, finish())
    except AssertionError as e:  # a timeout in wait_for: the design hangs or drops beats
        error = str(e)
    save_result({
        "sinks": {s.name: s.beats for s in sinks},
        "sink_fires": {s.name: s.fire_cycles for s in sinks},
        "source_fires": {s.name: s.fire_cycles for s in sources},
        "error": error,
        "sim_seconds": time.perf_counter() - t0,  # the simulation itself, the simulator's start excluded
    })
    assert error is None, error
