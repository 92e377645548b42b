"""Exact cycle model of the standalone backward unit (gen/hyft_backward.py `BackwardUnit`).

Inputs always valid and the output always ready. The unit takes one vector at a time: fill (the input beats
through the zip and the decoder into the buffer), sum (the buffer read out once through the product unit, the
lane sums and the accumulators), finalise (sequential, once per vector), output (the buffer read again through
the output stage). For a vector of n elements (nb = ceil(n / L) beats, n <= max_len) the cycles from its first
input beat offered to its last output beat taken are `vector_cycles`; the next vector's first beat is taken on
the cycle after. A vector longer than max_len is read and answered by one error beat.
"""

from __future__ import annotations

from accelkit.config.hyft import SoftmaxConfig

__all__ = ["backward_unit_cycles", "vector_cycles", "phase_cycles"]


def phase_cycles(cfg: SoftmaxConfig) -> dict[str, int]:
    """The fixed latencies the model adds up (register stages of each component, from gen/hyft_backward.py)."""
    from accelkit.gen.hyft_backward import decode_latency, finalise_cycles, output_latency, product_latency

    return {"decode": decode_latency(cfg), "product": product_latency(cfg),
            "lane_sum": max(0, (cfg.lanes - 1).bit_length()), "finalise": finalise_cycles(cfg),
            "output": output_latency(cfg), "read": 2, "fifo": 2}


def vector_cycles(cfg: SoftmaxConfig, n: int) -> int:
    """Cycles from a vector's first input beat to its last output beat (inclusive of both), nothing waiting."""
    L = cfg.lanes
    nb = -(-n // L)
    if n > cfg.max_len:
        return nb + phase_cycles(cfg)["decode"] + 1
    c = phase_cycles(cfg)
    fill = nb + c["decode"]                                   # the last decoded beat written
    summ = nb + c["read"] + c["product"] + c["lane_sum"] + 1  # the last read to the accumulator
    fin = 1 + c["finalise"]
    out = nb + c["read"] + c["fifo"] + c["output"]            # the last read through the FIFO and the output stage
    return fill + summ + fin + out


def backward_unit_cycles(cfg: SoftmaxConfig, lengths: list[int]) -> list[int]:
    """The cycle (counted as tests/test_hyft_backward_units.py `run_unit` counts) of each vector's last output
    beat, for back-to-back vectors of `lengths`."""
    t, out = 0, []
    for n in lengths:
        t += vector_cycles(cfg, n)
        out.append(t)
    return out
