"""The network compiler's allocation: a PI and PO for every layer, so that the pipeline is balanced.

Given a `SparseNetwork`, representative frames and a budget (MAC units, and/or an ECP5 device's
multipliers and block RAMs: flows/resources.py), `allocate` chooses each
layer's parallelism to make the bottleneck layer's cycles per frame as low as possible:

1. Work per layer from the frames (golden model): per output site its active neighbours, so that
   any (PI, PO) has the spec's cycle estimate without running anything.
2. A mixed-integer program (scipy.optimize.milp, HiGHS): one binary per layer and option,
   minimise T subject to every layer's cycles <= T, the MAC units (and the device's MULT18X18D and
   DP16KD, the engines' exact counts) within the budget, and the
   stream couplings of the dataflow top (a layer's PI is the previous layer's PO; a depthwise
   layer has PI == PO; a residual block's last layer has PO == its first layer's PI).
3. The estimate is then replaced by the RTL cycle model (`golden/sparse_rtl_cycles.py`, exact
   against the RTL) for every option near the bottleneck, and the program is solved again, so
   the per-site and per-row costs of the real engines are what gets balanced.

`choose_link_depths` then sizes each link FIFO between engines: the shallowest that keeps the whole
pipeline's interval (the RTL cycle model, frames back to back) within a tolerance of the interval with
every link at the largest depth offered. Layers' work varies from frame to frame and not in step, so
deeper links let a layer run ahead of a slow frame of its neighbour: on SEE-A the interval falls from
4,124 cycles with direct wires to 3,696 with 64-beat links and 3,302 (1.6% above the bottleneck) with
1,024-beat links.

`compile_network` turns the allocation into a `SparseNetworkConfig` and gives the figures the
report shows: per-layer work, cycles and utilisation, the bottleneck, and the lower bound
(useful MACs / MAC units) it is measured against.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from accelkit.config import ConfigError, require
from accelkit.config.network import SparseNetworkConfig
from accelkit.config.sparse_conv import SparseConvConfig
from accelkit.golden.network import SparseNetwork
from accelkit.golden.sparse_conv import SparseFrame, neighbour_counts
from accelkit.golden.sparse_rtl_cycles import frame_cycles, frames_cycles

from .resources import device_budget, engine_resources, network_resources

__all__ = ["LayerWork", "Allocation", "layer_work", "allocate", "compile_network", "predicted_interval",
           "choose_link_depths"]

# the link depths `choose_link_depths` tries: a direct wire, then powers of two (memories tile evenly)
LINK_DEPTH_STEPS = (0, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

LINKS = ("multiple", "equal")
# Options whose estimate lies within this factor of the bottleneck get the RTL cycle model.
_MODEL_WINDOW = (0.5, 2.0)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclasses.dataclass(frozen=True)
class LayerWork:
    """A layer's work on the representative frames (means per frame)."""

    name: str
    kind: str
    cin: int
    cout: int
    grid: tuple[int, int]  # input grid
    sites: float  # output sites
    site_taps: float  # sum over output sites of max(1, |N|) (depthwise: |N|)
    useful_macs: float

    @property
    def depthwise(self) -> bool:
        return self.kind.startswith("dw")

    def options(self, max_macs: int) -> list[tuple[int, int]]:
        """Every (pi, po) the engine takes (divisors of the channels), within `max_macs` MAC units."""
        if self.depthwise:
            return [(p, p) for p in _divisors(self.cin) if p <= max_macs]
        return [(a, b) for a in _divisors(self.cin) for b in _divisors(self.cout) if a * b <= max_macs]

    def macs(self, pi: int, po: int) -> int:
        return pi if self.depthwise else pi * po

    def estimate(self, pi: int, po: int) -> float:
        """The spec's cycles per frame: site taps x input groups x output groups."""
        if self.depthwise:
            return self.site_taps * math.ceil(self.cin / pi)
        return self.site_taps * math.ceil(self.cin / pi) * math.ceil(self.cout / po)


