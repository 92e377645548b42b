"""The DyBit MAC array's measurements: sweep points, PE area, utilisation, the cycle model, the report section."""

from __future__ import annotations

from pathlib import Path

import torch

from accelkit.config.dybit import DyBitArrayConfig
from accelkit.golden.dybit_cycles import matmul_cycles, utilisation
from accelkit.sim.dybit import run_dybit_array

from . import figures, progress
from .measure import FMAX_DEVICE, cached_study, md_table, measured_area
from .sweep import grid, run_sweep, sweep_to_files

SWEEP_AXES = {"rows": [1, 2, 4, 8], "cols": [1, 2, 4, 8]}
SWEEP_SHAPE = (64, 256, 64)  # the fixed matmul of the sweep and of the utilisation figures
MODEL_SHAPES = [(1, 1, 1), (3, 5, 7), (16, 3, 16), (17, 33, 9), (64, 64, 64), (100, 37, 23)]
PE_FORMATS = {  # name -> (A format, B format)
    "INT8 x INT8": ("int8", "int8"),
    "DyBit-8 x DyBit-8": ("dybit8k4", "dybit8k4"),
    "DyBit-4 x DyBit-8 (W4A8)": ("dybit8k4", "dybit4k3"),
    "DyBit-4 x DyBit-4": ("dybit4k3", "dybit4k3"),
}


def random_operands(cfg: DyBitArrayConfig, m: int, k: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 1 << cfg.a_bits, (m, k), generator=g),
            torch.randint(0, 1 << cfg.b_bits, (k, n), generator=g))


def measure_cycles(cfg: DyBitArrayConfig, m: int, k: int, n: int, seed: int = 0) -> dict:
    """RTL cycles of one random M x K x N matmul (checked bit-exact), with the model's figure and utilisation."""
    run = run_dybit_array(cfg, *random_operands(cfg, m, k, n, seed))
    return {"m": m, "k": k, "n": n, "cycles": run.cycles, "model_cycles": matmul_cycles(cfg, m, k, n),
            "utilisation": utilisation(cfg, m, k, n, run.cycles)}


def smoke(cfg: DyBitArrayConfig, seed: int = 1, waves: bool = False, gap: float = 0.0, stall: float = 0.0) -> dict:
    """`accelkit sim dybit-array`: one random matmul with ragged M, N, checked bit-exact against the golden model."""
    m, k, n = 2 * cfg.rows + 1, min(cfg.max_k, 37), 2 * cfg.cols + 3
    run = run_dybit_array(cfg, *random_operands(cfg, m, k, n, seed), gap=gap, stall=stall, seed=seed, waves=waves)
    out = {"check": "bit-exact against golden/dybit.py", "shape": f"{m} x {k} x {n}", "cycles": run.cycles,
           "model_cycles": run.predicted}
    if waves:
        out["waves"] = str(run.waves)
    return out


def measure_point(cfg: DyBitArrayConfig, shape=SWEEP_SHAPE, fmax: bool = True) -> dict:
    """One sweep point: the config, RTL cycles of the fixed matmul, ECP5 and Xilinx area, ECP5 Fmax."""
    row = {"rows": cfg.rows, "cols": cfg.cols, "a_format": cfg.a_format, "b_format": cfg.b_format}
    row.update(measure_cycles(cfg, *shape))
    row.update(measured_area(cfg, fmax=fmax))
    return row


def sweep(out: Path, base: DyBitArrayConfig | None = None, axes: dict | None = None, jobs: int = 2,
          on_done=None, **cluster) -> list[dict]:
    """`accelkit sweep dybit-array`: JSON, CSV and a plot of area against cycles for the fixed matmul (`cluster`:
    where the points run, see `run_sweep`)."""
    configs = grid(base or DyBitArrayConfig(), axes or SWEEP_AXES)
    m, k, n = SWEEP_SHAPE
    title = f"DyBit array ({configs[0].a_format} x {configs[0].b_format}), {m} x {k} x {n} matmul"
    return sweep_to_files(configs, measure_point, out, "dybit_sweep", title, lambda r: f"{r['rows']}x{r['cols']}",
                          jobs=jobs, on_done=on_done, **cluster)


PE_AREA_TARGETS = ("ecp5", "xilinx", "ecp5-nodsp")


