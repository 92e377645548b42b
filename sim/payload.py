"""Packing stream payloads to and from the integers that cocotb writes to a port.

Payloads are packed in Python (numpy object arrays of Python ints, so any width
works) before the simulation starts, so drivers only assign integers.
"""

from __future__ import annotations

import numpy as np


def pack_lanes(values: np.ndarray, width: int, extra: list[tuple[np.ndarray, int]] = ()) -> list[int]:
    """Pack values (beats, lanes) of `width` bits each (lane 0 in the low bits), then `extra` fields above.

    `extra` is a list of (per-beat values, width) appended in order above the lanes.
    Negative values are written in two's complement.
    """
    values = np.asarray(values)
    beats, lanes = values.shape
    mask = (1 << width) - 1
    fields = [values, *(np.asarray(f) for f, _ in extra)]
    if lanes * width + sum(w for _, w in extra) <= 64 and all(f.dtype.kind in "iub" for f in fields):
        # the common case, in machine words (the same integers as the general case below)
        out64 = np.zeros(beats, dtype=np.uint64)
        for i in range(lanes):
            out64 |= (values[:, i].astype(np.int64).astype(np.uint64) & np.uint64(mask)) << np.uint64(i * width)
        shift = lanes * width
        for fld, w in extra:
            bits = np.asarray(fld).astype(np.int64).astype(np.uint64) & np.uint64((1 << w) - 1)
            out64 |= bits << np.uint64(shift)
            shift += w
        return out64.tolist()
    v = values.astype(object)
    out = np.zeros(beats, dtype=object)
    for i in range(lanes):
        out = out + ((v[:, i] & mask) << (i * width))
    shift = lanes * width
    for fld, w in extra:
        out = out + ((np.asarray(fld).astype(object) & ((1 << w) - 1)) << shift)
        shift += w
    return [int(x) for x in out]


def unpack_lanes(words: list[int], width: int, lanes: int, signed: bool = True, offset: int = 0) -> np.ndarray:
    """Inverse of pack_lanes for the lane part: (beats, lanes) int64 (object if wider than 63 bits)."""
    mask = (1 << width) - 1
    w = np.asarray(words, dtype=object).reshape(-1)
    out = np.empty((len(w), lanes), dtype=object)
    for i in range(lanes):
        x = (w >> (offset + i * width)) & mask
        if signed:
            x = np.where(x >= (1 << (width - 1)), x - (1 << width), x)
        out[:, i] = x
    return out.astype(np.int64) if width <= 63 else out


def field(words: list[int], offset: int, width: int) -> np.ndarray:
    w = np.asarray(words, dtype=object).reshape(-1)
    return ((w >> offset) & ((1 << width) - 1)).astype(np.int64)