def layer_work(net: SparseNetwork, frames: list[SparseFrame]) -> list[LayerWork]:
    """Per layer, the mean work per frame over `frames`."""
    require(len(frames) >= 1, "frames", "at least one representative frame", len(frames))
    return _mean_work(net, [net.layer_inputs(f) for f in frames])


def _mean_work(net: SparseNetwork, inputs: list[list[SparseFrame]]) -> list[LayerWork]:
    """`layer_work` from each frame's layer inputs (`net.layer_inputs`), so that a frame is traced once."""
    n = len(net.layers)
    sites, taps, macs = np.zeros(n), np.zeros(n), np.zeros(n)
    for xs in inputs:
        for i, (l, x) in enumerate(zip(net.layers, xs, strict=True)):
            nc = neighbour_counts(x, l.kind)
            sites[i] += nc.numel()
            taps[i] += int(nc.sum()) if l.depthwise else int(nc.clamp(min=1).sum())
            macs[i] += l.useful_macs(x)
    k = len(inputs)
    grids = net.grids()
    return [LayerWork(name, l.kind, l.cin, l.cout, grids[i], sites[i] / k, taps[i] / k, macs[i] / k)
            for i, (name, l) in enumerate(net.leaves)]


@dataclasses.dataclass
class Allocation:
    pi: list[int]
    po: list[int]
    cycles: list[float]  # per layer, cycles per frame (RTL cycle model where it was run, else the estimate)
    modelled: list[bool]  # whether cycles[i] came from the RTL cycle model
    macs: list[int]  # MAC units per layer
    mac_budget: int | None
    work: list[LayerWork]  # what the allocation balanced: each layer's mean work on the frames
    device: str | None = None  # the device whose MULT18X18D and DP16KD bounded it

    @property
    def mac_units(self) -> int:
        return sum(self.macs)

    @property
    def bottleneck(self) -> float:
        return max(self.cycles)


def _solve(work: list[LayerWork], opts: list[list[tuple[int, int]]], cost: list[list[float]], budget: int | None,
           spans: list[tuple[int, int]], links: str = "equal",
           limits: dict[str, tuple[list[list[int]], int]] | None = None) -> list[int]:
    """The MILP: index of the chosen option per layer. links "equal": a layer's pi is the previous po;
    "multiple": one divides the other (a beat gearbox between the engines). `limits`: per resource, each
    option's use and the total allowed (a device's MULT18 and EBR)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    offs = np.cumsum([0] + [len(o) for o in opts])
    nv = int(offs[-1]) + 1  # binaries, then T
    t = nv - 1
    c = np.zeros(nv)
    c[t] = 1.0
    rows, lo, hi = [], [], []

    def row():
        r = np.zeros(nv)
        rows.append(r)
        return r

    for i in range(len(opts)):
        r = row()  # exactly one option
        r[offs[i]:offs[i + 1]] = 1
        lo.append(1), hi.append(1)
        r = row()  # cycles <= T
        r[offs[i]:offs[i + 1]] = cost[i]
        r[t] = -1
        lo.append(-np.inf), hi.append(0)
    if budget is not None:
        r = row()  # MAC budget
        for i, o in enumerate(opts):
            r[offs[i]:offs[i + 1]] = [work[i].macs(a, b) for a, b in o]
        lo.append(-np.inf), hi.append(budget)
    for use, total in (limits or {}).values():
        r = row()
        for i in range(len(opts)):
            r[offs[i]:offs[i + 1]] = use[i]
        lo.append(-np.inf), hi.append(total)

    def couple(i: int, side_i: int, j: int, side_j: int) -> None:
        """Option widths must agree: (pi or po of layer i) == (pi or po of layer j)."""
        widths = {o[side_i] for o in opts[i]} | {o[side_j] for o in opts[j]}
        for wdt in widths:
            r = row()
            for k, o in enumerate(opts[i]):
                if o[side_i] == wdt:
                    r[offs[i] + k] = 1
            for k, o in enumerate(opts[j]):
                if o[side_j] == wdt:
                    r[offs[j] + k] -= 1
            lo.append(0), hi.append(0)

    def compatible(i: int) -> None:
        """Whatever po layer i - 1 takes, layer i's pi divides it or is a multiple of it."""
        for wdt in {o[1] for o in opts[i - 1]}:
            r = row()
            for k, o in enumerate(opts[i - 1]):
                if o[1] == wdt:
                    r[offs[i - 1] + k] = 1
            for k, o in enumerate(opts[i]):
                if wdt % o[0] == 0 or o[0] % wdt == 0:
                    r[offs[i] + k] -= 1
            lo.append(-np.inf), hi.append(0)

    for i in range(1, len(opts)):
        if links == "equal":
            couple(i, 0, i - 1, 1)  # pi == previous po
        else:
            compatible(i)
    for first, last in spans:
        couple(last, 1, first, 0)  # block's last po == its first pi
    integrality = np.ones(nv)
    integrality[t] = 0
    ub = np.ones(nv)
    ub[t] = np.inf
    res = milp(c, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=integrality,
               bounds=Bounds(np.zeros(nv), ub), options={"time_limit": 60})
    if res.x is None:
        what = [f"mac_budget={budget!r}"] if budget is not None else []
        what += [f"{k} <= {total}" for k, (_, total) in (limits or {}).items()]
        raise ConfigError(f"{' and '.join(what)} is invalid: no allocation fits it with the stream couplings "
                          f"({res.message})")
    x = res.x
    return [int(np.argmax(x[offs[i]:offs[i + 1]])) for i in range(len(opts))]


