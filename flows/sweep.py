"""Parameter sweeps: every point of a grid of configs measured, then JSON, CSV and a plot.

A sweep is a base config, axes (parameter -> values) and a measure function
returning a flat dict of figures for one config. Points run in parallel worker
processes; each point's builds live in their own content-addressed directories,
so parallel points (and parallel sweeps) never share or clobber a build, and a
re-run only measures what changed.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from accelkit.config import BlockConfig


def grid(base: BlockConfig, axes: dict[str, list]) -> list[BlockConfig]:
    """Every combination of the axes' values applied to `base` (each one validated by its config)."""
    names = list(axes)
    return [base.replace(**dict(zip(names, combo, strict=True))) for combo in itertools.product(*axes.values())]


def run_sweep(configs: list[BlockConfig], measure: Callable[[BlockConfig], dict], jobs: int = 2,
              on_done: Callable[[BlockConfig, dict], None] | None = None) -> list[dict]:
    """Measure every config (in `jobs` worker processes); rows in the order of `configs`."""
    rows: list[dict | None] = [None] * len(configs)
    if jobs <= 1:
        for i, cfg in enumerate(configs):
            rows[i] = measure(cfg)
            if on_done:
                on_done(cfg, rows[i])
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(measure, cfg): i for i, cfg in enumerate(configs)}
            for fut in as_completed(futures):
                i = futures[fut]
                rows[i] = fut.result()
                if on_done:
                    on_done(configs[i], rows[i])
    return rows


def write_tables(rows: list[dict], out: Path, stem: str) -> tuple[Path, Path]:
    """`stem`.json (the rows) and `stem`.csv (the same, one line per point)."""
    out.mkdir(parents=True, exist_ok=True)
    jpath, cpath = out / f"{stem}.json", out / f"{stem}.csv"
    jpath.write_text(json.dumps(rows, indent=2) + "\n")
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(cpath, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return jpath, cpath


def plot_area_cycles(rows: list[dict], out: Path, title: str, label: Callable[[dict], str],
                     areas: list[tuple[str, str]], cycles_key: str = "cycles") -> Path:
    """One panel per (area key, axis label): area against cycles, each point labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, len(areas), figsize=(6 * len(areas), 4.5), squeeze=False)
    for ax, (key, name) in zip(axs[0], areas, strict=True):
        xs = [r[cycles_key] for r in rows]
        ys = [r[key] for r in rows]
        ax.scatter(xs, ys)
        for r, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(label(r), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"cycles ({cycles_key})")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def sweep_to_files(configs: list[BlockConfig], measure: Callable[[BlockConfig], dict], out: Path, stem: str,
                   title: str, label: Callable[[dict], str], jobs: int = 2,
                   on_done: Callable[[BlockConfig, dict], None] | None = None) -> list[dict]:
    """Measure every config, then write `stem`.json, `stem`.csv and `stem`.png (ECP5 and Xilinx LUTs against
    the rows' `cycles`)."""
    rows = run_sweep(configs, measure, jobs=jobs, on_done=on_done)
    write_tables(rows, out, stem)
    plot_area_cycles(rows, out / f"{stem}.png", title, label,
                     [("ecp5_lut4", "ECP5 LUT4"), ("xilinx_lut", "Xilinx LUT")])
    return rows
