"""The report's pictures and its self-contained HTML.

One function per picture: it takes the rows a report section already computed, draws a PNG into the report
folder with matplotlib and returns the Markdown that shows it (the image link and a one-line caption).
Area is each ECP5 resource on its own (a row of panels each for LUT4, MULT18X18D and DP16KD, no weighted sum: a
multiplier or a block RAM is worth no fixed number of LUT4s), so that a config that saves LUT4s with multipliers
shows it; the Pareto points are those no other point beats in cycles (or time) and every resource at once, the
same points ringed in every row. Time per item is cycles / measured ECP5 Fmax (cycles / MHz = microseconds),
drawn only for points whose Fmax was measured: the others are named in the caption, never estimated.

`report_html` renders report.md (markdown-it-py, tables on) with every PNG embedded as a base64 data URI, so
report.html is one file that opens anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from pathlib import Path

from accelkit.sim.build import atomic_write

# The ECP5 resources the area pictures show, one row of panels each: (key of a measured_area row, axis label).
RESOURCES = (("ecp5_lut4", "ECP5 LUT4"), ("ecp5_mult18", "MULT18X18D"), ("ecp5_ebr", "DP16KD (EBR)"))
PARETO_NOTE = ("Pareto points (no other point has at most their cycles, or time, and at most their LUT4, MULT18X18D "
               "and DP16KD, and less of one) ringed in black, the same in every row")


# ---- pure helpers ---------------------------------------------------------------------------------------------

def pareto_front(points: Sequence[tuple[float, ...]]) -> list[bool]:
    """For each point (cost, area, ... : any number of figures, all the lower the better): True when no other
    point is at most as large in every figure and smaller in one (for (cycles, LUT4): the least area for its
    cycles). Equal points are all on the front."""
    def beats(c: tuple, p: tuple) -> bool:
        return all(a <= b for a, b in zip(c, p, strict=True)) and any(a < b for a, b in zip(c, p, strict=True))

    return [not any(beats(tuple(c), tuple(p)) for c in points) for p in points]


def time_per_item_us(cycles: float, fmax_mhz: float | None) -> float | None:
    """Microseconds per item at the measured Fmax; None without one (never an estimate)."""
    return cycles / fmax_mhz if fmax_mhz else None


def _figure(ncols: int, width: float = 6.0, height: float = 4.5, nrows: int = 1):
    """A figure of `nrows` x `ncols` panels: the row of axes when nrows is 1, else the grid (rows of axes, the
    panels of a column sharing their x axis)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend to choose

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axs = fig.subplots(nrows, ncols, squeeze=False, sharex="col" if nrows > 1 else False)
    return fig, axs[0] if nrows == 1 else axs