def _layer_cfg(net: SparseNetwork, i: int, pi: int, po: int, residual: bool = False) -> SparseConvConfig:
    l = net.layers[i]
    h, w = net.grids()[i]
    return SparseConvConfig(kind=l.kind, max_height=h, max_width=w, cin=l.cin, cout=l.cout, pi=pi, po=po,
                            signed_input=l.input_signed, relu=l.relu, residual=residual,
                            feature_bits=l.feature_bits, weight_bits=l.weight_bits, bias_bits=l.bias_bits,
                            scale_bits=l.scale_bits, shift=l.shift)


def _model_cycles(net: SparseNetwork, i: int, pi: int, po: int, inputs: list[SparseFrame]) -> float:
    cfg = _layer_cfg(net, i, pi, po)
    return float(np.mean([frame_cycles(cfg, x) for x in inputs]))


def _device_limits(net: SparseNetwork, opts: list[list[tuple[int, int]]], device: str) -> dict:
    """Each option's MULT18X18D and DP16KD on the device (the engines: flows/resources.py), and the budget."""
    budget = device_budget(device)
    ends = {b for _, b in net.residual_spans()}
    use = [[engine_resources(_layer_cfg(net, i, a, b, residual=i in ends)) for a, b in o] for i, o in enumerate(opts)]
    return {k: ([[u[k] for u in row] for row in use], budget[k]) for k in ("mult18", "ebr")}


