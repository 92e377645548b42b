"""Exact cycle model of the sparse convolution engine's RTL (gen/sparse_conv.py), and of chains of engines.

The spec's estimate (golden/sparse_cycles.py) counts MAC steps only. This model counts the RTL's
cycles from a frame's active sites alone (features never change timing): it steps, cycle by cycle,
the engine's control registers as the RTL has them (ingest with its slot permission and its
row-completion peek, the row finder and its prefetch register, the MAC sequencer, the five-stage
pipeline and the end-of-frame flush), with the input beats arriving back to back (no gaps) and the
output always ready (no stalls), the conditions under which the figure is exact. While the
sequencer is inside a site and nothing else can move, it skips ahead, so a fully active 180 x 240
frame costs seconds, not minutes.

A frame's cycles run from its first input handshake to its end-of-frame output handshake,
inclusive, as `accelkit.sim.sparse_conv.run_sparse_conv` measures them on the RTL.
"""

from __future__ import annotations

from accelkit.config.sparse_conv import SparseChainConfig, SparseConvConfig

__all__ = ["EngineModel", "frames_cycles", "frame_cycles", "dense_frame_cycles", "frame_beats"]

NO_ROW = -1


def _popcount(v: int) -> int:
    return bin(v).count("1")


def _lowest(v: int) -> int:
    return (v & -v).bit_length() - 1


