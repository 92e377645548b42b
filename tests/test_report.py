"""The report's pieces that need no long flow: studies cached by content, sections without the long figures."""

from __future__ import annotations

import pytest

from accelkit.flows import bench_hyft
from accelkit.flows.measure import cached_study

CALLS = []


def tiny_study() -> dict:
    CALLS.append(1)
    return {"value": 1.5, "rows": [1, 2]}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELKIT_CACHE", str(tmp_path))
    CALLS.clear()
    return tmp_path


def test_study_runs_once_and_is_then_read_from_the_cache(cache):
    assert cached_study("tiny", tiny_study, compute=False) is None
    assert CALLS == []
    assert cached_study("tiny", tiny_study) == {"value": 1.5, "rows": [1, 2]}
    assert cached_study("tiny", tiny_study) == cached_study("tiny", tiny_study, compute=False)
    assert len(CALLS) == 1
    assert len(list((cache / "studies").glob("tiny-*.json"))) == 1


def test_hyft_section_without_the_long_figures_says_how_to_get_them():
    area = {k: 1 for k in ("ecp5_lut4", "ecp5_ff", "ecp5_mult18", "ecp5_ebr", "xilinx_lut", "xilinx_ff",
                           "xilinx_dsp", "xilinx_bram", "fmax_mhz", "latency_256")}
    res = {"default_config": {"fmt": "bf16", "lanes": 4, "segments": 8, "max_len": 1024},
           "timing": {"latency": [], "rate_n": 256, "rate_rtl": 3.9, "rate_model": 3.9, "batch_cycles_rtl": 1,
                      "batch_cycles_model": 1},
           # the default report measures no Fmax of the float baseline
           "area": [{"lanes": n, "arch": a, **{k: v for k, v in area.items() if a == "hyft" or k != "fmax_mhz"}}
                    for n in bench_hyft.AREA_LANES_DEFAULT for a in ("hyft", "float")],
           "accuracy": None}
    md = bench_hyft.render(res)
    assert "16 lanes, and the float baseline's Fmax: `accelkit report --full`" in md
    assert "| --full |" in md
    assert "Not in this report: `accelkit report --full` runs the study" in md


def test_dybit_section_without_the_long_figures_says_how_to_get_them():
    from accelkit.flows import bench_dybit

    area = dict.fromkeys(("ecp5_lut4", "ecp5_ff", "ecp5_ccu2", "ecp5_mult18", "ecp5_ebr", "xilinx_lut", "xilinx_ff",
                          "xilinx_dsp", "xilinx_bram", "fmax_mhz"), 1)
    cyc = {"array": "4x4", "m": 3, "k": 5, "n": 7, "cycles": 13, "model_cycles": 13, "utilisation": 0.5}
    res = {"default_config": {"rows": 4, "cols": 4, "a_format": "dybit8k4", "b_format": "dybit4k3", "max_k": 4096},
           "default_area": area, "utilisation": [cyc], "cycle_model": [cyc], "minilm": None}
    md = bench_dybit.render(res)
    assert "Not in this report: `accelkit report --full` (eight more syntheses)" in md
    assert "exact on every shape" in md
    # the default report synthesises the default array and the 8 x 8 one (area only: its place and route is --full)
    assert bench_dybit.area_points() == [(bench_dybit.DyBitArrayConfig(), {}),
                                         (bench_dybit.DyBitArrayConfig(rows=8, cols=8), {"fmax": False})]


# ---- the report's pictures and its HTML ----------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_picture(out, md: str, name: str) -> None:
    """`md` shows `name` with a caption, and `name` is a real, non-blank PNG in `out`."""
    import matplotlib.image

    assert md.startswith("![") and f"]({name})\n" in md
    assert "\n*Figure: " in md and md.rstrip().endswith("*") and md.count("\n*Figure: ") == 1
    data = (out / name).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    pixels = matplotlib.image.imread(out / name)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 600
    assert pixels[..., :3].std() > 0.05  # drawn on, not a blank canvas


def test_pareto_front_keeps_the_points_no_other_point_beats_in_both():
    from accelkit.flows.figures import pareto_front

    points = [(1, 10), (2, 5), (3, 5), (2, 6), (4, 1), (4, 1), (5, 0.5), (6, 2)]
    # (3, 5): as small as (2, 5) in area, more cycles; (2, 6): beaten by (2, 5); equal points are both kept;
    # (6, 2): beaten by (4, 1)
    assert pareto_front(points) == [True, True, False, False, True, True, True, False]
    assert pareto_front([]) == []
    assert pareto_front([(3, 3)]) == [True]
    # (cycles, LUT4, MULT18, EBR): fewer LUT4s bought with multipliers is a trade, not a win; more of everything loses
    points = [(100, 8000, 24, 32), (50, 8100, 80, 60), (100, 7000, 80, 32), (100, 8000, 24, 40)]
    assert pareto_front(points) == [True, True, True, False]


