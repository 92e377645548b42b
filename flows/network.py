"""`accelkit network compile|sim|synth`: a network file (or an ESDA folder) to a compiled accelerator.

    accelkit network compile see_a.json --budget 3868 -o build/see_a      # config.json + compile.json
    accelkit network sim see_a.json --config build/see_a/config.json    # RTL run, bit-exact, cycles
    accelkit network synth --config build/see_a/config.json             # area, Fmax

NET is a network saved by `SparseNetwork.save` (.json beside its .npz) or an ESDA export folder.
Frames: ``--frames eye:N`` (N synthetic eye frames, 60 x 80), or a folder of .npz frames; by default
20 eye frames, or ESDA's own test frame for an ESDA folder.

Each command shows its steps as it goes (flows/progress.py: a line per step with the elapsed time into a
file or a pipe, a live display on a terminal): compile on stdout before its table, sim and synth on
stderr, their stdout being the JSON of their figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from accelkit.config import ConfigError
from accelkit.config.network import SparseNetworkConfig
from accelkit.golden.network import SparseNetwork
from accelkit.golden.sparse_conv import SparseFrame

from . import progress
from .resources import DEVICES

# `see-a` names ESDA's eye tracker with random weights calibrated on these eye frames (the reference workload)
SEE_A_NAME, SEE_A_CALIBRATION = "see-a", 20


def load_network(path: str) -> tuple[SparseNetwork, list[SparseFrame] | None]:
    """The network at `path` and, for an ESDA folder, its test frame; `see-a`: SEE-A with random weights
    calibrated on the first 20 eye frames (seed 0), the reference workload."""
    if path == SEE_A_NAME:
        from accelkit.golden.events import eye_frames
        from accelkit.golden.network import SEE_A
        with progress.step(f"network: SEE-A (ESDA's eye tracker), random weights calibrated on "
                           f"{SEE_A_CALIBRATION} eye frames"):
            return SparseNetwork.random(SEE_A, frames=eye_frames(SEE_A_CALIBRATION), seed=0), None
    p = Path(path)
    if p.is_dir():
        from accelkit.golden.esda import read_esda
        with progress.step(f"network: reading the ESDA folder {p}"):
            ex = read_esda(p)
        return ex.network, [ex.frame]
    return SparseNetwork.load(p), None


def load_frames(spec: str | None, net: SparseNetwork, default: list[SparseFrame] | None) -> list[SparseFrame]:
    if spec is None and default is not None:
        return default
    spec = spec or "eye:20"
    if spec.startswith("eye:"):
        from accelkit.golden.events import eye_frames
        try:
            n = int(spec[4:])
        except ValueError:
            raise ConfigError(f"--frames {spec!r} is invalid: eye:N with N an integer") from None
        if (net.height, net.width) != (60, 80):
            raise ConfigError(f"--frames {spec!r} is invalid: eye frames are 60 x 80, the network takes "
                              f"{net.height} x {net.width}")
        with progress.step(f"network: {n} synthetic eye frames (60 x 80)"):
            return eye_frames(n)
    d = Path(spec)
    if not d.is_dir():
        raise ConfigError(f"--frames {spec!r} is invalid: eye:N or a folder of .npz frames")
    with progress.step(f"network: frames from {d}"):
        frames = [SparseFrame.from_npz(f) for f in sorted(d.glob("*.npz"))]
    if not frames:
        raise ConfigError(f"--frames {spec!r} is invalid: the folder has no .npz frames")
    return frames


def _load_config(path: str) -> SparseNetworkConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {path!r} is invalid: no such file")
    try:
        return SparseNetworkConfig.from_dict(json.loads(p.read_text()))
    except json.JSONDecodeError as e:
        raise ConfigError(f"--config {path!r} is invalid: not JSON ({e})") from None


def compile_and_predict(net: SparseNetwork, frames: list[SparseFrame], budget: int | None, device: str | None = None,
                        link_depth: int | str = "auto", max_link_depth: int = 1024,
                        retime: int = 1) -> tuple[SparseNetworkConfig, dict]:
    """`accelkit network compile`'s figures (the report's network section shows the same): the compiler's
    allocation and summary (`compile_network`), the link FIFOs (`link_depth` beats each, or "auto": each sized
    by `choose_link_depths`, up to `max_link_depth`), and the whole pipeline's cycle model on `frames` back to
    back (`predicted_interval`, `predicted_latency` per frame). `retime`: fabric registers after every product
    (`SparseNetworkConfig.retimed`; they cost flip-flops and latency, no multiplier or block RAM)."""
    from accelkit.flows.compile import choose_link_depths, compile_network, predicted_interval
    from accelkit.flows.resources import network_resources

    what = " and ".join(([f"{budget} MAC units"] if budget is not None else []) + ([device] if device else []))
    with progress.step(f"network: allocation for {what}: each layer's work on {len(frames)} frames, the MILP over "
                       "every layer's PI and PO, solved again on the RTL cycle model near the bottleneck"):
        cfg, summary = compile_network(net, frames, budget, device=device)
    cfg = cfg.retimed(retime)
    summary.update(retime=retime)
    if link_depth == "auto":
        with progress.step(f"network: link FIFO depths, each the shallowest (up to {max_link_depth}) that keeps the "
                           f"cycle model's interval on {len(frames)} frames within 0.5% of all at {max_link_depth}"):
            cfg, links = choose_link_depths(cfg, frames, max_link_depth)
        pred = links
        summary.update(link_reference_interval=round(links["reference"], 1), max_link_depth=max_link_depth)
    else:
        cfg = cfg.replace(link_depth=link_depth)
        with progress.step(f"network: the pipeline's cycle model, {len(frames)} frames back to back "
                           f"(link FIFOs {link_depth})"):
            pred = predicted_interval(cfg, frames)
    hard = network_resources(cfg)  # the link FIFOs' block RAM now counted too
    summary.update(link_depth=list(cfg.link_depths), ebr=hard["ebr"], ebr_estimated=hard["ebr_estimated"],
                   predicted_interval=round(pred["interval"], 1), predicted_latency=pred["latency"],
                   frames=len(frames))
    return cfg, summary


def links_text(summary: dict) -> str:
    """How the link FIFOs are sized, for a sentence: "64-beat link FIFOs" or the compiler's choice."""
    depths = summary["link_depth"]
    if isinstance(depths, int):
        return f"{depths}-beat link FIFOs"
    if "max_link_depth" not in summary and len(set(depths)) <= 1:
        return f"{depths[0] if depths else 0}-beat link FIFOs"
    return (f"link FIFOs of {min(depths)} to {max(depths)} beats chosen per link (up to "
            f"{summary.get('max_link_depth', max(depths))}; {sum(depths)} beats in all)")


