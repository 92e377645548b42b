"""The softmax RTL's config, stream packing and cycle model, without a simulator."""

from __future__ import annotations

import pytest
import torch

from accelkit.config import ConfigError
from accelkit.config import float_softmax as fs
from accelkit.config.hyft import LANES, SoftmaxConfig
from accelkit.gen.hyft import build_softmax, in_layout, out_layout
from accelkit.golden.hyft_cycles import LATENCY_OVERHEAD, batch_timing, latency, sustained_rate, total_cycles
from accelkit.sim.hyft import pack_job, run_hyft, unpack_outputs


@pytest.mark.parametrize("value", ["fixed", "FLOAT", 1, None])
def test_invalid_arch_is_named_in_one_line(value):
    with pytest.raises(ConfigError) as e:
        SoftmaxConfig(arch=value)
    msg = str(e.value)
    assert msg.startswith(f"arch={value!r} is invalid: one of hyft, float") and "\n" not in msg


def test_derived_rtl_widths():
    cfg = SoftmaxConfig()
    w = cfg.implies()
    assert (w["depth"], w["banks"], w["count_bits"], w["word_bits"]) == (256, 4, 3, 21)
    assert SoftmaxConfig(lanes=16, max_len=4096).banks == 7 and SoftmaxConfig(lanes=4).banks == 4
    assert SoftmaxConfig(fmt="fp32").word_bits == 32  # the input is wider than (live, |t|)
    assert SoftmaxConfig(arch="float").word_bits == fs.working_float_bits(SoftmaxConfig(arch="float"))
    assert SoftmaxConfig.from_dict(SoftmaxConfig(arch="float").to_dict()).arch == "float"
    # payload: data in the low bits, then count, last (and error on the output)
    assert in_layout(cfg).size == 4 * 16 + 3 + 1 and out_layout(cfg).size == 4 * 16 + 3 + 2
    assert build_softmax(cfg).signature.members["x"].signature.members["payload"].shape == in_layout(cfg)
    with pytest.raises(TypeError):
        build_softmax({"lanes": 4})


@pytest.mark.parametrize("lanes", LANES)
def test_cycle_model_meets_latency_and_throughput_targets(lanes):
    cfg = SoftmaxConfig(lanes=lanes, max_len=4096)
    for n in [1, 2, 3, lanes, 255, 256, 1000, 4096]:
        assert latency(cfg, n) <= 3 * n / lanes + LATENCY_OVERHEAD
    for n in (256, 1024, 4096):
        assert sustained_rate(cfg, n) >= 0.9 * lanes
    # the same batch twice is twice the steady-state work, give or take one fill and drain
    one, two = total_cycles(cfg, [512] * 6), total_cycles(cfg, [512] * 12)
    assert two - one == pytest.approx(6 * 512 / sustained_rate(cfg, 512), rel=0.05)


def test_cycle_model_oversize_vector_is_one_output_beat():
    cfg = SoftmaxConfig(lanes=4, max_len=64)
    t = batch_timing(cfg, [10, 65, 3])
    assert [v.beats_in for v in t] == [3, 17, 1] and [v.beats_out for v in t] == [3, 1, 1]
    assert t[1].in_first == t[0].in_last + 1 and t[2].out_first > t[1].out_last
    with pytest.raises(ValueError, match="N=0"):
        batch_timing(cfg, [0])


def test_pack_job_marks_partial_beats_and_round_trips():
    cfg = SoftmaxConfig(lanes=4, max_len=16)
    vecs = [torch.randn(n).bfloat16() for n in (1, 4, 6, 17)]
    x, y, labels, spans = pack_job(cfg, vecs)
    assert len(x) == 1 + 1 + 2 + 5 and len(y) == 1 + 1 + 2 + 1 == len(labels)
    count = [(b >> 64) & 7 for b in x]
    last = [(b >> 67) & 1 for b in x]
    assert count == [1, 4, 4, 2, 4, 4, 4, 4, 1] and last == [1, 1, 0, 1, 0, 0, 0, 0, 1]
    assert (y[-1] >> 68) & 1 == 1 and (y[-1] >> 64) & 7 == 0  # the oversize vector's error beat
    outs, errs = unpack_outputs(cfg, y, spans)
    assert errs == [False, False, False, True] and [len(o) for o in outs] == [1, 4, 6, 0]


def test_run_hyft_rejects_bad_vectors_before_simulating():
    cfg = SoftmaxConfig()
    with pytest.raises(TypeError, match="dtype"):
        run_hyft(cfg, [torch.randn(4)])
    with pytest.raises(ValueError, match="empty"):
        run_hyft(cfg, [torch.zeros(0, dtype=torch.bfloat16)])
    with pytest.raises(ValueError):
        run_hyft(cfg, [])


def test_float_baseline_stages_and_banks_keep_the_rate():
    """The float baseline's pipeline (accelkit/config/float_softmax.py) and the banks that keep it at 0.9 L elements
    per cycle on back-to-back vectors of 256, as Hyft is (golden/hyft_cycles.py)."""
    for lanes in LANES:
        cfg = SoftmaxConfig(arch="float", lanes=lanes, max_len=4096)
        fb = fs.baseline(cfg)
        # adders of 5 stages: 5 interleaved partial sums, a combine tree of 3 levels, the reciprocal's 8, less one
        assert cfg.pipeline == {"b_wb": 20, "b_p": 20, "b_beat": 5 * (lanes - 1).bit_length(), "fin": 27, "c_out": 4}
        assert fb.P == 15 and fb.e_bits == 24 and cfg.word_bits == 24
        for n in (256, 1024, 4096):
            assert sustained_rate(cfg, n) >= 0.9 * lanes
        assert cfg.banks >= SoftmaxConfig(lanes=lanes).banks
    assert SoftmaxConfig(arch="float", fmt="fp32").pipeline["b_wb"] == 23  # degree-2 table
    assert SoftmaxConfig(arch="float", lanes=4).banks == 4 and SoftmaxConfig(arch="float", lanes=1).banks == 3
