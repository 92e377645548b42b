"""Simulation speed: simulated cycles per second of the two stream testbenches, measured in one run.

`python -m accelkit.flows.sim_speed [-o OUT]` runs each long workload with the cocotb testbench (Python drives
and checks every stream every cycle, `accelkit.sim.tb_streams`) and with the in-simulator harness
(`accelkit.sim.hdl_streams`) under cocotb (`streams="hdl"`) and without it (`streams="native"`), builds cached
(a first, untimed run of each makes sure of that), alternating the three so that the machine's load falls on
all alike, and writes `sim_speed.json` and `sim_speed.md`:

* end to end: cycles over the wall time of the whole call (job packing, simulator start, simulation, reading
  and checking the results), what a user of `run_dybit_array` or `run_sparse_conv` waits for;
* in the simulator: cycles over the wall time of the simulation itself, the simulator's start excluded (for
  "native", the simulator process's whole life, its start of a few milliseconds included).

Every run checks every output beat against the golden model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from accelkit.flows.measure import md_table

PATHS = ("cocotb", "hdl", "native")


def _dybit() -> tuple[str, Callable[[str], tuple[int, float]]]:
    from accelkit.config.dybit import DyBitArrayConfig
    from accelkit.sim.dybit import run_dybit_array

    cfg = DyBitArrayConfig()
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 1 << cfg.a_bits, (64, 256), generator=g)
    b = torch.randint(0, 1 << cfg.b_bits, (256, 64), generator=g)

    def run(streams: str) -> tuple[int, float]:
        r = run_dybit_array(cfg, a, b, streams=streams)
        return r.cycles, r.sim_seconds

    return f"DyBit {cfg.rows} x {cfg.cols} ({cfg.a_format} x {cfg.b_format}), 64 x 256 x 64 matmul", run


def _sparse() -> tuple[str, Callable[[str], tuple[int, float]]]:
    from accelkit.flows.bench_sparse import REAL_FRAME_CONFIG
    from accelkit.golden.sparse_conv import load_frames
    from accelkit.sim.sparse_conv import random_layer, run_sparse_conv, with_channels

    cfg = REAL_FRAME_CONFIG.replace(pi=4, po=4)
    frames = load_frames()
    name = max(frames, key=lambda k: frames[k].n_active)  # the largest real frame
    x = with_channels(frames[name], cfg.cin, *cfg.input_range, 0)
    layer = random_layer(cfg, 0)

    def run(streams: str) -> tuple[int, float]:
        r = run_sparse_conv(cfg, layer, [x], streams=streams)
        return r.total_cycles, r.sim_seconds

    return (f"sparse {cfg.kind} PI = PO = {cfg.pi}, {cfg.cin} channels, real frame {name} "
            f"({x.height} x {x.width}, {x.n_active} sites)"), run


WORKLOADS = {"dybit": _dybit, "sparse": _sparse}


def measure(repeats: int = 3, workloads=tuple(WORKLOADS)) -> list[dict]:
    rows = []
    for key in workloads:
        what, run = WORKLOADS[key]()
        for p in PATHS:  # builds, untimed
            run(p)
        wall = {p: [] for p in PATHS}
        inside = {p: [] for p in PATHS}
        cycles = {}
        for _ in range(repeats):
            for p in PATHS:
                t = time.perf_counter()
                cycles[p], sim_s = run(p)
                wall[p].append(time.perf_counter() - t)
                inside[p].append(sim_s)
        if len(set(cycles.values())) != 1:
            raise AssertionError(f"{what}: {cycles} cycles: the two testbenches disagree")
        for p in PATHS:
            w, s = statistics.median(wall[p]), statistics.median(inside[p])
            rows.append({"workload": key, "what": what, "testbench": p, "cycles": cycles[p],
                         "wall_s": round(w, 3), "sim_s": round(s, 3),
                         "cycles_per_s": round(cycles[p] / w), "sim_cycles_per_s": round(cycles[p] / s),
                         "repeats": repeats})
    return rows


def to_markdown(rows: list[dict]) -> str:
    names = {"cocotb": "cocotb drives the streams", "hdl": "streams in the simulator, under cocotb",
             "native": "streams in the simulator, no cocotb"}
    body = [[r["what"], names[r["testbench"]], r["cycles"], r["wall_s"], f"{r['cycles_per_s']:,}",
             r["sim_s"], f"{r['sim_cycles_per_s']:,}"] for r in rows]
    return md_table(["workload", "testbench", "cycles", "wall s", "cycles/s end to end", "simulation s",
                     "cycles/s in the simulator"], body)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m accelkit.flows.sim_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--out", default="sim_speed", help="output folder (default: sim_speed/)")
    p.add_argument("-n", "--repeats", type=int, default=3, help="timed runs of each testbench (median; default 3)")
    p.add_argument("--workload", action="append", choices=sorted(WORKLOADS), help="default: all")
    args = p.parse_args(argv)
    rows = measure(args.repeats, tuple(args.workload or WORKLOADS))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sim_speed.json").write_text(json.dumps(rows, indent=1) + "\n")
    md = to_markdown(rows)
    (out / "sim_speed.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