def _log_axis(axis) -> None:
    """A log axis ticked at 1, 2, 5 x 10^k and labelled in plain numbers (10^k labels hide the values)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _area_scale(ax, areas: list[float]) -> None:
    """Log area when the areas span a factor of 3 or more; linear from zero when they are close, so that a
    difference of a few percent looks like one, or when one is zero (no log axis holds it)."""
    if areas and min(areas) > 0 and max(areas) >= 3 * min(areas):
        ax.set_yscale("log")
        _log_axis(ax.yaxis)
    elif areas:
        ax.set_ylim(0, 1.15 * max(areas))


def _save(fig, out: Path, name: str, alt: str, caption: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / name, buf.getvalue())
    return f"![{alt}]({name})\n\n*Figure: {caption}*\n"


# ---- area against cycles and time --------------------------------------------------------------------------

def area_figure(points: list[dict], out: Path, name: str, title: str, cycles_what: str, item: str,
                pareto_within: str | None = None) -> str:
    """Area against cycles (left column) and against time per `item` at the measured Fmax (right column), one
    row per ECP5 resource (`RESOURCES`: LUT4, MULT18X18D, DP16KD; a resource no point uses is left out and
    named in the caption).

    `points`: {label, series, cycles, area (a measured_area row: ecp5_lut4, ecp5_mult18, ecp5_ebr), fmax_mhz
    (None or absent: left out of the right column)}. A point is Pareto when no other point beats it in cycles
    (or time) and every resource at once (`pareto_front`), ringed in every row. Without `pareto_within`, one front
    over all points (the configs compete with each other), each point named beside it. With it (the series'
    noun, such as "frame"), one front per series (a series is a workload: configs compete on the same workload
    only), the configs told apart by marker shape and named in the legend."""
    used = [(k, lab) for k, lab in RESOURCES if any(p["area"].get(k) for p in points)] or [RESOURCES[0]]
    unused = [lab for k, lab in RESOURCES if (k, lab) not in used]
    fig, axs = _figure(2, height=3.3 if len(used) > 1 else 4.5, nrows=len(used))
    axs = axs if len(used) > 1 else [axs]  # rows of (cycles, time) panels
    series = list(dict.fromkeys(p["series"] for p in points))
    colours = {s: f"C{i}" for i, s in enumerate(series)}
    labels = list(dict.fromkeys(p["label"] for p in points))
    shapes = {lab: "os^Dvp*"[i % 7] if pareto_within else "o" for i, lab in enumerate(labels)}
    timed = [p for p in points if time_per_item_us(p["cycles"], p.get("fmax_mhz")) is not None]
    timed_ids = {id(p) for p in timed}
    missing = list(dict.fromkeys(p["label"] for p in points if id(p) not in timed_ids))

    def area(p: dict, key: str) -> float:
        return p["area"].get(key) or 0

    for col, pts, cost, xlabel in (
            (0, points, lambda p: p["cycles"], f"cycles ({cycles_what})"),
            (1, timed, lambda p: time_per_item_us(p["cycles"], p["fmax_mhz"]),
             f"µs per {item} at the measured ECP5 Fmax")):
        groups = [[p for p in pts if p["series"] == s] for s in series] if pareto_within else [pts]
        front = {id(p): on for g in groups for p, on in zip(
            g, pareto_front([(cost(p), *(area(p, k) for k, _ in RESOURCES)) for p in g]), strict=True)}
        rank = {id(p): i for i, p in enumerate(sorted(pts, key=cost))}  # names above and below in turn: neighbours
        for row, (key, ylabel) in enumerate(used):                       # with equal areas do not overwrite
            ax = axs[row][col]
            for p in pts:
                ax.scatter([cost(p)], [area(p, key)], color=colours[p["series"]], marker=shapes[p["label"]], s=45,
                           zorder=3)
                if front[id(p)]:
                    ax.scatter([cost(p)], [area(p, key)], facecolors="none", edgecolors="black", s=170,
                               linewidths=1.6, zorder=4)
                if not pareto_within:
                    ax.annotate(p["label"], (cost(p), area(p, key)), textcoords="offset points", fontsize=7,
                                xytext=(9, 4) if rank[id(p)] % 2 == 0 else (9, -11))
            for s in series if pareto_within else []:
                mine = sorted((cost(p), area(p, key)) for p in pts if p["series"] == s)
                if len(mine) > 1:
                    ax.plot(*zip(*mine, strict=True), color=colours[s], alpha=0.4, zorder=2)
            ax.set_xscale("log")
            _log_axis(ax.xaxis)
            _area_scale(ax, [area(p, key) for p in points])
            if row == len(used) - 1:
                ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ax.margins(0.2)
    if missing:  # said on the picture too, for whoever sees it without the caption
        axs[0][1].text(0.02, 0.02, f"no measured Fmax, not shown: {', '.join(missing)}", transform=axs[0][1].transAxes,
                       fontsize=8, color="0.35")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", color=colours[s], label=s) for s in series]
    if pareto_within:
        handles += [Line2D([], [], ls="", marker=shapes[lab], color="0.4", label=lab) for lab in labels]
    handles.append(Line2D([], [], ls="", marker="o", ms=12, mfc="none", mec="black", mew=1.6, label="Pareto"))
    axs[0][0].legend(handles=handles, fontsize=7, loc="best")
    fig.suptitle(title)
    caption = (f"{', '.join(lab for _, lab in used)} against cycles ({cycles_what}; left) and against µs per {item} "
               f"at each point's measured ECP5 Fmax (right), a row per resource; {PARETO_NOTE}"
               f"{f', within each {pareto_within}' if pareto_within else ''}.")
    if unused:
        caption += f" No {' or '.join(unused)} in any of them."
    if missing:
        caption += f" No measured Fmax, so not in the right column: {', '.join(missing)}."
    return _save(fig, out, name, title, caption)


def dybit_area(res: dict, out: Path) -> str:
    """The DyBit section's arrays (default formats): area against the cycles of its fixed matmul."""
    m, k, n = (res["utilisation"][0][x] for x in "mkn")
    points = [{"label": u["array"], "series": f"{res['default_config']['a_format']} x "
               f"{res['default_config']['b_format']}", "cycles": u["cycles"],
               "area": res["array_area"][u["array"]], "fmax_mhz": res["array_area"][u["array"]].get("fmax_mhz")}
              for u in res["utilisation"] if u["array"] in res.get("array_area", {})]
    return area_figure(points, out, "dybit_area.png", f"DyBit MAC array, {m} x {k} x {n} matmul",
                       f"a {m} x {k} x {n} matmul, RTL", "matmul")


