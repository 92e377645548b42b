"""The Hyft softmax unit's measurements: latency and throughput, area against the floating-point baseline,
the accuracy study, the lanes x segments sweep and the report section."""

from __future__ import annotations

from pathlib import Path

import torch

from accelkit.config.hyft import SoftmaxConfig
from accelkit.golden import hyft_cycles
from accelkit.golden.hyft_cycles import LATENCY_OVERHEAD
from accelkit.sim.hyft import run_hyft

from . import figures, progress
from .measure import cached_study, md_table, measured_area
from .sweep import grid, point_name, run_sweep, sweep_to_files

SWEEP_AXES = {"lanes": [1, 4, 16], "segments": [4, 8, 16]}
AREA_LANES = (1, 4, 16)  # accelkit report --full
AREA_LANES_DEFAULT = (1, 4)  # accelkit report
RATE_N = 256  # back-to-back vectors of this length give the sustained rate
RATE_VECTORS = 12
LATENCY_NS = (1, 16, 100, 256, 1024)


def _vectors(cfg: SoftmaxConfig, lengths, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, generator=g, dtype=torch.float64) * 4).to(cfg.torch_dtype) for n in lengths]


def smoke(cfg: SoftmaxConfig, seed: int = 1, waves: bool = False, gap: float = 0.0, stall: float = 0.0) -> dict:
    """`accelkit sim hyft`: vectors of several lengths (one with -inf, one with a repeated maximum), checked."""
    vs = _vectors(cfg, [1, 7, min(cfg.max_len, 100), min(cfg.max_len, 33)], seed)
    vs[2][5] = float("-inf")
    vs[3][:] = vs[3].max()
    run = run_hyft(cfg, vs, gap=gap, stall=stall, seed=seed, waves=waves)
    out = {"check": "bit-exact against golden/hyft.py" if cfg.arch == "hyft" else "float baseline vs float64",
           "lengths": [len(v) for v in vs], "latency": run.latency,
           "model_latency": [t.latency for t in run.predicted], "cycles": run.cycles,
           "model_cycles": run.predicted_cycles}
    if waves:
        out["waves"] = str(run.waves)
    return out


