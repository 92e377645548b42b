"""`accelkit network compile|sim|synth`: a network file (or an ESDA folder) to a compiled accelerator.

    accelkit network compile see_a.json --budget 3868 -o build/see_a      # config.json + compile.json
    accelkit network sim see_a.json --config build/see_a/config.json    # RTL run, bit-exact, cycles
    accelkit network synth --config build/see_a/config.json             # area, Fmax

NET is a network saved by `SparseNetwork.save` (.json beside its .npz) or an ESDA export folder.
Frames: ``--frames eye:N`` (N synthetic eye frames, 60 x 80), or a folder of .npz frames; by default
20 eye frames, or ESDA's own test frame for an ESDA folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from accelkit.config import ConfigError
from accelkit.config.network import SparseNetworkConfig
from accelkit.golden.network import SparseNetwork
from accelkit.golden.sparse_conv import SparseFrame

from .resources import DEVICES

# `see-a` names ESDA's eye tracker with random weights calibrated on these eye frames (the reference workload)
SEE_A_NAME, SEE_A_CALIBRATION = "see-a", 20


def load_network(path: str) -> tuple[SparseNetwork, list[SparseFrame] | None]:
    """The network at `path` and, for an ESDA folder, its test frame; `see-a`: SEE-A with random weights
    calibrated on the first 20 eye frames (seed 0), the reference workload."""
    if path == SEE_A_NAME:
        from accelkit.golden.events import eye_frames
        from accelkit.golden.network import SEE_A
        return SparseNetwork.random(SEE_A, frames=eye_frames(SEE_A_CALIBRATION), seed=0), None
    p = Path(path)
    if p.is_dir():
        from accelkit.golden.esda import read_esda
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
        return eye_frames(n)
    d = Path(spec)
    if not d.is_dir():
        raise ConfigError(f"--frames {spec!r} is invalid: eye:N or a folder of .npz frames")
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


def cmd_compile(args) -> int:
    from accelkit.flows.compile import compile_network, predicted_interval

    net, default = load_network(args.net)
    frames = load_frames(args.frames, net, default)
    if args.budget is None and args.device is None:
        raise ConfigError("--budget or --device: the compiler needs a MAC budget, a device, or both")
    cfg, summary = compile_network(net, frames, args.budget, device=args.device)
    cfg = cfg.replace(link_depth=args.link_depth)
    pred = predicted_interval(cfg, frames)
    summary.update(link_depth=args.link_depth, predicted_interval=round(pred["interval"], 1),
                   predicted_latency=pred["latency"], frames=len(frames))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.to_json() + "\n")
    (out / "compile.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("| layer | kind | PI | PO | MACs | MULT18 | EBR | sites | cycles | util |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for l in summary["layers"]:
        print(f"| {l['name']} | {l['kind']} | {l['pi']} | {l['po']} | {l['macs']} | {l['mult18']} | {l['ebr']} | "
              f"{l['sites']} | {l['cycles']} | {100 * l['utilisation']:.1f}% |")
    hard = f"MULT18X18D {summary['mult18']}, DP16KD {summary['ebr']}"
    if summary["ebr_estimated"]:
        hard += f" ({summary['ebr_estimated']} of them in memories yosys maps: estimated)"
    if args.device:
        b = summary["device_budget"]
        hard += f" of the {args.device}'s {b['mult18']} and {b['ebr']} (LUT4 not modelled: `accelkit network synth`)"
        if summary["ebr"] > b["ebr"]:
            hard += "; the identity FIFOs' block RAM takes it over the part's"
    print(hard)
    print(f"MAC units {summary['mac_units']}" + (f" of {args.budget}" if args.budget else "") +
          f"; bottleneck {summary['bottleneck']} cycles "
          f"({summary['bottleneck_layer']}), lower bound {summary['lower_bound']}, balance "
          f"{100 * summary['balance']:.1f}%; pipeline interval (cycle model, link FIFOs {args.link_depth}) "
          f"{summary['predicted_interval']}")
    print(f"written: {out / 'config.json'}, {out / 'compile.json'}")
    return 0


def cmd_sim(args) -> int:
    from accelkit.sim.network import run_network

    net, default = load_network(args.net)
    frames = load_frames(args.frames, net, default)
    cfg = _load_config(args.config)
    run = run_network(cfg, net, frames, gap=args.gap, stall=args.stall, seed=args.seed, streams=args.streams)
    print(json.dumps({"frames": len(frames), "bit_exact": True, "latency": run.latency,
                      "interval": run.interval, "predicted_latency": run.predicted_latency,
                      "predicted_interval": run.predicted_interval}, indent=1))
    return 0


def cmd_synth(args) -> int:
    from accelkit.flows.synth import synth_config

    cfg = _load_config(args.config)
    res = synth_config(cfg, targets=("ecp5", "xilinx"), fmax=not args.no_fmax, device=args.device,
                       seeds=tuple(range(1, args.seeds + 1)))
    print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "cells"} if isinstance(v, dict) else v)
                      for k, v in res.items()}, indent=1, default=str))
    return 0


def add_parser(sub) -> None:
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
    c.add_argument("--link-depth", type=int, default=64, help="FIFO beats between engines (default 64; 0: none)")
    c.add_argument("-o", "--out", required=True)
    c.set_defaults(func=cmd_compile)
    s = nsub.add_parser("sim", help="run the compiled network's RTL on frames, bit-exact against the golden net")
    s.add_argument("net")
    s.add_argument("--config", required=True, help="config.json from `accelkit network compile`")
    s.add_argument("--frames", default=None)
    s.add_argument("--gap", type=float, default=0.0)
    s.add_argument("--stall", type=float, default=0.0)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--streams", choices=("hdl", "cocotb"), default="hdl", help="hdl (default): the stream "
                   "sources, sinks and checks inside the simulator (fast); cocotb: driven from Python every cycle")
    s.set_defaults(func=cmd_sim)
    y = nsub.add_parser("synth", help="area (ECP5, Xilinx) and ECP5 Fmax of a compiled network")
    y.add_argument("--config", required=True)
    y.add_argument("--device", default="85k")
    y.add_argument("--seeds", type=int, default=3)
    y.add_argument("--no-fmax", action="store_true")
    y.set_defaults(func=cmd_synth)
