"""Area and Fmax of the Hyft backward components (gen/hyft_backward.py), each synthesised alone.

    python -m accelkit.flows.hyft_backward_synth OUTDIR [--fmt bf16] [--lanes 4] [--parts decode,product,...]
        [--seeds 1,2,3]

Each component's ECP5 Verilog (MULT18X18D with their own registers) goes inside flows/synth.py's
`wrap_in_registers`, through `synth_ecp5`, then nextpnr-ecp5 on LFE5U-85F speed 6 (CABGA381) once per seed. The
figure is the median of the seeds (the lower median, as `synth_config` takes it), with the median seed's
critical path. Results are written to OUTDIR/<part>/result.json and printed as a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from amaranth.back import verilog

from accelkit.config.hyft import SoftmaxConfig
from accelkit.flows.synth import (
    DEFAULT_DEVICE,
    WRAP_TOP,
    fmax_ecp5,
    netlist_json,
    synth,
    wrap_in_registers,
)
from accelkit.sim.build import TOP


def _parts():
    from accelkit.gen import hyft_backward as hb

    parts = {"decode": hb.BackwardDecode, "product": hb.BackwardProduct, "finalise": hb.BackwardFinalise,
             "output": hb.BackwardOutput}
    if hasattr(hb, "BackwardUnit"):
        parts["unit"] = hb.BackwardUnit
    return parts


def measure(part: str, cfg: SoftmaxConfig, outdir: Path, seeds: tuple[int, ...] = (1, 2, 3)) -> dict:
    """Area (alone and wrapped) and per-seed Fmax of one component; cached in outdir/result.json by config."""
    outdir.mkdir(parents=True, exist_ok=True)
    key = {"part": part, "config": cfg.to_dict(), "seeds": list(seeds)}
    res_file = outdir / "result.json"
    dut = _parts()[part](cfg)
    text = verilog.convert(dut, name=TOP, emit_src=False, platform="ecp5")
    src = outdir / "design.v"
    if res_file.exists() and src.exists() and src.read_text() == text:
        cached = json.loads(res_file.read_text())
        if cached.get("key") == key:
            return cached
    src.write_text(text)
    area = synth(src, "ecp5", outdir / "area")
    wrapped = outdir / "fmax" / f"{WRAP_TOP}.v"
    wrapped.parent.mkdir(parents=True, exist_ok=True)
    wrapped.write_text(wrap_in_registers(text))
    synth(wrapped, "ecp5", wrapped.parent, top=WRAP_TOP)
    runs = {s: fmax_ecp5(netlist_json(wrapped.parent), wrapped.parent, device=DEFAULT_DEVICE, seed=s)
            for s in seeds}
    ranked = sorted(seeds, key=lambda s: (runs[s]["fmax_mhz"], s))
    mid = runs[ranked[(len(ranked) - 1) // 2]]
    res = {"key": key, "area": {k: v for k, v in area.items() if k != "cells"},
           "seeds": {s: runs[s]["fmax_mhz"] for s in seeds}, "fmax_mhz": mid["fmax_mhz"],
           "median_seed": mid["seed"], "critical_path": mid["critical_path"],
           "latency": getattr(dut, "latency", None), "cycles": getattr(dut, "cycles", None)}
    res_file.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--fmt", default="bf16")
    ap.add_argument("--lanes", type=int, default=4)
    ap.add_argument("--parts", default="decode,product,finalise,output")
    ap.add_argument("--seeds", default="1,2,3")
    a = ap.parse_args(argv)
    cfg = SoftmaxConfig(fmt=a.fmt, lanes=a.lanes)
    seeds = tuple(int(s) for s in a.seeds.split(","))
    for part in a.parts.split(","):
        r = measure(part, cfg, a.outdir / f"{a.fmt}-L{a.lanes}" / part, seeds)
        cp = r["critical_path"]
        print(f"{part}: {r['area']} median {r['fmax_mhz']} MHz seeds {r['seeds']} "
              f"(median {statistics.median(r['seeds'].values()):.2f}); critical path {json.dumps(cp)}", flush=True)


if __name__ == "__main__":
    main()
