"""Parameter sweeps: every point of a grid of configs measured, then JSON, CSV and a plot.

A sweep is a base config, axes (parameter -> values) and a measure function
returning a flat dict of figures for one config. Points run on Dask
(`distributed`): a local cluster of worker processes by default, or the workers
of an existing scheduler (`accelkit sweep BLOCK --scheduler tcp://host:8786`);
with one job and no scheduler they run in this process, one after another. The
rows are the same either way, in the order of the configs. Each point's builds
live in their own content-addressed directories (written atomically, under a
lock), so parallel points, sweeps and workers sharing a cache never clobber a
build, and a re-run only measures what changed.

Failures: a point whose measure raises stops the sweep with a one-line error
naming the point (points are deterministic: measuring it again would fail
again); a worker that dies while measuring a point (killed, out of memory, its
host lost) has the point measured again, up to `worker_deaths` times on the
local cluster (on an external scheduler, its own
`distributed.scheduler.allowed-failures` times), then a one-line error naming
it; an unreachable scheduler, or one without workers, is a one-line error after
`connect_timeout` seconds. The output files are written only once every point
is measured, each one whole (atomically), so a failed sweep leaves the previous
files as they were.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from accelkit.config import BlockConfig
from accelkit.sim.build import atomic_write

from . import progress

CONNECT_TIMEOUT = 10.0  # seconds to reach a scheduler, and for it to have a worker
WORKER_DEATHS = 2  # local cluster: deaths of the worker running a point before the sweep gives up on it


class SweepError(RuntimeError):
    """A sweep that cannot finish: a point failed, or the cluster is out of reach."""


def grid(base: BlockConfig, axes: dict[str, list]) -> list[BlockConfig]:
    """Every combination of the axes' values applied to `base` (each one validated by its config)."""
    names = list(axes)
    return [base.replace(**dict(zip(names, combo, strict=True))) for combo in itertools.product(*axes.values())]


def point_name(cfg: BlockConfig) -> str:
    """A config by the fields that differ from its block's defaults: ``dybit-array (rows=2, cols=8)``."""
    default = type(cfg)()
    diff = [f"{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)
            if getattr(cfg, f.name) != getattr(default, f.name)]
    return f"{cfg.block} ({', '.join(diff) or 'default'})"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def run_sweep(configs: list[BlockConfig], measure: Callable[[BlockConfig], dict], jobs: int = 2,
              on_done: Callable[[BlockConfig, dict], None] | None = None, scheduler: str | None = None,
              connect_timeout: float = CONNECT_TIMEOUT, worker_deaths: int = WORKER_DEATHS) -> list[dict]:
    """Measure every config; rows in the order of `configs`, `on_done(cfg, row)` as each point ends.

    Without `scheduler`: `jobs` <= 1 measures in this process, more on a local Dask cluster of `jobs` worker
    processes (one thread each: a point's simulations set environment variables) listening on 127.0.0.1 only.
    With `scheduler` (an address such as ``tcp://host:8786``): on that scheduler's workers, whatever `jobs`;
    `measure` must be importable there (accelkit's own are). See the module docstring for failures.
    """
    if jobs <= 1 and scheduler is None:
        rows = []
        for cfg in configs:
            try:
                rows.append(measure(cfg))
            except Exception as e:
                raise SweepError(f"sweep point {point_name(cfg)}: {_first_line(e)}") from e
            if on_done:
                on_done(cfg, rows[-1])
        return rows
    with _dask_client(jobs, scheduler, connect_timeout) as client:
        # the local scheduler reports a worker's death at once and this loop reruns the point; an external
        # scheduler reruns it itself (its allowed-failures) before it reports one
        where = f"the Dask scheduler at {scheduler}" if scheduler else "the local Dask cluster"
        return _run_on(client, configs, measure, on_done, reruns=0 if scheduler else worker_deaths,
                       no_workers_timeout=connect_timeout, where=where)


@contextlib.contextmanager
def _dask_client(jobs: int, scheduler: str | None, connect_timeout: float) -> Iterator:
    import logging

    from distributed import Client, LocalCluster
    from distributed.utils import silence_logging_cmgr

    if scheduler is None:
        with progress.step(f"starting a local Dask cluster of {jobs} worker processes"):
            try:
                cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, memory_limit=0, silence_logs=logging.CRITICAL,
                                       scheduler_kwargs={"allowed_failures": 0})
            except (OSError, TimeoutError) as e:
                raise SweepError(f"cannot start a local Dask cluster of {jobs} workers: {_first_line(e)}") from e
        with cluster, Client(cluster) as client:
            yield client
        return
    # distributed's own log stays quiet: this module turns what goes wrong into one-line errors and progress lines
    with silence_logging_cmgr(logging.CRITICAL), contextlib.ExitStack() as stack:
        with progress.step(f"connecting to the Dask scheduler at {scheduler}"):
            try:
                client = stack.enter_context(Client(scheduler, timeout=connect_timeout))
            except (OSError, TimeoutError, ValueError) as e:
                raise SweepError(f"cannot reach the Dask scheduler at {scheduler} within {connect_timeout:g} s: "
                                 f"{_first_line(e)}") from None
        try:
            client.wait_for_workers(1, timeout=connect_timeout)
        except TimeoutError:
            raise SweepError(f"the Dask scheduler at {scheduler} has no workers (none joined within "
                             f"{connect_timeout:g} s): start some with `dask worker {scheduler}`") from None
        threads = sorted(set(client.nthreads().values()) - {1})
        if threads:  # a point's simulations and builds set environment variables: one point per process
            raise SweepError(f"the Dask workers of {scheduler} run {' or '.join(map(str, threads))} threads each: "
                             f"start them with `dask worker {scheduler} --nthreads 1 --nworkers N`")
        yield client


