"""Sliding CMN against a direct per-frame computation (Kaldi's own test logic),
VAD on constructed energy tracks with known answers, and the x-vector input helper."""
from __future__ import annotations

import numpy as np
import pytest

from pyxv.config import ConfigError
from pyxv.features import prepare_feats, prepare_xvector_input
from pyxv.features.cmvn import apply_sliding_cmn
from pyxv.features.vad import VadOptions, compute_vad, select_voiced


def _direct_cmn(feats, window, center, norm_vars, min_window):
    """Per-frame loop written from Kaldi's TestSlidingWindowCmn reference."""
    T, D = feats.shape
    out = np.zeros_like(feats, dtype=np.float64)
    for t in range(T):
        if center:
            b = t - window // 2
            e = b + window
            shift = -b if b < 0 else (T - e if e > T else 0)
            b += shift
            e += shift
        else:
            b = t - window
            e = t + 1
            if e < min_window:
                e = min_window
        b = max(b, 0)
        e = min(e, T)
        w = feats[b:e].astype(np.float64)
        mean = w.mean(0)
        var = np.maximum((w * w).mean(0) - mean * mean, 1e-10)
        o = feats[t] - mean
        if norm_vars:
            o = np.zeros(D) if e - b == 1 else o / np.sqrt(var)
        out[t] = o
    return out


@pytest.mark.parametrize("T", [1, 7, 150, 301, 700])
@pytest.mark.parametrize("center,norm_vars", [(True, False), (False, False), (True, True), (False, True)])
def test_sliding_cmn_matches_direct(T, center, norm_vars):
    rng = np.random.default_rng(T)
    x = (rng.standard_normal((T, 5)) * 3 + 10).astype(np.float32)
    ours = apply_sliding_cmn(x, window=300, center=center, norm_vars=norm_vars, min_window=100)
    ref = _direct_cmn(x, 300, center, norm_vars, 100)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_sliding_cmn_small_window_values():
    x = np.arange(10, dtype=np.float32)[:, None]
    # window 4 centred: frame 0 uses frames 0..3 (mean 1.5); frame 5 uses 3..6 (4.5); frame 9 uses 6..9
    out = apply_sliding_cmn(x, window=4, center=True)[:, 0]
    assert out[0] == pytest.approx(-1.5)
    assert out[5] == pytest.approx(0.5)
    assert out[9] == pytest.approx(1.5)


def _energy_feats(energies):
    f = np.zeros((len(energies), 3), dtype=np.float32)
    f[:, 0] = energies
    return f


def test_vad_silence_speech_silence():
    # 20 silent frames (log-energy 2), 30 speech frames (20), 20 silent.
    e = np.r_[np.full(20, 2.0), np.full(30, 20.0), np.full(20, 2.0)]
    opts = VadOptions(vad_energy_threshold=5.5, vad_energy_mean_scale=0.5,
                      vad_proportion_threshold=0.12, vad_frames_context=2)
    # mean = (40 + 600 + 40) / 70 = 9.714; threshold = 5.5 + 4.857 = 10.357
    v = compute_vad(_energy_feats(e), opts)
    # with +-2 context and 12% proportion, one speech frame among 5 (20%) suffices:
    # frames 18..51 are speech
    expected = np.zeros(70, dtype=np.float32)
    expected[18:52] = 1
    np.testing.assert_array_equal(v, expected)


def test_vad_no_context_and_proportion():
    e = np.array([0, 10, 0, 10, 10, 0, 0, 0], dtype=np.float32)
    opts = VadOptions(vad_energy_threshold=5.0, vad_energy_mean_scale=0.0,
                      vad_frames_context=1, vad_proportion_threshold=0.6)
    v = compute_vad(_energy_feats(e), opts)
    # windows: [0,10]=1/2 no; [0,10,0]=1/3 no; [10,0,10]=2/3 yes; [0,10,10] yes; [10,10,0] yes;
    # [10,0,0] no; [0,0,0] no; [0,0] no
    np.testing.assert_array_equal(v, [0, 0, 1, 1, 1, 0, 0, 0])
    # strictly above: a frame exactly at the threshold does not count
    v = compute_vad(_energy_feats(np.array([5.0, 5.0])), VadOptions(vad_energy_mean_scale=0.0))
    np.testing.assert_array_equal(v, [0, 0])


def test_vad_conf_reading(tmp_path):
    c = tmp_path / "vad.conf"
    c.write_text("# paper\n--vad-energy-threshold=5.5\n--vad-energy-mean-scale=0.5\n"
                 "--vad-proportion-threshold=0.12\n--vad-frames-context=2\n")
    o = VadOptions.from_conf(c)
    assert (o.vad_energy_threshold, o.vad_frames_context, o.vad_proportion_threshold) == (5.5, 2, 0.12)
    c.write_text("--vad-energy-threshold=5.5\n--vad-energy-treshold=4\n")
    with pytest.raises(ConfigError, match=r"vad.conf:2: invalid option --vad-energy-treshold"):
        VadOptions.from_conf(c)


def test_prepare_order_cmn_before_selection():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 4)).astype(np.float32) + 5
    vad = (rng.random(400) > 0.5).astype(np.float32)
    got = prepare_xvector_input(x, vad)
    want = apply_sliding_cmn(x)[vad > 0.5]
    np.testing.assert_array_equal(got, want)
    assert got.shape == (int(vad.sum()), 4)
    np.testing.assert_array_equal(prepare_feats(x, None), apply_sliding_cmn(x))
    with pytest.raises(ValueError, match="frames"):
        select_voiced(x, vad[:-1])