def _pe_configs() -> list[DyBitArrayConfig]:
    return [DyBitArrayConfig(rows=s, cols=s, a_format=a, b_format=b) for a, b in PE_FORMATS.values() for s in (4, 8)]


def pe_area(jobs: int = 2, on_done=None) -> list[dict]:
    """Area of one PE per format pair: (area of 8 x 8 - area of 4 x 4) / 48, which cancels the edge logic
    shared by a row or column only approximately (8 more decoders) but all fixed logic exactly."""
    areas = run_sweep(_pe_configs(), _area_of, jobs=jobs, on_done=on_done)
    rows = []
    for i, name in enumerate(PE_FORMATS):
        small, big = areas[2 * i], areas[2 * i + 1]
        rows.append({"format": name, **{k: round((big[k] - small[k]) / 48, 1) for k in big}})
    return rows


def _area_of(cfg: DyBitArrayConfig) -> dict:
    return measured_area(cfg, targets=PE_AREA_TARGETS, fmax=False)


def area_points(full: bool = False) -> list[tuple[DyBitArrayConfig, dict]]:
    """Every `measured_area(cfg, **kw)` the report makes, so that `accelkit report` can start them early."""
    pe = [(c, {"targets": PE_AREA_TARGETS, "fmax": False}) for c in _pe_configs()] if full else []
    return [(DyBitArrayConfig(), {}), (_big_array(), {"fmax": full}), *pe]


def _big_array() -> DyBitArrayConfig:
    """The 8 x 8 array of the default formats, the report's second point of area against cycles (its place and
    route only with --full)."""
    return DyBitArrayConfig(rows=8, cols=8)


def report(out: Path, jobs: int = 2, on_done=None, full: bool = False) -> tuple[dict, str]:
    """The DyBit section of `accelkit report`: (JSON-able results, Markdown). full=True adds the area of one PE
    per format pair (eight syntheses) and runs the MiniLM accuracy study (tens of minutes of quantiser
    searches, cached by content; without full, a cached study is shown and a missing one is named)."""
    default = DyBitArrayConfig()
    res: dict = {"default_config": default.to_dict()}
    # RTL simulations first, while `accelkit report` synthesises area_points() in the background
    m, k, n = SWEEP_SHAPE
    res["utilisation"] = []
    for s in (4, 8):
        with progress.step(f"dybit-array: utilisation, {m} x {k} x {n} matmul on {s} x {s} (RTL under Verilator)"):
            res["utilisation"].append({"array": f"{s}x{s}",
                                       **measure_cycles(default.replace(rows=s, cols=s), m, k, n)})
    res["cycle_model"] = []
    for i, shape in enumerate(MODEL_SHAPES):
        for c in (default, default.replace(rows=8, cols=8)):
            with progress.step(f"dybit-array: cycle model, {' x '.join(map(str, shape))} matmul on "
                               f"{c.rows} x {c.cols} (RTL)"):
                res["cycle_model"].append({"array": f"{c.rows}x{c.cols}", **measure_cycles(c, *shape, seed=i)})
    res["default_area"] = measured_area(default)
    if on_done:
        on_done(default, res["default_area"])
    big = _big_array()
    res["array_area"] = {f"{default.rows}x{default.cols}": res["default_area"],
                         f"{big.rows}x{big.cols}": measured_area(big, fmax=full)}
    if on_done:
        on_done(big, res["array_area"][f"{big.rows}x{big.cols}"])
    if full:  # eight more syntheses, the 8 x 8 arrays among them
        with progress.step("dybit-array: area of one PE per format pair (eight syntheses)"):
            res["pe_area"] = pe_area(jobs=jobs, on_done=on_done)
    from .dybit_accuracy import minilm_study

    with progress.step("dybit-array: MiniLM accuracy study" + (" (cached by content)" if full else ", if cached")):
        res["minilm"] = cached_study("dybit-minilm", minilm_study, compute=full)
    with progress.step("dybit-array: figures"):
        res["figures"] = {"area": figures.dybit_area(res, out),
                          "sqnr": figures.dybit_sqnr(res["minilm"], out) if res.get("minilm") else None}
    return res, render(res)


