"""The sparse-conv golden model against dense torch conv2d, the spec's requant formula by hand,
its config, its cost model and the RTL engine's cycle model (without the simulator)."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from accelkit.config import ConfigError
from accelkit.config.sparse_conv import SparseConvConfig, signed_bits
from accelkit.golden.sparse_conv import (
    KINDS,
    FrameError,
    SparseChain,
    SparseConvLayer,
    SparseFrame,
    default_frames_dir,
    load_frames,
    neighbour_counts,
    requant,
    useful_macs,
)
from accelkit.golden.sparse_cycles import (
    cost_summary,
    dense_cycles,
    sparse_cycles_estimate,
    sparse_speedup,
    utilisation,
)
from accelkit.golden.sparse_cycles import useful_macs as cfg_useful_macs
from accelkit.golden.sparse_rtl_cycles import dense_frame_cycles, frame_cycles, frame_plan, frames_cycles

FRAMES = load_frames()
FRAME_NAMES = sorted(FRAMES)
DEPTHWISE = ("dw3x3", "dw3x3s2")
STRIDE2 = ("conv3x3s2", "dw3x3s2")


# --------------------------------------------------------------------------- helpers


def random_frame(gen, h, w, c, density, signed=True):
    mask = torch.rand(h, w, generator=gen) < density
    lo, hi = (-128, 128) if signed else (0, 256)
    dense = torch.randint(lo, hi, (c, h, w), generator=gen)
    return SparseFrame.from_dense(dense, mask)


def random_layer(gen, kind, cin, cout, **kw):
    if kind in DEPTHWISE:
        cout = cin
        shape = (cin, 1, 3, 3)
    elif kind == "pw1x1":
        shape = (cout, cin, 1, 1)
    else:
        shape = (cout, cin, 3, 3)
    weight = torch.randint(-128, 128, shape, generator=gen)
    bias = torch.randint(-(1 << 15), 1 << 15, (cout,), generator=gen)
    scale = torch.randint(0, 1 << 16, (cout,), generator=gen)
    return SparseConvLayer(kind, weight, bias, scale, **kw)


def dense_reference(layer, frame):
    """(out_coords, psum) from torch conv2d on the masked dense frame, read at the output sites.

    conv2d(padding=1) computes out[p] = sum_d W[d + 1] X[p + d] (stride 1) and
    out[o] = sum_d W[d + 1] X[2o + d] (stride 2), zero outside the frame; inactive sites
    are zero in the masked frame, so this is the spec's sum over active neighbours.
    """
    x = frame.to_dense().to(torch.float64)[None]  # exact: every partial sum < 2^53
    pad = 0 if layer.kind == "pw1x1" else 1
    groups = layer.cin if layer.kind in DEPTHWISE else 1
    out = F.conv2d(x, layer.weight.to(torch.float64), stride=layer.stride, padding=pad, groups=groups)[0]
    m = frame.mask.to(torch.float64)[None, None]
    if layer.stride == 2:
        # An output site is active when any input of its 2 x 2 block is (y >> 1, x >> 1).
        out_mask = F.max_pool2d(m, 2, 2, ceil_mode=True)[0, 0] > 0
    else:
        out_mask = m[0, 0] > 0
    assert tuple(out_mask.shape) == tuple(out.shape[1:])
    coords = out_mask.nonzero()
    return coords, out[:, coords[:, 0], coords[:, 1]].T.round().to(torch.int64)


def requant_by_hand(psum, layer, identity=None):
    """The spec's formula with floor division instead of shifts (an independent spelling)."""
    e = layer.shift
    y = torch.div((psum + layer.bias) * layer.scale + 2 ** (e - 1), 2**e, rounding_mode="floor")
    if identity is not None:
        y = y + torch.div(identity * layer.id_scale + 2 ** (e - 1), 2**e, rounding_mode="floor")
    y = y.clamp(-127, 127)
    return y.clamp(min=0) if layer.relu else y


