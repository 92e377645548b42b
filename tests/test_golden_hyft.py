"""The Hyft softmax golden model: config checks, the arithmetic definition, special values, accuracy."""

import math
import random
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from accelkit.config import ConfigError
from accelkit.config.hyft import FORMATS, SoftmaxConfig, exp2_table, log2_table, log2e_constant
from accelkit.golden.hyft import (
    bits_to_float,
    decode_float,
    exp2_fixed,
    fixed_difference,
    float_to_bits,
    hyft_softmax,
    hyft_softmax_bits,
    hyft_softmax_like_torch,
    interpolate,
    log2_fixed,
    patched_softmax,
    round_to_format,
    softmax_ref,
)
from accelkit.golden.hyft_ref import decode_value, hyft_softmax_scalar

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
INF = float("inf")
# the smallest legal widths, where every truncation in the datapath bites
NARROW = dict(segments=1, frac_bits=5, int_bits=3, table_bits=4, sum_frac_bits=3, log2e_bits=6)
WIDE = dict(segments=32, frac_bits=24, int_bits=8, table_bits=30, sum_frac_bits=40, log2e_bits=29, max_len=16)


# ---- config ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("param,value", [
    ("fmt", "fp8"), ("lanes", 3), ("max_len", 0), ("max_len", 8192), ("max_len", 6), ("segments", 3),
    ("frac_bits", 4), ("frac_bits", 25), ("int_bits", 0), ("int_bits", 9), ("table_bits", 4),
    ("table_bits", 31), ("log2e_bits", 1), ("sum_frac_bits", 0), ("sum_frac_bits", 41), ("centring", 1),
    ("segments", 8.0), ("lanes", True), ("fmt", ["bf16"]), ("frac_bits", "12"),
])
def test_invalid_parameter_is_named_in_one_line(param, value):
    with pytest.raises(ConfigError) as e:
        SoftmaxConfig(**{param: value})
    msg = str(e.value)
    assert msg.startswith(f"{param}={value!r} is invalid: ") and "\n" not in msg


def test_cross_parameter_limits():
    with pytest.raises(ConfigError, match=r"^max_len=12 is invalid: a multiple of lanes=8$"):
        SoftmaxConfig(lanes=8, max_len=12)
    with pytest.raises(ConfigError, match=r"^frac_bits=6 is invalid: an integer in 7\.\.24"):
        SoftmaxConfig(segments=32, frac_bits=6)
    with pytest.raises(ConfigError, match=r"^log2e_bits=32 is invalid: at most 29 with int_bits=8"):
        SoftmaxConfig(int_bits=8, frac_bits=24, log2e_bits=32)
    assert SoftmaxConfig(max_len=4096, sum_frac_bits=40).sum_bits == 53
    SoftmaxConfig(**WIDE)
    SoftmaxConfig(**NARROW)


def test_config_round_trip_and_derived_widths():
    cfg = SoftmaxConfig()
    assert SoftmaxConfig.from_dict(cfg.to_dict()) == cfg and cfg.block == "hyft"
    assert cfg.replace(segments=16).digest() != cfg.digest()
    w = cfg.implies()
    assert (w["width"], w["exp_bits"], w["man_bits"], w["bias"]) == (16, 8, 7, 127)
    assert w["sum_int_bits"] == 11 and w["sum_bits"] == 31  # 1024 values < 2 each, 20 fraction bits
    assert w["seg_bits"] == 3 and w["interp_bits"] == 9 and w["q_bits"] == 8
    assert cfg.log2e_const == 47274 == round(math.log2(math.e) * 2**15)
    assert SoftmaxConfig(max_len=1, lanes=1).sum_int_bits == 1
    assert SoftmaxConfig(max_len=1000, lanes=8).sum_int_bits == 11
    assert SoftmaxConfig(fmt="fp16").implies()["bias"] == 15


