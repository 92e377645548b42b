"""accelkit: generate accelerator RTL, check it against golden models under Verilator, measure it.

  accelkit emit dybit-array --rows 4 --cols 4 -o out/    Verilog for an FPGA project, and its config
  accelkit sim dybit-array --waves                       run the RTL on random data, check it, count cycles
  accelkit synth dybit-array --rows 8 --cols 8           ECP5 and Xilinx area, ECP5 Fmax
  accelkit sweep dybit-array -o sweep/                   area against cycles over rows x cols
  accelkit report                                        every block's default config, end to end
  accelkit network compile|sim|synth NET ...             a whole sparse network (docs/network.md)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from accelkit.blocks import BLOCKS, get_block
from accelkit.config import ConfigError


def _add_config_options(p: argparse.ArgumentParser) -> None:
    """--<field> for every config field of every block (parsed later, against the chosen block)."""
    seen = set()
    for block in BLOCKS.values():
        try:
            cls = block.config_cls
        except ImportError:  # a block whose config is not written yet
            continue
        for f in dataclasses.fields(cls):
            if f.name in seen:
                continue
            seen.add(f.name)
            p.add_argument(f"--{f.name.replace('_', '-')}", dest=f"cfg_{f.name}", default=None, metavar="V",
                           help=argparse.SUPPRESS)


def _parse_value(text: str, default):
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{text!r} is not a boolean (true/false)")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{text!r} is not an integer") from None
    return text


def config_from_args(block_name: str, args) -> object:
    block = get_block(block_name)
    cls = block.config_cls
    fields = {f.name: f for f in dataclasses.fields(cls)}
    changes = {}
    for key, value in vars(args).items():
        if not key.startswith("cfg_") or value is None:
            continue
        name = key[4:]
        if name not in fields:
            raise ConfigError(f"--{name.replace('_', '-')} is invalid for {block_name}: its parameters are "
                              + ", ".join("--" + n.replace("_", "-") for n in fields))
        try:
            changes[name] = _parse_value(value, fields[name].default)
        except ConfigError as e:
            raise ConfigError(f"--{name.replace('_', '-')}: {e}") from None
    return cls(**changes)


def cmd_emit(args) -> int:
    import re

    from accelkit.flows.fusesoc import core_name, write_core
    from accelkit.flows.lint import lint

    cfg = config_from_args(args.block, args)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args.top):
        raise ConfigError(f"--top {args.top!r} is invalid: a Verilog identifier (letters, digits, _)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.block.replace("-", "_")
    if args.axis:
        from accelkit.gen.axis import config_tables, emit_axis_verilog

        text = emit_axis_verilog(cfg, top=args.top)
    else:
        from accelkit.sim.build import verilog_file

        text = verilog_file(cfg).read_text()
        if args.top != "top":
            # the top module and its submodules (`\top.layer0`), so that two emitted blocks never share a name
            text = text.replace("module top(", f"module {args.top}(").replace("\\top.", f"\\{args.top}.")
    verilog, config = out / f"{name}.v", out / f"{name}.json"
    verilog.write_text(text)
    config.write_text(cfg.to_json() + "\n")
    warnings = lint(verilog, top=args.top)
    print(f"{verilog}: top module {args.top}{', AXI4-Stream ports' if args.axis else ''}, Verilator lint: "
          + ("clean" if not warnings else f"{len(warnings)} warning(s)"))
    for w in warnings:
        print("  " + w)
    print(f"{config}: the config it was generated from")
    if args.axis:
        layout = out / f"{name}_axis.md"
        layout.write_text(f"# {args.block} AXI4-Stream ports: byte layout (docs/axis.md)\n\n" + config_tables(cfg))
        print(f"{layout}: the byte layout of every AXI4-Stream port")
    core = write_core(out, cfg, top=args.top, verilog=verilog, config=config, axis=args.axis)
    print(f"{core}: FuseSoC core {core_name(cfg.block, args.top)} (targets default, lint, synth)")
    return 0


def cmd_sim(args) -> int:
    cfg = config_from_args(args.block, args)
    bench = get_block(args.block).bench_module
    res = bench.smoke(cfg, seed=args.seed, waves=args.waves, gap=args.gap, stall=args.stall)
    print(json.dumps(res, indent=2))
    return 0


def cmd_synth(args) -> int:
    from accelkit.flows import progress
    from accelkit.flows.synth import part, synth_config

    cfg = config_from_args(args.block, args)
    if args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds} is invalid: at least 1")
    seeds = tuple(range(1, args.seeds + 1))
    p = part(args.device)
    fmax = not args.no_fmax
    # one step per flow (each one's figures cached as it ends), then all of them from the cache
    with progress.task(f"synth {args.block}"):
        for target in ("ecp5", "xilinx"):
            with progress.step(f"{args.block}: yosys {target} synthesis"):
                synth_config(cfg, targets=(target,), fmax=False, device=args.device)
        if fmax:
            at_once = "one at a time" if args.seed_jobs == 1 else f"{args.seed_jobs} at a time"
            with progress.step(f"{args.block}: nextpnr-ecp5 on {p.name}-{p.speed}"
                               f"{' with ' + args.router if args.router else ''}, seeds "
                               f"{', '.join(map(str, seeds))} ({at_once})"):
                synth_config(cfg, targets=(), fmax=True, device=args.device, seeds=seeds, seed_jobs=args.seed_jobs,
                             router=args.router)
        res = synth_config(cfg, targets=("ecp5", "xilinx"), fmax=fmax, device=args.device, seeds=seeds,
                           seed_jobs=args.seed_jobs, router=args.router)
    for target, figs in res.items():
        if target != "fmax":
            print(f"{target}: " + ", ".join(f"{k}={v}" for k, v in figs.items() if not isinstance(v, dict | list)))
    if "fmax" in res:
        f, cp = res["fmax"], res["fmax"]["critical_path"]
        print(f"fmax: median {f['fmax_mhz']} MHz over seeds {','.join(map(str, f['seeds']))} "
              f"({', '.join(map(str, f['seeds'].values()))}) on {f['part']}-{f['speed']} {f['package']}")
        carry = f" ({cp['carry_levels']} in carry chains)" if cp["carry_levels"] else ""
        print(f"critical path: {cp['start']} -> {cp['end']}, {cp['logic_levels']} logic levels{carry}, "
              f"{cp['total_ns']} ns, {round(100 * cp['routing_share'])}% routing")
    return 0


def cmd_sweep(args) -> int:
    from accelkit.flows import progress
    from accelkit.flows.sweep import grid, point_name

    block = get_block(args.block)
    bench = block.bench_module
    base = config_from_args(args.block, args)
    axes = dict(bench.SWEEP_AXES)
    for spec in args.axis or []:
        name, _, values = spec.partition("=")
        default = getattr(base, name.replace("-", "_"), None)
        if default is None or not values:
            raise ConfigError(f"--axis {spec!r} is invalid: write NAME=V1,V2,... with a parameter of {args.block}")
        axes[name.replace("-", "_")] = [_parse_value(v, default) for v in values.split(",")]
    if args.connect_timeout <= 0:
        raise ConfigError(f"--connect-timeout {args.connect_timeout:g} is invalid: a positive number of seconds")
    out = Path(args.out)
    n = len(grid(base, axes))
    with progress.task(f"sweep {args.block}", total=n) as task:
        rows = bench.sweep(out, base=base, axes=axes, jobs=args.jobs,
                           on_done=lambda cfg, row: task.advance(f"measured {point_name(cfg)}"),
                           scheduler=args.scheduler, connect_timeout=args.connect_timeout)
    print(bench.render_sweep(rows))
    print(f"written: {out}/ (JSON, CSV, PNG)")
    return 0


# Blocks benched by no module of their own (no smoke, sweep or area points of their config) whose report section is
# this module's `report(out, jobs, on_done, full)`: the network top's is a compiled reference network, SEE-A.
REPORT_SECTIONS = {"sparse-network": "accelkit.flows.bench_network"}


def cmd_report(args) -> int:
    import importlib
    import time

    from rich.console import Console
    from rich.markdown import Markdown

    from accelkit.flows import progress
    from accelkit.flows.sweep import point_name

    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scope = ("full: every figure, the long ones included" if args.full else
             "default: the figures that take minutes; `accelkit report --full` adds the long ones")
    sections = [f"# accelkit report\n\nScope: {scope}.\n"]
    # Synthesis and place-and-route of every point start at once in the background, cached by content; the
    # sections run their RTL simulations meanwhile and then find their areas in the cache (or wait on its lock).
    from concurrent.futures import ProcessPoolExecutor

    from accelkit.flows.measure import measured_area

    benches = {block.name: block.bench_module if block.bench else importlib.import_module(REPORT_SECTIONS[block.name])
               for block in BLOCKS.values() if block.bench or block.name in REPORT_SECTIONS}
    pool = ProcessPoolExecutor(max_workers=args.jobs)
    # a line per step and per measured point when the output is a file, a live display on a terminal
    task = progress.task("report", total=len(benches))
    try:
        # submitted (the pool's processes forked) before the live display's thread starts
        background = [pool.submit(measured_area, cfg, **kw) for bench in benches.values()
                      for cfg, kw in bench.area_points(args.full)]
        with task:
            task.log(f"report: synthesis and place and route of {len(background)} configs started in "
                     f"{args.jobs} background process{'es' if args.jobs != 1 else ''}")
            for block in BLOCKS.values():
                if block.name not in benches:
                    sections.append(f"## {block.name}\n\nNo report section of its own: {block.summary}; its RTL is "
                                    "checked end to end against the golden model in the regressions (`nox -s sim`).\n")
                    continue
                start = time.monotonic()
                with progress.step(f"{block.name}: report section"):
                    res, md = benches[block.name].report(out, jobs=args.jobs, full=args.full,
                                                         on_done=lambda cfg, row, name=block.name: task.log(
                                                             f"{name}: measured {point_name(cfg)}"))
                res["seconds"] = round(time.monotonic() - start, 1)
                task.advance(f"{block.name} section done in {res['seconds']:.0f} s")
                sections.append(md)
                (out / f"{block.name}.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
            with progress.step("report: the background syntheses"):
                for f in background:
                    f.result()  # a failure here would have failed its section first
    finally:
        pool.shutdown(cancel_futures=True)  # a failed section does not wait for the rest of the queue
    text = "\n".join(sections)
    (out / "report.md").write_text(text)
    from accelkit.flows.figures import write_report_html

    html = write_report_html(out / "report.md")
    console.print(Markdown(text))
    console.print(f"report written to {out / 'report.md'} and {html} (one file, pictures inside; PNG and JSON per "
                  "block beside them)")
    return 0


def main(argv=None) -> int:
    from accelkit.flows.synth import add_place_route_args

    p = argparse.ArgumentParser(prog="accelkit", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    blocks = sorted(BLOCKS)

    def block_cmd(name: str, help: str):
        s = sub.add_parser(name, help=help, description=help + "\n\nConfig parameters are given as --name value; "
                           "`accelkit params BLOCK` lists them.", formatter_class=argparse.RawTextHelpFormatter)
        s.add_argument("block", choices=blocks)
        _add_config_options(s)
        return s

    s = block_cmd("emit", "write a block's Verilog, the config it was made from and a FuseSoC core for an FPGA "
                  "project")
    s.add_argument("-o", "--out", required=True, help="output folder")
    s.add_argument("--top", default="top", help="name of the top module (default: top)")
    s.add_argument("--axis", action="store_true", help="wrap the block's streams as AXI4-Stream ports with Vivado "
                   "interface attributes (byte layout: docs/axis.md, and <block>_axis.md beside the Verilog)")
    s.set_defaults(func=cmd_emit)
    s = block_cmd("sim", "run a block's RTL under Verilator on random data, bit-exact against its golden model")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--waves", action="store_true", help="write a VCD waveform and print its path")
    s.add_argument("--gap", type=float, default=0.0, help="chance of an idle input cycle")
    s.add_argument("--stall", type=float, default=0.0, help="chance of an output stall per cycle")
    s.set_defaults(func=cmd_sim)
    s = block_cmd("synth", "synthesise a block with yosys (ECP5, Xilinx UltraScale+) and place it with nextpnr-ecp5")
    add_place_route_args(s)
    s.set_defaults(func=cmd_synth)
    s = block_cmd("sweep", "measure area, Fmax and cycles over a grid of configs: JSON, CSV and a plot")
    s.add_argument("-o", "--out", default="sweep", help="output folder (default: sweep/)")
    s.add_argument("--axis", action="append", metavar="NAME=V1,V2", help="sweep axis (repeatable; default: "
                   "the block's own, e.g. rows=1,2,4,8 cols=1,2,4,8)")
    s.add_argument("-j", "--jobs", type=int, default=2, help="parallel points: worker processes of a local Dask "
                   "cluster (default 2; 1 measures them in this process; ignored with --scheduler)")
    s.add_argument("--scheduler", metavar="ADDRESS", help="run the points on an existing Dask scheduler's workers, "
                   "e.g. tcp://host:8786 (`dask scheduler`, then `dask worker tcp://host:8786` on each machine)")
    s.add_argument("--connect-timeout", type=float, default=10.0, metavar="S", help="seconds to reach the "
                   "scheduler and find a worker on it, and to wait for workers should all of them go (default 10)")
    s.set_defaults(func=cmd_sweep)
    s = sub.add_parser("params", help="list a block's config parameters and defaults")
    s.add_argument("block", choices=blocks)
    s.set_defaults(func=cmd_params)
    r = sub.add_parser("report", help="every block's default config end to end: Markdown + HTML + PNG + JSON report")
    r.add_argument("-o", "--out", default="report", help="output folder (default: report/)")
    r.add_argument("-j", "--jobs", type=int, default=2, help="parallel synthesis jobs (default 2)")
    r.add_argument("--full", action="store_true", help="also the long figures (16-lane Hyft and float baseline "
                   "area and Fmax, ...): hours from a cold cache; the default takes about 10 minutes")
    r.set_defaults(func=cmd_report)
    from accelkit.flows.network import add_parser as add_network_parser
    add_network_parser(sub)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, RuntimeError, ValueError, AssertionError) as e:
        print(f"accelkit: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2


def cmd_params(args) -> int:
    cls = get_block(args.block).config_cls
    print(f"{args.block} ({cls.__name__}):")
    for f in dataclasses.fields(cls):
        print(f"  --{f.name.replace('_', '-'):<16} default {f.default!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