class EngineModel:
    """The control state of one engine; `step` advances one clock."""

    def __init__(self, cfg: SparseConvConfig, height: int, width: int):
        self.cfg = cfg
        self.S, self.W, self.stride = cfg.buffer_slots, cfg.max_width, cfg.stride
        self.three = cfg.kernel == 3
        self.off_lo = 1 if self.three else 0
        self.Gi, self.Go = cfg.in_groups, cfg.requant_groups
        self.gs = 1 if cfg.depthwise else cfg.in_groups  # input-group steps per tap
        self.hm1, self.wm1 = height - 1, width - 1
        self.out_valid, self.out_beat = False, None
        self._reset_frame()
        self.f_rem = 0
        self.pf_valid, self.pf = False, None
        self.sv, self.s_oy, self.s_ox, self.s_taps, self.s_rem, self.s_go, self.s_gi = (False, 0, 0, 0, 0, 0, 0)
        self.pipe = [(False, False, 0, 0), (False, False, 0, 0)]  # stage 1, stage 2: (valid, last, oy, ox)
        self.v3, self.v4 = (False, 0, 0), (False, 0, 0)

    def _reset_frame(self) -> None:
        self.gi, self.cur = 0, (0, 0)
        self.has_last, self.last = False, (0, 0)
        self.err = self.discard = self.eof_seen = False
        self.done_rows = 0
        self.tags = [NO_ROW] * self.S
        self.bitmap = [0] * self.S
        self.f_row, self.f_scan, self.f_done = 0, False, False

    # ----- combinational views

    def _row_bits(self, row: int) -> int:
        if row < 0:
            return 0
        s = row % self.S
        return self.bitmap[s] if self.tags[s] == row else 0

    def _centre(self) -> int:
        if self.stride == 1:
            return self._row_bits(self.f_row)
        pair = self._row_bits(2 * self.f_row) | self._row_bits(2 * self.f_row + 1)
        out = 0
        for i in range((self.W + 1) // 2):
            if (pair >> (2 * i)) & 3:
                out |= 1 << i
        return out

    def _taps(self, oy: int, ox: int) -> int:
        if not self.three:
            return 1
        cy, cx = oy * self.stride, ox * self.stride
        taps = 0
        for k, dy in enumerate((-1, 0, 1)):
            ext = self._row_bits(cy + dy) << 1  # bit 0: column -1
            taps |= ((ext >> cx) & 7) << (3 * k)
        return taps

    def use_row(self) -> int:
        if self.sv:
            return self.s_oy
        return self.pf[0] if self.pf_valid else self.f_row

    def classify(self, beat):
        """(bad, in_ready, peek) for the beat offered this cycle (None: no beat)."""
        if beat is None:
            return False, False, None
        y, x, eof, _ = beat
        first = self.gi == 0
        bad = False
        if not eof:
            if first:
                bad = ((self.has_last and (y, x) <= self.last) or y > self.hm1 or x > self.wm1)
            else:
                bad = (y, x) != self.cur
        permit = y + self.off_lo < self.use_row() * self.stride + self.S
        opened = not self.eof_seen
        ready = opened and (self.discard or eof or bad or permit)
        peek = y if (opened and not eof and first and not bad and not self.discard) else None
        return bad, ready, peek

    def _seq_remaining(self) -> int:
        """MAC steps left in the current site, this cycle's included."""
        n = _popcount(self.s_taps)
        return ((self.gs - self.s_gi) + _popcount(self.s_rem & (self.s_rem - 1)) * self.gs
                + (self.Go - 1 - self.s_go) * n * self.gs)

    # ----- one clock

    def step(self, beat, out_ready: bool, bad: bool, ready: bool, peek) -> tuple[bool, object]:
        """Advance one clock with `beat` offered (classified by `classify`); returns (in fired, out beat taken)."""
        fire = beat is not None and ready
        took = self.out_beat if (self.out_valid and out_ready) else None
        adv = (not self.out_valid) or out_ready
        # finder combinational
        row_ready = self.eof_seen or self.done_rows > self.f_row * self.stride + self.off_lo
        rows_over = self.eof_seen and (not self.has_last or self.f_row > self.last[0] // self.stride)
        # sequencer combinational
        rem_rest = self.s_rem & (self.s_rem - 1)
        gi_last = self.s_gi == self.gs - 1
        acc_last = gi_last and rem_rest == 0
        site_done = self.sv and acc_last and self.s_go == self.Go - 1
        pf_take = adv and self.pf_valid and (not self.sv or site_done)
        pipe_empty = not (self.sv or self.pf_valid or self.pipe[0][0] or self.pipe[1][0] or self.v3[0]
                          or self.v4[0])
        send_eof = self.f_done and pipe_empty and adv

        # ingest
        if peek is not None:
            self.done_rows = peek
        if fire:
            y, x, eof, error = beat
            first = self.gi == 0
            if eof:
                self.eof_seen, self.discard = True, False
                if not first or error:
                    self.err = True
                self.gi = 0
            elif self.discard:
                pass
            elif bad:
                self.err, self.discard, self.gi = True, True, 0
            else:
                if first:
                    self.cur = (y, x)
                last_beat = self.gi == self.Gi - 1
                if last_beat:
                    self.gi, self.has_last, self.last = 0, True, (y, x)
                else:
                    self.gi += 1
                s = y % self.S
                new_row = first and self.tags[s] != y
                if new_row:
                    self.tags[s] = y
                self.bitmap[s] = (0 if new_row else self.bitmap[s]) | ((1 << x) if last_beat else 0)
        # finder (reads the pre-clock state computed above for row_ready / rows_over)
        f_row, f_rem = self.f_row, self.f_rem
        if pf_take:
            self.pf_valid = False
        if not self.f_done and not send_eof:
            if not self.f_scan:
                if rows_over:
                    self.f_done = True
                elif row_ready:
                    centre = self._centre_at(f_row)
                    if centre == 0:
                        self.f_row = f_row + 1
                    else:
                        self.f_rem, self.f_scan = centre, True
            elif not self.pf_valid or pf_take:
                fx = _lowest(f_rem)
                rest = f_rem & (f_rem - 1)
                self.pf_valid, self.pf = True, (f_row, fx, self._taps_at(f_row, fx))
                self.f_rem = rest
                if rest == 0:
                    self.f_scan, self.f_row = False, f_row + 1
        # sequencer and pipeline
        if adv:
            issued = (self.sv, acc_last, self.s_oy, self.s_ox)
            if self.sv:
                if not gi_last:
                    self.s_gi += 1
                else:
                    self.s_gi = 0
                    if rem_rest:
                        self.s_rem = rem_rest
                    else:
                        self.s_rem = self.s_taps
                        self.s_go = 0 if self.s_go == self.Go - 1 else self.s_go + 1
                if site_done:
                    self.sv = False
            if pf_take:
                oy, ox, taps = self.pf_snapshot
                self.sv, self.s_oy, self.s_ox, self.s_taps, self.s_rem, self.s_go, self.s_gi = (
                    True, oy, ox, taps, taps, 0, 0)
            st2 = self.pipe[1]
            v4 = self.v4
            self.v4 = self.v3
            self.v3 = (st2[0] and st2[1], st2[2], st2[3])
            self.pipe = [issued, self.pipe[0]]
            self.out_valid = v4[0] or send_eof
            self.out_beat = ((0, 0, True, self.err) if send_eof else (v4[1], v4[2], False, False))
        if send_eof:
            self._reset_frame()
        return fire, took

    # the finder reads the bitmap before this clock's ingest write: snapshot helpers set in `cycle`
    def _centre_at(self, row: int) -> int:
        return self._pre_centre

    def _taps_at(self, row: int, x: int) -> int:
        return self._pre_taps

    def prepare(self) -> None:
        """Evaluate, from the registers before the clock, what the finder would see this cycle."""
        self.pf_snapshot = self.pf
        self._pre_centre = self._centre() if not self.f_scan else 0
        if self.f_scan and self.f_rem:
            self._pre_taps = self._taps(self.f_row, _lowest(self.f_rem))
        else:
            self._pre_taps = 0

    # ----- fast forward

    def quiet_steps(self, beat_blocked: bool) -> int:
        """Clocks that can be skipped: the sequencer is inside a site and nothing else can change."""
        if not (self.sv and beat_blocked):
            return 0
        if not (self.f_done or (self.f_scan and self.pf_valid)):
            if self.f_scan:
                return 0
            row_ready = self.eof_seen or self.done_rows > self.f_row * self.stride + self.off_lo
            rows_over = self.eof_seen and (not self.has_last or self.f_row > self.last[0] // self.stride)
            if row_ready or rows_over:
                return 0
        k = self._seq_remaining() - 2
        return k if k >= 5 else 0

    def skip(self, k: int) -> None:
        """Advance the sequencer k MAC steps inside its site; the pipeline then holds steps of this site."""
        n = _popcount(self.s_taps)
        per_acc = n * self.gs
        j0 = self.s_go * per_acc + (n - _popcount(self.s_rem)) * self.gs + self.s_gi

        def last(j):
            return (j + 1) % per_acc == 0

        j = j0 + k
        self.s_go, within = divmod(j, per_acc)
        t, self.s_gi = divmod(within, self.gs)
        rem = self.s_taps
        for _ in range(t):
            rem &= rem - 1
        self.s_rem = rem
        oy, ox = self.s_oy, self.s_ox
        self.pipe = [(True, last(j - 1), oy, ox), (True, last(j - 2), oy, ox)]
        self.v3 = (last(j - 3), oy, ox)
        self.v4 = (last(j - 4), oy, ox)
        self.out_valid = last(j - 5)
        self.out_beat = (oy, ox, False, False)


def frame_beats(cfg: SparseConvConfig, frame) -> list[tuple[int, int, bool, bool]]:
    """The input beats of a frame as (y, x, eof, error): cin/pi per token, then the end of frame."""
    beats = []
    for y, x in (tuple(int(v) for v in c) for c in frame.coords):
        beats += [(y, x, False, False)] * cfg.in_groups
    beats.append((0, 0, True, False))
    return beats


def _layers(cfg) -> tuple[SparseConvConfig, ...]:
    return cfg.layers if isinstance(cfg, SparseChainConfig) else (cfg,)


def frames_cycles(cfg: SparseConvConfig | SparseChainConfig, frames, limit: int = 10**9) -> dict:
    """Cycles of each frame (first input handshake to end-of-frame output handshake) when `frames` (all
    of one shape) run back to back, and the total (first input to last output handshake)."""
    frames = list(frames)
    layers = _layers(cfg)
    if not frames:
        return {"frames": [], "total": 0}
    h, w = frames[0].height, frames[0].width
    engines = []
    for c in layers:
        engines.append(EngineModel(c, h, w))
        h, w = c.output_grid(h, w)
    beats, starts = [], []
    for f in frames:
        starts.append(len(beats))
        beats += frame_beats(layers[0], f)
    in_fire, eof_fires = {}, []
    i, cycle = 0, 0
    single = len(engines) == 1
    while len(eof_fires) < len(frames):
        if cycle > limit:
            raise RuntimeError(f"cycle model: no end of frame after {limit} cycles (the engine would hang)")
        beat0 = beats[i] if i < len(beats) else None
        # combinational: each engine's input ready from the beat it is offered (registered upstream)
        offers = [beat0] + [e.out_beat if e.out_valid else None for e in engines[:-1]]
        cls = [e.classify(b) for e, b in zip(engines, offers, strict=True)]
        if single:
            e = engines[0]
            bad, ready, peek = cls[0]
            blocked = beat0 is None or (not ready and (peek is None or peek == e.done_rows))
            k = e.quiet_steps(blocked)
            if k:
                e.skip(k)
                cycle += k
                continue
        for e in engines:
            e.prepare()
        fires = []
        for j, e in enumerate(engines):
            out_ready = True if j == len(engines) - 1 else cls[j + 1][1]
            fired, took = e.step(offers[j], out_ready, *cls[j])
            fires.append(fired)
            if j == len(engines) - 1 and took is not None and took[2]:
                eof_fires.append(cycle)
        if fires[0]:
            in_fire[i] = cycle
            i += 1
        cycle += 1
    per = [eof_fires[k] - in_fire[starts[k]] + 1 for k in range(len(frames))]
    return {"frames": per, "total": eof_fires[-1] - in_fire[0] + 1}


def frame_cycles(cfg: SparseConvConfig | SparseChainConfig, frame) -> int:
    """Cycles of one frame on its own."""
    return frames_cycles(cfg, [frame])["frames"][0]


class _Dense:
    def __init__(self, height: int, width: int):
        self.height, self.width = height, width
        self.coords = [(y, x) for y in range(height) for x in range(width)]


def dense_frame_cycles(cfg: SparseConvConfig, height: int, width: int) -> int:
    """Cycles of the same engine on the fully active frame of this size."""
    return frame_cycles(cfg, _Dense(height, width))