# ---- tables -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("S", [1, 2, 4, 8, 16, 32])
def test_tables_are_rounded_function_values_and_rise(S):
    bits = S.bit_length() + 1  # the narrowest legal width
    for W in (bits, 12, 30):
        e = exp2_table(S, W)
        assert e[0] == 2**W and e[-1] == 2 ** (W + 1)
        assert all(abs(v - 2 ** (j / S) * 2**W) <= 0.5 + 1e-6 * 2**W / 2**20 for j, v in enumerate(e))
        assert all(b > a for a, b in zip(e, e[1:], strict=False))
        g = log2_table(S, W)
        assert g[0] == 0 and g[-1] == 2**W
        assert all(abs(v - math.log2(1 + j / S) * 2**W) <= 0.5 + 1e-6 for j, v in enumerate(g))
        assert all(b > a for a, b in zip(g, g[1:], strict=False))
    assert log2e_constant(15) == 47274


def test_one_segment_is_mitchell():
    cfg = SoftmaxConfig(segments=1, frac_bits=12, table_bits=12, centring=False)
    r = torch.arange(1 << 12)
    q, P = exp2_fixed(r - (1 << 12), cfg)  # t in [-1, 0): q = -1, 2^r ~ 1 + r
    assert bool((q == -1).all()) and torch.equal(P, (1 << 12) + r)
    total = (r + (1 << 12)) << (cfg.sum_frac_bits - 12)  # sums 1 + r: log2(1 + r) ~ r
    assert torch.equal(log2_fixed(total, cfg), r)
    assert torch.equal(interpolate(cfg.log2_table, r, cfg), r)


def test_log2_of_a_power_of_two_is_exact():
    cfg = SoftmaxConfig()
    k = torch.arange(0, 11)
    assert torch.equal(log2_fixed((1 << cfg.sum_frac_bits) << k, cfg), k << cfg.frac_bits)
    assert cfg.log2_bias == 8 and SoftmaxConfig(centring=False).log2_bias == 0


# ---- step 2 against exact rationals ------------------------------------------------------------------

def _finite_bits(fmt):
    f = FORMATS[fmt]
    return st.integers(0, (1 << f.width) - 1).filter(lambda b: (b >> f.man_bits) & f.exp_max != f.exp_max)


