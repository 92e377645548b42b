"""The whole-network section of `accelkit report`: the reference workload SEE-A compiled as
`accelkit network compile see-a --budget 3868 --frames eye:20` compiles it (flows/network.py
`compile_and_predict`: the compiler's MILP and the RTL cycle model, seconds), shown per layer with its
work, cycles, utilisation and ECP5 hard blocks, the balance against the lower bound, and what the part
holds. No RTL here: the whole network under Verilator is `nox -s see_a` (long), its area `accelkit
network synth` (it does not fit one ECP5).
"""

from __future__ import annotations

from pathlib import Path

from accelkit.config import ConfigError
from accelkit.golden.network import SparseNetwork
from accelkit.golden.sparse_conv import SparseFrame

from . import figures, progress
from .network import (
    SEE_A_CALIBRATION,
    SEE_A_NAME,
    compile_and_predict,
    layer_table,
    links_text,
    load_frames,
    load_network,
)
from .resources import device_budget

WORKLOAD = SEE_A_NAME
BUDGET = 3868  # MAC units: ESDA's SEE-A build (docs/network.md)
FRAMES = f"eye:{SEE_A_CALIBRATION}"
LINK_DEPTH = "auto"  # each link FIFO sized by the compiler (flows/compile.py `choose_link_depths`)
DEVICE = "ecp5-85k"  # the largest ECP5: the part the hard blocks are held against
RTL_COMMAND = "nox -s see_a"


def area_points(full: bool = False) -> list:
    """No synthesis in this section (`accelkit report` starts every section's syntheses early)."""
    return []


def section(net: SparseNetwork, frames: list[SparseFrame], budget: int | None, out: Path, *, name: str,
            command: str, device: str = DEVICE, link_depth: int | str = LINK_DEPTH) -> dict:
    """A compiled network's figures for the report: `compile_and_predict`'s config summary, and whether its
    engines' hard blocks fit `device`: if they do not, the compiler asked for the part says why (its one-line
    refusal), or gives the allocation that does fit."""
    _, summary = compile_and_predict(net, frames, budget, link_depth=link_depth)
    part = device_budget(device)
    fits = summary["mult18"] <= part["mult18"] and summary["ebr"] <= part["ebr"]
    res = {"workload": name, "command": command, "mac_budget": budget, "frames": len(frames),
           "link_depth": summary["link_depth"], "summary": summary,
           "device": {"name": device, **part, "fits": fits}}
    if not fits:
        from .compile import compile_network

        with progress.step(f"network: {name} compiled for the {device} (its MULT18X18D and DP16KD as the budget)"):
            try:
                _, fitted = compile_network(net, frames, budget, device=device)
            except ConfigError as e:
                res["device"]["compiler"] = str(e).splitlines()[0]
            else:
                res["device"]["fitted"] = {k: fitted[k] for k in ("mac_units", "mult18", "ebr", "bottleneck",
                                                                  "bottleneck_layer", "balance")}
    with progress.step(f"network: {name} figure"):
        res["figures"] = {"balance": figures.network_balance(
            summary, out, f"{name.lower().replace('-', '_')}_balance.png",
            f"{name}: {summary['mac_units']} MAC units over {len(summary['layers'])} layers")}
    return res


def report(out: Path, jobs: int = 2, on_done=None, full: bool = False) -> tuple[dict, str]:
    """The network section of `accelkit report` (seconds; `full` adds nothing: SEE-A's RTL run is
    `nox -s see_a`)."""
    net, default = load_network(WORKLOAD)
    frames = load_frames(FRAMES, net, default)
    command = f"accelkit network compile {WORKLOAD} --budget {BUDGET} --frames {FRAMES} -o see_a"
    res = section(net, frames, BUDGET, out, name="SEE-A", command=command)
    return res, render(res)


