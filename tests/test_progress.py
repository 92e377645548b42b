"""Progress of long commands: a flushed line per step with the elapsed time when the output is not a terminal (a log
file, a pipe, pytest's capture), a live display on a terminal, nothing outside a command."""

from __future__ import annotations

import io
import json
import re
import time

import pytest

from accelkit.cli import main
from accelkit.flows import progress

LINE = re.compile(r"^\[ *(\d+\.\d)s\] (.*)$")


class Flushes(io.StringIO):
    """A log file that remembers how much of it had been written at each flush."""

    def __init__(self):
        super().__init__()
        self.flushed: list[int] = []

    def flush(self):
        self.flushed.append(len(self.getvalue()))
        super().flush()


def _lines(text: str) -> list[tuple[float, str]]:
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            out.append((float(m.group(1)), m.group(2)))
    return out


def test_without_a_terminal_every_step_is_a_flushed_line_with_the_elapsed_time(monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # colour forced, as CI systems do: still a log, still lines
    monkeypatch.delenv("TTY_INTERACTIVE", raising=False)
    log = Flushes()
    with progress.task("sweep x", total=2, file=log) as t:
        assert not t.live
        with progress.step("x: first step"):
            time.sleep(0.25)
            with progress.step("x: inner step"):
                pass
        progress.advance("measured a")
        progress.log("a note")
        t.advance("measured b")
    lines = _lines(log.getvalue())
    assert [what for _, what in lines] == ["sweep x: 2 to do ...", "x: first step ...", "x: inner step ...",
                                           "sweep x: measured a (1/2)", "a note", "sweep x: measured b (2/2)",
                                           "sweep x: done"]
    assert len(lines) == len(log.getvalue().splitlines())  # nothing else
    times = [t for t, _ in lines]
    # seconds since the task began: in order, and the inner step after the quarter-second sleep (no upper bound:
    # a loaded machine may take its time before the first line)
    assert times == sorted(times) and times[2] >= 0.2 and times[2] - times[1] >= 0.2
    ends = [m.end() for m in re.finditer("\n", log.getvalue())]
    assert set(ends) <= set(log.flushed)  # each line flushed as it was written


def test_outside_a_command_steps_print_nothing(capsys):
    with progress.step("nothing to report to"):
        progress.advance("a")
        progress.log("b")
    assert progress.current() is None
    assert capsys.readouterr() == ("", "")


def test_a_failing_step_leaves_no_done_line():
    log = io.StringIO()
    with pytest.raises(RuntimeError), progress.task("t", file=log, live=False):
        with progress.step("s"):
            raise RuntimeError("no")
    assert [what for _, what in _lines(log.getvalue())] == ["t ...", "s ..."]
    assert progress.current() is None


def test_on_an_interactive_terminal_the_display_is_live(monkeypatch):
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    out = io.StringIO()
    with progress.task("sweep y", total=2, file=out) as t:
        assert t.live
        with progress.step("y: a long step"):
            progress.advance("measured a")
        t.advance()
    text = out.getvalue()
    assert "sweep y: measured a (1/2)" in text  # printed above the live display
    assert "2/2" in text and "y: a long step ..." not in text  # a bar, not a line per step


def _fake_dybit_point(cfg) -> dict:
    """A sweep point of the cycle model alone (no RTL, no synthesis), with the columns the sweep renders."""
    from accelkit.golden.dybit_cycles import matmul_cycles, utilisation

    cycles = matmul_cycles(cfg, 64, 256, 64)
    n = cfg.rows * cfg.cols
    return {"rows": cfg.rows, "cols": cfg.cols, "cycles": cycles, "utilisation": utilisation(cfg, 64, 256, 64, cycles),
            "ecp5_lut4": 100 * n, "ecp5_ff": 50 * n, "ecp5_mult18": n, "xilinx_lut": 90 * n, "xilinx_ff": 50 * n,
            "xilinx_dsp": n}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_accelkit_sweep_into_a_log_shows_its_steps(tmp_path, capsys, monkeypatch, jobs):
    from accelkit.flows import bench_dybit
    from accelkit.flows.sweep import point_name

    monkeypatch.setattr(bench_dybit, "measure_point", _fake_dybit_point)
    assert main(["sweep", "dybit-array", "--axis", "rows=1,2", "--axis", "cols=1,4", "-j", jobs,
                 "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = [what for _, what in _lines(out)]
    assert lines[0] == "sweep dybit-array: 4 to do ..."
    grid = bench_dybit.grid(bench_dybit.DyBitArrayConfig(), {"rows": [1, 2], "cols": [1, 4]})
    measured = [w for w in lines if w.startswith("sweep dybit-array: measured ")]
    assert [w[-5:] for w in measured] == ["(1/4)", "(2/4)", "(3/4)", "(4/4)"]
    names = [w.removeprefix("sweep dybit-array: measured ")[:-6] for w in measured]
    assert sorted(names) == sorted(point_name(c) for c in grid)
    if jobs == "1":  # in this process, in order
        assert names == ["dybit-array (rows=1, cols=1)", "dybit-array (rows=1)", "dybit-array (rows=2, cols=1)",
                         "dybit-array (rows=2)"]
    if jobs == "2":
        assert "starting a local Dask cluster of 2 worker processes ..." in lines
    assert f"writing {tmp_path / 'dybit_sweep'}.json, .csv, .png ..." in lines
    assert lines[-1] == "sweep dybit-array: done"
    assert json.loads((tmp_path / "dybit_sweep.json").read_text()) == [_fake_dybit_point(c) for c in grid]


def _fake_area(cfg, **kw) -> dict:
    return {"ecp5_lut4": 1000, "ecp5_ff": 900, "ecp5_mult18": 16, "ecp5_ebr": 4, "xilinx_lut": 800,
            "xilinx_ff": 900, "xilinx_dsp": 16, "xilinx_bram": 4, "fmax_mhz": 125.0}


def _fake_figures(cfg, frame, dense_rtl=False, streams="cocotb") -> dict:
    from accelkit.golden.sparse_rtl_cycles import frame_cycles

    cycles = frame_cycles(cfg, frame)
    return {"pi": cfg.pi, "po": cfg.po, "n_active": frame.n_active, "density": frame.density,
            "rtl_cycles": cycles, "model_cycles": cycles, "dense_cycles_model": 10 * cycles, "speedup": 10.0,
            "utilisation": 0.5}


def test_accelkit_report_into_a_log_shows_each_step_of_a_section(tmp_path, capsys, monkeypatch):
    """The report's command path (sparse-conv's section alone, its RTL runs and syntheses replaced by the cycle
    model and fixed figures): a line per real frame, per measured point and per section."""
    from accelkit import cli
    from accelkit.flows import bench_sparse, measure

    monkeypatch.setattr(cli, "BLOCKS", {"sparse-conv": cli.BLOCKS["sparse-conv"]})
    monkeypatch.setattr(bench_sparse, "engine_figures", _fake_figures)
    monkeypatch.setattr(bench_sparse, "measured_area", _fake_area)
    monkeypatch.setattr(measure, "measured_area", _fake_area)  # the report's background syntheses
    assert main(["report", "-o", str(tmp_path), "-j", "1"]) == 0
    lines = _lines(capsys.readouterr().out)
    whats = [w for _, w in lines]
    assert whats[0] == "report: 1 to do ..."
    assert "report: synthesis and place and route of 3 configs started in 1 background process" in whats
    assert "sparse-conv: report section ..." in whats
    frames = [w for w in whats if w.startswith("sparse-conv: real frame ")]
    assert len(frames) == 10 and all(w.endswith("(RTL under Verilator) ...") for w in frames)
    assert "sparse-conv: measured sparse-conv (default)" in whats
    assert sum(w.startswith("sparse-conv: measured sparse-conv (max_height=180") for w in whats) == 2
    assert re.fullmatch(r"report: sparse-conv section done in \d+ s \(1/1\)", whats[-3])
    assert whats[-2:] == ["report: the background syntheses ...", "report: done"]
    assert [t for t, _ in lines] == sorted(t for t, _ in lines)
    assert (tmp_path / "report.md").read_text().count("| 4/4 |") == 5


# ---- accelkit network compile | sim | synth --------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_network(tmp_path_factory):
    """A small network saved as `accelkit network` reads it, its frames in a folder, and its compiled config."""
    from accelkit.flows.compile import compile_network
    from accelkit.golden.network import SparseNetwork, StageSpec
    from accelkit.sim.sparse_conv import random_frame

    d = tmp_path_factory.mktemp("net")
    layout = (StageSpec("conv1", "conv", (3, 8), stride=2), StageSpec("block_0", "block", (8, 16, 8), stride=2),
              StageSpec("conv8", "conv", (8, 6)))
    frames = [random_frame(20, 24, x, 3, -8, 8, seed=s) for s, x in enumerate((0.25, 0.15, 0.2))]
    net = SparseNetwork.random(layout, 20, 24, frames=frames[:2], seed=3)
    js, _ = net.save(d / "net")
    (d / "frames").mkdir()
    for k, f in enumerate(frames):
        f.to_npz(d / "frames" / f"f{k}.npz")
    cfg, _ = compile_network(net, frames, 48)
    (d / "config.json").write_text(cfg.to_json() + "\n")
    return d, js, cfg


def test_accelkit_network_compile_into_a_log_shows_its_steps(small_network, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TTY_INTERACTIVE", raising=False)
    d, js, _ = small_network
    assert main(["network", "compile", str(js), "--budget", "48", "--frames", str(d / "frames"),
                 "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = _lines(out)
    whats = [w for _, w in lines]
    assert whats == ["network compile ...", f"network: frames from {d / 'frames'} ...",
                     "network: allocation for 48 MAC units: each layer's work on 3 frames, the MILP over every layer's "
                     "PI and PO, solved again on the RTL cycle model near the bottleneck ...",
                     "network: link FIFO depths, each the shallowest (up to 1024) that keeps the cycle model's "
                     "interval on 3 frames within 0.5% of all at 1024 ...",
                     f"network: writing {tmp_path / 'config.json'}, {tmp_path / 'compile.json'} ...",
                     "network compile: done"]
    assert [t for t, _ in lines] == sorted(t for t, _ in lines)
    # then the table (the report's network section shows the same one) and the summary
    summary = json.loads((tmp_path / "compile.json").read_text())
    table = out[out.index("| layer | kind | channels | PI | PO | MAC units | useful MACs |"):]
    assert table.count("\n| ") == len(summary["layers"])  # a row per layer under the header
    assert f"| **{summary['bottleneck_layer']}** |" in table
    assert f"balance {100 * summary['balance']:.1f}%" in out


def test_accelkit_network_sim_and_synth_show_their_steps_on_stderr(small_network, capsys, monkeypatch):
    """Their stdout stays the JSON of their figures (the RTL run and the syntheses replaced here by fixed figures)."""
    from accelkit.flows import synth
    from accelkit.sim import network as sim_network

    monkeypatch.delenv("TTY_INTERACTIVE", raising=False)
    d, js, cfg = small_network

    def fake_run(cfg, net, frames, **kw):
        n = len(frames)
        return sim_network.NetworkRun([net(f) for f in frames], [False] * n, [100] * n, 40.0, [100] * n, 40.0)

    monkeypatch.setattr(sim_network, "run_network", fake_run)
    assert main(["network", "sim", str(js), "--config", str(d / "config.json"), "--frames", str(d / "frames")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["bit_exact"]
    assert [w for _, w in _lines(err)] == [
        "network sim ...", f"network: frames from {d / 'frames'} ...",
        f"network: Verilator build of the {len(cfg.layers)}-engine top (cached by content), then 3 frames back to back "
        "through it (streams inside the simulator, under cocotb), every pooled beat checked against the golden "
        "network ...",
        "network: bit-exact on 3 frames; interval 40.0 cycles, the cycle model's 40.0; every latency the model's",
        "network sim: done"]

    calls = []

    def fake_synth(cfg, targets=("ecp5", "xilinx"), fmax=True, device="85k", seeds=(1, 2, 3), seed_jobs=1,
                   router=None):
        calls.append((tuple(targets), fmax, tuple(seeds) if fmax else None))
        res = {t: {"lut4": 1} for t in targets}
        return {**res, "fmax": {"fmax_mhz": 100.0}} if fmax else res

    monkeypatch.setattr(synth, "synth_config", fake_synth)
    assert main(["network", "synth", "--config", str(d / "config.json"), "--seeds", "2"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"ecp5": {"lut4": 1}, "xilinx": {"lut4": 1}, "fmax": {"fmax_mhz": 100.0}}
    top = f"the {len(cfg.layers)}-engine network top"
    assert [w for _, w in _lines(err)] == [
        "network synth ...", f"network: yosys ecp5 synthesis of {top} ...",
        f"network: yosys xilinx synthesis of {top} ...", "network: nextpnr-ecp5 on LFE5U-85F-6, seeds 1, 2 ...",
        "network synth: done"]
    # a flow per step, each cached as it ends, then all of them from the cache
    assert calls == [(("ecp5",), False, None), (("xilinx",), False, None), ((), True, (1, 2)),
                     (("ecp5", "xilinx"), True, (1, 2))]


def test_accelkit_report_shows_the_network_section(small_network, tmp_path, capsys, monkeypatch):
    """The report's command path with the network top's section alone (its workload a small network: SEE-A's
    compile takes half a minute): its steps, its JSON beside the others, its section in report.md."""
    from accelkit import cli
    from accelkit.flows import bench_network
    from accelkit.golden.network import SparseNetwork
    from accelkit.golden.sparse_conv import SparseFrame

    d, js, _ = small_network
    net = SparseNetwork.load(js)
    frames = [SparseFrame.from_npz(f) for f in sorted((d / "frames").glob("*.npz"))]

    def small_report(out, jobs=2, on_done=None, full=False):
        res = bench_network.section(net, frames, 48, out, name="small", command="accelkit network compile small")
        return res, bench_network.render(res)

    monkeypatch.setattr(cli, "BLOCKS", {"sparse-network": cli.BLOCKS["sparse-network"]})
    monkeypatch.setattr(bench_network, "report", small_report)
    assert main(["report", "-o", str(tmp_path), "-j", "1"]) == 0
    whats = [w for _, w in _lines(capsys.readouterr().out)]
    assert whats[:4] == ["report: 1 to do ...", "report: synthesis and place and route of 0 configs started in 1 "
                         "background process", "sparse-network: report section ...",
                         "network: allocation for 48 MAC units: each layer's work on 3 frames, the MILP over every "
                         "layer's PI and PO, solved again on the RTL cycle model near the bottleneck ..."]
    assert re.fullmatch(r"report: sparse-network section done in \d+ s \(1/1\)", whats[-3])
    res = json.loads((tmp_path / "sparse-network.json").read_text())
    assert res["workload"] == "small" and res["summary"]["mac_units"] <= 48
    md = (tmp_path / "report.md").read_text()
    assert "## Whole network: small" in md and "No report section of its own" not in md
    assert (tmp_path / "small_balance.png").is_file() and (tmp_path / "report.html").is_file()
