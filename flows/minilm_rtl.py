"""all-MiniLM-L6-v2 with every encoder Linear's matmul on the scalable DyBit array's RTL (gen/dybit_dyn.py).

Each sentence runs alone (its real tokens, no padding). Every Linear layer quantises its input (dynamic
per-tensor DyBit, `flows/minilm_mixed.quantise_activation`) and its weight (per-channel DyBit) in the widths
`modes` gives it, and its integer matmul runs on the RTL through `run_dybit_dyn` (streams inside the
simulator): the testbench checks every output beat against the golden matmul (`golden/dybit_dyn.py`), so a
run that returns is bit-exact. The result is scaled back to floats and the forward pass goes on.

Reported: per sentence the embedding's cosine against fp32, the array cycles measured on the RTL and the
cycle model's; the total; the same matmuls' cycles on the fixed INT8 array of the same shape (its cycle
model, golden/dybit_cycles.py), the baseline; and the time per sentence at a given clock.

    python -m accelkit.flows.minilm_rtl [--modes minilm_mixed.json] [--sentences N] [-o OUT]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .minilm_mixed import MODES, MixedPrecision, encoder_linears


def rtl_forward(tok, model, modes: dict, sentences: list[str], rows: int = 4, cols: int = 4,
                streams: str = "native", log=None) -> dict:
    from accelkit.config.dybit import DyBitArrayConfig
    from accelkit.config.dybit_dyn import DyBitDynConfig
    from accelkit.golden.dybit_cycles import matmul_cycles
    from accelkit.sim.dybit_dyn import run_dybit_dyn

    from .minilm import embed

    say = log or (lambda s: None)
    cfg = DyBitDynConfig(rows=rows, cols=cols)
    int8 = DyBitArrayConfig(rows=rows, cols=cols, a_format="int8", b_format="int8")
    weights: dict = {}
    rows_out = []
    for i, sentence in enumerate(sentences):
        jobs = []

        def matmul(a_codes, a_fmt, b_codes, b_fmt, jobs=jobs):
            fa, fb = f"dybit{a_fmt.n}k{a_fmt.kmax}", f"dybit{b_fmt.n}k{b_fmt.kmax}"
            run = run_dybit_dyn(cfg, [(a_codes, fa, b_codes, fb)], streams=streams)
            m, k = a_codes.shape
            n = b_codes.shape[1]
            jobs.append({"m": m, "k": k, "n": n, "a_format": fa, "b_format": fb, "cycles": run.cycles,
                         "predicted": run.predicted, "int8_cycles": matmul_cycles(int8, m, k, n)})
            return run.c[0]

        ref = embed(tok, model, [sentence])
        t0 = time.perf_counter()
        with MixedPrecision(model, modes, weights, matmul=matmul):
            got = embed(tok, model, [sentence])
        cos = float((got * ref).sum())
        row = {"sentence": sentence, "cosine": cos, "cycles": sum(j["cycles"] for j in jobs),
               "predicted": sum(j["predicted"] for j in jobs), "int8_cycles": sum(j["int8_cycles"] for j in jobs),
               "jobs": len(jobs), "tokens": jobs[0]["m"], "seconds": round(time.perf_counter() - t0, 1)}
        rows_out.append(row)
        say(f"[{i + 1}/{len(sentences)}] {row['tokens']} tokens, {row['jobs']} matmuls on the RTL, bit-exact; "
            f"cosine {cos:.5f}; {row['cycles']:,} cycles (model {row['predicted']:,}; INT8 array "
            f"{row['int8_cycles']:,}); {row['seconds']} s")
    cos = [r["cosine"] for r in rows_out]
    return {"array": cfg.to_dict(),
            "modes": {k: list(v) for k, v in modes.items()}, "sentences": rows_out,
            "cosine": {"mean": sum(cos) / len(cos), "min": min(cos)},
            "cycles": sum(r["cycles"] for r in rows_out), "predicted": sum(r["predicted"] for r in rows_out),
            "int8_cycles": sum(r["int8_cycles"] for r in rows_out)}


def main(argv=None) -> int:
    import argparse

    from .minilm import SENTENCES, load_minilm

    p = argparse.ArgumentParser(prog="python -m accelkit.flows.minilm_rtl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", help="a minilm_mixed.json (its per-layer modes); default every layer 8 x 8")
    p.add_argument("--sentences", type=int, default=len(SENTENCES), help="the first N sentences (default all)")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("-o", "--out", default="minilm_rtl")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # small tensors: torch's threads only fight on a 2-core machine
    tok, model = load_minilm()
    if args.modes:
        modes = {k: tuple(v) for k, v in json.loads(Path(args.modes).read_text())["modes"].items()}
    else:
        modes = {name: MODES[0] for name, _ in encoder_linears(model)}
    res = rtl_forward(tok, model, modes, SENTENCES[:args.sentences], args.rows, args.cols,
                      log=lambda s: print(s, flush=True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "minilm_rtl.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"cosine mean {res['cosine']['mean']:.5f}, min {res['cosine']['min']:.5f} over {len(res['sentences'])} "
          f"sentences; array cycles {res['cycles']:,} (model {res['predicted']:,}), INT8 array {res['int8_cycles']:,} "
          f"({res['int8_cycles'] / res['cycles']:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
