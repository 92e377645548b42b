"""Event ingestion (ESDA histograms) and the synthetic near-eye event camera."""

import numpy as np
import pytest
import torch

from accelkit.golden.events import (
    EVENT_DTYPE,
    EventError,
    as_events,
    events_to_frame,
    events_to_frames,
    make_events,
    synth_eye_events,
)
from accelkit.golden.sparse_conv import SparseConvLayer, SparseFrame

# t, x, y, p (1 = ON, 0 = OFF), on a 5 x 4 sensor (width 5, height 4)
HAND = np.array([
    [10, 0, 0, 1],
    [11, 0, 0, 1],
    [12, 0, 0, 0],
    [20, 4, 3, 0],
    [25, 2, 1, 1],
    [30, 4, 3, 0],
    [40, 1, 0, 1],  # the window [t0, t1) = [10, 40) excludes this one
], np.int64)


def one_line(excinfo):
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------- ingestion


def test_counts_match_hand_made_events():
    frame = events_to_frame(HAND, height=4, width=5, t0=10, t1=40)
    assert frame.shape == (4, 5) and frame.channels == 2
    # raster order; features (OFF, ON)
    assert frame.coords.tolist() == [[0, 0], [1, 2], [3, 4]]
    assert frame.features.tolist() == [[1, 2], [0, 1], [2, 0]]
    full = events_to_frame(HAND, 4, 5)
    assert full.coords.tolist() == [[0, 0], [0, 1], [1, 2], [3, 4]]
    assert int(full.features.sum()) == len(HAND)
    assert events_to_frame(HAND, 4, 5, t0=0, t1=10).n_active == 0


def test_event_forms_agree():
    structured = make_events(HAND[:, 0], HAND[:, 1], HAND[:, 2], HAND[:, 3])
    assert structured.dtype == EVENT_DTYPE
    assert np.array_equal(as_events(HAND), structured)
    minus_one = HAND.copy()
    minus_one[:, 3] = np.where(HAND[:, 3] == 1, 1, -1)
    assert np.array_equal(as_events(minus_one), structured)
    assert events_to_frame(structured, 4, 5) == events_to_frame(minus_one, 4, 5)
    assert events_to_frame(np.zeros((0, 4), np.int64), 4, 5).n_active == 0


def test_counts_saturate_at_255():
    ev = make_events(np.arange(300), np.full(300, 2), np.full(300, 1), np.ones(300, np.int64))
    frame = events_to_frame(ev, 3, 3)
    assert frame.features.tolist() == [[0, 255]]


