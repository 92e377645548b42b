"""The spec's analytic cost of a sparse layer engine (sparse-conv.md, "What a layer engine costs").

These are the spec's estimates, not the RTL's count (that is golden/sparse_rtl_cycles.py,
which adds input fill, the row finder and the pipeline; docs/cycle-models.md): per
output site p, `max(1, |N(p)|) * ceil(Cin/PI) * ceil(Cout/PO)` cycles (depthwise:
`|N(p)| * ceil(C/P)`), plus a fixed pipeline `fill`. The dense
baseline runs the same MAC units over every output position of the grid.
"""

from __future__ import annotations

from accelkit.config.sparse_conv import SparseConvConfig
from accelkit.golden.sparse_conv import FrameError, SparseFrame, neighbour_counts
from accelkit.golden.sparse_conv import useful_macs as _useful_macs

__all__ = ["sparse_cycles_estimate", "dense_cycles", "useful_macs", "utilisation", "sparse_speedup",
           "cost_summary"]


def _check_fits(frame: SparseFrame, cfg: SparseConvConfig) -> None:
    if not cfg.fits(frame.height, frame.width):
        raise FrameError(f"frame is {frame.height} x {frame.width}, the engine takes at most "
                         f"{cfg.max_height} x {cfg.max_width}")
    if frame.channels != cfg.cin:
        raise FrameError(f"frame has {frame.channels} channels, the engine takes cin={cfg.cin}")


def sparse_cycles_estimate(frame: SparseFrame, cfg: SparseConvConfig, fill: int = 0) -> int:
    """Sum over output sites of the spec's per-site cycles, plus `fill`."""
    _check_fits(frame, cfg)
    n = neighbour_counts(frame, cfg.kind)
    if cfg.depthwise:
        per_site = n * cfg.in_groups
    else:
        per_site = n.clamp(min=1) * (cfg.in_groups * cfg.out_groups)
    return int(per_site.sum()) + fill


def dense_cycles(height: int, width: int, cfg: SparseConvConfig, fill: int = 0) -> int:
    """A dense engine with the same MAC units: every output position, every tap.

    For the stride-1 3x3 kinds this is the spec's H * W * 9 * ceil(Cin/PI) * ceil(Cout/PO);
    stride-2 kinds have ceil(H/2) x ceil(W/2) output positions, pw1x1 one tap.
    """
    ho, wo = cfg.output_grid(height, width)
    return ho * wo * cfg.taps * cfg.in_groups * cfg.out_groups + fill


def useful_macs(frame: SparseFrame, cfg: SparseConvConfig) -> int:
    """MACs on active inputs: sum |N(p)| * Cin * Cout (depthwise: sum |N(p)| * C)."""
    _check_fits(frame, cfg)
    return _useful_macs(frame, cfg.kind, cfg.cin, cfg.cout)


def utilisation(frame: SparseFrame, cfg: SparseConvConfig, cycles: int | None = None, fill: int = 0) -> float:
    """Useful MACs / (MAC units x cycles); cycles default to the estimate (measured RTL cycles go here)."""
    if cycles is None:
        cycles = sparse_cycles_estimate(frame, cfg, fill)
    if cycles <= 0:
        return 0.0
    return useful_macs(frame, cfg) / (cfg.mac_units * cycles)


def sparse_speedup(frame: SparseFrame, cfg: SparseConvConfig, fill: int = 0) -> float:
    """Dense cycles / sparse cycles on this frame (both with the same `fill`)."""
    sparse = sparse_cycles_estimate(frame, cfg, fill)
    dense = dense_cycles(frame.height, frame.width, cfg, fill)
    return dense / sparse if sparse else float("inf")


def cost_summary(frame: SparseFrame, cfg: SparseConvConfig, fill: int = 0) -> dict:
    """All of the above for one frame, JSON-ready."""
    sparse = sparse_cycles_estimate(frame, cfg, fill)
    dense = dense_cycles(frame.height, frame.width, cfg, fill)
    return {
        "height": frame.height, "width": frame.width, "n_active": frame.n_active, "density": frame.density,
        "fill": fill, "sparse_cycles": sparse, "dense_cycles": dense,
        "speedup": dense / sparse if sparse else None, "useful_macs": useful_macs(frame, cfg),
        "mac_units": cfg.mac_units, "utilisation": utilisation(frame, cfg, sparse),
    }