def layer_table(summary: dict, totals: bool = False) -> str:
    """The compiler's per-layer figures as a Markdown table (`totals`: with the identity FIFOs and the totals).
    Cycles from the spec's estimate rather than the RTL cycle model are marked `est.`; the bottleneck layer is
    bold."""
    from .measure import md_table

    rows = []
    for l in summary["layers"]:
        name = f"**{l['name']}**" if l["name"] == summary["bottleneck_layer"] else l["name"]
        cycles = f"{l['cycles']}" + ("" if l.get("modelled", True) else " est.")
        rows.append([name, l["kind"], f"{l['cin']}→{l['cout']}", l["pi"], l["po"], l["macs"], l["useful_macs"],
                     l["sites"], cycles, f"{100 * l['utilisation']:.1f}%", l["mult18"], l["ebr"]])
    if totals:
        layers = summary["layers"]
        fifo = summary["ebr"] - sum(l["ebr"] for l in layers)
        if fifo:
            rows.append(["identity and link FIFOs", "", "", "", "", "", "", "", "", "", "-", fifo])
        rows.append(["total", "", "", "", "", summary["mac_units"], summary["useful_macs"], "",
                     f"max {summary['bottleneck']}", "", summary["mult18"], summary["ebr"]])
    return md_table(["layer", "kind", "channels", "PI", "PO", "MAC units", "useful MACs", "sites", "cycles",
                     "util", "MULT18X18D", "DP16KD"], rows)


