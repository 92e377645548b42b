"""Run a block's RTL under Verilator from Python: config + stream job in, beats and cycles out.

`run_streams` is the one entry point every block's public API (`run_dybit_array`
and the others) goes through. It builds (or reuses) the content-addressed
Verilator model, writes the job to a fresh run directory of its own (so any
number of runs, in any number of processes, share the model but nothing
else), runs the shared cocotb testbench `accelkit.sim.tb_streams` and returns
what it collected. A failed check raises `SimulationMismatch`, whose one-line
message gives the first difference and the waveform file (with waves=True) or
how to get one.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from accelkit.config import BlockConfig

from .build import TOP, Variant, verilated_model
from .harness import JOB_ENV
from .tools import verilator_env

TESTBENCH = "accelkit.sim.tb_streams"
WAVES_FILE = "dump.vcd"


class SimulationMismatch(AssertionError):
    """The RTL disagreed with the expected output, hung, or dropped/added beats."""


def _clean_env(extra: dict[str, str]):
    """Environment changes for the simulator process; cocotb's runner reads os.environ."""
    env = verilator_env() | extra
    saved = {k: os.environ.get(k) for k in [*env, "PYTEST_CURRENT_TEST"]}
    os.environ.update(env)
    # Under pytest the runner would sys.exit on a failed test; this module reports failures itself.
    os.environ.pop("PYTEST_CURRENT_TEST", None)
    return saved


def _restore(saved: dict[str, str | None]) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def run_streams(cfg: BlockConfig, job: dict, waves: bool = False, keep: bool = False, *,
                testbench: str = TESTBENCH, variant: Variant | None = None, what: str | None = None,
                streams: str = "cocotb") -> dict:
    """Simulate `cfg` on a stream job (see `accelkit.sim.tb_streams`) and return the testbench's result.

    The result has `sinks` (beats per output stream), `sink_fires` and
    `source_fires` (the cycle of every handshake, counted from the end of reset)
    and `run_dir` when the run directory is kept (waves=True or keep=True).
    `testbench` (a cocotb test module reading the job) and `variant` (another design made from `cfg`,
    `accelkit.sim.build.Variant`) run other designs the same way; `what` names the design in errors.
    `streams="hdl"` drives and checks the streams inside the simulator instead of from Python on every cycle
    (`accelkit.sim.hdl_streams`: the same job and result, at Verilator speed, for long runs), cocotb starting
    and ending the run; `streams="native"` runs the same simulator and the same checks with no cocotb (no
    embedded Python to start: for many short runs); "cocotb" is the Python testbench.
    """
    from cocotb_tools.runner import get_runner

    what = what or cfg.block
    job = {"seed": 1, "timeout": 100_000, **job}
    plusargs = []
    if streams in ("hdl", "native"):
        if variant is not None or testbench != TESTBENCH:
            raise ValueError(f"streams={streams!r} runs the block's own design under its own testbench")
        from . import hdl_streams
        ports = hdl_streams.stream_ports(cfg)
        variant, testbench = hdl_streams.hdl_variant(hdl_streams.depth_bits_for(job)), hdl_streams.TESTBENCH
        job["ports"] = [dataclasses.asdict(p) for p in ports]
    elif streams != "cocotb":
        raise ValueError(f"streams={streams!r} is invalid: 'cocotb' (Python drives the streams), 'hdl' (the "
                         "simulator does, under cocotb) or 'native' (the simulator does, no cocotb)")
    model = verilated_model(cfg, waves=waves, variant=variant)
    run_dir = model / "runs" / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    run_dir.mkdir(parents=True)
    if streams in ("hdl", "native"):
        hdl_streams.write_inputs(job, ports, run_dir)
        plusargs.append(f"+accelkit_dir={run_dir}")
    if streams == "native":
        return _finish(_run_native(model, job, run_dir, plusargs, waves), what, run_dir, waves, keep)
    job_file = run_dir / "job.pkl"
    job_file.write_bytes(pickle.dumps(job))
    # no pytest assertion rewriting in the simulator: the testbenches word their own failures, and installing
    # the hook loads pytest and its plugins in every simulator start (a tenth of a second or more)
    saved = _clean_env({JOB_ENV: str(job_file), "COCOTB_LOG_LEVEL": "WARNING", "COCOTB_REWRITE_ASSERTION_FILES": ""})
    try:
        runner = get_runner("verilator")
        runner.test(test_module=testbench, hdl_toplevel=TOP, hdl_toplevel_lang="verilog", build_dir=model,
                    test_dir=run_dir,
                    results_xml=str(run_dir / "results.xml"), waves=waves, log_file=run_dir / "sim.log",
                    plusargs=plusargs)
    except SystemExit:
        pass  # the simulator exited non-zero; the missing or failed result below says why
    finally:
        _restore(saved)
    result_file = run_dir / "result.pkl"
    if not result_file.exists():
        raise SimulationMismatch(f"{what}: the simulation ended without a result; log: {run_dir / 'sim.log'}")
    return _finish(pickle.loads(result_file.read_bytes()), what, run_dir, waves, keep)


def _run_native(model: Path, job: dict, run_dir: Path, plusargs: list[str], waves: bool) -> dict:
    """The harness's simulator with no cocotb (sim/verilator_main.cpp, +accelkit_native), checked here."""
    from .hdl_result import collect

    argv = [str(model / TOP), "+accelkit_native", *plusargs, *(["--trace"] if waves else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=run_dir, capture_output=True, text=True, env=os.environ | verilator_env())
    result = collect(job, run_dir, time.perf_counter() - t0)  # the simulator's start (milliseconds) included
    (run_dir / "sim.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode and not result["error"]:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        result["error"] = f"the simulator exited with status {proc.returncode}: {last[0][:300]}"
    return result


def _finish(result: dict, what: str, run_dir: Path, waves: bool, keep: bool) -> dict:
    where = (f"waveform: {run_dir / WAVES_FILE}" if waves
             else "run again with waves=True (accelkit sim --waves) for a waveform")
    if result["error"]:
        raise SimulationMismatch(f"{what}: {result['error']}; {where}")
    if waves or keep:
        result["run_dir"] = run_dir
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def waves_path(result: dict) -> Path | None:
    d = result.get("run_dir")
    return d / WAVES_FILE if d else None