def _close_pair(fmt):
    """Two finite patterns near each other (same binade or a few ulps apart), of either sign."""
    f = FORMATS[fmt]
    return st.tuples(_finite_bits(fmt), st.integers(-5, 5), st.sampled_from([1, 3, 1 << f.man_bits]),
                     st.booleans()).map(
        lambda a: (a[0], ((a[0] + a[1] * a[2]) % (1 << f.width)) ^ (a[3] << (f.width - 1))))


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("widths", [{}, NARROW, WIDE], ids=["default", "narrow", "wide"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fixed_difference_is_exact_floor(fmt, widths, data):
    f = FORMATS[fmt]
    cfg = SoftmaxConfig(fmt=fmt, **widths)
    a, b = data.draw(st.one_of(st.tuples(_finite_bits(fmt), _finite_bits(fmt)), _close_pair(fmt)))
    if (b >> f.man_bits) & f.exp_max == f.exp_max:
        return
    va, vb = decode_value(a, fmt), decode_value(b, fmt)
    (x, vx), (m, vm) = sorted([(a, va), (b, vb)], key=lambda p: p[1])
    sx, Ex, mx, _, _ = decode_float(torch.tensor([x]), f)
    sm, Em, mm, _, _ = decode_float(torch.tensor([m]), f)
    got = int(fixed_difference(sx, Ex, mx, sm, Em, mm, cfg))
    want = -min(math.ceil((vm - vx) * (1 << cfg.frac_bits)), cfg.d_sat)
    assert got == want, f"x={float(vx)!r} max={float(vm)!r}: D={got}, exact floor {want}"


# ---- the whole unit against the scalar Fraction model -------------------------------------------------

@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("widths", [{}, NARROW, WIDE, dict(segments=4, centring=False)],
                         ids=["default", "narrow", "wide", "plain"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_vectorised_model_matches_scalar_model(fmt, widths, data):
    f = FORMATS[fmt]
    cfg = SoftmaxConfig(fmt=fmt, **widths)
    n = data.draw(st.integers(1, 9))
    mode = data.draw(st.sampled_from(["values", "close", "bits"]))
    if mode == "values":
        xs = data.draw(st.lists(st.floats(-200, 200, width=32) | st.sampled_from([-INF, 0.0]), min_size=n,
                                max_size=n))
        bits = float_to_bits(torch.tensor(xs, dtype=torch.float32).to(DTYPES[fmt])).tolist()
    elif mode == "close":
        base = data.draw(_finite_bits(fmt))
        steps = data.draw(st.lists(st.integers(-40, 40), min_size=n, max_size=n))
        bits = [(base + s * (1 << max(0, f.man_bits - 6))) % (1 << f.width) for s in steps]
    else:
        bits = data.draw(st.lists(st.integers(0, (1 << f.width) - 1), min_size=n, max_size=n))
    got = hyft_softmax_bits(torch.tensor([bits]), cfg)[0].tolist()
    assert got == hyft_softmax_scalar(bits, cfg), f"input bits {bits}"


# ---- special values --------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", list(FORMATS))
def test_special_values_follow_torch(fmt):
    dt = DTYPES[fmt]
    nan = float("nan")
    x = torch.tensor([[1.0, -INF, 2.0, 0.5],
                      [1.0, nan, 2.0, 0.5],
                      [1.0, INF, 2.0, 0.5],
                      [-INF, -INF, -INF, -INF],
                      [-INF, 3.0, -INF, -INF],
                      [-1e4, 7.0, 7.0, -1e4],
                      [5.0, 5.0, 5.0, 5.0],
                      [-INF, 1.0, -INF, INF]], dtype=dt)
    y = hyft_softmax(x, SoftmaxConfig(fmt=fmt))
    ref = torch.softmax(x.double(), -1)
    assert torch.equal(torch.isnan(y), torch.isnan(ref)), y
    assert y[0, 1] == 0 and bool((y[0] > 0).sum() == 3)
    assert y[4].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert y[5].tolist() == [0.0, 0.5, 0.5, 0.0]
    assert y[6].tolist() == [0.25] * 4
    assert bool(torch.isnan(y[1:4]).all()) and bool(torch.isnan(y[7]).all())
    assert bool((y[~torch.isnan(y)] >= 0).all()) and not bool(torch.signbit(y[~torch.isnan(y)]).any())


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("widths", [{}, NARROW, WIDE, dict(segments=1)])
def test_single_element_gives_exactly_one(fmt, widths):
    cfg = SoftmaxConfig(fmt=fmt, **widths)
    f = FORMATS[fmt]
    vals = torch.tensor([0.0, -0.0, 1.0, -3.5, 1e-30, 6e4, -6e4], dtype=torch.float32).to(DTYPES[fmt])
    vals = vals[torch.isfinite(vals)]
    assert hyft_softmax(vals[:, None], cfg).flatten().tolist() == [1.0] * len(vals)
    # the largest and smallest finite values
    ext = bits_to_float(torch.tensor([(f.exp_max << f.man_bits) - 1, (1 << f.width) - (1 << f.man_bits) - 1]),
                        fmt)
    assert hyft_softmax(ext[:, None], cfg).flatten().tolist() == [1.0, 1.0]


def test_subnormals_read_as_zero_and_nan_rows_stay_apart():
    tiny = torch.tensor([1e-40, 0.0, -1e-40], dtype=torch.float32)  # fp32 subnormals
    y = hyft_softmax(tiny, SoftmaxConfig(fmt="fp32"))
    assert y[0] == y[1] == y[2] and abs(float(y.sum()) - 1) < 3e-3
    x = torch.tensor([[0.0, 1.0], [float("nan"), 1.0], [2.0, 2.0]], dtype=torch.bfloat16)
    y = hyft_softmax(x)
    assert bool(torch.isnan(y[1]).all()) and y[2].tolist() == [0.5, 0.5] and not bool(torch.isnan(y[0]).any())


def test_outputs_underflow_gradually():
    cfg = SoftmaxConfig(fmt="fp16")  # fp16: smallest normal 2^-14, smallest subnormal 2^-24
    x = torch.tensor([0.0, -9.0, -11.0, -16.0, -18.0, -200.0], dtype=torch.float16)
    y = hyft_softmax(x, cfg)
    ref = softmax_ref(x)
    assert y[2] < 2**-14 and (y[2] - ref[2]).abs() <= 2**-25  # e^-11: subnormal, within half a step
    assert y[3] == 2**-23 and y[4] == 0 and y[5] == 0  # e^-16 ~ 1.89 * 2^-24; e^-18 ~ 0.26 * 2^-24
    # rounding carries: into the exponent of a normal, and from the subnormals into the smallest normal
    P = torch.tensor([(1 << 13) - 1])
    assert int(round_to_format(torch.tensor([-3]), P, cfg)) == (15 - 2) << 10  # ~2^-2 -> exactly 2^-2
    assert int(round_to_format(torch.tensor([-15]), P, cfg)) == 1 << 10  # ~2^-14 -> smallest normal
    assert int(round_to_format(torch.tensor([-25]), torch.tensor([1 << 12]), cfg)) == 0  # 2^-25: tie to even 0
    assert int(round_to_format(torch.tensor([-25]), torch.tensor([(1 << 12) + 1]), cfg)) == 1


# ---- shapes and dtypes -----------------------------------------------------------------------------

def test_shapes_and_rows_are_independent():
    torch.manual_seed(0)
    x = (torch.randn(2, 3, 17) * 4).to(torch.bfloat16)
    y = hyft_softmax(x)
    assert y.shape == x.shape and y.dtype == torch.bfloat16
    assert torch.equal(y[1, 2], hyft_softmax(x[1, 2]))
    assert torch.equal(hyft_softmax(x.flatten(0, 1)).reshape(x.shape), y)
    assert hyft_softmax(torch.zeros(3, 0, dtype=torch.bfloat16)).shape == (3, 0)
    assert hyft_softmax(torch.tensor(2.5, dtype=torch.bfloat16)).item() == 1.0


def test_dtype_must_match_the_config():
    with pytest.raises(TypeError, match="fmt='bf16'"):
        hyft_softmax(torch.zeros(4))
    with pytest.raises(TypeError, match="float64"):
        hyft_softmax(torch.zeros(4, dtype=torch.float64), SoftmaxConfig(fmt="fp32"))
    with pytest.raises(TypeError, match="SoftmaxConfig"):
        hyft_softmax(torch.zeros(4, dtype=torch.bfloat16), {"fmt": "bf16"})
    with pytest.raises(TypeError, match="floating-point"):
        hyft_softmax_like_torch(torch.arange(4), 0)
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float16)
    assert hyft_softmax(x, SoftmaxConfig(fmt="fp16")).dtype == torch.float16


def test_like_torch_dims_and_dtypes():
    torch.manual_seed(1)
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    y = hyft_softmax_like_torch(x, dim=1)
    assert y.dtype == torch.float64 and y.shape == x.shape
    assert torch.equal(y, hyft_softmax(x.movedim(1, -1).to(torch.bfloat16)).double().movedim(-1, 1))
    assert hyft_softmax_like_torch(x, 1, dtype=torch.float32).dtype == torch.float32
    assert torch.equal(hyft_softmax_like_torch(x, None), hyft_softmax_like_torch(x, 0))  # torch's legacy dim
    assert (hyft_softmax_like_torch(x, -1) - torch.softmax(x, -1)).abs().max() < 4e-3


def test_patch_routes_every_softmax_and_restores():
    saved = (torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax)
    x = torch.randn(4, 9) * 3
    want = hyft_softmax(x.to(torch.bfloat16)).float()
    with patched_softmax() as cfg:
        assert cfg == SoftmaxConfig()
        for got in (torch.softmax(x, -1), torch.nn.functional.softmax(x, dim=-1), x.softmax(-1),
                    torch.nn.functional.softmax(x, -1, dtype=torch.float32)):
            assert torch.equal(got, want)
    assert (torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax) == saved
    assert not torch.equal(torch.softmax(x, -1), want)


def test_tiny_bert_runs_on_the_unit():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    conf = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=32)
    model = transformers.BertModel(conf, add_pooling_layer=False).eval()
    model.set_attn_implementation("eager")
    ids = torch.randint(0, 50, (2, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state
        with patched_softmax():
            out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    for att in out.attentions:  # the attention probabilities are the unit's bf16 outputs
        assert torch.equal(att, att.to(torch.bfloat16).float())
        assert bool((att[1, :, :, 7:] == 0).all()), "masked keys get exactly 0"
    cos = torch.nn.functional.cosine_similarity(out.last_hidden_state.flatten(1), ref.flatten(1))
    assert bool((cos > 0.999).all())


# ---- accuracy and properties ------------------------------------------------------------------------

def test_default_accuracy_against_float64():
    gen = torch.Generator().manual_seed(2024)
    worst_abs = worst_rel = 0.0
    for scale in (0.01, 0.1, 1.0, 3.0, 10.0, 30.0, 100.0):
        for n, rows in ((1, 50), (2, 2000), (5, 2000), (16, 1000), (100, 300), (1000, 40)):
            x = (torch.randn(rows, n, generator=gen, dtype=torch.float64) * scale).to(torch.bfloat16)
            y, ref = hyft_softmax(x).double(), softmax_ref(x)
            err = (y - ref).abs()
            big = ref >= 2**-10
            worst_abs = max(worst_abs, float(err.max()))
            worst_rel = max(worst_rel, float((err[big] / ref[big]).max()))
    assert worst_abs <= 4e-3 and worst_rel <= 0.02, (worst_abs, worst_rel)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-60, 60), min_size=1, max_size=24), st.integers(-60, 60),
       st.sampled_from(["bf16", "fp16", "fp32"]), st.randoms(use_true_random=False))
def test_properties(xs, shift, fmt, rnd):
    cfg = SoftmaxConfig(fmt=fmt)
    x = torch.tensor(xs, dtype=DTYPES[fmt])
    y = hyft_softmax(x, cfg)
    # outputs in [0, 1], ordered as the inputs, the max gets the largest, the sum near 1
    assert bool(((y >= 0) & (y <= 1)).all())
    order = torch.argsort(x.float(), stable=True)
    assert bool((y[order][1:] >= y[order][:-1]).all())
    assert abs(float(y.double().sum()) - 1) < 0.02
    # integers this small are exact in every format: shifting them changes no difference, so no bit
    assert torch.equal(hyft_softmax(x + shift, cfg), y)
    perm = list(range(len(xs)))
    rnd.shuffle(perm)
    assert torch.equal(hyft_softmax(x[perm], cfg), y[perm])


def test_scalar_model_reads_values_exactly():
    assert decode_value(0x3F80, "bf16") == 1 and decode_value(0xBFC0, "bf16") == Fraction(-3, 2)
    assert decode_value(0x0001, "fp16") == 0 and decode_value(0xFC00, "fp16") == "-inf"
    rng = random.Random(0)
    for _ in range(200):
        b = rng.getrandbits(32)
        v = decode_value(b, "fp32")
        f = bits_to_float(torch.tensor([b]), "fp32").double().item()
        if isinstance(v, Fraction) and abs(f) >= 2**-126:
            assert v == Fraction(f)


def test_huge_magnitudes_saturate_or_cancel_exactly():
    x = torch.tensor([[3e38, 3e38], [-3e38, 3e38], [1e30, 1e30], [-1e30, -1e30]], dtype=torch.bfloat16)
    assert hyft_softmax(x).tolist() == [[0.5, 0.5], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5]]
    x = torch.tensor([65504.0, 65472.0, 65440.0], dtype=torch.float16)  # one fp16 ulp (32) apart
    assert torch.equal(hyft_softmax(x, SoftmaxConfig(fmt="fp16")), torch.tensor([1.0, 0, 0], dtype=torch.float16))
    x = torch.tensor([1e6, 1e6 - 0.0625, 1e6 - 1], dtype=torch.float32)  # close fp32 values cancel exactly
    y = hyft_softmax(x, SoftmaxConfig(fmt="fp32")).double()
    assert (y - softmax_ref(x)).abs().max() < 2e-3


def test_accuracy_flow_runs_small():
    import json

    from accelkit.flows.hyft_accuracy import accuracy_study, random_vectors, render_table

    batches = random_vectors(60, seed=3)
    lengths = torch.cat([b["length"] for b in batches])
    assert len(lengths) == 60 and int(lengths.min()) == 1 and int(lengths.max()) == 1024
    assert all(b["x"].shape[1] >= int(b["length"].max()) for b in batches)
    study = accuracy_study(n_vectors=60, minilm=False, configs=[SoftmaxConfig(), SoftmaxConfig(arch="float")])
    json.dumps(study)
    assert [r["unit"] for r in study["rows"]] == ["exact"] * 3 + ["hyft", "float"]
    assert study["default"]["meets_targets"] == {"random": {"max_abs": True, "max_rel": True}}
    assert "| bf16 | 8 |" in render_table(study) and "| bf16 | float |" in render_table(study)