def check_layer(layer, frame):
    coords, ref = dense_reference(layer, frame)
    got_coords, psum = layer.psum(frame)
    assert torch.equal(got_coords, coords), f"{layer.kind}: output sites differ on {frame!r}"
    if not torch.equal(psum, ref):
        i, c = (psum != ref).nonzero()[0].tolist()
        raise AssertionError(f"{layer.kind} on {frame!r}: psum at site {coords[i].tolist()} channel {c} "
                             f"expected {int(ref[i, c])}, got {int(psum[i, c])}")
    out = layer(frame)
    ho, wo = (-(-frame.height // 2), -(-frame.width // 2)) if layer.stride == 2 else frame.shape
    assert out.shape == (ho, wo)
    assert torch.equal(out.coords, coords)
    assert torch.equal(out.features, requant_by_hand(ref, layer))


def one_line(excinfo):
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------- every kind vs conv2d


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("density", [0.02, 0.15, 0.5, 1.0])
def test_random_frames_match_dense_conv2d(kind, density):
    gen = torch.Generator().manual_seed(100 * KINDS.index(kind) + int(100 * density))
    for h, w in [(13, 17), (16, 16), (1, 5), (2, 1)]:
        frame = random_frame(gen, h, w, 6, density)
        layer = random_layer(gen, kind, 6, 5, relu=bool(h % 2))
        check_layer(layer, frame)


@pytest.mark.parametrize("kind", KINDS)
def test_unsigned_input_up_to_255(kind):
    gen = torch.Generator().manual_seed(7)
    frame = random_frame(gen, 11, 9, 3, 0.3, signed=False)
    frame = frame.with_features(frame.features.clamp(min=200))  # mostly near the top of 0..255
    check_layer(random_layer(gen, kind, 3, 4, input_signed=False), frame)


@pytest.mark.parametrize("name", FRAME_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_real_frames_match_dense_conv2d(name, kind):
    frame = FRAMES[name]
    gen = torch.Generator().manual_seed(len(name) * 31 + KINDS.index(kind))
    layer = random_layer(gen, kind, frame.channels, 8, input_signed=False, relu=True)
    check_layer(layer, frame)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_frame(kind):
    frame = SparseFrame(5, 7, torch.zeros(0, 2, dtype=torch.int64), torch.zeros(0, 4, dtype=torch.int64))
    out = random_layer(torch.Generator().manual_seed(1), kind, 4, 3)(frame)
    assert out.n_active == 0 and out.channels == (4 if kind in DEPTHWISE else 3)
    assert neighbour_counts(frame, kind).numel() == 0


def test_stride2_alignment_by_hand():
    # Active (1, 1) and (2, 3) on a 4 x 4 grid: outputs (0, 0) and (1, 1) on 2 x 2.
    # out(0,0) reads X[(0,0) + d] -> (1, 1) via d = (1, 1), weight tap [2, 2];
    # out(1,1) reads X[(2,2) + d] -> (1, 1) via d = (-1, -1) [0, 0] and (2, 3) via d = (0, 1) [1, 2].
    frame = SparseFrame(4, 4, [[1, 1], [2, 3]], [[3], [5]])
    w = torch.arange(1, 10).reshape(1, 1, 3, 3)  # w[0, 0, i, j] = 3 i + j + 1
    layer = SparseConvLayer("conv3x3s2", w, [0], [1])
    coords, psum = layer.psum(frame)
    assert coords.tolist() == [[0, 0], [1, 1]]
    assert psum.flatten().tolist() == [3 * 9, 3 * 1 + 5 * 6]
    assert neighbour_counts(frame, "conv3x3s2").tolist() == [1, 2]
    # Odd sizes: a 5 x 3 frame has a 3 x 2 output grid; site (4, 2) maps to (2, 1).
    out = SparseConvLayer("dw3x3s2", torch.ones(1, 1, 3, 3, dtype=torch.int64), [0], [1])(
        SparseFrame(5, 3, [[4, 2]], [[1]]))
    assert out.shape == (3, 2) and out.coords.tolist() == [[2, 1]]


def test_subm_by_hand():
    # A 3-site L on 3 x 3; all-ones kernel sums the active neighbours' features.
    frame = SparseFrame(3, 3, [[0, 0], [0, 1], [2, 2]], [[1], [2], [4]])
    layer = SparseConvLayer("subm3x3", torch.ones(1, 1, 3, 3, dtype=torch.int64), [0], [1])
    _, psum = layer.psum(frame)
    assert psum.flatten().tolist() == [3, 3, 4]
    assert neighbour_counts(frame, "subm3x3").tolist() == [2, 2, 1]
    assert useful_macs(frame, "subm3x3", 2, 3) == 5 * 6


# --------------------------------------------------------------------------- requant


def _layer_1x1(bias=0, scale=1, shift=16, relu=False, id_scale=None):
    return SparseConvLayer("pw1x1", torch.ones(1, 1, 1, 1, dtype=torch.int64), [bias], [scale], shift=shift,
                           relu=relu, id_scale=id_scale)


@pytest.mark.parametrize("acc,shift,expect", [
    (6, 2, 2),  # 1.5 rounds up
    (-6, 2, -1),  # -1.5 rounds up too (toward +inf): the shift is a floor
    (-5, 2, -1),  # -1.25: floor(-1.25 + 0.5) = -1
    (-7, 2, -2),  # -1.75
    (-2, 2, 0),  # -0.5 -> 0
    (-3, 2, -1),  # -0.75 -> -1
    (5, 1, 3),  # 2.5 -> 3
    (127 * 4 + 1, 2, 127),
    (128 * 4, 2, 127),  # clamp high
    (-128 * 4, 2, -127),  # clamp low to -127, not -128
    (-(1 << 40), 16, -127),
])
def test_requant_rounding_and_clamp(acc, shift, expect):
    y = requant(torch.tensor([[acc]]), torch.tensor([0]), torch.tensor([1]), shift)
    assert int(y) == expect


def test_requant_bias_scale_relu_esda_values():
    # ((psum + bias) * scale + 2^15) >> 16 with ESDA's 16-bit parameters:
    # 800 * 3000 / 2^16 = 36.6 -> 37; -950 * 4000 / 2^16 = -57.98 -> -58; saturates at 127.
    psum = torch.tensor([[1000, -1000, 30000]])
    bias, scale = torch.tensor([-200, 50, 32767]), torch.tensor([3000, 4000, 65535])
    assert requant(psum, bias, scale, 16).flatten().tolist() == [37, -58, 127]
    assert requant(psum, bias, scale, 16, relu=True).flatten().tolist() == [37, 0, 127]


def test_layer_requant_and_relu_end_to_end():
    frame = SparseFrame(1, 2, [[0, 0], [0, 1]], [[100], [-100]])
    # (90 * 3 + 2) >> 2 = 68, (-110 * 3 + 2) >> 2 = -82; (90 + 2) >> 2 = 23, (-110 + 2) >> 2 = -27
    assert _layer_1x1(bias=-10, scale=3, shift=2)(frame).features.flatten().tolist() == [68, -82]
    assert _layer_1x1(bias=-10, scale=1, shift=2)(frame).features.flatten().tolist() == [23, -27]
    assert _layer_1x1(bias=-10, scale=1, shift=2, relu=True)(frame).features.flatten().tolist() == [23, 0]


def test_residual_add():
    e = 4
    layer = _layer_1x1(bias=3, scale=5, shift=e, id_scale=24)
    frame = SparseFrame(2, 2, [[0, 1], [1, 0], [1, 1]], [[10], [-40], [127]])
    ident = frame.with_features([[-7], [20], [-127]])
    out = layer(frame, identity=ident)
    half = 1 << (e - 1)
    by_hand = []
    for x, xid in ((10, -7), (-40, 20), (127, -127)):
        y = (((x + 3) * 5 + half) >> e) + ((xid * 24 + half) >> e)
        by_hand.append(max(-127, min(127, y)))
    assert out.features.flatten().tolist() == by_hand
    assert torch.equal(out.features, requant_by_hand(frame.features, layer, ident.features))
    relu = _layer_1x1(bias=3, scale=5, shift=e, id_scale=24, relu=True)
    assert relu(frame, identity=ident).features.flatten().tolist() == [max(0, v) for v in by_hand]
    with pytest.raises(FrameError) as ei:
        layer(frame)
    assert "identity" in one_line(ei)
    with pytest.raises(FrameError) as ei:
        layer(frame, identity=SparseFrame(2, 2, [[0, 1]], [[1]]))
    one_line(ei)
    with pytest.raises(FrameError):
        _layer_1x1()(frame, identity=ident)


# --------------------------------------------------------------------------- chains


def _mobilenet_like(gen, cin):
    first = random_layer(gen, "subm3x3", cin, 8, input_signed=False, relu=True, shift=20)
    down = random_layer(gen, "dw3x3s2", 8, 8, relu=True, shift=18)
    expand = random_layer(gen, "pw1x1", 8, 16, relu=True, shift=18)
    dw = random_layer(gen, "dw3x3", 16, 16, relu=True, shift=18)
    proj = random_layer(gen, "pw1x1", 16, 8, shift=18, id_scale=40000)
    head = random_layer(gen, "conv3x3s2", 8, 4, shift=20)
    return [first, down, expand, dw, proj, head]


@pytest.mark.parametrize("name", ["nmnist_34x34", "dvsgesture_128x128"])
def test_chain_with_residual_block(name):
    frame = FRAMES[name]
    gen = torch.Generator().manual_seed(5)
    first, down, expand, dw, proj, head = _mobilenet_like(gen, frame.channels)
    chain = SparseChain([first, down, SparseChain([expand, dw, proj], residual=True), head])
    assert len(chain.leaves) == 6 and chain.cin == frame.channels and chain.cout == 4 and chain.stride == 4
    outs = chain.trace(frame)
    x1 = first(frame)
    x2 = down(x1)
    x5 = proj(dw(expand(x2)), identity=x2)
    expect = [x1, x2, expand(x2), dw(expand(x2)), x5, head(x5)]
    assert outs == expect
    assert chain(frame) == expect[-1]
    quarter = (frame.height + 1) // 2, (frame.width + 1) // 2
    assert outs[-1].shape == ((quarter[0] + 1) // 2, (quarter[1] + 1) // 2)
    assert any(int(o.features.abs().max()) > 0 for o in outs), "weights chosen so that something survives"


def test_chain_validation():
    gen = torch.Generator().manual_seed(0)
    a = random_layer(gen, "subm3x3", 2, 8)
    b = random_layer(gen, "pw1x1", 4, 4)
    with pytest.raises(ConfigError) as ei:
        SparseChain([a, b])
    assert "layers[1]" in one_line(ei)
    res = random_layer(gen, "pw1x1", 8, 8, id_scale=1)
    with pytest.raises(ConfigError) as ei:
        SparseChain([a, res])
    assert "id_scale" in one_line(ei)
    with pytest.raises(ConfigError) as ei:
        SparseChain([random_layer(gen, "pw1x1", 8, 8)], residual=True)
    one_line(ei)
    with pytest.raises(ConfigError) as ei:
        SparseChain([random_layer(gen, "dw3x3s2", 8, 8), res], residual=True)
    assert "stride" in one_line(ei)


# --------------------------------------------------------------------------- frames and .npz


def test_frame_helpers_and_roundtrip(tmp_path):
    frame = FRAMES["nmnist_34x34"]
    assert frame.n_active == 268 and frame.channels == 2 and frame.shape == (34, 34)
    assert frame.density == pytest.approx(268 / 34**2)
    assert SparseFrame.from_dense(frame.to_dense(), frame.mask) == frame
    assert int(frame.mask.sum()) == frame.n_active
    frame.to_npz(tmp_path / "f.npz")
    assert SparseFrame.from_npz(tmp_path / "f.npz") == frame
    assert frame != frame.with_features(frame.features + 1)
    assert frame != SparseFrame(34, 35, frame.coords, frame.features)
    # numpy input, default mask = any nonzero channel
    d = np.zeros((1, 2, 3), np.int16)
    d[0, 1, 2] = -4
    f = SparseFrame.from_dense(d)
    assert f.coords.tolist() == [[1, 2]] and f.features.tolist() == [[-4]]


def test_default_frames_dir(monkeypatch, tmp_path):
    assert (default_frames_dir() / "nmnist_34x34.npz").is_file()
    monkeypatch.setenv("ACCELKIT_EVENT_FRAMES", str(tmp_path))
    assert default_frames_dir() == tmp_path
    assert load_frames() == {}


@pytest.mark.parametrize("coords,features,needle", [
    ([[0, 0], [3, 1]], [[1], [2]], "outside"),
    ([[0, -1]], [[1]], "outside"),
    ([[1, 0], [0, 2]], [[1], [2]], "raster order"),
    ([[1, 0], [1, 0]], [[1], [2]], "duplicates"),
    ([[0, 0], [0, 1]], [[1]], "rows"),
    ([[0, 0, 0]], [[1]], "(N, 2)"),
    ([[0, 0]], [1], "(N, C)"),
    ([[0.0, 1.0]], [[1]], "integers"),
    ([[0, 1]], [[1.5]], "integers"),
    (np.array([[0, 1]], bool), [[1]], "integers"),
])
def test_malformed_frames(coords, features, needle):
    with pytest.raises(FrameError) as ei:
        SparseFrame(3, 3, coords, features)
    assert needle in one_line(ei)


def test_bad_dimensions():
    for h, w in [(0, 3), (3, -1), (2.0, 3), (True, 3)]:
        with pytest.raises(FrameError) as ei:
            SparseFrame(h, w, [[0, 0]], [[1]])
        one_line(ei)


def _good_arrays():
    mask = np.zeros((4, 5), bool)
    mask[1, 2] = mask[3, 0] = True
    coords = np.array([[1, 2], [3, 0]], np.int32)
    return {"mask": mask, "coords": coords, "features": np.array([[1, 2], [3, 4]], np.uint8)}


@pytest.mark.parametrize("change,needle", [
    ({"mask": None}, "missing key"),
    ({"features": None}, "missing key"),
    ({"features": np.array([[1, 2], [3, 4]], np.float32)}, "uint8 or int8"),
    ({"features": np.array([[1, 2], [3, 4]], np.int32)}, "uint8 or int8"),
    ({"features": np.array([1, 2], np.uint8)}, "uint8 or int8"),
    ({"coords": np.array([[1.0, 2.0], [3.0, 0.0]])}, "integer (N, 2)"),
    ({"coords": np.array([[3, 0], [1, 2]], np.int32)}, "raster order"),
    ({"coords": np.array([[1, 2], [3, 7]], np.int32)}, "outside"),
    ({"coords": np.array([[1, 2], [3, 1]], np.int32)}, "disagree with mask"),
    ({"mask": np.ones((4, 5), np.uint8)}, "bool"),
    ({"features": np.zeros((3, 2), np.uint8)}, "rows"),
])
def test_malformed_npz(tmp_path, change, needle):
    arrays = _good_arrays()
    SparseFrame.from_arrays(arrays)  # the baseline is fine
    for k, v in change.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(FrameError) as ei:
        SparseFrame.from_npz(path)
    msg = one_line(ei)
    assert needle in msg and "bad.npz" in msg


def test_unreadable_npz(tmp_path):
    for name, writer in [("missing.npz", None), ("garbage.npz", lambda p: p.write_bytes(b"not a zip")),
                         ("single.npy", lambda p: np.save(p, np.zeros(3)))]:
        path = tmp_path / name
        if writer:
            writer(path)
        with pytest.raises(FrameError) as ei:
            SparseFrame.from_npz(path)
        assert name in one_line(ei)


# --------------------------------------------------------------------------- layer parameters


@pytest.mark.parametrize("kind,weight_shape,kw,needle", [
    ("subm3x3", (2, 2, 1, 1), {}, "weight="),
    ("dw3x3", (2, 2, 3, 3), {}, "weight="),
    ("pw1x1", (2, 2, 3, 3), {}, "weight="),
    ("conv3x2", (2, 2, 3, 3), {}, "kind="),
    ("subm3x3", (2, 2, 3, 3), {"id_scale": 3}, "id_scale="),
    ("pw1x1", (2, 2, 1, 1), {"id_scale": 1 << 16}, "id_scale="),
    ("pw1x1", (2, 2, 1, 1), {"shift": 0}, "shift="),
    ("pw1x1", (2, 2, 1, 1), {"relu": 1}, "relu="),
    ("pw1x1", (2, 2, 1, 1), {"scale_bits": 32, "bias_bits": 32}, "scale_bits="),
])
def test_bad_layer_parameters(kind, weight_shape, kw, needle):
    with pytest.raises(ConfigError) as ei:
        SparseConvLayer(kind, torch.zeros(weight_shape, dtype=torch.int64), [0, 0], [1, 1], **kw)
    assert needle in one_line(ei)


@pytest.mark.parametrize("arg,value,needle", [
    ("weight", torch.full((2, 2, 3, 3), 128), "weight="),
    ("weight", torch.full((2, 2, 3, 3), -129), "weight="),
    ("weight", torch.zeros(2, 2, 3, 3), "weight is invalid"),
    ("bias", [1 << 15, 0], "bias="),
    ("bias", [0, 0, 0], "bias="),
    ("scale", [-1, 0], "scale="),
    ("scale", [1 << 16, 0], "scale="),
])
def test_parameter_ranges(arg, value, needle):
    args = {"weight": torch.zeros(2, 2, 3, 3, dtype=torch.int64), "bias": [0, 0], "scale": [0, 0]}
    args[arg] = value
    with pytest.raises(ConfigError) as ei:
        SparseConvLayer("subm3x3", **args)
    assert needle in one_line(ei)
    # the extremes themselves are fine
    SparseConvLayer("subm3x3", torch.full((2, 2, 3, 3), -128), [-(1 << 15), (1 << 15) - 1],
                    [0, (1 << 16) - 1])


def test_input_checks():
    layer = random_layer(torch.Generator().manual_seed(0), "subm3x3", 2, 2)
    counts = FRAMES["ncaltech101_180x240"]  # counts up to 63 fit signed; push one over 127
    bumped = counts.with_features(counts.features.clamp(max=200) + torch.tensor([128, 0]))
    with pytest.raises(FrameError) as ei:
        layer(bumped)
    assert "input_signed=False" in one_line(ei)
    with pytest.raises(FrameError) as ei:
        layer(FRAMES["roshambo17_64x64"])
    assert "channels" in one_line(ei)
    unsigned = random_layer(torch.Generator().manual_seed(0), "subm3x3", 2, 2, input_signed=False)
    with pytest.raises(FrameError) as ei:
        unsigned(counts.with_features(-counts.features))
    one_line(ei)


# --------------------------------------------------------------------------- config


def test_config_defaults_and_widths():
    cfg = SparseConvConfig()
    assert (cfg.kind, cfg.cin, cfg.cout, cfg.pi, cfg.po, cfg.shift) == ("subm3x3", 16, 16, 4, 4, 16)
    assert cfg.mac_units == 16 and cfg.y_bits == 7 and cfg.x_bits == 7
    assert cfg.line_buffer_bits == 3 * 128 * 16 * 8 + 3 * 128
    assert SparseConvConfig.from_dict(cfg.to_dict()) == cfg
    s2 = cfg.replace(kind="conv3x3s2", max_height=61, max_width=80)
    assert (s2.max_out_height, s2.max_out_width, s2.out_y_bits, s2.out_x_bits) == (31, 40, 5, 6)
    dw = SparseConvConfig(kind="dw3x3", cin=32, cout=32, pi=8, po=8)
    assert dw.mac_units == 8 and dw.products_per_output == 9
    assert SparseConvConfig(kind="pw1x1").line_buffer_bits == 0
    assert signed_bits(-128, 127) == 8 and signed_bits(-129, 0) == 9 and signed_bits(0, 128) == 9


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("signed", [True, False])
def test_psum_bits_are_exact_worst_case(kind, signed):
    cfg = SparseConvConfig(kind=kind, cin=4, cout=4, pi=2, po=2, signed_input=signed, max_height=6,
                           max_width=6)
    lo, hi = cfg.psum_range
    assert signed_bits(lo, hi) == cfg.psum_bits
    (xl, xh), (wl, wh) = cfg.input_range, cfg.weight_range
    corners = [(x, w) for x in (xl, xh) for w in (wl, wh)]
    shape = (4, 1, 3, 3) if kind in DEPTHWISE else (4, 4, cfg.kernel, cfg.kernel)
    full = torch.ones(6, 6, dtype=torch.bool)
    # A full frame of extreme inputs and weights reaches both ends of the range at an inner site.
    for pick, b, end in ((max, (1 << 15) - 1, hi), (min, -(1 << 15), lo)):
        x, w = pick(corners, key=lambda c: c[0] * c[1])
        layer = SparseConvLayer.from_config(cfg, torch.full(shape, w), torch.full((4,), b),
                                            torch.ones(4, dtype=torch.int64))
        _, psum = layer.psum(SparseFrame.from_dense(torch.full((4, 6, 6), x), full))
        extreme = psum.max() if end == hi else psum.min()
        assert int(extreme) + b == end


@pytest.mark.parametrize("changes,param", [
    ({"kind": "conv5x5"}, "kind"),
    ({"pi": 3}, "pi"),
    ({"po": 5}, "po"),
    ({"pi": 0}, "pi"),
    ({"kind": "dw3x3", "cout": 8}, "cout"),
    ({"kind": "dw3x3", "po": 2}, "po"),
    ({"residual": True}, "residual"),
    ({"kind": "pw1x1", "residual": True, "signed_input": False}, "signed_input"),
    ({"max_height": 0}, "max_height"),
    ({"max_width": 5000}, "max_width"),
    ({"cin": 0}, "cin"),
    ({"shift": 0}, "shift"),
    ({"feature_bits": 1}, "feature_bits"),
    ({"relu": "yes"}, "relu"),
    ({"scale_bits": 32, "bias_bits": 32, "cin": 4096, "pi": 4}, "scale_bits"),
])
def test_config_errors_name_the_parameter(changes, param):
    with pytest.raises(ConfigError) as ei:
        SparseConvConfig(**changes)
    assert one_line(ei).startswith(f"{param}=")


def test_layer_from_config():
    cfg = SparseConvConfig(kind="pw1x1", cin=4, cout=2, pi=2, po=1, residual=True)
    w = torch.ones(2, 4, 1, 1, dtype=torch.int64)
    layer = SparseConvLayer.from_config(cfg, w, [0, 0], [1, 1], id_scale=3)
    assert layer.id_scale == 3 and layer.cin == 4
    with pytest.raises(ConfigError):
        SparseConvLayer.from_config(cfg, w, [0, 0], [1, 1])
    with pytest.raises(ConfigError):
        SparseConvLayer.from_config(dataclasses.replace(cfg, cin=8, pi=2), w, [0, 0], [1, 1], id_scale=3)


# --------------------------------------------------------------------------- cost model


def test_cycles_by_hand():
    frame = SparseFrame(3, 3, [[0, 0], [0, 1], [2, 2]], [[1, 0], [2, 0], [4, 0]])
    cfg = SparseConvConfig(cin=2, cout=6, pi=1, po=2, max_height=3, max_width=3)
    # |N| = 2, 2, 1; ceil(2/1) * ceil(6/2) = 6 per neighbour
    assert sparse_cycles_estimate(frame, cfg) == 5 * 6
    assert sparse_cycles_estimate(frame, cfg, fill=7) == 37
    assert dense_cycles(3, 3, cfg) == 9 * 9 * 6
    assert cfg_useful_macs(frame, cfg) == 5 * 2 * 6
    assert utilisation(frame, cfg) == pytest.approx(60 / (2 * 30))
    assert sparse_speedup(frame, cfg) == pytest.approx(486 / 30)
    dw = SparseConvConfig(kind="dw3x3", cin=2, cout=2, pi=2, po=2, max_height=3, max_width=3)
    assert sparse_cycles_estimate(frame, dw) == 5
    s2 = SparseConvConfig(kind="conv3x3s2", cin=2, cout=6, pi=1, po=2, max_height=3, max_width=3)
    assert dense_cycles(3, 3, s2) == 4 * 9 * 6
    empty = SparseFrame(3, 3, np.zeros((0, 2), int), np.zeros((0, 2), int))
    assert sparse_cycles_estimate(empty, cfg, fill=4) == 4 and utilisation(empty, cfg, fill=0) == 0.0


@pytest.mark.parametrize("name", FRAME_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_cost_model_on_real_frames(name, kind):
    frame = FRAMES[name]
    c = frame.channels
    dw = kind in DEPTHWISE
    cfg = SparseConvConfig(kind=kind, cin=c, cout=c if dw else 8, pi=1, po=1 if dw else 2,
                           max_height=frame.height, max_width=frame.width, signed_input=False)
    n = neighbour_counts(frame, kind)
    if kind in STRIDE2:
        # Every input site is read by the output of its own 2 x 2 block (windows overlap at odd rows/columns).
        assert int(n.sum()) >= frame.n_active and int(n.min()) >= 1 and int(n.max()) <= 9
    elif kind == "pw1x1":
        assert bool((n == 1).all())
    else:
        assert int(n.min()) >= 1 and int(n.max()) <= 9
    summary = cost_summary(frame, cfg, fill=10)
    assert 0 < summary["utilisation"] <= 1
    assert summary["speedup"] > 1  # every real frame is sparse enough
    # with one MAC lane per channel pair the estimate is exactly useful MACs / MAC units
    assert sparse_cycles_estimate(frame, cfg) * cfg.mac_units == cfg_useful_macs(frame, cfg)


def test_cost_model_rejects_frames_that_do_not_fit():
    cfg = SparseConvConfig(max_height=32, max_width=32, cin=2, cout=2, pi=2, po=2)
    with pytest.raises(FrameError) as ei:
        sparse_cycles_estimate(FRAMES["nmnist_34x34"], cfg)
    assert "34 x 34" in one_line(ei)
    with pytest.raises(FrameError):
        sparse_cycles_estimate(FRAMES["roshambo17_64x64"], cfg.replace(max_height=64, max_width=64))


# --------------------------------------------------------------------------- the RTL engine's cycle model
# (golden/sparse_rtl_cycles.py; tests/test_sim_sparse_conv.py checks it against the RTL)


def sites(h, w, coords, c=16):
    return SparseFrame(h, w, coords, np.zeros((len(coords), c), int))


def dense_closed_form(cfg: SparseConvConfig, h: int, w: int) -> int:
    """docs/cycle-models.md: a fully active frame of a stride-1 3x3 kind keeps the sequencer busy from its first
    site on: the first halo + 1 input rows, the input queue, the finder's latencies, every MAC step, the eof
    step, the pipeline."""
    steps = (3 * h - 2) * (3 * w - 2) * (1 if cfg.depthwise else cfg.in_groups) * cfg.requant_groups
    return ((cfg.halo + 1) * w * cfg.in_groups + cfg.input_queue_latency + cfg.row_ready_latency
            + cfg.finder_row_cycles + cfg.site_handoff_latency + steps + cfg.mac_pipeline_depth + 1)


def test_rtl_cycle_model_by_hand():
    cfg = SparseConvConfig(max_height=4, max_width=4)  # subm3x3, Cin = Cout = 16, PI = PO = 4
    # the empty frame: its end-of-frame beat at the input queue's head and taken, seen a cycle later; the eof
    # site reaches the finder's last stage, is handed on and issued, then goes down the pipeline
    assert frame_cycles(cfg, sites(4, 4, [])) == (cfg.input_queue_latency + cfg.row_ready_latency + cfg.eof_latency
                                                  + cfg.site_handoff_latency + cfg.mac_pipeline_depth + 1) == 30
    # one site at (1, 1): its Gi beats, then the end of frame (taken in cycle Gi + 1) makes rows 0 and 1 complete
    eof = cfg.in_groups + cfg.input_queue_latency
    row1 = eof + cfg.row_ready_latency + 1  # row 0 issued (empty), row 1 issued the next cycle
    site = row1 + cfg.finder_row_cycles  # the site in the finder's last stage (written into the site queue)
    last = site + cfg.site_handoff_latency + 1 * cfg.in_groups * cfg.requant_groups - 1  # one active tap
    # the finder's stages are empty the cycle after the site is written; the eof site then reaches C1
    eof_step = max(site + 1 + cfg.eof_latency + cfg.site_handoff_latency, last + 1)
    assert frame_cycles(cfg, sites(4, 4, [[1, 1]])) == eof_step + cfg.mac_pipeline_depth + 1 == 59
    # a second frame's first beats enter the input queue at once (cycle Gi + 1), but are taken only once the
    # first frame's eof marker has reset the engine (eof step + frame_reset_latency): 56 cycles after the
    # first frame's, so it counts 56 - (Gi + 1) cycles more
    both = frames_cycles(cfg, [sites(4, 4, [[1, 1]])] * 2)
    assert eof_step + cfg.frame_reset_latency - 1 == 56
    assert both == {"frames": [59, 59 + 56 - (cfg.in_groups + 1)], "total": 59 + 56}


@pytest.mark.parametrize("prop,lone,row", [
    ("mac_pipeline_depth", 1, 1), ("input_queue_latency", 3, 3), ("row_ready_latency", 1, 1),
    ("permit_latency", 0, 0), ("finder_row_stages", 1, 1), ("finder_chunk_stages", 1, 1), ("site_queue_latency", 1, 2),
    ("sequencer_next_latency", 1, 4), ("sequencer_site_latency", 2, 4), ("eof_latency", 0, 1),
    ("frame_reset_latency", 0, 0)])
def test_rtl_cycle_model_reads_the_config(monkeypatch, prop, lone, row):
    """Each timing number of the config moves the figure as the formulas say (one cycle more of each). A slower
    input queue (2 cycles to its head) takes 2 beats in 3 cycles; in the finder-bound row of one-step
    sites a longer handoff costs every site (the site queue holds 2 sites); the site registers' latency counts
    twice for the eof step (a site of its own); ingest is not held back by the permit in these frames."""
    subm = SparseConvConfig(max_height=4, max_width=4)
    pw = SparseConvConfig(kind="pw1x1", max_height=4, max_width=4, cin=4, cout=4)  # one step a site: finder-bound
    lone_site, one_row = sites(4, 4, [[1, 1]]), sites(4, 4, [[0, 0], [0, 1], [0, 2], [0, 3]], 4)
    before = frame_cycles(subm, lone_site), frame_cycles(pw, one_row)
    more = getattr(subm, prop) + 1
    monkeypatch.setattr(SparseConvConfig, prop, property(lambda c: more))
    assert (frame_cycles(subm, lone_site) - before[0], frame_cycles(pw, one_row) - before[1]) == (lone, row)


@pytest.mark.parametrize("cfg", [SparseConvConfig(), SparseConvConfig(pi=8, po=8), SparseConvConfig(pi=2, po=8),
                                 SparseConvConfig(pi=16, po=16), SparseConvConfig(kind="dw3x3"),
                                 SparseConvConfig(kind="dw3x3", cin=4, cout=4, pi=1, po=1)],
                         ids=lambda c: f"{c.kind}-{c.pi}x{c.po}")
def test_rtl_cycle_model_dense_closed_form(cfg):
    # (from 4 x 4 on: on a 2 x 2 frame with one input group the finder's row latency leaves the sequencer idle)
    for h, w in ((4, 4), (13, 11), (180, 240)):
        assert dense_frame_cycles(cfg, h, w) == dense_closed_form(cfg, h, w)


def test_rtl_cycle_model_row_lead():
    # buffer_slots is a power of two: a stride-1 3x3 engine keeps a prefetch row even with prefetch_rows=0
    bare = SparseConvConfig(cin=8, cout=8, pi=8, po=8, prefetch_rows=0)
    assert bare.buffer_slots == 4 and dense_frame_cycles(bare, 180, 240) == dense_closed_form(bare, 180, 240)
    # a pw1x1 engine without one (one slot) takes a row only once the sequencer is done with the row before:
    # about a row of input beats is lost at every output row
    pw = SparseConvConfig(kind="pw1x1", cin=8, cout=8, pi=8, po=8)
    lost = dense_frame_cycles(pw.replace(prefetch_rows=0), 180, 240) - dense_frame_cycles(pw, 180, 240)
    assert 179 * 240 < lost < 179 * 250


def test_rtl_cycle_model_dense_real_frame_size():
    # a dense 180 x 240 frame: 6.2 million cycles, which the model walks site by site (about 0.2 s; its speed is
    # a benchmark figure, not asserted here)
    cfg = SparseConvConfig(max_height=180, max_width=240)
    assert dense_frame_cycles(cfg, 180, 240) == dense_closed_form(cfg, 180, 240) == 6_182_502


@pytest.mark.parametrize("kind", KINDS)
def test_rtl_cycle_model_work_is_the_spec_neighbours(kind):
    """The model's per-site work is the spec's |N(p)| (golden neighbour_counts) times the input-group steps."""
    frame = FRAMES["dvsgesture_128x128"]
    cfg = SparseConvConfig(kind=kind, max_height=128, max_width=128)
    plan = frame_plan(cfg, frame.height, frame.width, frame.coords)
    gs = 1 if cfg.depthwise else cfg.in_groups
    assert plan.acc_steps.tolist() == (neighbour_counts(frame, kind) * gs).tolist()
    assert len(plan.out_coords) == len(neighbour_counts(frame, kind)) and plan.discard_beats == 0


def test_rtl_cycle_model_malformed_tokens():
    """A token out of raster order (or outside the frame) ends the frame's valid prefix; the rest is discarded
    one beat a cycle."""
    cfg = SparseConvConfig(max_height=8, max_width=8)
    good = [[0, 1], [2, 3], [2, 5], [7, 0]]
    for bad, k in (([[0, 1], [2, 3], [2, 3], [7, 0]], 2), ([[0, 1], [2, 8], [2, 5], [7, 0]], 1),
                   ([[0, 1], [1, 0], [0, 5], [7, 0]], 2), ([[9, 1], [2, 3], [2, 5], [7, 0]], 0)):
        plan = frame_plan(cfg, 8, 8, np.array(bad))
        assert len(plan.token_rows) == k and plan.discard_beats == (4 - k) * cfg.in_groups
        assert plan.out_coords.tolist() == good[:k] or k == 2 and plan.out_coords.tolist() == bad[:2]
