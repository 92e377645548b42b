"""The sparse convolution engine's measurements: the real-frame figures, the PI x PO sweep, the report section."""

from __future__ import annotations

from pathlib import Path

from accelkit.config.sparse_conv import SparseConvConfig
from accelkit.golden.sparse_conv import load_frames
from accelkit.sim.sparse_conv import engine_figures, random_frame, random_layer, run_sparse_conv

from . import figures, progress
from .measure import FMAX_DEVICE, md_table, measured_area
from .sweep import grid, sweep_to_files

SWEEP_AXES = {"pi": [2, 4, 8], "po": [2, 4, 8]}
SWEEP_FRAME = "dvsgesture_128x128"  # the real frame whose cycles the sweep reports (fits the default 128 x 128)
# large enough for every real frame; two prefetch rows (8 line-buffer slots): at PI = PO = 8 a sparse frame's rows
# are computed faster than one prefetch row lets ingest run ahead (asl_dvs: 87% of the MACs busy with 1, 97% with 2)
REAL_FRAME_CONFIG = SparseConvConfig(max_height=180, max_width=240, prefetch_rows=2)


def us_per_frame(cycles: int, fmax_mhz: float) -> float:
    """Time per frame at the measured Fmax: cycles / MHz = microseconds."""
    return round(cycles / fmax_mhz, 2)


def smoke(cfg: SparseConvConfig, seed: int = 1, waves: bool = False, gap: float = 0.0, stall: float = 0.0) -> dict:
    """`accelkit sim sparse-conv`: two random frames of 20% and 60% density through a random layer, checked."""
    lo, hi = cfg.input_range
    h, w = min(cfg.max_height, 16), min(cfg.max_width, 20)
    frames = [random_frame(h, w, d, cfg.cin, lo, hi, seed + i) for i, d in enumerate((0.2, 0.6))]
    run = run_sparse_conv(cfg, random_layer(cfg, seed), frames, gap=gap, stall=stall, seed=seed, waves=waves)
    out = {"check": "bit-exact against golden/sparse_conv.py", "frames": f"2 of {h} x {w}",
           "sites": [f.n_active for f in frames], "cycles": run.cycles, "model_cycles": run.predicted}
    if waves:
        out["waves"] = [str(p) for p in run.waves]
    return out


def measure_point(cfg: SparseConvConfig, fmax: bool = True) -> dict:
    """One sweep point: RTL cycles on the sweep's real frame, utilisation, area with memories, Fmax."""
    frame = load_frames()[SWEEP_FRAME]
    fig = engine_figures(cfg, frame)
    row = {"pi": cfg.pi, "po": cfg.po, "kind": cfg.kind, "frame": SWEEP_FRAME, "cycles": fig["rtl_cycles"],
           "model_cycles": fig["model_cycles"], "utilisation": fig["utilisation"],
           "line_buffer_bits": cfg.buffer_words * cfg.buffer_word_bits,
           "weight_bits": cfg.weight_words * cfg.weight_word_bits}
    row.update(measured_area(cfg, fmax=fmax))
    if row.get("fmax_mhz"):
        row["us_per_frame"] = us_per_frame(row["cycles"], row["fmax_mhz"])
    return row


def sweep(out: Path, base: SparseConvConfig | None = None, axes: dict | None = None, jobs: int = 2,
          on_done=None, **cluster) -> list[dict]:
    """`accelkit sweep sparse-conv`: area (with memories), Fmax and cycles over PI x PO (`cluster`: where the
    points run, see `run_sweep`)."""
    configs = grid(base or SparseConvConfig(), axes or SWEEP_AXES)
    return sweep_to_files(configs, measure_point, out, "sparse_conv_sweep",
                          f"sparse-conv {configs[0].kind} on {SWEEP_FRAME}", lambda r: f"{r['pi']}/{r['po']}",
                          jobs=jobs, on_done=on_done, **cluster)


def render_sweep(rows: list[dict]) -> str:
    return md_table(["PI/PO", "cycles", "util", "ECP5 LUT4", "FF", "MULT18", "EBR", "Xilinx LUT", "FF", "DSP",
                   "RAMB18", "line buffer bits", "Fmax MHz", "us/frame"],
                  [[f"{r['pi']}/{r['po']}", r["cycles"], f"{100 * r['utilisation']:.1f}%", r["ecp5_lut4"],
                    r["ecp5_ff"], r["ecp5_mult18"], r["ecp5_ebr"], r["xilinx_lut"], r["xilinx_ff"],
                    r["xilinx_dsp"], r["xilinx_bram"], r["line_buffer_bits"], r.get("fmax_mhz", ""),
                    r.get("us_per_frame", "")]
                   for r in rows])


