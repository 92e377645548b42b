"""MACs per cycle and utilisation of the runtime-format DyBit array (`dybit-dyn`), measured on its RTL.

Each mode is its own run of one job (a header and its tiles) of random codes, every output beat checked
against the golden matmul under Verilator (streams inside the simulator, no gaps or stalls); the run's cycles
(the header's handshake to the last row's) are compared with the cycle model (golden/dybit_dyn_cycles.py).

    python -m accelkit.flows.bench_dybit_dyn --rows 8 --cols 8 [--shape 64,256,64] [-o out.json]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from accelkit.config.dybit_dyn import DyBitDynConfig
from accelkit.golden.dybit_dyn_cycles import macs_per_cycle, utilisation
from accelkit.sim.dybit_dyn import run_dybit_dyn

MODES = {  # name -> (A format, B format)
    "8 x 8 (DyBit-8 x DyBit-8)": ("dybit8k4", "dybit8k4"),
    "W4A8 (A 8-bit, B 4-bit)": ("dybit8k4", "dybit4k3"),
    "A4W8 (A 4-bit, B 8-bit)": ("dybit4k3", "dybit8k4"),
    "4 x 4 (DyBit-4 x DyBit-4)": ("dybit4k3", "dybit4k3"),
}


def _width(fmt: str) -> int:
    return int(fmt[len("dybit"):].split("k")[0]) if fmt.startswith("dybit") else int(fmt[len("int"):])


def throughput(cfg: DyBitDynConfig, shape=(64, 256, 64), seed: int = 0) -> list[dict]:
    """One row per mode: RTL cycles (= the model's, checked), MACs per cycle, utilisation."""
    m, k, n = shape
    rows = []
    for i, (name, (fa, fb)) in enumerate(MODES.items()):
        if _width(fa) not in cfg.widths or _width(fb) not in cfg.widths:
            continue
        g = torch.Generator().manual_seed(seed + i)
        a = torch.randint(0, 1 << _width(fa), (m, k), generator=g)
        b = torch.randint(0, 1 << _width(fb), (k, n), generator=g)
        run = run_dybit_dyn(cfg, [(a, fa, b, fb)], streams="native")
        if run.cycles != run.predicted:
            raise AssertionError(f"{name}: RTL {run.cycles} cycles, the model {run.predicted}")
        shape_q = run.shapes[0]
        rows.append({"mode": name, "a": fa, "b": fb, "p": shape_q.p, "cycles": run.cycles, "model": run.predicted,
                     "macs_per_cycle": macs_per_cycle([shape_q], run.cycles),
                     "utilisation": utilisation(cfg, [shape_q], run.cycles)})
    base = rows[0]["macs_per_cycle"]
    for r in rows:
        r["vs_8x8"] = r["macs_per_cycle"] / base
    return rows


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m accelkit.flows.bench_dybit_dyn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--shape", default="64,256,64", help="M,K,N (default 64,256,64)")
    p.add_argument("-o", "--out", help="write the rows as JSON here")
    args = p.parse_args(argv)
    cfg = DyBitDynConfig(rows=args.rows, cols=args.cols)
    shape = tuple(int(x) for x in args.shape.split(","))
    rows = throughput(cfg, shape)
    print(f"{cfg.rows} x {cfg.cols} array, {' x '.join(map(str, shape))}, pipeline_depth {cfg.pipeline_depth}")
    print("| mode | P | cycles (RTL = model) | MACs / cycle | utilisation | vs 8 x 8 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['p']} | {r['cycles']:,} | {r['macs_per_cycle']:.3f} | "
              f"{100 * r['utilisation']:.2f} % | {r['vs_8x8']:.4f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"config": cfg.to_dict(), "shape": shape, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
