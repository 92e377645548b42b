"""Cycle model of the sparse convolution engine (gen/sparse_conv.py) and of chains of engines.

A model of the dataflow, not of the registers: per output site its work (MAC steps), the time its input
rows are complete, the row finder handing sites on, the sequencer issuing steps back to back, the
pipeline to the output and the line buffer's row lead, which holds ingest back. The numbers that
describe the hardware (pipeline depth, the finder's per-row cycles, the site queue, latencies) are
properties of `SparseConvConfig` (and `SparseChainConfig.link_latency`); nothing here mirrors a
register. docs/cycle-models.md states the recurrences and the measured error.

Per frame, with output sites i in raster order, output rows r, all times in cycles:

- work: site i has n_i active taps (in-frame active inputs of its window; 1 for pw1x1) and issues
  w_i = Go * a_i steps, a_i = n_i * gs per output beat (gs = Cin/PI, depthwise 1; Go = Cout/PO).
- row ready: RR_r = O_k + row_ready_latency for the first token k of an input row beyond
  r * stride + halo (O_k: the cycle it is first offered), or E + row_ready_latency (E: end of frame taken).
- finder: row r is taken at L_r = max(X_r, RR_r) (X_r: the finder is done with row r - 1); an empty
  row frees it at X_{r+1} = L_r + finder_row_cycles; otherwise site i is handed on at
  F_i = max(F_{i-1} + finder_site_cycles, L_r + finder_row_cycles, T_{i-Q}) (Q = site_queue_depth,
  T: the cycle the sequencer takes a site) and X_{r+1} = F_last + finder_site_cycles.
- sequencer: T_i = max(F_i + site_handoff_latency - 1, e_{i-1}), first step s_i = T_i + 1, last step
  e_i = s_i + w_i - 1, output beat g of the site leaves at s_i + (g + 1) * a_i - 1 + mac_pipeline_depth.
- ingest: beats come back to back (or as the upstream engine offers them); a token of input row y is
  taken from U(R) = max(e_last(< R) + 1, X_R), R = floor((y + halo - buffer_slots) / stride) + 1: the
  sequencer has finished the output rows before R and the finder has passed them (the line buffer's
  slot for row y is free).
- end of frame: the finder passes the last row at D = max(X_end, E + row_ready_latency); the end-of-frame
  beat leaves at max(D + eof_latency, last output beat taken + 1) and the next frame is taken from then on.

In a chain each engine's output beats are the next engine's input beats (plus `link_latency`); when the
next engine does not take a beat at once, this engine's sequencer and pipeline hold (they advance only
while the output register is free or taken), which the model keeps as windows of held cycles. The finder
and ingest do not hold.

A frame's cycles run from its first input handshake to its end-of-frame output handshake, inclusive, as
`accelkit.sim.sparse_conv.run_sparse_conv` measures them on the RTL, with the input beats offered back to
back (no gaps) and the output always ready (no stalls).
"""

from __future__ import annotations

import bisect
import dataclasses

import numpy as np

from accelkit.config.sparse_conv import SparseChainConfig, SparseConvConfig

__all__ = ["FramePlan", "frame_plan", "frames_cycles", "frame_cycles", "dense_frame_cycles"]

NONE = -(1 << 62)  # "no such event yet" (earlier than any cycle)


# --------------------------------------------------------------------------- what a frame asks of an engine


@dataclasses.dataclass
class FramePlan:
    """One engine's work on one frame: its input tokens and its output sites with their work."""

    height: int
    width: int
    token_rows: np.ndarray  # (K,) input row of each token of the valid prefix, stream order
    discard_beats: int  # beats after the valid prefix (the first bad token on), taken as they come
    out_coords: np.ndarray  # (M, 2) output sites, raster order
    acc_steps: np.ndarray  # (M,) MAC steps per output beat: active taps x input-group steps
    row_start: np.ndarray  # (rows + 1,) output site index at which each output row starts