def _link_depth(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: auto or a number of beats") from None


def cmd_compile(args) -> int:
    if args.budget is None and args.device is None:
        raise ConfigError("--budget or --device: the compiler needs a MAC budget, a device, or both")
    with progress.task("network compile"):
        net, default = load_network(args.net)
        frames = load_frames(args.frames, net, default)
        cfg, summary = compile_and_predict(net, frames, args.budget, args.device, args.link_depth,
                                           args.max_link_depth, args.retime)
        out = Path(args.out)
        with progress.step(f"network: writing {out / 'config.json'}, {out / 'compile.json'}"):
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(cfg.to_json() + "\n")
            (out / "compile.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(layer_table(summary))
    hard = f"MULT18X18D {summary['mult18']}, DP16KD {summary['ebr']}"
    if summary["ebr_estimated"]:
        hard += f" ({summary['ebr_estimated']} of them in memories yosys maps: estimated)"
    if args.device:
        b = summary["device_budget"]
        hard += f" of the {args.device}'s {b['mult18']} and {b['ebr']} (LUT4 not modelled: `accelkit network synth`)"
        if summary["ebr"] > b["ebr"]:
            hard += "; the identity and link FIFOs' block RAM takes it over the part's"
    print(hard)
    print(f"MAC units {summary['mac_units']}" + (f" of {args.budget}" if args.budget else "") +
          f"; bottleneck {summary['bottleneck']} cycles "
          f"({summary['bottleneck_layer']}), lower bound {summary['lower_bound']}, balance "
          f"{100 * summary['balance']:.1f}%; pipeline interval (cycle model, {links_text(summary)}) "
          f"{summary['predicted_interval']}")
    print(f"written: {out / 'config.json'}, {out / 'compile.json'}")
    return 0


def cmd_sim(args) -> int:
    from accelkit.sim.network import run_network

    # progress on stderr: stdout is the run's JSON
    with progress.task("network sim", file=sys.stderr):
        net, default = load_network(args.net)
        frames = load_frames(args.frames, net, default)
        cfg = _load_config(args.config)
        how = {"hdl": "streams inside the simulator, under cocotb", "native": "streams inside the simulator, no cocotb",
               "cocotb": "streams driven by cocotb"}[args.streams] + (
            f", gap {args.gap:g}, stall {args.stall:g}" if args.gap or args.stall else "")
        with progress.step(f"network: Verilator build of the {len(cfg.layers)}-engine top (cached by content), then "
                           f"{len(frames)} frames back to back through it ({how}), every pooled beat checked "
                           "against the golden network"):
            run = run_network(cfg, net, frames, gap=args.gap, stall=args.stall, seed=args.seed, streams=args.streams)
        exact = run.latency == run.predicted_latency and abs(run.interval - run.predicted_interval) < 1e-6
        progress.log(f"network: bit-exact on {len(frames)} frames; interval {run.interval:.1f} cycles, the cycle "
                     f"model's {run.predicted_interval:.1f}" + ("; every latency the model's" if exact else
                                                                 " (the model is exact without gaps and stalls)"))
    print(json.dumps({"frames": len(frames), "bit_exact": True, "latency": run.latency,
                      "interval": run.interval, "predicted_latency": run.predicted_latency,
                      "predicted_interval": run.predicted_interval}, indent=1))
    return 0


def cmd_synth(args) -> int:
    from accelkit.flows.synth import part, synth_config

    cfg = _load_config(args.config)
    fmax = not args.no_fmax
    if fmax and args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds} is invalid: at least 1")
    seeds = tuple(range(1, args.seeds + 1))
    top = f"the {len(cfg.layers)}-engine network top"
    # one step per flow (each one's figures cached as it ends), then all of them from the cache, as `accelkit synth`;
    # progress on stderr: stdout is the figures' JSON
    with progress.task("network synth", file=sys.stderr):
        for target in ("ecp5", "xilinx"):
            with progress.step(f"network: yosys {target} synthesis of {top}"):
                synth_config(cfg, targets=(target,), fmax=False, device=args.device)
        if fmax:
            p = part(args.device)
            with progress.step(f"network: nextpnr-ecp5 on {p.name}-{p.speed}, seeds {', '.join(map(str, seeds))}"):
                synth_config(cfg, targets=(), fmax=True, device=args.device, seeds=seeds, seed_jobs=args.seed_jobs,
                             router=args.router)
        res = synth_config(cfg, targets=("ecp5", "xilinx"), fmax=fmax, device=args.device, seeds=seeds,
                           router=args.router)
    print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "cells"} if isinstance(v, dict) else v)
                      for k, v in res.items()}, indent=1, default=str))
    return 0