def _run_on(client, configs: list[BlockConfig], measure: Callable[[BlockConfig], dict],
            on_done: Callable[[BlockConfig, dict], None] | None, reruns: int, no_workers_timeout: float,
            where: str) -> list[dict]:
    """The points on `client`'s workers, no more in flight than the workers have threads, so that a worker
    holds one point per thread and the death of a worker is blamed on the point it was measuring (Dask blames
    every task a dead worker held, the ones queued on it too). A point whose worker died is measured again, up
    to `reruns` times."""
    from concurrent.futures import CancelledError

    from distributed import KilledWorker, wait

    sweep = uuid.uuid4().hex[:12]  # keys of their own, should several sweeps share a scheduler
    rows: list[dict | None] = [None] * len(configs)
    deaths = [0] * len(configs)  # of the workers measuring each point
    kills = [0] * len(configs)  # KilledWorker reports per point
    queue = list(range(len(configs)))  # to submit, in order; a point to measure again goes first
    running: dict = {}  # future -> point
    no_workers_since = None
    try:
        while queue or running:
            threads = sum(client.nthreads().values())
            while queue and len(running) < threads:
                i = queue.pop(0)
                running[client.submit(measure, configs[i], key=f"accelkit-sweep-{sweep}-{i}-{kills[i]}",
                                      pure=False)] = i
            if threads == 0:  # workers gone (a local one restarts in seconds; an external one may never)
                no_workers_since = no_workers_since or time.monotonic()
                if time.monotonic() - no_workers_since > no_workers_timeout:
                    raise SweepError(f"{where} has had no workers for {no_workers_timeout:g} s, with "
                                     f"{len(queue) + len(running)} points left")
            else:
                no_workers_since = None
            if not running:
                time.sleep(0.2)
                continue
            try:
                done = wait(list(running), timeout=1.0, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                continue
            except CancelledError as e:  # the connection to the scheduler lost, or the points cancelled there
                groups = getattr(e, "error_groups", None) or [e]
                why = "; ".join(sorted({getattr(g, "reason", None) or "unknown" for g in groups}))
                raise SweepError(f"{where}: the sweep's points were cancelled ({why}) with {len(queue) + len(running)} "
                                 "of them unmeasured") from None
            for fut in sorted(done, key=running.__getitem__):
                i = running.pop(fut)
                try:
                    rows[i] = fut.result()
                except KilledWorker as e:
                    kills[i] += 1
                    deaths[i] += e.allowed_failures + 1
                    if kills[i] > reruns:
                        raise SweepError(f"sweep point {point_name(configs[i])}: the Dask worker measuring it died "
                                         f"{deaths[i]} times (the last one {e.last_worker.address}); see the "
                                         "workers' logs") from None
                    progress.log(f"the Dask worker measuring {point_name(configs[i])} died ({e.last_worker.address}): "
                                 f"measuring it again (rerun {kills[i]} of at most {reruns})")
                    queue.insert(0, i)
                    continue
                except Exception as e:
                    if "deserialization of the task graph" in str(e):  # the scheduler's, not the point's
                        raise SweepError(f"{where} cannot unpickle {measure.__module__}.{measure.__qualname__}: "
                                         "run the scheduler and its workers where that module imports (accelkit "
                                         "installed, the same version)") from e
                    raise SweepError(f"sweep point {point_name(configs[i])}: {_first_line(e)}") from e
                if on_done:
                    on_done(configs[i], rows[i])
    finally:
        client.cancel(list(running))
    return rows


def write_tables(rows: list[dict], out: Path, stem: str) -> tuple[Path, Path]:
    """`stem`.json (the rows) and `stem`.csv (the same, one line per point), each written whole (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(rows, indent=2) + "\n"
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    return atomic_write(out / f"{stem}.json", text), atomic_write(out / f"{stem}.csv", buf.getvalue())


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
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    return atomic_write(out, png.getvalue())


def sweep_to_files(configs: list[BlockConfig], measure: Callable[[BlockConfig], dict], out: Path, stem: str,
                   title: str, label: Callable[[dict], str], jobs: int = 2,
                   on_done: Callable[[BlockConfig, dict], None] | None = None, **cluster) -> list[dict]:
    """Measure every config (`run_sweep`; `cluster`: its scheduler, connect_timeout, worker_deaths), then write
    `stem`.json, `stem`.csv and `stem`.png (ECP5 and Xilinx LUTs against the rows' `cycles`): nothing until
    every point is measured, then each file whole."""
    rows = run_sweep(configs, measure, jobs=jobs, on_done=on_done, **cluster)
    with progress.step(f"writing {out / stem}.json, .csv, .png"):
        write_tables(rows, out, stem)
        plot_area_cycles(rows, out / f"{stem}.png", title, label,
                         [("ecp5_lut4", "ECP5 LUT4"), ("xilinx_lut", "Xilinx LUT")])
    return rows
