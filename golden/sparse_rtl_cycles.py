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
- finder: row r is issued once ready and its issue stage is free, then moves down the row stages (slot
  look-up, bitmap copy, scan), a cycle each, entering a stage the cycle the row ahead leaves it (the issue
  and look-up stages: a cycle later when the stage the row ahead moves into was full that cycle); the scan
  stage hands the row's non-empty chunks to the chunk stages (A, A2, A3), which move on the same way into
  the emit stage B, which hands on a site a cycle into the last stage C1 (F_i, then written into the site
  queue once it has room: T_{i-Q}). Empty rows pass one a cycle; rows load while the row ahead is scanned.
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

import collections
import dataclasses

import numpy as np

from accelkit.config.network import SLICE_BEATS, SparseNetworkConfig
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
        self.credits = cfg.output_queue_depth
        self.in_depth, self.in_latency = cfg.input_queue_depth, cfg.input_queue_latency
        self.ready_latency, self.permit_latency = cfg.row_ready_latency, cfg.permit_latency
        self.row_stages, self.chunk_stages = cfg.finder_row_stages, cfg.finder_chunk_stages
        self.chunk = cfg.finder_chunk
        self.Q, self.queue_latency = cfg.site_queue_depth, cfg.site_queue_latency
        self.next_reg, self.site_reg = cfg.sequencer_next_latency, cfg.sequencer_site_latency
        self.eof_latency, self.reset_latency = cfg.eof_latency, cfg.frame_reset_latency
        self.slots, self.halo, self.stride = cfg.buffer_slots, cfg.halo, cfg.stride
        self.Gi, self.Go = cfg.in_groups, cfg.requant_groups
        if down is None and self.credits <= self.P:
            raise ValueError("cycle model: the output queue must cover the MAC pipeline")
        # ingest: the input queue's entries (I) and takes (H)
        self.prev_in = NONE
        self.takes_hist = collections.deque([NONE] * self.in_depth, maxlen=self.in_depth)
        # finder: the chunk stages' last loads (A .. the last chunk stage, then B), the last site's move into C1
        self.chunk_at = [NONE] * (self.chunk_stages + 1)
        self.m_last = NONE
        # finder -> site queue -> next-site register -> sequencer
        self.c_last = NONE  # the last site written into the site queue
        self.reads_hist = collections.deque([NONE] * self.Q, maxlen=self.Q)  # site queue reads
        self.t_last = NONE  # the last site moved into the sequencer's site registers
        self.e = NONE  # the sequencer's last issued step
        self.fires = collections.deque([NONE] * self.credits, maxlen=self.credits)  # output handshakes
        self.last_fire = NONE
        self.first_taken: list[int] = []  # per frame: its first input handshake
        self.eof_taken: list[int] = []  # per frame: its end-of-frame output handshake
        self.frame = -1
        self.stale_permit = NONE
        self._start_frame(NONE, 0)

    # ----- frames

    def _start_frame(self, open_at: int, finder_at: int) -> None:
        self.frame += 1
        self.open_at = open_at  # the first cycle the frame's beats may be taken
        if self.frame >= len(self.plans):
            self.plan = None
            return
        p = self.plan = self.plans[self.frame]
        self.rows = len(p.row_start) - 1
        self.ready = [0] * self.rows  # RR_r
        self.ready_upto = 0  # rows below this one are ready
        self.next_row = 0  # rows below this one are scheduled
        self.finder_at = finder_at  # the finder may issue row 0
        self.row_at = [NONE] * self.row_stages  # the previous row's loads into the row stages (issue .. scan)
        self.row_at2 = [NONE] * self.row_stages  # and the row's before it
        self.scan_free = NONE  # the scan stage may load the next row
        self.held = NONE  # the first cycle no finder stage holds a row scheduled so far
        self.row_free = [0] * self.rows  # the finder's row output has passed row r
        self.row_end = [NONE] * self.rows  # e_last over the sites of rows <= r
        self.token, self.beat, self.discard = 0, 0, p.discard_beats

    def _ready_through(self, row: int, at: int) -> None:
        row = min(row, self.rows - 1)
        for r in range(self.ready_upto, row + 1):
            self.ready[r] = at
        self.ready_upto = max(self.ready_upto, row + 1)
        self._schedule()

    def _site(self, ready: int, a: int, beats: int) -> None:
        """A site (or the eof site, a = 0) reaching the finder's last stage no earlier than `ready`: through
        the site queue and the next-site register into the sequencer, then its steps."""
        arrive = max(ready, self.c_last + 1)  # the last stage holds the previous site until it is written
        self.m_last = arrive - 1
        write = max(arrive, self.reads_hist[0] + 1)  # the site queue has room
        read = max(write + self.queue_latency, self.t_last)  # the next-site register is free (or freed)
        take = max(read + self.next_reg, self.e)  # the site registers: free, or freed by the last step
        self.c_last, self.t_last = write, take
        self.reads_hist.append(read)
        t = take + self.site_reg - 1  # the cycle before the site's first step
        if self.down is None:
            if a:
                t += a * beats
                self.last_fire = t + self.P
            else:
                t += 1
                self.last_fire = t + self.P
                self.fires.append(self.last_fire)
        else:
            for _ in range(beats if a else 1):
                t += a if a else 1
                t = max(t, self.fires[0] + 1)  # a beat's last step waits for a credit
                valid = max(t + self.P, self.last_fire + 1)
                self.last_fire = self.down.offer(valid + self.link, eof=not a) - self.link
                self.fires.append(self.last_fire)
        self.e = t

    def _schedule(self) -> None:
        """Finder and sequencer over the ready rows not yet scheduled. A row is issued once it is ready and moves
        down the row stages (issue, slot look-up, bitmap copy, scan), each a cycle, entering a stage once it is
        free (its row moving on that cycle); the scan stage hands the row's non-empty chunks one a cycle to the
        chunk stages (A ..), which move on the same way into B, and is free once the last has left A. B hands
        its chunk's sites one a cycle into C1, which writes them into the site queue (`_site`)."""
        p, Go, K = self.plan, self.Go, self.chunk
        acc, starts, ox = p.acc_steps, p.row_start, p.out_coords[:, 1] if len(p.out_coords) else None
        n = self.row_stages
        while self.next_row < self.ready_upto:
            r = self.next_row
            prev, prev2 = self.row_at, self.row_at2
            # when stage k may load: its row moves on (a stage before the last two: into a stage empty that cycle)
            frees = [prev[k + 1] + (prev2[k + 2] == prev[k + 1]) for k in range(n - 2)]
            frees += [prev[k + 1] for k in range(max(0, n - 2), n - 1)] + [self.scan_free]
            at = [max(self.ready[r], prev[0] + 1, frees[0], self.finder_at if r == 0 else NONE)]
            for k in range(1, n):
                at.append(max(at[-1] + 1, frees[k]))
            self.row_at, self.row_at2 = at, prev
            a, b = int(starts[r]), int(starts[r + 1])
            if a == b:
                self.scan_free = at[-1] + 1
                self.held = max(self.held, at[-1] + 2)
            else:
                i = a
                while i < b:
                    c = int(ox[i]) // K
                    j = i
                    while j < b and int(ox[j]) // K == c:
                        j += 1
                    # the chunk into A (the scan stage's first, or once A moves on), then down the chunk stages
                    st = self.chunk_at  # the previous chunk's
                    t = [at[-1] + 1 if i == a else max(st[0] + 1, st[1])]
                    for k in range(1, self.chunk_stages):
                        t.append(max(t[-1] + 1, st[k + 1]))
                    last = t[-1] + 1  # B: as its previous chunk's last site moves on, else once C1 may load
                    t.append(self.m_last if last <= self.m_last else max(last, self.c_last))
                    self.chunk_at = t
                    avail = t[-1] + 1
                    for k in range(i, j):
                        self._site(avail + 1, int(acc[k]), Go)
                        avail = self.m_last + 1
                    i = j
                self.scan_free = self.chunk_at[1] + 1  # the row's last chunk has left A
                self.held = max(self.held, self.c_last + 1)
            self.row_free[r] = self.held + 1  # the finder's row output is a register a cycle behind its stages
            self.row_end[r] = self.e if b > 0 else NONE
            self.next_row += 1

    def _use_row_reaches(self, R: int) -> int:
        """U(R): the first cycle the oldest output row in use is R or later."""
        return max(self.row_end[R - 1] + 1, self.row_free[R - 1])

    def _end_frame(self, taken: int) -> None:
        self._ready_through(self.rows - 1, taken + self.ready_latency)
        # the finder sees the rows over once its issue stage is free, then waits for its stages to empty
        seen = max(taken + self.ready_latency, self.row_at[1] if self.rows else self.finder_at)
        done = max(seen, self.held)
        self._site(done + self.eof_latency, 0, 1)
        self.eof_taken.append(self.last_fire)
        # the finder's row register still holds this frame's row count the cycle ingest reopens
        self.stale_permit = self.rows * self.stride + self.slots - self.halo
        open_at = self.e + self.reset_latency
        self._start_frame(open_at, open_at)

    # ----- input

    def _permit(self, y: int, o: int) -> int:
        """A beat of input row y at the head of the input queue from cycle o: the cycle it is taken."""
        R = (y + self.halo - self.slots) // self.stride + 1
        if R <= 0 or (o == self.open_at and y < self.stale_permit):
            return o
        return max(o, self._use_row_reaches(R) + self.permit_latency)

    def offer(self, valid: int, eof: bool = False) -> int:
        """The next input beat, offered from cycle `valid`: the cycle it enters the input queue. (`eof` is for
        a gearbox in front; the engine knows its frame's beats from its plan.)"""
        p = self.plan
        if p is None:
            raise RuntimeError("cycle model: a beat after the last frame's end of frame")
        enter = max(valid, self.prev_in + 1, self.takes_hist[0] + 1)
        if len(self.first_taken) == self.frame:
            self.first_taken.append(enter)
        self.prev_in = enter
        o = max(enter + self.in_latency, self.takes_hist[-1] + 1, self.open_at)
        if self.token < len(p.token_rows):
            y = int(p.token_rows[self.token])
            if self.beat == 0:
                self._ready_through((y - self.halo - 1) // self.stride, o + self.ready_latency)
            taken = self._permit(y, o)
            self.beat += 1
            if self.beat == self.Gi:
                self.token, self.beat = self.token + 1, 0
            self.takes_hist.append(taken)
        elif self.discard:
            self.discard -= 1
            self.takes_hist.append(o)
        else:  # the end-of-frame beat
            self.takes_hist.append(o)
            self._end_frame(o)
        return enter

    def source(self) -> None:
        """Every frame's beats offered back to back from cycle 0 (the testbench's source without gaps)."""
        t = 0
        offer = self.offer
        while self.plan is not None:
            t = offer(t) + 1


class _Gearbox:
    """The beat gearbox between two engines (gen/sparse_gearbox.py): its output register loads part j of a split
    beat, or the last part of a merged beat, once the input offers it, a cycle after the previous load, and
    no earlier than the cycle the previous output beat is taken; each output beat is offered from the cycle
    after its load. The input beat is taken with its last part's load (split) or its own load (merge)."""

    def __init__(self, lanes_in: int, lanes_out: int, down):
        self.down = down
        self.split = lanes_in > lanes_out
        self.k = max(lanes_in, lanes_out) // min(lanes_in, lanes_out)
        self.load = NONE  # the output register's last load
        self.fire = NONE  # the last output handshake
        self.part = 0  # merge: parts of the current output beat loaded

    def offer(self, valid: int, eof: bool = False) -> int:
        if self.split:
            for _ in range(1 if eof else self.k):
                self.load = max(valid, self.load + 1, self.fire)
                self.fire = self.down.offer(self.load + 1, eof=eof)
            return self.load
        if eof or self.part == 0:  # the first part (or the end of frame) waits for the register to be taken
            self.load = max(valid, self.load + 1, self.fire)
        else:
            self.load = max(valid, self.load + 1)
        if eof or self.part == self.k - 1:
            self.part = 0
            self.fire = self.down.offer(self.load + 1, eof=eof)
        else:
            self.part += 1
        return self.load


class _Fifo:
    """A link FIFO of `depth` beats (the RegisteredFifo, latency `SparseNetworkConfig.fifo_latency`, or the
    StreamSlice after it, depth 2 and latency 1): a beat enters once a cycle after the previous one and once the
    beat `depth` places ahead has left (a cycle before), and is offered `latency` cycles after it entered, and no
    earlier than the cycle after the beat ahead was taken (tests/test_reg_fifo.py checks it handshake by
    handshake against the RegisteredFifo)."""

    def __init__(self, depth: int, latency: int, down):
        self.down, self.latency = down, latency
        self.left = collections.deque([NONE] * depth, maxlen=depth)
        self.enter = self.taken = NONE

    def offer(self, valid: int, eof: bool = False) -> int:
        self.enter = max(valid, self.enter + 1, self.left[0] + 1)
        self.taken = self.down.offer(max(self.enter + self.latency, self.taken + 1), eof=eof)
        self.left.append(self.taken)
        return self.enter


class _Pool:
    """The global sum pool after a network's last engine (gen/sparse_pool.py): it takes beats while no vector is
    leaving; the end-of-frame beat starts the vector, `groups` beats a cycle each from the next cycle (the
    output always ready), and the input waits until the last has left. `eof_taken`: each vector's last beat."""

    down = None

    def __init__(self, groups: int):
        self.groups = groups
        self.free = NONE  # the first cycle the input is taken again
        self.eof_taken: list[int] = []

    def offer(self, valid: int, eof: bool = False) -> int:
        taken = max(valid, self.free)
        if eof:
            self.eof_taken.append(taken + self.groups)
            self.free = taken + self.groups + 1
        return taken


def _layers(cfg) -> tuple[SparseConvConfig, ...]:
    return cfg.layers if isinstance(cfg, SparseChainConfig | SparseNetworkConfig) else (cfg,)


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


def frames_cycles(cfg: SparseConvConfig | SparseChainConfig | SparseNetworkConfig, frames) -> dict:
    """Cycles of each frame (first input handshake to end-of-frame output handshake) when `frames` (of one shape,
    as in one simulation) run back to back, and the total (first input to last output handshake). Frames are
    SparseFrames, or anything with height, width and coords (N, 2) in stream order (TokenFrames, with tokens
    out of order or outside the frame, included). A network's engines are joined by gearboxes where a layer's
    pi differs from the previous po and by its link FIFOs; a pooled network's frame ends with its vector's
    last beat. Its identity buffers never hold the main path (they are sized not to)."""
    frames = list(frames)
    if not frames:
        return {"frames": [], "total": 0}
    layers = _layers(cfg)
    link = cfg.link_latency if isinstance(cfg, SparseChainConfig) else 0
    plans = _plans(layers, frames)
    down = None
    network = isinstance(cfg, SparseNetworkConfig)
    if network and cfg.pool:
        down = _Pool(cfg.last.cout // cfg.last.po)
    for i in reversed(range(len(layers))):
        down = _Engine(layers[i], plans[i], down, link)
        if i and network and cfg.link_depths[i - 1]:
            # the FIFO, then its register slice (gen/stream_slice.py): a FIFO of 2 beats and latency 1
            down = _Fifo(cfg.link_depths[i - 1], cfg.link_latency(i), _Fifo(SLICE_BEATS, 1, down))
        if i and layers[i].pi != layers[i - 1].po:
            down = _Gearbox(layers[i - 1].po, layers[i].pi, down)
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