def allocate(net: SparseNetwork, frames: list[SparseFrame], mac_budget: int | None = None,
             model_frames: int = 4, links: str = "multiple", device: str | None = None) -> Allocation:
    """Each layer's (PI, PO) within `mac_budget` MAC units and/or the hard blocks of `device` (its MULT18X18D
    and DP16KD, flows/resources.py), bottleneck cycles minimised (see the module doc).

    The RTL cycle model runs on the first `model_frames` frames (it is exact per frame, the estimate
    is a mean over all of them). `links`: "multiple" lets a layer's pi divide or be a multiple of the
    previous layer's po (the dataflow top puts a beat gearbox between them), "equal" wires them directly."""
    require(links in LINKS, "links", f"one of {', '.join(LINKS)}", links)
    require(mac_budget is not None or device is not None, "mac_budget", "given, or a device", mac_budget)
    if mac_budget is not None:
        require(isinstance(mac_budget, int) and not isinstance(mac_budget, bool) and mac_budget >= len(net.layers),
                "mac_budget", f"an integer of at least {len(net.layers)} (one MAC unit per layer)", mac_budget)
    max_macs = mac_budget if mac_budget is not None else device_budget(device)["mult18"]
    require(len(frames) >= 1, "frames", "at least one representative frame", len(frames))
    inputs = [net.layer_inputs(f) for f in frames]
    work = _mean_work(net, inputs)
    opts = [w.options(max_macs) for w in work]
    limits = _device_limits(net, opts, device) if device is not None else None
    for k, (use, total) in (limits or {}).items():
        least = sum(min(u) for u in use)
        if least > total:
            name = {"mult18": "MULT18X18D", "ebr": "DP16KD"}[k]
            raise ConfigError(f"device={device!r} is invalid: the network's engines need at least {least} {name} "
                              f"(each layer at its fewest), the part has {total}")
    est = [[w.estimate(a, b) for a, b in o] for w, o in zip(work, opts, strict=True)]
    spans = net.residual_spans()
    choice = _solve(work, opts, est, mac_budget, spans, links, limits)
    t1 = max(est[i][k] for i, k in enumerate(choice))

    # Second pass: the RTL cycle model for the options near the bottleneck (those decide it).
    sample = inputs[:model_frames]
    sample_work = _mean_work(net, sample)
    cost = [list(c) for c in est]
    modelled = [[False] * len(o) for o in opts]
    lo, hi = _MODEL_WINDOW
    for i, o in enumerate(opts):
        xs = [inp[i] for inp in sample]
        for k, (a, b) in enumerate(o):
            if lo * t1 <= est[i][k] <= hi * t1:
                m = _model_cycles(net, i, a, b, xs)
                # the model ran on a sample: carry its ratio to the estimate over to the mean of all frames
                sample_est = sample_work[i].estimate(a, b)
                cost[i][k] = est[i][k] * (m / sample_est) if sample_est else m
                modelled[i][k] = True
    choice = _solve(work, opts, cost, mac_budget, spans, links, limits)
    pi, po = [opts[i][k][0] for i, k in enumerate(choice)], [opts[i][k][1] for i, k in enumerate(choice)]
    return Allocation(pi, po, [cost[i][k] for i, k in enumerate(choice)],
                      [modelled[i][k] for i, k in enumerate(choice)],
                      [w.macs(a, b) for w, a, b in zip(work, pi, po, strict=True)], mac_budget, work, device)


def network_config(net: SparseNetwork, pi: list[int], po: list[int]) -> SparseNetworkConfig:
    """The compiled config of `net` with these per-layer parallelisms."""
    spans = net.residual_spans()
    ends = {b for _, b in spans}
    layers = tuple(_layer_cfg(net, i, pi[i], po[i], residual=i in ends) for i in range(len(net.layers)))
    return SparseNetworkConfig(layers=layers, names=tuple(net.names), residual=tuple(spans), pool=True)


def predicted_interval(cfg: SparseNetworkConfig, frames: list[SparseFrame]) -> dict:
    """The RTL cycle model of the layer engines and gearboxes, frames back to back: per-frame latency and the
    steady-state interval (mean distance between end-of-frame outputs). The identity buffers of residual
    blocks are sized not to stall the main path, so the engines' timing is the network's."""
    r = frames_cycles(cfg, frames)
    per = r["frames"]
    interval = (r["total"] - per[0]) / (len(per) - 1) if len(per) > 1 else float(per[0])
    return {"latency": per, "interval": interval, "total": r["total"]}