def render(res: dict) -> str:
    d = res["default_config"]
    a = res["default_area"]
    md = [f"## DyBit MAC array\n\nDefault config: {d['rows']} x {d['cols']}, A {d['a_format']}, B {d['b_format']}, "
          f"K up to {d['max_k']}. ECP5: {a['ecp5_lut4']} LUT4, {a['ecp5_ff']} FF, {a['ecp5_ccu2']} CCU2, "
          f"{a['ecp5_mult18']} MULT18X18D, {a['ecp5_ebr']} EBR; Xilinx UltraScale+: {a['xilinx_lut']} LUT, "
          f"{a['xilinx_ff']} FF, {a['xilinx_dsp']} DSP48E2, {a['xilinx_bram']} RAMB18; ECP5 Fmax "
          f"{a['fmax_mhz']} MHz (LFE5U-{FMAX_DEVICE}, nextpnr, median of 3 seeds).\n"]
    md.append("### Area of one PE (from 8 x 8 minus 4 x 4 arrays, per PE)\n")
    if res.get("pe_area"):
        int8 = res["pe_area"][0]
        rows = []
        for r in res["pe_area"]:
            ratio = r["ecp5_nodsp_lut4"] / int8["ecp5_nodsp_lut4"] if int8["ecp5_nodsp_lut4"] else float("nan")
            rows.append([r["format"], r["ecp5_lut4"], r["ecp5_ff"], r["ecp5_ccu2"], r["ecp5_mult18"],
                         r["ecp5_nodsp_lut4"], f"{ratio:.2f}", r["xilinx_lut"], r["xilinx_ff"], r["xilinx_dsp"]])
        md.append(md_table(["A x B", "ECP5 LUT4", "FF", "CCU2", "MULT18", "ECP5 LUT4, no DSP", "vs INT8 (no DSP)",
                          "Xilinx LUT", "FF", "DSP48E2"], rows))
    else:
        md.append("Not in this report: `accelkit report --full` (eight more syntheses).\n")
    md.append("\n### MAC utilisation, 64 x 256 x 64 matmul (RTL, Verilator)\n")
    areas = res.get("array_area", {})
    rows = []
    for u in res["utilisation"]:
        area = areas.get(u["array"], {})
        fmax = area.get("fmax_mhz")
        rows.append([u["array"], u["cycles"], u["model_cycles"], f"{100 * u['utilisation']:.2f}%",
                     area.get("ecp5_lut4", "-"),
                     fmax or ("none" if area.get("fmax_error") else "--full" if area else "-"),
                     f"{u['cycles'] / fmax:.1f}" if fmax else "-"])
    md.append(md_table(["array", "cycles", "model", "utilisation", "ECP5 LUT4", "Fmax MHz", "us/matmul"], rows))
    figs = res.get("figures") or {}
    if figs.get("area"):
        md.append("\n" + figs["area"])
    exact = all(c["cycles"] == c["model_cycles"] for c in res["cycle_model"])
    md.append(f"\n### Cycle model against the RTL ({'exact on every shape' if exact else 'NOT exact'})\n")
    md.append(md_table(["array", "M x K x N", "RTL cycles", "model", "difference"],
                     [[c["array"], f"{c['m']} x {c['k']} x {c['n']}", c["cycles"], c["model_cycles"],
                       c["cycles"] - c["model_cycles"]] for c in res["cycle_model"]]))
    md.append("\n### Accuracy on all-MiniLM-L6-v2\n")
    if res.get("minilm"):
        from .dybit_accuracy import render_markdown

        md.append(render_markdown(res["minilm"]))
        if figs.get("sqnr"):
            md.append("\n" + figs["sqnr"])
    else:
        md.append("Not in this report: the study takes tens of minutes; `accelkit report --full` runs it once "
                  "(cached by content afterwards, and shown by every later report).\n")
    return "\n".join(md)


def render_sweep(rows: list[dict]) -> str:
    return md_table(["R x C", "cycles", "util", "ECP5 LUT4", "FF", "MULT18", "Xilinx LUT", "FF", "DSP", "Fmax MHz"],
                  [[f"{r['rows']}x{r['cols']}", r["cycles"], f"{100 * r['utilisation']:.1f}%", r["ecp5_lut4"],
                    r["ecp5_ff"], r["ecp5_mult18"], r["xilinx_lut"], r["xilinx_ff"], r["xilinx_dsp"],
                    r.get("fmax_mhz", "")] for r in rows])