def test_time_per_item_needs_a_measured_fmax():
    from accelkit.flows.figures import time_per_item_us

    assert time_per_item_us(65542, 92.73) == pytest.approx(706.8, abs=0.1)  # cycles / MHz = microseconds
    assert time_per_item_us(100, None) is None
    assert time_per_item_us(100, 0) is None


def _area(lut4: int, fmax: float | None = None, mult18: int = 0, ebr: int = 0) -> dict:
    area = {"ecp5_lut4": lut4, "ecp5_ff": lut4 // 2, "ecp5_ccu2": 10, "ecp5_mult18": mult18, "ecp5_ebr": ebr,
            "xilinx_lut": lut4, "xilinx_ff": lut4 // 2, "xilinx_dsp": mult18, "xilinx_bram": ebr}
    return {**area, "fmax_mhz": fmax} if fmax is not None else area


def _sparse_res() -> dict:
    frames = []
    for name, n_active, density in (("asl_dvs_180x240", 493, 0.0114), ("nmnist_34x34", 268, 0.2318)):
        for p in (4, 8):
            cycles = n_active * 160 // p
            dense = int(cycles / density)
            frames.append({"frame": name, "pi": p, "po": p, "n_active": n_active, "density": density,
                           "rtl_cycles": cycles, "model_cycles": cycles, "dense_cycles_model": dense,
                           "speedup": dense / cycles, "utilisation": 0.5})
    frames[2]["dense_cycles_rtl"] = frames[2]["dense_cycles_model"]  # nmnist's dense cost measured on the RTL
    return {"default_config": {"kind": "subm3x3", "max_height": 128, "max_width": 128, "cin": 16, "cout": 16,
                               "pi": 4, "po": 4},
            "default_area": _area(5227, 125.0, 24, 8), "real_frames": frames,
            "real_frame_area": [{"pi": 4, "po": 4, **_area(7841, 128.3, 24, 32)},
                                {"pi": 8, "po": 8, **_area(8035, None, 80, 60)}]}


def test_sparse_pictures_are_drawn_and_shown_in_the_section(tmp_path):
    from accelkit.flows import bench_sparse, figures

    res = _sparse_res()
    res["figures"] = {"density": figures.sparse_density(res["real_frames"], tmp_path),
                      "area": figures.sparse_area(res["real_frames"], res["real_frame_area"], tmp_path)}
    _assert_picture(tmp_path, res["figures"]["density"], "sparse_density.png")
    _assert_picture(tmp_path, res["figures"]["area"], "sparse_area.png")
    assert "RTL-measured for nmnist_34x34, the cycle model elsewhere" in res["figures"]["density"]
    # PI/PO 8 has no Fmax: left out of the time panel and named, never given a time
    assert "No measured Fmax, so not in the right column: 8/8." in res["figures"]["area"]
    # a row per ECP5 resource (PI/PO 8's 80 MULT18X18D against 24 shows), the Pareto over all of them at once
    assert "ECP5 LUT4, MULT18X18D, DP16KD (EBR) against cycles" in res["figures"]["area"]
    assert "and at most their LUT4, MULT18X18D and DP16KD" in res["figures"]["area"]
    assert "within each frame" in res["figures"]["area"]
    md = bench_sparse.render(res)
    assert res["figures"]["density"] in md and res["figures"]["area"] in md
    assert md.index("| frame | PI/PO |") < md.index("](sparse_density.png)") < md.index("](sparse_area.png)")


def test_hyft_pictures_leave_out_the_points_without_fmax(tmp_path):
    from accelkit.flows import bench_hyft, figures

    rows = [{"arch": a, "lanes": n, "segments": 8, "latency_256": lat, **_area(lut, fmax, 5, 6)}
            for a, n, lat, lut, fmax in (("hyft", 1, 785, 1808, 46.9), ("float", 1, 800, 2540, None),
                                         ("hyft", 4, 209, 5505, 43.2), ("float", 4, 228, 8479, None))]
    md = figures.hyft_area(rows, tmp_path)
    _assert_picture(tmp_path, md, "hyft_area.png")
    assert "No measured Fmax, so not in the right column: float L1, float L4." in md
    assert "hyft L" not in md.split("right column")[-1]

    study = {"rows": [{"fmt": f, "segments": s, "random": {"max_abs": 0.04 / (s or 400), "max_rel": 0.1 / (s or 400),
                                                           "max_sum_dev": 1e-3},
                       "attention": {"max_abs": 0.05 / (s or 400), "max_rel": 0.12 / (s or 400), "max_sum_dev": 1e-3}}
                      for f in ("bf16", "fp16") for s in (None, 1, 4, 8, 16, 32)],
             "targets": {"max_abs": 4e-3, "max_rel": 0.02}, "default": {"config": {"segments": 8}}}
    err = figures.hyft_error_segments(study, tmp_path)
    _assert_picture(tmp_path, err, "hyft_error_segments.png")
    assert "on MiniLM attention logits" in err
    res = {"default_config": {"fmt": "bf16", "lanes": 4, "segments": 8, "max_len": 1024},
           "timing": {"latency": [], "rate_n": 256, "rate_rtl": 3.9, "rate_model": 3.9, "batch_cycles_rtl": 1,
                      "batch_cycles_model": 1},
           "area": rows, "accuracy": {"rows": [{**r, "cosine": {"mean": 1.0, "min": 1.0}} for r in study["rows"]]},
           "figures": {"area": md, "error": err}}
    section = bench_hyft.render(res)
    assert section.index("](hyft_area.png)") < section.index("### Accuracy") < section.index("](hyft_error_segments")
    # the accuracy table is a table to a Markdown reader: its |sum-1| headers' pipes escaped
    page = figures.report_html(section, {n: (tmp_path / n).read_bytes() for n in ("hyft_area.png",
                                                                                   "hyft_error_segments.png")})
    assert "<th>rand |sum-1|</th>" in page and "<th>1-cos max</th>" in page
    assert page.count("<table>") == section.count("\n|---") == 3


def test_dybit_pictures_come_with_the_arrays_areas(tmp_path):
    from accelkit.flows import bench_dybit, figures

    util = [{"array": f"{s}x{s}", "m": 64, "k": 256, "n": 64, "cycles": c, "model_cycles": c, "utilisation": 0.99}
            for s, c in ((4, 65542), (8, 16394))]
    res = {"default_config": {"rows": 4, "cols": 4, "a_format": "dybit8k4", "b_format": "dybit4k3", "max_k": 4096},
           "default_area": _area(2547, 92.73), "utilisation": util, "cycle_model": util,
           "array_area": {"4x4": _area(2547, 92.73), "8x8": _area(10309)},
           "minilm": {"layers": [{"name": f"encoder.layer.{i}.attention.self.query", "shape": [384, 384], "kmax4": 3,
                                  "kmax8": 4, "sqnr_db": {"dybit4": 19 + i, "int4": 18.5 + i, "dybit8": 43 + i,
                                                          "int8": 42 + i}} for i in range(6)],
                      "mean_sqnr_db": {"dybit4": 21.5, "int4": 21.0, "dybit8": 45.5, "int8": 44.5},
                      "cosine": {"dybit4": {"mean": 0.99, "min": 0.98, "sentences": 56}}}}
    res["figures"] = {"area": figures.dybit_area(res, tmp_path), "sqnr": figures.dybit_sqnr(res["minilm"], tmp_path)}
    _assert_picture(tmp_path, res["figures"]["area"], "dybit_area.png")
    _assert_picture(tmp_path, res["figures"]["sqnr"], "dybit_sqnr.png")
    assert "No measured Fmax, so not in the right column: 8x8." in res["figures"]["area"]
    # arrays without multipliers or block RAM: the LUT4 row alone, the others named as absent
    assert "ECP5 LUT4 against cycles" in res["figures"]["area"]
    assert "No MULT18X18D or DP16KD (EBR) in any of them." in res["figures"]["area"]
    assert figures._short_layer("encoder.layer.3.attention.output.dense") == "3.attn.out"
    md = bench_dybit.render(res)
    assert "| 4x4 | 65542 | 65542 | 99.00% | 2547 | 92.73 | 706.8 |" in md  # us/matmul = cycles / Fmax
    assert "| 8x8 | 16394 | 16394 | 99.00% | 10309 | --full | - |" in md
    assert md.index("](dybit_area.png)") < md.index("### Cycle model") < md.index("](dybit_sqnr.png)")


# ---- the whole-network section -------------------------------------------------------------------------------

NET_LAYOUT = (("conv1", "conv", (3, 8), 2, False), ("block_0", "block", (8, 16, 8), 2, False),
              ("block_1", "block", (8, 12, 8), 1, True), ("conv8", "conv", (8, 6), 1, False))


@pytest.fixture(scope="module")
def small_net():
    """A network with a stride-2 conv and block, a residual block (an identity FIFO) and a pw conv."""
    from accelkit.golden.network import SparseNetwork, StageSpec
    from accelkit.sim.sparse_conv import random_frame

    layout = tuple(StageSpec(n, t, ch, stride=st, residual=r) for n, t, ch, st, r in NET_LAYOUT)
    frames = [random_frame(20, 24, d, 3, -8, 8, seed=s) for s, d in enumerate((0.25, 0.15, 0.2))]
    return SparseNetwork.random(layout, 20, 24, frames=frames[:2], seed=3), frames


def _table(md: str, header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header row starts with `header`."""
    lines = md[md.index(header):].splitlines()
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:] if line.startswith("|")]


@pytest.mark.parametrize("device", ["ecp5-85k", "ecp5-25k"])
def test_network_section_shows_the_allocation_its_balance_and_its_hard_blocks(small_net, tmp_path, device):
    from accelkit.flows import bench_network
    from accelkit.flows.resources import DEVICES

    net, frames = small_net
    res = bench_network.section(net, frames, 48, tmp_path, name="small", command="accelkit network compile ...",
                                device=device)
    s = res["summary"]
    md = bench_network.render(res)
    assert md.startswith("## Whole network: small\n")
    _assert_picture(tmp_path, res["figures"]["balance"], "small_balance.png")
    assert res["figures"]["balance"] in md
    assert "`nox -s see_a`" in md  # the RTL run of the reference workload is named, not run
    rows = _table(md, "| layer | kind | channels | PI | PO | MAC units | useful MACs |")
    layers, fifo, total = rows[:-2], rows[-2], rows[-1]
    assert [r[0].strip("*") for r in layers] == net.names and len(layers) == len(s["layers"])
    assert [r[0] for r in layers if r[0].startswith("**")] == [f"**{s['bottleneck_layer']}**"]
    header = md[md.index("| layer |"):].splitlines()[0]
    col = {h.strip(): i for i, h in enumerate(header.strip("|").split("|"))}
    for r, l in zip(layers, s["layers"], strict=True):
        assert r[col["kind"]] == l["kind"] and r[col["channels"]] == f"{l['cin']}→{l['cout']}"
        assert int(r[col["MAC units"]]) == l["macs"] == (l["pi"] if l["kind"].startswith("dw") else l["pi"] * l["po"])
        # utilisation: the compiler's, useful MACs / (MAC units x the layer's cycles)
        assert float(r[col["util"]].rstrip("%")) == pytest.approx(
            100 * int(r[col["useful MACs"]]) / (l["macs"] * float(r[col["cycles"]].split()[0])), abs=0.06)
    # totals: the sum of the layers and the residual block's identity FIFO (a RegisteredFifo, counted exactly)
    assert fifo[0] == "identity and link FIFOs" and int(fifo[col["DP16KD"]]) > 0
    assert int(total[col["MAC units"]]) == sum(int(r[col["MAC units"]]) for r in layers) == s["mac_units"] <= 48
    def column(name: str) -> list[int]:
        return [int(r[col[name]]) for r in layers]

    # useful MACs: the compiler rounds each layer's mean and the total on their own
    assert int(total[col["useful MACs"]]) == pytest.approx(sum(column("useful MACs")), abs=len(layers))
    assert int(total[col["MULT18X18D"]]) == sum(column("MULT18X18D")) == s["mult18"]
    assert int(total[col["DP16KD"]]) == sum(column("DP16KD")) + int(fifo[col["DP16KD"]]) == s["ebr"]
    # the bottleneck is the slowest layer, the lower bound the useful MACs over the budget, the balance their ratio
    cycles = [float(r[col["cycles"]].split()[0]) for r in layers]
    assert max(cycles) == s["bottleneck"] and total[col["cycles"]] == f"max {s['bottleneck']}"
    assert s["lower_bound"] == pytest.approx(s["useful_macs"] / 48, abs=0.05)
    assert s["balance"] == pytest.approx(s["lower_bound"] / s["bottleneck"], abs=1e-4)
    assert (f"Bottleneck: {s['bottleneck_layer']}, {s['bottleneck']:,} cycles per frame. Lower bound: "
            f"{s['useful_macs']:,} useful MACs / 48 MAC units = {s['lower_bound']:,} cycles. Balance (lower bound / "
            f"bottleneck): {100 * s['balance']:.1f}%.") in md
    depths = s["link_depth"]
    assert len(depths) == len(s["layers"]) - 1 and max(depths) <= s["max_link_depth"] == 1024
    assert f"Predicted interval of the whole pipeline (cycle model, 3 frames back to back, link FIFOs of " \
           f"{min(depths)} to {max(depths)} beats chosen per link (up to 1024; {sum(depths)} beats in all)): " \
           f"{s['predicted_interval']:,} cycles per frame" in md
    assert s["predicted_interval"] <= 1.005 * s["link_reference_interval"]
    # the hard blocks against the part's
    part = DEVICES[device]
    assert f"{s['mult18']:,} MULT18X18D and {s['ebr']:,} DP16KD" in md
    assert f"'s {part['mult18']} and {part['ebr']}" in md
    fits = s["mult18"] <= part["mult18"] and s["ebr"] <= part["ebr"]
    assert res["device"]["fits"] == fits and (": it fits." in md) == fits
    if not fits:  # the compiler, asked for the part, fits another allocation into it or refuses with its one line
        assert "this allocation does not fit one ECP5" in md
        assert ("the compiler refuses it: \"device=" in md) != ("`) it fits with" in md)


def test_network_section_of_see_a_is_its_compile(monkeypatch, tmp_path):
    """The report's workload is `accelkit network compile see-a --budget 3868 --frames eye:20`, through the same
    functions (the compile itself is the test above's, on a small network)."""
    from accelkit.flows import bench_network

    calls = []
    monkeypatch.setattr(bench_network, "load_network", lambda name: calls.append(name) or ("net", None))
    monkeypatch.setattr(bench_network, "load_frames", lambda spec, net, d: calls.append(spec) or ["frame"])
    monkeypatch.setattr(bench_network, "section", lambda net, frames, budget, out, **kw: calls.append(
        (net, frames, budget, kw)) or {"stub": True})
    monkeypatch.setattr(bench_network, "render", lambda res: "## stub")
    assert bench_network.report(tmp_path) == ({"stub": True}, "## stub")
    assert calls == ["see-a", "eye:20", ("net", ["frame"], 3868, {
        "name": "SEE-A", "command": "accelkit network compile see-a --budget 3868 --frames eye:20 -o see_a"})]
    assert bench_network.area_points() == []


def test_report_html_is_one_file_with_the_pictures_and_tables_inside(tmp_path):
    import base64
    from html.parser import HTMLParser

    from accelkit.flows import bench_sparse, figures

    res = _sparse_res()
    res["figures"] = {"density": figures.sparse_density(res["real_frames"], tmp_path),
                      "area": figures.sparse_area(res["real_frames"], res["real_frame_area"], tmp_path)}
    text = ("# accelkit report\n\nSee [the spec](docs/specs/sparse-conv.md) and "
            "[Amaranth](https://amaranth-lang.org/).\n\n" + bench_sparse.render(res))
    (tmp_path / "report.md").write_text(text)
    path = figures.write_report_html(tmp_path / "report.md")
    assert path == tmp_path / "report.html"

    class Refs(HTMLParser):
        def __init__(self):
            super().__init__()
            self.srcs, self.hrefs, self.tags = [], [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            a = dict(attrs)
            self.srcs += [a["src"]] if "src" in a else []
            self.hrefs += [a["href"]] if "href" in a else []

    page = Refs()
    page.feed(path.read_text())
    assert page.tags.count("img") == 2 and len(page.srcs) == 2
    for src, name in zip(page.srcs, ("sparse_density.png", "sparse_area.png"), strict=True):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (tmp_path / name).read_bytes()
    assert page.hrefs == ["https://amaranth-lang.org/"]  # the local link is text: it would not travel with the page
    assert "the spec" in path.read_text() and "<link" not in path.read_text() and "<script" not in path.read_text()
    # the section's table, with its cells
    assert page.tags.count("table") == text.count("\n|---") == 1
    html = path.read_text()
    assert "<th>frame</th>" in html and "<td>asl_dvs_180x240</td>" in html and "<td>nmnist_34x34</td>" in html


def test_report_html_refuses_a_missing_picture():
    from accelkit.flows.figures import report_html

    with pytest.raises(ValueError, match="gone.png"):
        report_html("![a picture](gone.png)\n", {})