def timing(cfg: SoftmaxConfig) -> dict:
    """Latency per vector length and the sustained rate on back-to-back vectors, RTL against the model."""
    lat = []
    for n in LATENCY_NS:
        if n > cfg.max_len:
            continue
        with progress.step(f"{point_name(cfg)}: latency of one vector of {n} (RTL under Verilator)"):
            run = run_hyft(cfg, _vectors(cfg, [n], seed=n))
        lat.append({"n": n, "rtl": run.latency[0], "model": hyft_cycles.latency(cfg, n),
                    "bound": 3 * n / cfg.lanes + LATENCY_OVERHEAD})
    with progress.step(f"{point_name(cfg)}: sustained rate, {RATE_VECTORS} vectors of {RATE_N} back to back (RTL)"):
        run = run_hyft(cfg, _vectors(cfg, [RATE_N] * RATE_VECTORS, seed=7))
    beats = -(-RATE_N // cfg.lanes)
    last_out = [run.out_fires[(v + 1) * beats - 1] for v in range(RATE_VECTORS)]
    half = RATE_VECTORS // 2
    period = (last_out[-1] - last_out[half]) / (RATE_VECTORS - 1 - half)
    return {"latency": lat, "rate_n": RATE_N, "rate_rtl": RATE_N / period,
            "rate_model": hyft_cycles.sustained_rate(cfg, RATE_N, RATE_VECTORS),
            "batch_cycles_rtl": run.cycles, "batch_cycles_model": run.predicted_cycles}


def measure_point(cfg: SoftmaxConfig, fmax: bool = True) -> dict:
    t = timing(cfg)
    n256 = next(x for x in t["latency"] if x["n"] == 256)
    row = {"arch": cfg.arch, "fmt": cfg.fmt, "lanes": cfg.lanes, "segments": cfg.segments,
           "latency_256": n256["rtl"], "latency_256_model": n256["model"], "cycles": n256["rtl"],
           "rate": round(t["rate_rtl"], 3), "rate_model": round(t["rate_model"], 3)}
    row.update(measured_area(cfg, fmax=fmax))
    return row


def area_point(cfg: SoftmaxConfig, fmax: bool = True) -> dict:
    """Area and Fmax of one config, with the cycle model's latency and rate (exact against the RTL wherever
    both were run; the report does not verilate the 16-lane units, the slowest to build)."""
    row = {"arch": cfg.arch, "fmt": cfg.fmt, "lanes": cfg.lanes, "segments": cfg.segments,
           "latency_256": hyft_cycles.latency(cfg, 256),
           "rate": round(hyft_cycles.sustained_rate(cfg, RATE_N, RATE_VECTORS), 3)}
    row.update(measured_area(cfg, fmax=fmax))
    return row


def area_point_fast(cfg: SoftmaxConfig) -> dict:
    """`area_point` for the default report: the float baseline without Fmax (a place and route of a few minutes
    per config on 2 cores; `--full` measures it)."""
    return area_point(cfg, fmax=cfg.arch != "float")


def sweep(out: Path, base: SoftmaxConfig | None = None, axes: dict | None = None, jobs: int = 2,
          on_done=None, **cluster) -> list[dict]:
    """`accelkit sweep hyft`: latency, throughput, area and Fmax over lanes x segments (`cluster`: where the
    points run, see `run_sweep`)."""
    configs = grid(base or SoftmaxConfig(), axes or SWEEP_AXES)
    return sweep_to_files(configs, measure_point, out, "hyft_sweep",
                          f"Hyft softmax ({configs[0].fmt}): area against latency, N=256",
                          lambda r: f"L{r['lanes']} S{r['segments']}", jobs=jobs, on_done=on_done, **cluster)


def render_sweep(rows: list[dict]) -> str:
    return md_table(["arch", "lanes", "S", "latency N=256", "model", "elements/cycle", "ECP5 LUT4", "FF", "MULT18",
                   "EBR", "Xilinx LUT", "FF", "DSP", "RAMB18", "Fmax MHz"],
                  [[r["arch"], r["lanes"], r["segments"], r["latency_256"], r["latency_256_model"], r["rate"],
                    r["ecp5_lut4"], r["ecp5_ff"], r["ecp5_mult18"], r["ecp5_ebr"], r["xilinx_lut"], r["xilinx_ff"],
                    r["xilinx_dsp"], r["xilinx_bram"], r.get("fmax_mhz", "")] for r in rows])


def area_points(full: bool = False) -> list[tuple[SoftmaxConfig, dict]]:
    """Every `measured_area(cfg, **kw)` the report makes, so that `accelkit report` can start them early."""
    return [(SoftmaxConfig(lanes=n, arch=a), {"fmax": full or a != "float"})
            for n in (AREA_LANES if full else AREA_LANES_DEFAULT) for a in ("hyft", "float")]


def report(out: Path, jobs: int = 2, on_done=None, full: bool = False) -> tuple[dict, str]:
    """The Hyft section of `accelkit report`. full=True adds the 16-lane area and Fmax (the 16-lane units'
    synthesis and place and route are the longest) and runs the accuracy study (cached by content; a cached study is
    shown without it)."""
    default = SoftmaxConfig()
    res: dict = {"default_config": default.to_dict(), "timing": timing(default)}
    lanes = AREA_LANES if full else AREA_LANES_DEFAULT
    configs = [SoftmaxConfig(lanes=n, arch=a) for n in lanes for a in ("hyft", "float")]
    with progress.step(f"hyft: area and Fmax of {len(configs)} configs (lanes {', '.join(map(str, lanes))}, "
                       "hyft and float)"):
        res["area"] = run_sweep(configs, area_point if full else area_point_fast, jobs=jobs, on_done=on_done)
    from .hyft_accuracy import accuracy_study

    with progress.step("hyft: accuracy study" + (" (cached by content)" if full else ", if cached")):
        res["accuracy"] = cached_study("hyft-accuracy", accuracy_study, compute=full)
    with progress.step("hyft: figures"):
        res["figures"] = {"area": figures.hyft_area(res["area"], out),
                          "error": figures.hyft_error_segments(res["accuracy"], out) if res.get("accuracy") else None}
    return res, render(res)


def render(res: dict) -> str:
    d, t = res["default_config"], res["timing"]
    md = [f"## Hyft softmax unit\n\nDefault config: {d['fmt']}, {d['lanes']} lanes, segments {d['segments']}, "
          f"max_len {d['max_len']}.\n", "### Latency and throughput (RTL under Verilator against the cycle model)\n"]
    md.append(md_table(["N", "RTL latency", "model", f"bound 3N/L + {LATENCY_OVERHEAD}"],
                     [[x["n"], x["rtl"], x["model"], f"{x['bound']:.0f}"] for x in t["latency"]]))
    md.append(f"\nSustained rate, back-to-back vectors of N = {t['rate_n']}: {t['rate_rtl']:.3f} elements/cycle "
              f"measured, {t['rate_model']:.3f} modelled (target 0.9 L = {0.9 * d['lanes']:.1f}). Whole batch: "
              f"{t['batch_cycles_rtl']} cycles measured, {t['batch_cycles_model']} modelled.\n")
    md.append("### Area and Fmax against the conventional floating-point softmax\n")
    rows = []
    by = {(r["lanes"], r["arch"]): r for r in res["area"]}
    for n in sorted({r["lanes"] for r in res["area"]}):
        h, f = by[(n, "hyft")], by[(n, "float")]
        for r in (h, f):
            rows.append([n, r["arch"], r["ecp5_lut4"], r["ecp5_ff"], r["ecp5_mult18"], r["ecp5_ebr"],
                         r["xilinx_lut"], r["xilinx_ff"], r["xilinx_dsp"], r["xilinx_bram"],
                         r.get("fmax_mhz", "--full"), r["latency_256"]])
        rows.append([n, "hyft / float", *[f"{h[k] / f[k]:.2f}" if f.get(k) and h.get(k) is not None else "-" for k in (
            "ecp5_lut4", "ecp5_ff", "ecp5_mult18", "ecp5_ebr", "xilinx_lut", "xilinx_ff", "xilinx_dsp",
            "xilinx_bram", "fmax_mhz", "latency_256")]])
    md.append(md_table(["lanes", "arch", "ECP5 LUT4", "FF", "MULT18", "EBR", "Xilinx LUT", "FF", "DSP", "RAMB18",
                      "Fmax MHz", "latency N=256 (model)"], rows))
    for r in res["area"]:
        if r.get("fmax_error"):
            md.append(f"\n{r['arch']} with {r['lanes']} lanes has no Fmax: {r['fmax_error']}\n")
    if AREA_LANES[-1] not in {r["lanes"] for r in res["area"]}:
        md.append(f"\n{AREA_LANES[-1]} lanes, and the float baseline's Fmax: `accelkit report --full` (the "
                  "16-lane units' synthesis and place and route are the longest).\n")
    figs = res.get("figures") or {}
    if figs.get("area"):
        md.append("\n" + figs["area"])
    md.append("\n### Accuracy against float64 (golden model; the RTL is bit-exact with it)\n")
    if res.get("accuracy"):
        from .hyft_accuracy import render_table

        # its |sum-1| columns' pipes escaped, or no Markdown reader sees a table (fixed here: an edit to
        # hyft_accuracy.py would invalidate every cached study)
        md.append(render_table(res["accuracy"]).replace(" |sum-1| ", " \\|sum-1\\| "))
        if figs.get("error"):
            md.append("\n" + figs["error"])
    else:
        md.append("Not in this report: `accelkit report --full` runs the study once (cached by content "
                  "afterwards, and shown by every later report).\n")
    return "\n".join(md)