def render(res: dict) -> str:
    s, d = res["summary"], res["device"]
    layers = s["layers"]
    units = s["mac_units"]
    budget = res["mac_budget"]
    estimated = [l["name"] for l in layers if not l.get("modelled", True)]
    md = [f"## Whole network: {res['workload']}\n\n"
          f"`{res['command']}`: the compiler's allocation of every layer's PI and PO"
          + (f" within {budget} MAC units" if budget is not None else "")
          + f", balanced on {res['frames']} frames (the mixed-integer program on the spec's estimate, then again on "
          "the RTL cycle model near the bottleneck; docs/network.md), and the whole pipeline's cycle model with "
          f"{links_text(s)}. Modelled, not simulated: the RTL of the whole network runs in "
          f"`{RTL_COMMAND}` (the {len(layers)}-engine top under Verilator on the same frames, bit-exact against the "
          "golden network, its cycles the model's).\n",
          "Work: useful MACs per frame (per output site its active neighbours x Cin x Cout, Cin for a depthwise "
          "layer), the mean over the frames. Cycles: per frame, the RTL cycle model's"
          + (f" (the spec's estimate where marked est.: {', '.join(estimated)})" if estimated else "")
          + ". Utilisation: work / (MAC units x the layer's cycles). The bottleneck layer is in bold. MULT18X18D "
          "and DP16KD: each engine's ECP5 hard blocks (flows/resources.py, the generator's own counts).\n",
          layer_table(s, totals=True)]
    pooled = s["useful_macs"] / (units * s["predicted_interval"]) if s.get("predicted_interval") else None
    lat = s.get("predicted_latency") or []
    md.append(f"\nBottleneck: {s['bottleneck_layer']}, {s['bottleneck']:,} cycles per frame. Lower bound: "
              f"{s['useful_macs']:,} useful MACs / {budget if budget is not None else units:,} MAC units = "
              f"{s['lower_bound']:,} cycles. Balance (lower bound / bottleneck): {100 * s['balance']:.1f}%. "
              f"MAC units allocated: {units:,}" + (f" of {budget:,}" if budget is not None else "") + ".\n")
    if s.get("predicted_interval"):
        md.append(f"Predicted interval of the whole pipeline (cycle model, {res['frames']} frames back to back, "
                  f"{links_text(s)}): {s['predicted_interval']:,} cycles per frame"
                  + (f", latency {min(lat):,} to {max(lat):,} cycles" if lat else "")
                  + f"; the MAC units do useful work {100 * pooled:.1f}% of the time at that interval."
                  + (" Above the bottleneck: the engines' coupling, a layer waiting whenever its neighbour is in a "
                     "slow stretch of the frame (deeper link FIFOs close part of the gap)."
                     + (f" With every link at {s['max_link_depth']} beats it would be "
                        f"{s['link_reference_interval']:,}." if "link_reference_interval" in s else "")
                     if s["predicted_interval"] > 1.01 * s["bottleneck"] else "") + "\n")
    fifo = s["ebr"] - sum(l["ebr"] for l in layers)  # the identity and link FIFOs' (RegisteredFifos)
    inferred = s["ebr_estimated"]  # memories deeper than one block (yosys maps them)
    est = [f"{inferred} DP16KD in memories deeper than one block, which yosys maps"] if inferred else []
    name = f"LFE5U-{d['name'].removeprefix('ecp5-').removesuffix('k')}F"  # ecp5-85k: the LFE5U-85F
    hard = (f"ECP5 hard blocks: {s['mult18']:,} MULT18X18D and {s['ebr']:,} DP16KD"
            + (f" ({fifo} of them the identity and link FIFOs')" if fifo else "")
            + (f" (estimates: {' and '.join(est)})" if est else "")
            + f" against the {name}'s {d['mult18']} and {d['ebr']}")
    if d["fits"]:
        hard += ": it fits."
    else:
        over = [f"{s[k] / d[k]:.1f}x its {n}" for k, n in (("mult18", "MULT18X18D"), ("ebr", "DP16KD")) if s[k] > d[k]]
        hard += f" ({', '.join(over)}): this allocation does not fit one ECP5."
        if d.get("compiler"):
            hard += f" Compiled for the part (`--device {d['name']}`), the compiler refuses it: \"{d['compiler']}\""
            hard += ("; it needs its weights outside the part's block RAM, or fewer channels." if "DP16KD" in
                     d["compiler"] else ".")
        elif d.get("fitted"):
            f = d["fitted"]
            hard += (f" Compiled for the part (`--device {d['name']}`) it fits with {f['mac_units']} MAC units, "
                     f"{f['mult18']} MULT18X18D and {f['ebr']} DP16KD: bottleneck {f['bottleneck']:,} cycles "
                     f"({f['bottleneck_layer']}), balance {100 * f['balance']:.1f}%.")
    md.append(hard + " LUT4 is not modelled: `accelkit network synth` measures it.\n")
    if (res.get("figures") or {}).get("balance"):
        md.append(res["figures"]["balance"])
    return "\n".join(md)