@pytest.mark.parametrize("ds", [2, 3])
def test_downsampling(ds):
    rng = np.random.default_rng(ds)
    n, h, w = 2000, 13, 20
    ev = make_events(np.sort(rng.integers(0, 10_000, n)), rng.integers(0, w, n), rng.integers(0, h, n),
                     rng.integers(0, 2, n))
    full = events_to_frame(ev, h, w)
    small = events_to_frame(ev, h, w, downsample=ds)
    assert small.shape == (-(-h // ds), -(-w // ds))
    # Pooling the full-resolution histogram ds x ds gives the downsampled one (no count reaches 255 here).
    pooled = torch.zeros(2, small.height * ds, small.width * ds, dtype=torch.int64)
    pooled[:, :h, :w] = full.to_dense()
    pooled = pooled.reshape(2, small.height, ds, small.width, ds).sum((2, 4))
    assert torch.equal(small.to_dense(), pooled)
    assert torch.equal(small.mask, pooled.sum(0) > 0)


@pytest.mark.parametrize("events,kw,needle", [
    (np.array([[0, 5, 0, 1]]), {}, "outside"),
    (np.array([[0, 0, 4, 1]]), {}, "outside"),
    (np.array([[0, 0, 0, 2]]), {}, "polarity"),
    (np.array([[0, 0, 0, 0], [1, 0, 0, -1]]), {}, "polarity"),
    (np.array([[0.5, 0, 0, 1]]), {}, "integers"),
    (np.array([[0, 0, 0]]), {}, "(N, 4)"),
    (np.zeros(2, [("t", "<i8"), ("x", "<i2")]), {}, "lack"),
    (HAND, {"downsample": 0}, "downsample"),
    (HAND, {"t0": 5, "t1": 1}, "reversed"),
])
def test_malformed_events(events, kw, needle):
    with pytest.raises(EventError) as ei:
        events_to_frame(events, 4, 5, **kw)
    assert needle in one_line(ei)


# --------------------------------------------------------------------------- the synthetic eye

SCHEDULE = [("fixation", 250_000), ("saccade", 0, (54.0, 34.0)), ("fixation", 250_000), ("blink", 220_000),
            ("fixation", 150_000), ("saccade", 0, (30.0, 27.0)), ("fixation", 100_000)]


@pytest.fixture(scope="module")
def recording():
    return synth_eye_events(None, seed=11, schedule=SCHEDULE)


def test_recording_is_well_formed(recording):
    ev = recording.events
    assert (recording.width, recording.height) == (80, 60)
    assert ev.dtype == EVENT_DTYPE and len(ev) > 1000
    assert np.all(np.diff(ev["t"]) >= 0)
    assert ev["x"].min() >= 0 and ev["x"].max() < 80 and ev["y"].min() >= 0 and ev["y"].max() < 60
    assert set(np.unique(ev["p"]).tolist()) == {0, 1}
    kinds = [s.kind for s in recording.segments]
    assert kinds == [s[0] for s in SCHEDULE]
    sac = recording.segments[1]
    assert 25_000 <= sac.end_us - sac.start_us <= 60_000  # ~20 ms + 1 ms per pixel
    k = int(np.searchsorted(recording.t_us, recording.segments[2].start_us + 100_000))
    assert np.allclose(recording.gaze[k], (54.0, 34.0), atol=0.5)  # landed, drifting by < 0.5 px


def test_generator_is_deterministic():
    short = [("fixation", 40_000), ("saccade", 0, (50.0, 30.0)), ("fixation", 20_000)]
    a = synth_eye_events(None, seed=3, schedule=short)
    b = synth_eye_events(None, seed=3, schedule=short)
    c = synth_eye_events(None, seed=4, schedule=short)
    assert np.array_equal(a.events, b.events)
    assert not np.array_equal(a.events, c.events)
    r1, r2 = synth_eye_events(150_000, seed=9), synth_eye_events(150_000, seed=9)
    assert np.array_equal(r1.events, r2.events) and r1.segments == r2.segments
    assert r1.events["t"].max() < 150_000


def test_saccades_produce_more_events_than_fixations(recording):
    fix, sac = recording.rate("fixation"), recording.rate("saccade")
    assert sac > 10 * fix, (sac, fix)
    # fixations are not silent: background activity and drift at the pupil edge
    assert fix > 0.2


def test_blinks_produce_bursts(recording):
    blink = next(s for s in recording.segments if s.kind == "blink")
    bins = np.bincount(recording.events["t"] // 10_000)  # events per 10 ms
    fix = [s for s in recording.segments if s.kind == "fixation"]
    fix_bins = np.concatenate([bins[s.start_us // 10_000 + 1: s.end_us // 10_000 - 1] for s in fix])
    blink_bins = bins[blink.start_us // 10_000: blink.end_us // 10_000]
    assert blink_bins.max() > 20 * np.median(fix_bins)
    assert recording.rate("blink") > 10 * recording.rate("fixation")
    # the lid closes and reopens: two bursts with a lull (the hold) between them
    n = len(blink_bins)
    assert blink_bins[n // 3: 2 * n // 3].min() < 0.1 * blink_bins.max()
    closure = recording.closure[(recording.t_us >= blink.start_us) & (recording.t_us < blink.end_us)]
    assert closure.max() == pytest.approx(1.0) and closure[0] < 0.05 and closure[-1] < 0.05


def test_frames_from_synthetic_events_are_valid(recording):
    frames = events_to_frames(recording.events, 60, 80, 10_000, t_start=0)
    assert len(frames) == -(-int(recording.events["t"].max() + 1) // 10_000)
    total = 0
    for f in frames:
        assert isinstance(f, SparseFrame) and f.shape == (60, 80) and f.channels == 2
        assert f.n_active == 0 or int(f.features.min()) >= 0
        total += int(f.features.sum())
    assert total == len(recording.events)  # nothing saturates in 10 ms windows
    densities = [f.density for f in frames]
    assert max(densities) < 0.5 and min(densities) < 0.02  # sparse, as real recordings are
    half = events_to_frames(recording.events, 60, 80, 10_000, t_start=0, downsample=2)
    assert all(f.shape == (30, 40) for f in half)
    # the engine's first layer takes them (unsigned counts)
    layer = SparseConvLayer("subm3x3", torch.ones(4, 2, 3, 3, dtype=torch.int64),
                            torch.zeros(4, dtype=torch.int64), torch.full((4,), 1 << 12), input_signed=False,
                            relu=True)
    busiest = max(frames, key=lambda f: f.n_active)
    out = layer(busiest)
    assert out.same_sites(busiest) and int(out.features.max()) > 0