def choose_link_depths(cfg: SparseNetworkConfig, frames: list[SparseFrame], max_depth: int = 1024,
                       tolerance: float = 0.005, on_link=None) -> tuple[SparseNetworkConfig, dict]:
    """Each link FIFO's depth (`cfg.link_depth` as a tuple): the shallowest of LINK_DEPTH_STEPS up to
    `max_depth` that keeps the pipeline's interval on `frames` within `tolerance` of its interval with every
    link `max_depth` deep, the others as chosen so far. Links are taken widest beat first (theirs are the
    dearest FIFOs), each by bisection (the interval does not grow with a link's depth). Returns the config
    and {"reference": that interval, "interval", "latency", "evaluations"}; `on_link(i, depth)` after each."""
    require(max_depth in LINK_DEPTH_STEPS[1:], "max_depth", f"one of {', '.join(map(str, LINK_DEPTH_STEPS[1:]))}",
            max_depth)
    from accelkit.gen.sparse_conv import in_token_layout

    n = len(cfg.layers)
    steps = [d for d in LINK_DEPTH_STEPS if d <= max_depth]
    depths = [max_depth] * (n - 1)
    evaluations = 0

    def interval(ds: list[int]) -> dict:
        nonlocal evaluations
        evaluations += 1
        return predicted_interval(cfg.replace(link_depth=tuple(ds)), frames)

    reference = interval(depths)["interval"] if n > 1 else 0.0
    limit = reference * (1 + tolerance)
    widths = [in_token_layout(cfg.layers[i]).size for i in range(1, n)]
    for j in sorted(range(n - 1), key=lambda j: (-widths[j], j)):
        lo, hi = 0, len(steps) - 1  # steps[hi] keeps the interval within the limit
        while lo < hi:
            mid = (lo + hi) // 2
            if interval(depths[:j] + [steps[mid]] + depths[j + 1:])["interval"] <= limit:
                hi = mid
            else:
                lo = mid + 1
        depths[j] = steps[hi]
        if on_link:
            on_link(j + 1, depths[j])
    out = cfg.replace(link_depth=tuple(depths))
    final = predicted_interval(out, frames)
    return out, {"reference": reference, "interval": final["interval"], "latency": final["latency"],
                 "evaluations": evaluations + 1}


def compile_network(net: SparseNetwork, frames: list[SparseFrame], mac_budget: int | None = None,
                    links: str = "multiple", device: str | None = None) -> tuple[SparseNetworkConfig, dict]:
    """Allocate, build the config, and report: per layer (name, kind, pi, po, MAC units, useful MACs, cycles,
    utilisation, MULT18X18D, DP16KD), the bottleneck, the lower bound (total useful MACs / MAC units: the
    budget's, or with only a device the units allocated) and their ratio, and the device use."""
    alloc = allocate(net, frames, mac_budget, links=links, device=device)
    work = alloc.work
    cfg = network_config(net, alloc.pi, alloc.po)
    macs = alloc.macs
    total_useful = sum(w.useful_macs for w in work)
    bound = total_useful / (mac_budget if mac_budget is not None else sum(macs))
    hard = network_resources(cfg)
    layers = []
    for w, a, b, m, cyc, mod, hw in zip(work, alloc.pi, alloc.po, macs, alloc.cycles, alloc.modelled,
                                        hard["layers"], strict=True):
        layers.append({"name": w.name, "kind": w.kind, "cin": w.cin, "cout": w.cout, "pi": a, "po": b, "macs": m,
                       "sites": round(float(w.sites), 1), "useful_macs": round(float(w.useful_macs)),
                       "cycles": round(float(cyc), 1), "modelled": mod,
                       "utilisation": round(float(w.useful_macs / (m * cyc)), 4) if cyc else 0.0,
                       "mult18": hw["mult18"], "ebr": hw["ebr"]})
    summary = {"mac_budget": mac_budget, "mac_units": sum(macs), "links": links, "device": device,
               "mult18": hard["mult18"], "ebr": hard["ebr"], "ebr_estimated": hard["ebr_estimated"],
               **({"device_budget": device_budget(device)} if device else {}),
               "useful_macs": round(float(total_useful)), "bottleneck": round(float(alloc.bottleneck), 1),
               "bottleneck_layer": layers[int(np.argmax(alloc.cycles))]["name"],
               "lower_bound": round(float(bound), 1), "balance": round(float(bound / alloc.bottleneck), 4),
               "layers": layers}
    return cfg, summary