def hyft_area(rows: list[dict], out: Path) -> str:
    """The Hyft section's area rows (hyft and float baseline per lane count): area against the latency of one
    vector of 256."""
    points = [{"label": f"{r['arch']} L{r['lanes']}", "series": r["arch"], "cycles": r["latency_256"], "area": r,
               "fmax_mhz": r.get("fmax_mhz")} for r in rows]
    return area_figure(points, out, "hyft_area.png", "Hyft softmax against the float baseline, N = 256",
                       "latency of one vector of N = 256, cycle model", "vector of 256")


def sparse_area(frames: list[dict], areas: list[dict], out: Path) -> str:
    """The sparse section's engines (PI = PO = p at 180 x 240) on each real frame: one series per frame,
    Pareto within each frame."""
    by_p = {(a["pi"], a["po"]): a for a in areas}
    points = [{"label": f"{r['pi']}/{r['po']}", "series": r["frame"], "cycles": r["rtl_cycles"],
               "area": by_p[(r["pi"], r["po"])], "fmax_mhz": by_p[(r["pi"], r["po"])].get("fmax_mhz")}
              for r in frames if (r["pi"], r["po"]) in by_p]
    return area_figure(points, out, "sparse_area.png", "Sparse convolution engine (subm3x3, Cin = Cout = 16) by PI/PO, "
                       "on each real frame", "one real frame, RTL", "frame", pareto_within="frame")


# ---- the sparse engine against frame density -----------------------------------------------------------------