def _valid_prefix(coords: np.ndarray, height: int, width: int) -> int:
    """Tokens before the first one out of the frame or not after its predecessor in raster order."""
    if not len(coords):
        return 0
    y, x = coords[:, 0], coords[:, 1]
    ok = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    key = y * width + x
    ok[1:] &= key[1:] > key[:-1]
    bad = np.flatnonzero(~ok)
    if not len(bad):
        return len(coords)
    # a token after a bad one compares with the last good one; the engine stops at the first bad one anyway
    return int(bad[0])


def frame_plan(cfg: SparseConvConfig, height: int, width: int, coords) -> FramePlan:
    """The plan of one frame of tokens `coords` ((N, 2) in stream order; out-of-order ones are flagged)."""
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    k = _valid_prefix(coords, height, width)
    good = coords[:k]
    discard = (len(coords) - k) * cfg.in_groups
    stride = cfg.stride
    if cfg.kernel == 1:
        out, taps = good, np.ones(len(good), np.int64)
    else:
        mask = np.zeros((height + 3, width + 3), np.int64)  # one row / column of padding above and left
        mask[good[:, 0] + 1, good[:, 1] + 1] = 1
        if stride == 1:
            out = good
        else:
            wo = cfg.output_grid(height, width)[1]
            keys = np.unique((good[:, 0] // 2) * wo + good[:, 1] // 2)
            out = np.stack([keys // wo, keys % wo], 1)
        cy, cx = out[:, 0] * stride + 1, out[:, 1] * stride + 1
        taps = np.zeros(len(out), np.int64)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                taps += mask[cy + dy, cx + dx]
    gs = 1 if cfg.depthwise else cfg.in_groups
    rows = int(out[-1, 0]) + 1 if len(out) else 0
    row_start = np.searchsorted(out[:, 0], np.arange(rows + 1)) if len(out) else np.zeros(1, np.int64)
    return FramePlan(height, width, good[:, 0].copy(), discard, out, taps * gs, row_start)


# --------------------------------------------------------------------------- one engine


class _Engine:
    """The timing of one engine over its frames. Input beats are offered with `offer`; output beats go to
    `down` (the next engine), or leave as they come when there is none."""

    def __init__(self, cfg: SparseConvConfig, plans: list[FramePlan], down: _Engine | None = None,
                 link_latency: int = 0):
        self.plans, self.down, self.link = plans, down, link_latency
        self.P = cfg.mac_pipeline_depth
        self.Q = cfg.site_queue_depth
        self.handoff = cfg.site_handoff_latency
        self.row_cycles, self.site_cycles = cfg.finder_row_cycles, cfg.finder_site_cycles
        self.ready_latency = cfg.row_ready_latency
        self.eof_latency = cfg.eof_latency
        self.slots, self.halo, self.stride = cfg.buffer_slots, cfg.halo, cfg.stride
        self.Gi, self.Go = cfg.in_groups, cfg.requant_groups
        # held cycles [start, end) of the sequencer and pipeline: an output beat not taken when offered
        self.hold_start: list[int] = []
        self.hold_end: list[int] = []
        self.e_last = NONE  # the sequencer's last issued step
        self.prev_take = NONE  # the last input handshake
        self.first_taken: list[int] = []  # per frame: its first input handshake
        self.eof_taken: list[int] = []  # per frame: its end-of-frame output handshake
        self.frame = -1
        self._start_frame(0)

    # ----- held cycles (only with a downstream engine that holds beats back)

    def _next_adv(self, c: int) -> int:
        """The first cycle >= c in which the sequencer and pipeline advance."""
        if not self.hold_start:
            return c
        j = bisect.bisect_right(self.hold_start, c) - 1
        if j >= 0 and c < self.hold_end[j]:
            return self.hold_end[j]
        return c

    def _nth_adv(self, c: int, m: int) -> int:
        """The m-th (m >= 1) advancing cycle >= c."""
        if not self.hold_start:
            return c + m - 1
        c = self._next_adv(c)
        j = bisect.bisect_right(self.hold_start, c)
        m -= 1
        while j < len(self.hold_start) and c + m >= self.hold_start[j]:
            m -= self.hold_start[j] - c
            c = self.hold_end[j]
            j += 1
        return c + m

    def _emit(self, valid: int) -> int:
        """An output beat valid from cycle `valid`: when it is taken; holds the engine until then."""
        if self.down is None:
            return valid
        taken = self.down.offer(valid + self.link) - self.link
        if taken > valid:
            self.hold_start.append(valid)
            self.hold_end.append(taken)
        return taken

    # ----- frames

    def _start_frame(self, open_at: int) -> None:
        self.frame += 1
        self.open_at = open_at
        if self.frame >= len(self.plans):
            self.plan = None
            return
        p = self.plan = self.plans[self.frame]
        self.rows = len(p.row_start) - 1
        self.ready = [0] * self.rows  # RR_r
        self.ready_upto = 0  # rows below this one are ready
        self.next_row = 0  # rows below this one are scheduled
        self.finder_free = open_at  # X: the finder may take its next row
        self.row_free = [0] * self.rows  # X_{r+1}: the finder is done with row r
        self.row_end = [NONE] * self.rows  # e_last over the sites of rows <= r
        self.takes: list[int] = []  # T_i of this frame's sites
        self.last_valid = NONE  # the last output beat's valid cycle
        self.token, self.beat, self.discard = 0, 0, p.discard_beats

    def _ready_through(self, row: int, at: int) -> None:
        row = min(row, self.rows - 1)
        for r in range(self.ready_upto, row + 1):
            self.ready[r] = at
        self.ready_upto = max(self.ready_upto, row + 1)
        self._schedule()

    def _schedule(self) -> None:
        """Finder and sequencer over the ready rows not yet scheduled."""
        p, Q, Go, P = self.plan, self.Q, self.Go, self.P
        takes, acc, starts = self.takes, p.acc_steps, p.row_start
        fast = self.down is None
        while self.next_row < self.ready_upto:
            r = self.next_row
            load = max(self.finder_free, self.ready[r])
            a, b = int(starts[r]), int(starts[r + 1])
            if a == b:
                self.finder_free = load + self.row_cycles
            else:
                hand = load + self.row_cycles
                e = self.e_last
                for i in range(a, b):
                    if i >= Q:
                        hand = max(hand, takes[i - Q])
                    ready = hand + self.handoff - 1
                    if fast:
                        take = max(ready, e)
                        e = take + int(acc[i]) * Go
                        self.last_valid = e + P
                    else:
                        take = e if e >= ready else self._next_adv(ready)
                        t = self._next_adv(take + 1) - 1
                        n = int(acc[i])
                        for _ in range(Go):
                            t = self._nth_adv(t + 1, n)
                            self.last_valid = self._nth_adv(t, P) + 1
                            self._emit(self.last_valid)
                        e = t
                    takes.append(take)
                    hand += self.site_cycles
                self.e_last = e
                self.finder_free = hand
            self.row_free[r] = self.finder_free
            self.row_end[r] = self.e_last if b > 0 else NONE
            self.next_row += 1

    def _use_row_reaches(self, R: int) -> int:
        """U(R): the first cycle the oldest output row in flight is R or later."""
        return max(self.row_end[R - 1] + 1, self.row_free[R - 1])

    def _end_frame(self, taken: int) -> None:
        self._ready_through(self.rows - 1, taken + self.ready_latency)
        done = max(self.finder_free, taken + self.ready_latency)
        send = max(done + self.eof_latency - 1, self.last_valid)
        send = self._next_adv(send)  # the last output beat, if held, is taken first
        eof_taken = self._emit(send + 1)
        self.eof_taken.append(eof_taken)
        self._start_frame(send + 1)

    # ----- input

    def _arrive(self, valid: int) -> int:
        """The cycle a beat offered from `valid` is first offered to the engine with its input open."""
        return max(valid, self.prev_take + 1, self.open_at)

    def _note(self, taken: int) -> None:
        if len(self.first_taken) == self.frame:
            self.first_taken.append(taken)
        self.prev_take = taken

    def _first_beat(self, o: int) -> int:
        """The first beat of the next token, offered from `o`: it shows its row's predecessors complete, and
        is taken once the line buffer slot of its row is free."""
        y = int(self.plan.token_rows[self.token])
        self._ready_through((y - self.halo - 1) // self.stride, o + self.ready_latency)
        R = (y + self.halo - self.slots) // self.stride + 1
        return max(o, self._use_row_reaches(R)) if R > 0 else o

    def offer(self, valid: int) -> int:
        """The next input beat, offered from cycle `valid`: the cycle it is taken."""
        p = self.plan
        if p is None:
            raise RuntimeError("cycle model: a beat after the last frame's end of frame")
        o = self._arrive(valid)
        if self.token < len(p.token_rows):
            taken = self._first_beat(o) if self.beat == 0 else o
            self.beat += 1
            if self.beat == self.Gi:
                self.token, self.beat = self.token + 1, 0
            self._note(taken)
        elif self.discard:
            taken = o
            self.discard -= 1
            self._note(taken)
        else:  # the end-of-frame beat is always taken
            taken = o
            self._note(taken)
            self._end_frame(taken)
        return taken

    def source(self) -> None:
        """Every frame's beats offered back to back from cycle 0 (the testbench's source without gaps)."""
        t = 0
        while self.plan is not None:
            for _ in range(len(self.plan.token_rows)):
                self._note(self._first_beat(self._arrive(t)))
                self.prev_take += self.Gi - 1  # the token's other beats follow back to back
                self.token += 1
                t = self.prev_take + 1
            while self.discard:
                t = self.offer(t) + 1
            t = self.offer(t) + 1


def _layers(cfg) -> tuple[SparseConvConfig, ...]:
    return cfg.layers if isinstance(cfg, SparseChainConfig) else (cfg,)


def _plans(layers, frames) -> list[list[FramePlan]]:
    """Per layer, per frame: the plan (each layer's input tokens are the previous layer's output sites)."""
    out = []
    for c in layers:
        row = []
        for k, f in enumerate(frames):
            if out:
                prev = out[-1][k]
                coords, (h, w) = prev.out_coords, layers[len(out) - 1].output_grid(prev.height, prev.width)
            else:
                coords, h, w = f.coords, f.height, f.width
            row.append(frame_plan(c, h, w, np.asarray(coords, dtype=np.int64)))
        out.append(row)
    return out


def frames_cycles(cfg: SparseConvConfig | SparseChainConfig, frames) -> dict:
    """Cycles of each frame (first input handshake to end-of-frame output handshake) when `frames` (of one shape,
    as in one simulation) run back to back, and the total (first input to last output handshake). Frames are
    SparseFrames, or anything with height, width and coords (N, 2) in stream order (TokenFrames, with tokens
    out of order or outside the frame, included)."""
    frames = list(frames)
    if not frames:
        return {"frames": [], "total": 0}
    layers = _layers(cfg)
    link = cfg.link_latency if isinstance(cfg, SparseChainConfig) else 0
    plans = _plans(layers, frames)
    down = None
    for c, p in zip(reversed(layers), reversed(plans), strict=True):
        down = _Engine(c, p, down, link)
    first, last = down, down
    while last.down is not None:
        last = last.down
    first.source()
    per = [e - s + 1 for s, e in zip(first.first_taken, last.eof_taken, strict=True)]
    return {"frames": per, "total": last.eof_taken[-1] - first.first_taken[0] + 1}


def frame_cycles(cfg: SparseConvConfig | SparseChainConfig, frame) -> int:
    """Cycles of one frame on its own."""
    return frames_cycles(cfg, [frame])["frames"][0]


@dataclasses.dataclass
class _Dense:
    height: int
    width: int

    @property
    def coords(self) -> np.ndarray:
        return np.indices((self.height, self.width)).reshape(2, -1).T


def dense_frame_cycles(cfg: SparseConvConfig, height: int, width: int) -> int:
    """Cycles of the same engine on the fully active frame of this size."""
    return frame_cycles(cfg, _Dense(height, width))