def add_parser(sub) -> None:
    from accelkit.flows.synth import add_place_route_args

    n = sub.add_parser("network", help="compile, simulate and synthesise a whole sparse network",
                       description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    nsub = n.add_subparsers(dest="network_cmd", required=True)
    c = nsub.add_parser("compile", help="choose every layer's PI and PO for a MAC budget and/or an ECP5 part; "
                        "write the config")
    c.add_argument("net", help="network .json (with its .npz), an ESDA export folder, or see-a (ESDA's eye "
                   "tracker, random weights calibrated on eye frames)")
    c.add_argument("--budget", type=int, default=None, help="MAC units")
    c.add_argument("--device", default=None, choices=sorted(DEVICES),
                   help="fit the engines' multipliers and block RAMs (MULT18X18D, DP16KD) into this ECP5 part")
    c.add_argument("--frames", default=None, help="eye:N or a folder of .npz frames")
    c.add_argument("--link-depth", type=_link_depth, default="auto",
                   help="FIFO beats between engines: auto (default: each link the shallowest that keeps the "
                        "interval within 0.5%% of all at --max-link-depth), or one depth for all (0: wired directly)")
    c.add_argument("--max-link-depth", type=int, default=1024, help="the deepest link --link-depth auto tries "
                   "(default 1024; a power of two up to 4096)")
    c.add_argument("--retime", type=int, default=1, choices=range(5), metavar="N",
                   help="fabric registers after every multiplier's product, 0 to 4 (default 1; 2 for a network that "
                        "fills most of the part's multipliers, whose placement spreads them far from their adders)")
    c.add_argument("-o", "--out", required=True)
    c.set_defaults(func=cmd_compile)
    s = nsub.add_parser("sim", help="run the compiled network's RTL on frames, bit-exact against the golden net")
    s.add_argument("net")
    s.add_argument("--config", required=True, help="config.json from `accelkit network compile`")
    s.add_argument("--frames", default=None)
    s.add_argument("--gap", type=float, default=0.0)
    s.add_argument("--stall", type=float, default=0.0)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--streams", choices=("hdl", "native", "cocotb"), default="hdl", help="hdl (default): the "
                   "stream sources, sinks and checks inside the simulator (fast), under cocotb; native: the same with "
                   "no cocotb; cocotb: driven from Python every cycle")
    s.set_defaults(func=cmd_sim)
    y = nsub.add_parser("synth", help="area (ECP5, Xilinx) and ECP5 Fmax of a compiled network")
    y.add_argument("--config", required=True)
    add_place_route_args(y, seed_jobs=1)
    y.set_defaults(func=cmd_synth)