def sparse_density(frames: list[dict], out: Path) -> str:
    """Cycles per frame (left) and per pixel (right) against the frame's density: the sparse engine (filled)
    beside the same engine on the fully active frame (hollow), per PI/PO."""
    fig, (ax_f, ax_p) = _figure(2)
    pars = sorted({(r["pi"], r["po"]) for r in frames})
    for i, (pi, po) in enumerate(pars):
        rows = sorted((r for r in frames if (r["pi"], r["po"]) == (pi, po)), key=lambda r: r["density"])
        c = f"C{i}"
        xs = [100 * r["density"] for r in rows]
        sparse = [r["rtl_cycles"] for r in rows]
        dense = [r.get("dense_cycles_rtl", r["dense_cycles_model"]) for r in rows]
        pixels = [r["n_active"] / r["density"] for r in rows]
        ax_f.scatter(xs, sparse, color=c, s=40, zorder=3, label=f"sparse, PI/PO {pi}/{po}")
        ax_f.scatter(xs, dense, facecolors="none", edgecolors=c, marker="s", s=40, zorder=3,
                     label=f"dense, PI/PO {pi}/{po}")
        ax_f.vlines(xs, sparse, dense, colors=c, linestyles=":", lw=0.8)
        for x, s, d in zip(xs, sparse, dense, strict=True):  # the speedup, right of the line, then left
            ax_f.annotate(f"×{d / s:.0f}", (x, (s * d) ** 0.5), textcoords="offset points", fontsize=7, color=c,
                          xytext=(4, 0) if i % 2 == 0 else (-4, 0), ha="left" if i % 2 == 0 else "right")
        ax_p.plot(xs, [s / n for s, n in zip(sparse, pixels, strict=True)], "o-", color=c,
                  label=f"sparse, PI/PO {pi}/{po}")
        ax_p.plot(xs, [d / n for d, n in zip(dense, pixels, strict=True)], "s--", color=c, mfc="none",
                  label=f"dense, PI/PO {pi}/{po}")
    for r in {r["frame"]: r for r in frames}.values():  # each frame named once, under its density
        ax_f.annotate(r["frame"], (100 * r["density"], 0), xycoords=("data", "axes fraction"), xytext=(2, 4),
                      textcoords="offset points", fontsize=7, rotation=90, color="0.3")
    low = min(r["rtl_cycles"] for r in frames)
    high = max(r.get("dense_cycles_rtl", r["dense_cycles_model"]) for r in frames)
    ax_f.set_ylim(low / 12, high * 2)  # room for the frames' names under the lowest point
    for ax, ylabel in ((ax_f, "cycles per frame"), (ax_p, "cycles per pixel of the frame")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_axis(ax.xaxis)
        densities = [100 * r["density"] for r in frames]
        ax.set_xlim(min(densities) / 1.4, max(densities) * 1.4)
        ax.set_xlabel("frame density (active sites / pixels, %)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Sparse convolution engine (subm3x3, Cin = Cout = 16) on the real frames")
    rtl = sorted({r["frame"] for r in frames if "dense_cycles_rtl" in r})
    how = (f"RTL-measured for {', '.join(rtl)}, the cycle model elsewhere" if rtl else "the cycle model")
    caption = ("RTL cycles of each real frame against its density (left: per frame, with the speedup over dense; "
               "right: per pixel, where the dense cost is flat) beside the dense cost, the same engine on the fully "
               f"active frame of the same size ({how}).")
    return _save(fig, out, "sparse_density.png", "Sparse engine cycles against frame density", caption)


# ---- a whole network -----------------------------------------------------------------------------------------

def network_balance(summary: dict, out: Path, name: str, title: str) -> str:
    """A compiled network (`accelkit network compile`'s summary): each layer's cycles per frame against the
    lower bound, the bottleneck and the pipeline's predicted interval (left); each layer's share of the useful
    MACs beside its share of the MAC units (right: a balanced allocation gives MAC units where the work is)."""
    fig, (ax_c, ax_s) = _figure(2, width=7.5, height=5)
    layers = summary["layers"]
    xs = range(len(layers))
    names = [l["name"] for l in layers]
    worst = names.index(summary["bottleneck_layer"])
    ax_c.bar(xs, [l["cycles"] for l in layers], color=["C3" if i == worst else "C0" for i in xs], zorder=3)
    from .network import links_text

    lines = [(summary["lower_bound"], "--", "C2", "lower bound (useful MACs / MAC units)"),
             (summary["bottleneck"], ":", "C3", f"bottleneck ({summary['bottleneck_layer']})")]
    if summary.get("predicted_interval"):
        lines.append((summary["predicted_interval"], "-", "0.3",
                      f"pipeline interval (cycle model, {links_text(summary)})"))
    for y, ls, c, lab in lines:
        ax_c.axhline(y, ls=ls, color=c, lw=1.2, label=f"{lab}: {y:,.1f}", zorder=4)
    top = max(l[0] for l in lines)
    ax_c.set_ylim(0, 1.45 * top)  # the legend above the lines
    ax_c.set_ylabel("cycles per frame")
    ax_c.legend(fontsize=7, loc="upper left")
    work = sum(l["useful_macs"] for l in layers) or 1
    units = sum(l["macs"] for l in layers)
    w = 0.4
    ax_s.bar([x - w / 2 for x in xs], [100 * l["useful_macs"] / work for l in layers], w, color="C1", zorder=3,
             label="share of the useful MACs per frame")
    ax_s.bar([x + w / 2 for x in xs], [100 * l["macs"] / units for l in layers], w, color="C0", zorder=3,
             label="share of the MAC units")
    ax_s.set_ylabel("% of the network")
    ax_s.legend(fontsize=7, loc="upper left")
    for ax in (ax_c, ax_s):
        ax.set_xticks(list(xs), names, rotation=90, fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title)
    caption = (f"left: each layer's cycles per frame (bottleneck {summary['bottleneck_layer']} in red) against the "
               f"lower bound {summary['lower_bound']:,.1f} (useful MACs / MAC units; balance "
               f"{100 * summary['balance']:.1f}% = lower bound / bottleneck)"
               + (f" and the whole pipeline's predicted interval {summary['predicted_interval']:,.1f}"
                  if summary.get("predicted_interval") else "")
               + "; right: each layer's share of the useful MACs beside its share of the MAC units.")
    return _save(fig, out, name, title, caption)


# ---- accuracy -------------------------------------------------------------------------------------------------

def _study_unit(row: dict) -> str:
    """An accuracy-study row's unit: "exact", "hyft" or "float" (rows of older studies have no unit: S says)."""
    return row.get("unit") or ("exact" if row["segments"] is None else "hyft")


def hyft_error_segments(study: dict, out: Path) -> str:
    """The Hyft accuracy study: max absolute and max relative error against the segment count S, per format,
    on random vectors (solid) and MiniLM attention logits (dashed), with each format's rounding floor."""
    fig, axs = _figure(2, height=5.5)
    rows = study["rows"]
    fmts = list(dict.fromkeys(r["fmt"] for r in rows))
    sources = [s for s in ("random", "attention") if s in rows[0]]
    style = {"random": ("o-", "random vectors"), "attention": ("s--", "MiniLM attention")}
    target = study.get("targets", {})
    default_s = study.get("default", {}).get("config", {}).get("segments")
    segs = sorted({r["segments"] for r in rows if r["segments"] is not None})
    for ax, key, ylabel in ((axs[0], "max_abs", "max |y - ref|"),
                            (axs[1], "max_rel", "max |y - ref| / ref (ref ≥ $2^{-10}$)")):
        for i, fmt in enumerate(fmts):
            hyft = sorted((r for r in rows if r["fmt"] == fmt and _study_unit(r) == "hyft"),
                          key=lambda r: r["segments"])
            for src in sources:
                ax.plot([r["segments"] for r in hyft], [r[src][key] for r in hyft], style[src][0], color=f"C{i}",
                        label=f"{fmt}, {style[src][1]}")
            exact = next((r for r in rows if r["fmt"] == fmt and _study_unit(r) == "exact"), None)
            if exact:
                ax.axhline(exact["random"][key], color=f"C{i}", ls=":", lw=1,
                           label=f"{fmt} rounding alone (exact softmax, random)")
        if key in target:
            ax.axhline(target[key], color="0.4", ls="-.", lw=1, label="target of the default config")
        if default_s:
            ax.axvline(default_s, color="0.6", lw=0.8, label=f"default S = {default_s}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(segs, [str(s) for s in segs])
        ax.set_yscale("log")
        ax.set_xlabel("segments S")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    handles, names = axs[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=4, fontsize=7)
    fig.suptitle("Hyft softmax: error against float64 by segment count")
    on = " and on MiniLM attention logits (dashed)" if "attention" in sources else ""
    caption = ("the Hyft golden model's worst absolute and relative error against float64 softmax as the segment "
               f"count S of its 2^r and log2(1 + r) tables grows, per format, on random vectors (solid){on}; dotted: "
               "the error of the exact softmax rounded to the format, the floor no S can beat.")
    return _save(fig, out, "hyft_error_segments.png", "Hyft error against segments", caption)


def _short_layer(name: str) -> str:
    """all-MiniLM's Linear names, shortened for an axis: encoder.layer.3.attention.self.query -> 3.query."""
    name = re.sub(r"^(encoder\.)?layer\.", "", name)
    return re.sub(r"\.dense$", "", name.replace("attention.self.", "")).replace("attention.output", "attn.out")


def dybit_sqnr(study: dict, out: Path) -> str:
    """The MiniLM study: weight SQNR of every Linear layer per format, 4-bit and 8-bit formats in their own
    panels (their SQNRs lie about 24 dB apart), each format's mean in the legend."""
    layers = study["layers"]
    fmts = list(layers[0]["sqnr_db"])
    widths = {f: int(m.group()) if (m := re.search(r"\d+", f)) else 0 for f in fmts}
    panels = sorted(set(widths.values()))
    fig, axs = _figure(len(panels), width=7.5, height=5)
    xs = range(len(layers))
    values = {f: [r["sqnr_db"][f] for r in layers] for f in fmts}
    for ax, bits in zip(axs, panels, strict=True):
        mine = [f for f in fmts if widths[f] == bits]
        for j, f in enumerate(mine):
            mean = sum(values[f]) / len(layers)
            # a format equal to an earlier one on every layer would hide it: said in the legend, drawn thinner
            twin = next((g for g in mine[:j] if all(abs(a - b) < 1e-9 for a, b in zip(values[f], values[g],
                                                                                          strict=True))), None)
            size, width = (3, 0.8) if twin else (max(6 - 2 * j, 3), max(2.2 - 0.6 * j, 0.8))
            ax.plot(xs, values[f], "os^Dv"[j % 5] + "-", ms=size, lw=width, color=f"C{fmts.index(f)}", zorder=3 + j,
                    label=f"{f} (mean {mean:.1f} dB{f'; equal to {twin} on every layer' if twin else ''})")
        ax.set_xticks(list(xs), [_short_layer(r["name"]) for r in layers], rotation=90, fontsize=6)
        ax.set_xlabel("Linear layer")
        ax.set_ylabel("weight SQNR (dB)")
        ax.grid(True, alpha=0.3)
        ax.legend(title=f"{bits}-bit formats" if bits else "formats", fontsize=7, title_fontsize=9, ncol=2,
                  loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)  # above the panel: no line hidden
    fig.suptitle("DyBit against INT and minifloat on all-MiniLM-L6-v2: weight SQNR per layer")
    caption = ("the SQNR of each Linear weight of all-MiniLM-L6-v2 quantised to each format (one scale per output "
               "channel, the same lowest-MSE search for every format); higher is better, one panel per bit width.")
    return _save(fig, out, "dybit_sqnr.png", "DyBit SQNR per layer", caption)


# ---- the self-contained HTML ----------------------------------------------------------------------------------

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.85em}th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f2f2f2}tbody tr:nth-child(even){background:#fafafa}td{text-align:right}td:first-child{text-align:left}
img{max-width:100%}code{background:#f4f4f4;padding:0 .2em}h2{border-bottom:1px solid #ddd;margin-top:2em}"""


def _is_local(url: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:|^#|^//", url, re.I)


def report_html(markdown: str, images: dict[str, bytes], title: str = "accelkit report") -> str:
    """`markdown` as one HTML page: tables rendered, each local image replaced by its bytes from `images`
    (name -> PNG) as a data URI, and a link to a local file turned into its text (it would not travel with
    the page). A local image missing from `images` is an error."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(markdown)
    for tok in tokens:
        children = tok.children or []
        keep = []
        skipping = 0
        for child in children:
            if child.type == "image" and _is_local(src := child.attrGet("src") or ""):
                if src not in images:
                    raise ValueError(f"report.html: the image {src} that the report shows is not in its folder")
                child.attrSet("src", "data:image/png;base64," + base64.b64encode(images[src]).decode())
            if child.type == "link_open" and _is_local(child.attrGet("href") or ""):
                skipping += 1
                continue
            if child.type == "link_close" and skipping:
                skipping -= 1
                continue
            keep.append(child)
        tok.children = keep if tok.children is not None else None
    body = md.renderer.render(tokens, md.options, {})
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}'
            f"</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n{body}</body>\n</html>\n")


def local_images(markdown: str) -> list[str]:
    """The local image paths a Markdown text shows."""
    return [src for src in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", markdown) if _is_local(src)]


def write_report_html(md_path: Path) -> Path:
    """report.html beside `md_path`, its images read from the same folder."""
    text = md_path.read_text()
    images = {}
    for src in local_images(text):
        if (md_path.parent / src).is_file():
            images[src] = (md_path.parent / src).read_bytes()
    return atomic_write(md_path.with_suffix(".html"), report_html(text, images))
