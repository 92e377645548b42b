"""Sweeps on Dask: a local cluster of worker processes or an existing scheduler gives the rows of a one-process run;
an unreachable scheduler, a scheduler without workers and a worker that dies are one-line errors or a point measured
again, never a hang or a half-written result; the content-hashed cache is safe to share between workers."""

from __future__ import annotations

import io
import os
import socket
import time
from multiprocessing import get_context
from pathlib import Path

import pytest

from accelkit.cli import main
from accelkit.config.dybit import DyBitArrayConfig
from accelkit.flows import progress
from accelkit.flows.sweep import SweepError, grid, run_sweep, sweep_to_files, write_tables

# The measures below run in the workers, which import this module by name (spawned worker processes inherit
# sys.path) and find their marker folders in the environment they inherit.
MARKS = "ACCELKIT_TEST_MARKS"
CONFIGS = grid(DyBitArrayConfig(), {"rows": [1, 2, 4], "cols": [1, 8], "a_format": ["int8", "dybit8k4"]})


def golden_point(cfg: DyBitArrayConfig) -> dict:
    """A cheap but real point: the golden model's product of the sweep's random operands (a checksum of it) and
    the cycle model's figures, no RTL. Records which process measured it."""
    import torch

    from accelkit.flows.bench_dybit import random_operands
    from accelkit.golden.dybit import dybit_matmul
    from accelkit.golden.dybit_cycles import matmul_cycles

    m, k, n = 16, 64, 16
    a, b = random_operands(cfg, m, k, n)
    c = dybit_matmul(a, cfg.a_format, b, cfg.b_format).flatten()
    (Path(os.environ[MARKS]) / f"pid-{os.getpid()}").touch()
    return {"rows": cfg.rows, "cols": cfg.cols, "a_format": cfg.a_format, "cycles": matmul_cycles(cfg, m, k, n),
            "checksum": int((c * (torch.arange(c.numel()) % 97 + 1)).sum()), "max": int(c.abs().max())}


def dies_once(cfg: DyBitArrayConfig) -> dict:
    """The worker measuring rows=2, cols=8 dies (no exception, no cleanup) the first time only."""
    marker = Path(os.environ[MARKS]) / f"died-{cfg.rows}x{cfg.cols}-{cfg.a_format}"
    if (cfg.rows, cfg.cols, cfg.a_format) == (2, 8, "int8") and not marker.exists():
        marker.touch()
        os._exit(3)
    return golden_point(cfg)


def always_dies(cfg: DyBitArrayConfig) -> dict:
    if (cfg.rows, cfg.cols, cfg.a_format) == (2, 8, "int8"):
        os._exit(3)
    return golden_point(cfg)


def emitted_verilog(cfg: DyBitArrayConfig) -> dict:
    """The cached Verilog of one config, as a worker finds it (building it, or reading another's build)."""
    import hashlib

    from accelkit.sim.build import verilog_file

    text = verilog_file(cfg).read_bytes()
    return {"sha256": hashlib.sha256(text).hexdigest(), "bytes": len(text)}


@pytest.fixture
def marks(tmp_path, monkeypatch):
    d = tmp_path / "marks"
    d.mkdir()
    monkeypatch.setenv(MARKS, str(d))  # before the cluster starts, so that its workers inherit it
    return d


def _pids(marks: Path) -> set[int]:
    return {int(p.name[4:]) for p in marks.glob("pid-*")}


def test_two_local_workers_give_the_rows_and_files_of_a_one_process_run(tmp_path, marks):
    one = run_sweep(CONFIGS, golden_point, jobs=1)
    assert _pids(marks) == {os.getpid()}
    for p in marks.glob("pid-*"):
        p.unlink()
    seen = []
    two = run_sweep(CONFIGS, golden_point, jobs=2, on_done=lambda cfg, row: seen.append(cfg))
    assert two == one  # the same rows, in the order of the configs
    assert [(r["rows"], r["cols"], r["a_format"]) for r in two] == [(c.rows, c.cols, c.a_format) for c in CONFIGS]
    assert sorted(seen, key=CONFIGS.index) == CONFIGS
    pids = _pids(marks)
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes, not this one
    a, b = write_tables(one, tmp_path / "one", "s"), write_tables(two, tmp_path / "two", "s")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_an_existing_scheduler_without_workers_then_with_two(marks):
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        start = time.monotonic()
        with pytest.raises(SweepError, match=r"^the Dask scheduler at tcp://127\.0\.0\.1:\d+ has no workers \(none "
                                             r"joined within 1 s\): start some with `dask worker"):
            run_sweep(CONFIGS, golden_point, scheduler=cluster.scheduler_address, connect_timeout=1)
        assert time.monotonic() - start < 10
        cluster.scale(2)
        rows = run_sweep(CONFIGS, golden_point, scheduler=cluster.scheduler_address, connect_timeout=30)
    assert rows == run_sweep(CONFIGS, golden_point, jobs=1)


