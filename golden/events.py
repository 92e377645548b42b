"""Events in, sparse frames out; and a synthetic near-eye event camera to feed the engine.

Events are numpy structured arrays of `EVENT_DTYPE`: t (microseconds, int64), x, y
(pixel column and row), p (polarity, 1 = ON / brighter, 0 = OFF / darker).
`as_events` also takes an (N, 4) integer array with columns (t, x, y, p), and
polarity in {0, 1} or {-1, 1}.

`events_to_frame` is ESDA's histogram: channel 0 counts OFF events, channel 1 ON
events (ESDA's `np.stack([img_neg, img_pos])` order), saturating at 255; a site is
active when it has any event in the window.

`synth_eye_events` renders a near-eye scene (skin, sclera, iris, a dark pupil
ellipse with a corneal glint, an upper eyelid with lashes) at `dt_us` steps and
runs an idealised DVS pixel on it: each pixel fires when its log intensity moves
by its own contrast threshold from the level of its last event, plus background
activity. Gaze follows fixations (slow drift), saccades (minimum-jerk) and blinks
(the lid sweeps down and back up). Seeded: same arguments, same events.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from accelkit.golden.sparse_conv import SparseFrame

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "i1")])
OFF, ON = 0, 1
COUNT_MAX = 255


class EventError(ValueError):
    """Malformed events or window. One line."""


# --------------------------------------------------------------------------- events -> frames


def make_events(t: Any, x: Any, y: Any, p: Any) -> np.ndarray:
    """A structured event array from four equal-length integer sequences (polarity 0/1 or -1/1)."""
    cols = [np.asarray(c) for c in (t, x, y, p)]
    n = cols[0].shape[0] if cols[0].ndim else -1
    for name, c in zip("txyp", cols, strict=True):
        if c.ndim != 1 or c.shape[0] != n:
            raise EventError(f"{name} must be a 1-D sequence as long as t ({n}), got shape {c.shape}")
        if c.size and c.dtype.kind not in "iu":
            raise EventError(f"{name} must be integers, got dtype {c.dtype}")
    pol = cols[3].astype(np.int64)
    if pol.size and not np.isin(pol, (-1, 0, 1)).all():
        raise EventError(f"polarity must be 0/1 (or -1/1), got values {np.unique(pol)[:5].tolist()}")
    if pol.size and (pol == 0).any() and (pol == -1).any():
        raise EventError("polarity mixes 0 and -1: use 0/1 or -1/1")
    for name, c in (("x", cols[1]), ("y", cols[2])):
        if c.size and (c.min() < 0 or c.max() > np.iinfo(np.int16).max):
            raise EventError(f"{name} must be in 0..32767, got {int(c.min())}..{int(c.max())}")
    ev = np.empty(n, EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = cols[0], cols[1], cols[2], (pol > 0)
    return ev


def as_events(events: Any) -> np.ndarray:
    """Events as an `EVENT_DTYPE` array, from a structured array (fields t, x, y, p) or an (N, 4) array."""
    a = np.asarray(events)
    if a.dtype.names is not None:
        missing = [f for f in "txyp" if f not in a.dtype.names]
        if missing:
            raise EventError(f"events lack field(s) {', '.join(missing)} (have {', '.join(a.dtype.names)})")
        return make_events(a["t"], a["x"], a["y"], a["p"])
    if a.size == 0:
        return np.empty(0, EVENT_DTYPE)
    if a.ndim != 2 or a.shape[1] != 4:
        raise EventError(f"events must be a structured array or (N, 4) of columns t, x, y, p; got {a.shape}")
    return make_events(a[:, 0], a[:, 1], a[:, 2], a[:, 3])


def events_to_frame(events: Any, height: int, width: int, t0: int | None = None, t1: int | None = None,
                    downsample: int = 1) -> SparseFrame:
    """The ESDA histogram of the events with t0 <= t < t1 (None: unbounded) on an H x W sensor.

    downsample d pools d x d pixels into one site: grid ceil(H/d) x ceil(W/d). Features
    (N, 2) = (OFF count, ON count) per site, saturating at 255.
    """
    ev = as_events(events)
    for name, v in (("height", height), ("width", width), ("downsample", downsample)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise EventError(f"{name} must be a positive integer, got {v!r}")
    if t0 is not None and t1 is not None and t1 < t0:
        raise EventError(f"window t0={t0} .. t1={t1} is reversed")
    keep = np.ones(len(ev), bool)
    if t0 is not None:
        keep &= ev["t"] >= t0
    if t1 is not None:
        keep &= ev["t"] < t1
    ev = ev[keep]
    if len(ev) and (int(ev["x"].max()) >= width or int(ev["y"].max()) >= height):
        i = int(np.argmax((ev["x"] >= width) | (ev["y"] >= height)))
        raise EventError(f"event at (x={int(ev['x'][i])}, y={int(ev['y'][i])}), t={int(ev['t'][i])} is "
                         f"outside the {width} x {height} sensor")
    hd, wd = -(-height // downsample), -(-width // downsample)
    keys = (ev["y"].astype(np.int64) // downsample) * wd + ev["x"].astype(np.int64) // downsample
    sites, inv = np.unique(keys, return_inverse=True)  # sorted keys: raster order
    counts = np.zeros((len(sites), 2), np.int64)
    np.add.at(counts, (inv.reshape(-1), ev["p"].astype(np.int64)), 1)
    np.minimum(counts, COUNT_MAX, out=counts)
    coords = np.stack([sites // wd, sites % wd], 1)
    return SparseFrame(hd, wd, coords, counts)


def events_to_frames(events: Any, height: int, width: int, window_us: int, t_start: int | None = None,
                     t_end: int | None = None, downsample: int = 1) -> list[SparseFrame]:
    """`window_us` frames from t_start (default: first event) to t_end (default: after the last)."""
    ev = as_events(events)
    if not isinstance(window_us, int | np.integer) or window_us < 1:
        raise EventError(f"window_us must be a positive integer, got {window_us!r}")
    if t_start is None:
        t_start = int(ev["t"].min()) if len(ev) else 0
    if t_end is None:
        t_end = int(ev["t"].max()) + 1 if len(ev) else t_start
    return [events_to_frame(ev, height, width, t, t + window_us, downsample)
            for t in range(t_start, t_end, window_us)]


# --------------------------------------------------------------------------- synthetic eye


@dataclasses.dataclass(frozen=True)
class EyeScene:
    """The near-eye scene and the sensor. Lengths in pixels, times in microseconds."""

    width: int = 80
    height: int = 60
    dt_us: int = 1000  # render step; events within a step get interpolated timestamps
    eye_centre: tuple[float, float] = (40.0, 30.0)  # (x, y) of the eye opening
    eye_axes: tuple[float, float] = (36.0, 21.0)  # semi-axes of the opening
    iris_radius: float = 13.0
    pupil_axes: tuple[float, float] = (6.5, 6.0)  # the pupil is a slight ellipse
    gaze_range: tuple[float, float] = (15.0, 7.0)  # max |gaze - eye_centre| in x, y
    skin: float = 0.55
    sclera: float = 0.85
    iris: float = 0.35
    pupil: float = 0.04
    glint: float = 1.0
    lash: float = 0.12
    contrast_threshold: float = 0.2  # log-intensity step per event
    threshold_mismatch: float = 0.03  # std of the per-pixel threshold (absolute, log units)
    background_rate_hz: float = 0.2  # background activity per pixel
    fixation_ms: tuple[float, float] = (150.0, 450.0)
    blink_ms: tuple[float, float] = (150.0, 300.0)
    blink_probability: float = 0.15  # chance that a fixation ends in a blink instead of a saccade


@dataclasses.dataclass(frozen=True)
class EyeSegment:
    kind: str  # "fixation", "saccade" or "blink"
    start_us: int
    end_us: int
    gaze_from: tuple[float, float]
    gaze_to: tuple[float, float]


@dataclasses.dataclass
class EyeRecording:
    events: np.ndarray  # EVENT_DTYPE, time-sorted
    width: int
    height: int
    segments: list[EyeSegment]
    t_us: np.ndarray  # render times (K,)
    gaze: np.ndarray  # (K, 2) pupil centre (x, y)
    closure: np.ndarray  # (K,) upper lid, 0 open .. 1 closed
    phase: np.ndarray  # (K,) index into PHASES

    def events_between(self, t0: int, t1: int) -> np.ndarray:
        return self.events[(self.events["t"] >= t0) & (self.events["t"] < t1)]

    def rate(self, kind: str) -> float:
        """Events per millisecond over all segments of `kind` (0 if none)."""
        segs = [s for s in self.segments if s.kind == kind]
        dur = sum(s.end_us - s.start_us for s in segs)
        n = sum(len(self.events_between(s.start_us, s.end_us)) for s in segs)
        return 1000.0 * n / dur if dur else 0.0


PHASES = ("fixation", "saccade", "blink")


def _saccade_ms(amplitude_px: float) -> float:
    # Main-sequence-like: ~20 ms plus ~1 ms per pixel of amplitude.
    return 20.0 + 1.0 * amplitude_px


def eye_schedule(duration_us: int, seed: int = 0, scene: EyeScene = EyeScene()) -> list[tuple]:
    """A random (kind, duration_us[, target]) schedule covering `duration_us`: fixations, saccades, blinks."""
    rng = np.random.default_rng([seed, 1])
    out: list[tuple] = []
    t = 0
    while t < duration_us:
        d = int(rng.uniform(*scene.fixation_ms) * 1000)
        out.append(("fixation", d))
        t += d
        if t >= duration_us:
            break
        if rng.random() < scene.blink_probability:
            d = int(rng.uniform(*scene.blink_ms) * 1000)
            out.append(("blink", d))
        else:
            gx, gy = scene.gaze_range
            target = (scene.eye_centre[0] + rng.uniform(-gx, gx), scene.eye_centre[1] + rng.uniform(-gy, gy))
            out.append(("saccade", 0, target))  # 0: duration from the amplitude
            d = 0
        t += d
    return out


def _segments(schedule: list[tuple], scene: EyeScene) -> list[EyeSegment]:
    segs: list[EyeSegment] = []
    t = 0
    gaze = scene.eye_centre
    for i, item in enumerate(schedule):
        if not isinstance(item, tuple | list) or len(item) not in (2, 3) or item[0] not in PHASES:
            raise EventError(f"schedule[{i}]={item!r} is invalid: (kind, duration_us[, (x, y) target]) "
                             f"with kind in {', '.join(PHASES)}")
        kind, dur = item[0], int(item[1])
        target = gaze
        if kind == "saccade":
            if len(item) != 3:
                raise EventError(f"schedule[{i}]={item!r} is invalid: a saccade needs a (x, y) target")
            target = (float(item[2][0]), float(item[2][1]))
            if dur <= 0:
                dur = int(_saccade_ms(math.dist(gaze, target)) * 1000)
        if dur <= 0:
            raise EventError(f"schedule[{i}]={item!r} is invalid: duration must be positive")
        segs.append(EyeSegment(kind, t, t + dur, gaze, target))
        t += dur
        gaze = target
    return segs


def _smoothstep(u: np.ndarray) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(u, 0.0, 1.0))


def _trajectory(segs: list[EyeSegment], t: np.ndarray, rng: np.random.Generator):
    """Gaze (K, 2), lid closure (K,) and phase (K,) at times t."""
    gaze = np.zeros((len(t), 2))
    closure = np.zeros(len(t))
    phase = np.zeros(len(t), np.int64)
    for s in segs:
        sel = (t >= s.start_us) & (t < s.end_us)
        u = (t[sel] - s.start_us) / (s.end_us - s.start_us)
        a, b = np.array(s.gaze_from), np.array(s.gaze_to)
        phase[sel] = PHASES.index(s.kind)
        if s.kind == "saccade":
            m = 10 * u**3 - 15 * u**4 + 6 * u**5  # minimum-jerk profile
            gaze[sel] = a + (b - a) * m[:, None]
        else:
            # Fixational drift: a slow sub-pixel wander, random per segment.
            f = rng.uniform(1.0, 3.0, 2)
            ph = rng.uniform(0, 2 * np.pi, 2)
            secs = (t[sel] - s.start_us)[:, None] * 1e-6
            gaze[sel] = a + 0.3 * np.sin(2 * np.pi * f * secs + ph)
            if s.kind == "blink":
                # Fast close (35%), short hold (15%), slower reopening (50%).
                closure[sel] = np.where(u < 0.35, _smoothstep(u / 0.35),
                                        np.where(u < 0.5, 1.0, 1.0 - _smoothstep((u - 0.5) / 0.5)))
    return gaze, closure, phase


def _soft(d: np.ndarray, edge: float = 0.6) -> np.ndarray:
    """Soft inside-indicator of a signed distance (negative inside), ~1 px anti-aliased edge."""
    return 1.0 / (1.0 + np.exp(np.clip(d / edge, -50, 50)))


def render_eye(scene: EyeScene, gaze: tuple[float, float], closure: float, texture: np.ndarray) -> np.ndarray:
    """Intensity image (H, W) in (0, 1] of the eye with the pupil at `gaze` and the lid `closure` shut."""
    ys, xs = np.mgrid[0:scene.height, 0:scene.width] + 0.5
    cx, cy = scene.eye_centre
    ax, ay = scene.eye_axes
    gx, gy = gaze
    r_open = np.hypot((xs - cx) / ax, (ys - cy) / ay)
    opening = _soft((r_open - 1.0) * min(ax, ay))
    iris = _soft(np.hypot(xs - gx, ys - gy) - scene.iris_radius)
    px, py = scene.pupil_axes
    pupil = _soft((np.hypot((xs - gx) / px, (ys - gy) / py) - 1.0) * min(px, py))
    glint = _soft(np.hypot(xs - (gx + 2.5), ys - (gy - 2.5)) - 1.2)
    eye = scene.sclera + (scene.iris - scene.sclera) * iris
    eye = eye + (scene.pupil - eye) * pupil
    eye = eye + (scene.glint - eye) * glint
    # Upper lid: its margin moves from above the opening to its bottom; the skin texture moves with it.
    top, span = cy - ay - 1.0, 2.0 * ay + 2.0
    margin = top + closure * span + 2.5 * ((xs - cx) / ax) ** 2 * (1.0 - closure)
    covered = _soft(ys - margin)
    shift = int(round(closure * span))
    lid_skin = scene.skin * (1.0 + 0.08 * np.roll(texture, shift, axis=0))
    skin = scene.skin * (1.0 + 0.08 * texture)
    inside = eye + (lid_skin - eye) * covered
    img = skin + (inside - skin) * opening
    lashes = np.exp(-0.5 * ((ys - margin) / 0.8) ** 2) * opening
    img = img + (scene.lash - img) * 0.8 * lashes
    return np.clip(img, 1e-3, None)


def synth_eye_events(duration_us: int | None = 1_000_000, seed: int = 0, schedule: list[tuple] | None = None,
                     scene: EyeScene = EyeScene()) -> EyeRecording:
    """Events of a synthetic near-eye recording (width x height sensor, 80 x 60 by default).

    schedule: (kind, duration_us[, (x, y) target]) items, kind in fixation / saccade / blink;
    a saccade of duration 0 takes ~20 ms + 1 ms per pixel. Default: a random schedule of
    `duration_us` from `seed`. The DVS noise (threshold mismatch, background activity) is
    drawn from `seed` too.
    """
    if schedule is None:
        if not isinstance(duration_us, int) or duration_us < 1:
            raise EventError(f"duration_us must be a positive integer, got {duration_us!r}")
        segs = _segments(eye_schedule(duration_us, seed, scene), scene)
        end = min(duration_us, segs[-1].end_us)
    else:
        segs = _segments(schedule, scene)
        end = segs[-1].end_us
    rng = np.random.default_rng([seed, 2])
    h, w, dt = scene.height, scene.width, scene.dt_us

    # Fixed pattern: skin texture, per-pixel ON / OFF thresholds (mismatch).
    tex = rng.standard_normal((h, w))
    tex = (tex + np.roll(tex, 1, 0) + np.roll(tex, 1, 1) + np.roll(tex, (1, 1), (0, 1))) / 2.0
    c0 = scene.contrast_threshold
    floor = 0.3 * c0
    c_on = np.maximum(c0 + scene.threshold_mismatch * rng.standard_normal((h, w)), floor)
    c_off = np.maximum(c0 + scene.threshold_mismatch * rng.standard_normal((h, w)), floor)

    t = np.arange(0, end + 1, dt, dtype=np.int64)
    gaze, closure, phase = _trajectory(segs, t, rng)
    log_i = np.log(render_eye(scene, tuple(gaze[0]), closure[0], tex))
    # Each pixel's reference starts somewhere within its thresholds, as after a long past.
    ref = log_i + rng.uniform(-1.0, 1.0, (h, w)) * 0.5 * np.minimum(c_on, c_off)
    chunks = []
    for k in range(1, len(t)):
        log_i = np.log(render_eye(scene, tuple(gaze[k]), closure[k], tex))
        diff = log_i - ref
        n_on = np.where(diff > 0, np.floor(diff / c_on), 0).astype(np.int64)
        n_off = np.where(diff < 0, np.floor(-diff / c_off), 0).astype(np.int64)
        ref = ref + n_on * c_on - n_off * c_off
        for n, pol, c in ((n_on, ON, c_on), (n_off, OFF, c_off)):
            idx = np.flatnonzero(n)
            if idx.size == 0:
                continue
            cnt = n.ravel()[idx]
            pix = np.repeat(idx, cnt)
            j = np.arange(pix.size) - np.repeat(np.cumsum(cnt) - cnt, cnt) + 1  # 1..n within a pixel
            # The j-th crossing happens when the (linear) change has covered j thresholds.
            frac = np.minimum(j * c.ravel()[pix] / np.abs(diff.ravel()[pix]), 1.0)
            ts = t[k - 1] + np.ceil(frac * dt).astype(np.int64)
            chunks.append((ts, pix, pol))
        n_noise = rng.poisson(scene.background_rate_hz * dt * 1e-6 * h * w)
        if n_noise:
            pix = rng.integers(0, h * w, n_noise)
            ts = t[k - 1] + rng.integers(1, dt + 1, n_noise)
            chunks.append((ts, pix, rng.integers(0, 2, n_noise)))
    if chunks:
        ts = np.concatenate([c[0] for c in chunks])
        pix = np.concatenate([c[1] for c in chunks])
        pol = np.concatenate([np.broadcast_to(c[2], c[0].shape) for c in chunks])
    else:
        ts = pix = pol = np.zeros(0, np.int64)
    order = np.argsort(ts, kind="stable")
    ev = np.empty(len(ts), EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = ts[order], pix[order] % w, pix[order] // w, pol[order]
    ev = ev[ev["t"] < end]
    return EyeRecording(ev, w, h, segs, t, gaze, closure, phase)


# --------------------------------------------------------------------------- network input frames

EYE_FEATURE_MAX = 15  # the eye network's input features are small signed integers


def eye_network_frame(events: Any, height: int, width: int) -> SparseFrame:
    """The eye network's input: one frame of `events` with 3 signed channels per active site,
    (ON count, OFF count, ON - OFF), each clipped to +-EYE_FEATURE_MAX."""
    f = events_to_frame(events, height, width)
    off, on = f.features[:, 0], f.features[:, 1]
    m = EYE_FEATURE_MAX
    feats = np.stack([on.clamp(max=m).numpy(), off.clamp(max=m).numpy(), (on - off).clamp(-m, m).numpy()], 1)
    return f.with_features(feats)


def eye_frames(n: int, seed: int = 0, density: tuple[float, float] = (0.15, 0.25),
               scene: EyeScene = EyeScene()) -> list[SparseFrame]:
    """`n` back-to-back frames of a synthetic eye recording for the eye network (ESDA's SEE-A input).

    Each frame's target density is drawn from `density` (uniform); its window starts where the
    previous one ended and closes at the first event that makes that many sites active (the
    frames of an event-count-driven camera front end). Features: `eye_network_frame`.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise EventError(f"n must be a positive integer, got {n!r}")
    lo, hi = density
    if not 0 < lo <= hi < 1:
        raise EventError(f"density={density!r} is invalid: 0 < low <= high < 1")
    rng = np.random.default_rng([seed, 3])
    h, w = scene.height, scene.width
    duration = 1_000_000 * (1 + n // 2)
    while True:
        ev = synth_eye_events(duration, seed=seed, scene=scene).events
        frames, start = [], 0
        keys = ev["y"].astype(np.int64) * w + ev["x"].astype(np.int64)
        while len(frames) < n:
            want = int(np.ceil(rng.uniform(lo, hi) * h * w))
            _, first = np.unique(keys[start:], return_index=True)
            if first.size < want:
                break
            end = start + int(np.sort(first)[want - 1]) + 1
            frames.append(eye_network_frame(ev[start:end], h, w))
            start = end
        if len(frames) == n:
            return frames
        duration *= 2
        rng = np.random.default_rng([seed, 3])