def real_frames(parallelism=(4, 8)) -> list[dict]:
    """Acceptance figures on the five real frames (subm3x3, Cin = Cout = 16) at PI = PO = p."""
    rows = []
    for name, frame in load_frames().items():
        for p in parallelism:
            cfg = REAL_FRAME_CONFIG.replace(pi=p, po=p)
            with progress.step(f"sparse-conv: real frame {name} ({frame.n_active} sites) at PI = PO = {p} "
                               "(RTL under Verilator)"):
                # whole frames are long runs: the streams are driven inside the simulator (docs/streams.md)
                rows.append({"frame": name, **engine_figures(cfg, frame, dense_rtl=name.startswith("nmnist"),
                                                             streams="hdl")})
    return rows


def area_points(full: bool = False) -> list[tuple[SparseConvConfig, dict]]:
    """Every `measured_area(cfg, **kw)` the report makes, so that `accelkit report` can start them early."""
    return [(SparseConvConfig(), {})] + [(REAL_FRAME_CONFIG.replace(pi=p, po=p), {}) for p in (4, 8)]


def report(out: Path, jobs: int = 2, on_done=None, full: bool = False) -> tuple[dict, str]:
    """The sparse-conv section of `accelkit report` (everything fits the default run; `full` adds nothing)."""
    default = SparseConvConfig()
    res: dict = {"default_config": default.to_dict()}
    res["real_frames"] = real_frames()  # RTL first, while `accelkit report` synthesises area_points()
    res["default_area"] = measured_area(default)
    if on_done:
        on_done(default, res["default_area"])
    res["real_frame_area"] = []
    for p in sorted({r["pi"] for r in res["real_frames"]}):
        cfg = REAL_FRAME_CONFIG.replace(pi=p, po=p)
        area = measured_area(cfg)
        res["real_frame_area"].append({"pi": p, "po": p, **area})
        if on_done:
            on_done(cfg, area)
        for r in res["real_frames"]:
            if r["pi"] == p and area.get("fmax_mhz"):
                r["fmax_mhz"] = area["fmax_mhz"]
                r["us_per_frame"] = us_per_frame(r["rtl_cycles"], area["fmax_mhz"])
    with progress.step("sparse-conv: figures"):
        res["figures"] = {"density": figures.sparse_density(res["real_frames"], out),
                          "area": figures.sparse_area(res["real_frames"], res["real_frame_area"], out)}
    return res, render(res)


def render(res: dict) -> str:
    d, a = res["default_config"], res["default_area"]
    md = [f"## Sparse convolution engine\n\nDefault config: {d['kind']}, up to {d['max_height']} x {d['max_width']}, "
          f"Cin {d['cin']}, Cout {d['cout']}, PI {d['pi']}, PO {d['po']}. ECP5: {a['ecp5_lut4']} LUT4, "
          f"{a['ecp5_ff']} FF, {a['ecp5_mult18']} MULT18X18D, {a['ecp5_ebr']} EBR; Xilinx: {a['xilinx_lut']} LUT, "
          f"{a['xilinx_ff']} FF, {a['xilinx_dsp']} DSP48E2, {a['xilinx_bram']} RAMB18; ECP5 Fmax {a['fmax_mhz']} "
          f"MHz (LFE5U-{FMAX_DEVICE}).\n",
          "### Real frames (subm3x3, Cin = Cout = 16, RTL under Verilator)\n",
          "Dense: the same engine on the fully active frame of the same size (RTL-measured for nmnist, the cycle "
          "model elsewhere: millions of cycles). Utilisation: useful MACs / (PI x PO x cycles). Model: the "
          "dataflow cycle model golden/sparse_rtl_cycles.py (docs/cycle-models.md); model error: (model - RTL) / "
          "RTL. Fmax: the engine at 180 x 240 (two prefetch rows) and that PI/PO on LFE5U-85F-6, median of 3 nextpnr "
          "seeds; us/frame: RTL cycles / Fmax.\n"]
    rows = []
    for r in res["real_frames"]:
        dense = r.get("dense_cycles_rtl", r["dense_cycles_model"])
        diff = 100 * (r["model_cycles"] - r["rtl_cycles"]) / r["rtl_cycles"]
        rows.append([r["frame"], f"{r['pi']}/{r['po']}", r["n_active"], f"{100 * r['density']:.2f}%",
                     r["rtl_cycles"], r["model_cycles"], f"{diff:+.2f}%", dense, f"{r['speedup']:.1f}",
                     f"{100 * r['utilisation']:.1f}%", r.get("fmax_mhz", ""), r.get("us_per_frame", "")])
    md.append(md_table(["frame", "PI/PO", "sites", "density", "RTL cycles", "model", "model error", "dense cycles",
                      "speedup", "utilisation", "Fmax MHz", "us/frame"], rows))
    for key in ("density", "area"):
        if (res.get("figures") or {}).get(key):
            md.append("\n" + res["figures"][key])
    return "\n".join(md)