def test_workers_of_several_threads_are_refused():
    """A point's simulations set environment variables (sim/runner.py): two points in one process would mix them."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        with pytest.raises(SweepError, match=r"^the Dask workers of tcp://127\.0\.0\.1:\d+ run 2 threads each: "
                                             r"start them with `dask worker .* --nthreads 1 --nworkers N`$"):
            run_sweep(CONFIGS, golden_point, scheduler=cluster.scheduler_address, connect_timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_is_a_one_line_error_after_the_timeout(tmp_path, capsys):
    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    start = time.monotonic()
    assert main(["sweep", "dybit-array", "--axis", "rows=1,2", "--scheduler", address, "--connect-timeout", "2",
                 "-o", str(tmp_path / "out")]) == 2
    assert time.monotonic() - start < 15
    err = capsys.readouterr().err
    assert err.startswith(f"accelkit: cannot reach the Dask scheduler at {address} within 2 s: ")
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_worker_that_dies_mid_sweep_has_its_point_measured_again(marks):
    log = io.StringIO()
    with progress.task("sweep", total=len(CONFIGS), file=log, live=False):
        rows = run_sweep(CONFIGS, dies_once, jobs=2)
    assert (marks / "died-2x8-int8").exists()  # the worker did die
    assert rows == run_sweep(CONFIGS, golden_point, jobs=1)
    lines = [line for line in log.getvalue().splitlines() if "died" in line]
    assert len(lines) == 1
    assert "the Dask worker measuring dybit-array (rows=2, cols=8, a_format=int8) died (tcp://127.0.0.1:" in lines[0]
    assert lines[0].endswith("measuring it again (rerun 1 of at most 2)")


def test_a_point_that_kills_every_worker_is_a_one_line_error_and_leaves_the_old_files(tmp_path, marks):
    out = tmp_path / "out"
    old = write_tables([{"rows": 0}], out, "s")
    before = [p.read_bytes() for p in old]
    start = time.monotonic()
    with pytest.raises(SweepError) as e:
        sweep_to_files(CONFIGS, always_dies, out, "s", "t", str, jobs=2, worker_deaths=1)
    assert time.monotonic() - start < 60
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("sweep point dybit-array (rows=2, cols=8, a_format=int8): the Dask worker measuring it "
                          "died 2 times (the last one tcp://127.0.0.1:")
    assert [p.read_bytes() for p in old] == before  # the previous sweep's files, whole
    assert sorted(p.name for p in out.iterdir()) == ["s.csv", "s.json"]  # no PNG, no temporary files


def test_a_failing_point_is_named_in_one_line(marks):
    bad = [DyBitArrayConfig(rows=1), DyBitArrayConfig(rows=2, a_format="int8", b_format="int8")]
    for jobs in (1, 2):
        with pytest.raises(SweepError, match=r"^sweep point dybit-array \(rows=1\): no fit$"):
            run_sweep(bad, _raises_on_rows_1, jobs=jobs)


def _raises_on_rows_1(cfg):
    if cfg.rows == 1:
        raise RuntimeError("no fit\nsecond line")
    return {"rows": cfg.rows}


def test_workers_sharing_a_cache_build_each_config_once_and_whole(tmp_path, monkeypatch, marks):
    monkeypatch.setenv("ACCELKIT_CACHE", str(tmp_path / "cache"))
    same = [DyBitArrayConfig(rows=1, cols=2, a_format="int8")] * 4 + [DyBitArrayConfig(rows=2, cols=1)] * 2
    rows = run_sweep(same, emitted_verilog, jobs=2)
    assert rows == run_sweep(same, emitted_verilog, jobs=1)  # this process reads what the workers built
    assert rows[0] == rows[3] and rows[4] == rows[5] and rows[0] != rows[4] and rows[0]["bytes"] > 1000
    assert len(list((tmp_path / "cache").glob("dybit-array-rtl-*/top.v"))) == 2
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def _write_many(path: str, letter: str, n: int) -> None:
    from accelkit.sim.build import atomic_write

    for _ in range(n):
        atomic_write(Path(path), letter * 2_000_000)


def test_atomic_write_never_shows_a_partial_file(tmp_path):
    from accelkit.sim.build import atomic_write

    path = tmp_path / "f"
    atomic_write(path, "a" * 2_000_000)
    ctx = get_context("spawn")
    writers = [ctx.Process(target=_write_many, args=(str(path), letter, 20)) for letter in "bc"]
    for w in writers:
        w.start()
    seen = set()
    while any(w.is_alive() for w in writers):
        text = path.read_text()
        assert len(text) == 2_000_000 and len(set(text)) == 1  # one writer's whole file
        seen.add(text[0])
    assert [w.exitcode for w in writers] == [0, 0]
    assert seen & {"b", "c"}  # read while the writers were replacing it
    assert path.read_text() in ("b" * 2_000_000, "c" * 2_000_000)
    assert [p.name for p in tmp_path.iterdir()] == ["f"]  # no temporary files left
