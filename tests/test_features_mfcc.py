"""MFCC parity with kaldi-native-fbank (Kaldi's reference code on PyPI) on real
RAVDESS clips, the Kaldi conf reader, and dither determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pyxv.config import ConfigError
from pyxv.features.mfcc import Mfcc, MfccOptions, compute_mfcc_file, num_frames
from pyxv.io import read_audio

knf = pytest.importorskip("kaldi_native_fbank")

PAPER_8K = dict(sample_frequency=8000, frame_length=25, low_freq=20, high_freq=3700, num_ceps=23)


def knf_mfcc(x: np.ndarray, o: MfccOptions) -> np.ndarray:
    ko = knf.MfccOptions()
    fo = ko.frame_opts
    fo.samp_freq = o.sample_frequency
    fo.frame_length_ms = o.frame_length
    fo.frame_shift_ms = o.frame_shift
    fo.dither = 0.0                      # knf's default is 3e-5: set explicitly
    fo.preemph_coeff = o.preemphasis_coefficient
    fo.remove_dc_offset = o.remove_dc_offset
    fo.window_type = o.window_type
    fo.round_to_power_of_two = o.round_to_power_of_two
    fo.snip_edges = o.snip_edges
    ko.mel_opts.num_bins = o.num_mel_bins
    ko.mel_opts.low_freq = o.low_freq
    ko.mel_opts.high_freq = o.high_freq
    ko.num_ceps = o.num_ceps
    ko.use_energy = o.use_energy         # set explicitly too
    ko.raw_energy = o.raw_energy
    ko.energy_floor = o.energy_floor
    ko.cepstral_lifter = o.cepstral_lifter
    m = knf.OnlineMfcc(ko)
    m.accept_waveform(o.sample_frequency, x)
    m.input_finished()
    return np.array([m.get_frame(i) for i in range(m.num_frames_ready)], dtype=np.float32).reshape(-1, o.num_ceps)


@pytest.fixture(scope="module")
def neutral_clips(ravdess_root):
    # The neutral, normal-intensity sentence of every actor (24 clips). Loud clips
    # are tested separately below: there knf's own float32 FFT rounding exceeds 1e-3.
    files = sorted(ravdess_root.glob("Actor_*/03-01-01-01-01-01-*.flac"))
    assert len(files) == 24
    return files


@pytest.mark.parametrize("sr", [8000, 16000])
@pytest.mark.parametrize("snip_edges", [True, False])
@pytest.mark.parametrize("use_energy", [True, False])
def test_parity_with_kaldi_native_fbank(neutral_clips, sr, snip_edges, use_energy):
    extra = PAPER_8K if sr == 8000 else dict(sample_frequency=16000)
    o = MfccOptions(dither=0.0, snip_edges=snip_edges, use_energy=use_energy, **extra)
    mfcc = Mfcc(o)
    for f in neutral_clips:
        x, _ = read_audio(str(f), sample_rate=sr)
        ours, ref = mfcc(x, sample_rate=sr), knf_mfcc(x, o)
        assert ours.shape == ref.shape == (num_frames(len(x), o), o.num_ceps), f
        assert np.allclose(ours, ref, rtol=1e-4, atol=1e-3), (f, np.abs(ours - ref).max())


@pytest.mark.parametrize("change", [dict(window_type="hamming"), dict(window_type="hanning"),
                                    dict(window_type="rectangular"), dict(raw_energy=False),
                                    dict(round_to_power_of_two=False), dict(remove_dc_offset=False),
                                    dict(preemphasis_coefficient=0.0), dict(energy_floor=1e9),
                                    dict(cepstral_lifter=0.0), dict(num_mel_bins=30, num_ceps=20),
                                    dict(frame_length=20, frame_shift=8)])
def test_parity_other_options(neutral_clips, change):
    o = MfccOptions(dither=0.0, **{**PAPER_8K, **change})
    x, _ = read_audio(str(neutral_clips[3]), sample_rate=8000)
    ours, ref = Mfcc(o)(x), knf_mfcc(x, o)
    assert ours.shape == ref.shape
    assert np.allclose(ours, ref, rtol=1e-4, atol=1e-3), np.abs(ours - ref).max()


def test_loud_clip_both_within_float32_rounding(ravdess_root):
    """On a near-full-scale clip the weak low-frequency mel bins carry float32 FFT
    noise in both implementations: ours and knf each stay within 1e-2 of a
    float64 computation of the same algorithm, and within 1e-2 of each other."""
    f = ravdess_root / "Actor_06" / "03-01-05-02-01-02-06.flac"
    o = MfccOptions(dither=0.0, snip_edges=False, **PAPER_8K)
    x, _ = read_audio(str(f), sample_rate=8000)
    ours, ref = Mfcc(o)(x), knf_mfcc(x, o)
    exact = Mfcc(o, dtype=torch.float64)(x)
    assert np.abs(ours - exact).max() < 1e-2 and np.abs(ref - exact).max() < 1e-2
    assert np.allclose(ours, ref, rtol=1e-4, atol=1e-2)
    assert np.mean(np.isclose(ours, ref, rtol=1e-4, atol=1e-3)) > 0.999


def test_short_clip_frames():
    o = MfccOptions(dither=0.0, snip_edges=False, **PAPER_8K)
    x = np.random.default_rng(0).standard_normal(150).astype(np.float32) * 1000  # < one 200-sample window
    ours = Mfcc(o)(x)
    assert ours.shape == (2, 23)                     # Kaldi still makes (150 + 40) // 80 frames
    np.testing.assert_allclose(ours, knf_mfcc(x, o), rtol=1e-4, atol=1e-3)
    o.snip_edges = True
    assert Mfcc(o)(x).shape == (0, 23)


def test_batch_equals_single_and_dither_is_seeded():
    o = MfccOptions(**PAPER_8K)                       # dither 1.0 (Kaldi's default)
    m = Mfcc(o)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(n).astype(np.float32) * 500 for n in (8000, 12345, 300)]
    batch = m.compute_batch(xs, seeds=[1, 2, 3])
    for x, s, b in zip(xs, [1, 2, 3], batch):
        np.testing.assert_allclose(b, m(x, seed=s), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(m(xs[0], seed=5), m(xs[0], seed=5))
    assert not np.array_equal(m(xs[0], seed=5), m(xs[0], seed=6))
    nodither = m(xs[0], dither=0.0)
    assert 0 < np.abs(m(xs[0], seed=5) - nodither).max() < 1.0


def test_conf_reading(tmp_path, repo_root):
    c = tmp_path / "mfcc.conf"
    c.write_text("# paper\n--sample-frequency=8000\n--frame-length=25 # ms\n--low-freq=20\n"
                 "--high-freq=3700\n--num-ceps=23\n--snip-edges=false\n--allow-downsample=true\n")
    o = MfccOptions.from_conf(c)
    assert (o.sample_frequency, o.num_ceps, o.snip_edges, o.high_freq, o.dither) == (8000, 23, False, 3700, 1.0)
    c.write_text("--sample-frequency=8000\n\n--num-cepz=23\n")
    with pytest.raises(ConfigError, match=r"mfcc.conf:3: invalid option --num-cepz"):
        MfccOptions.from_conf(c)
    c.write_text("num-ceps=23\n")
    with pytest.raises(ConfigError, match=r"mfcc.conf:1: .*--x=y"):
        MfccOptions.from_conf(c)
    c.write_text("--snip-edges=maybe\n")
    with pytest.raises(ConfigError, match=r"mfcc.conf:1: bad value for --snip-edges"):
        MfccOptions.from_conf(c)
    c.write_text("--htk-compat=true\n")
    with pytest.raises(ConfigError, match="does not implement"):
        MfccOptions.from_conf(c)
    for name in ("mfcc_8k.conf", "mfcc_16k.conf"):
        o = MfccOptions.from_conf(repo_root / "conf" / name)
        assert o.num_ceps == 23 and o.frame_length == 25 and o.snip_edges is False


def test_compute_mfcc_file_resamples(ravdess_root, repo_root):
    f = str(ravdess_root / "Actor_01" / "03-01-01-01-01-01-01.flac")
    feats = compute_mfcc_file(repo_root / "conf" / "mfcc_8k.conf", f, dither=0.0)
    x, _ = read_audio(f, sample_rate=8000)
    assert feats.shape == (num_frames(len(x), MfccOptions(**PAPER_8K, snip_edges=False)), 23)


def test_compute_wav_features_matches_steps_definition(ravdess_root, repo_root):
    from pyxv.features import compute_wav_features, prepare_xvector_input
    from pyxv.features.vad import VadOptions, compute_vad
    from pyxv.features.mfcc import utt_seed

    f = str(ravdess_root / "Actor_03" / "03-01-01-01-01-01-03.flac")
    feats, vad = compute_wav_features(f, repo_root / "conf" / "mfcc_8k.conf", repo_root / "conf" / "vad.conf",
                                      seed=utt_seed(0, "u"))
    x, _ = read_audio(f, sample_rate=8000)
    np.testing.assert_array_equal(feats, Mfcc.from_conf(repo_root / "conf" / "mfcc_8k.conf")(x, seed=utt_seed(0, "u")))
    np.testing.assert_array_equal(vad, compute_vad(feats, VadOptions.from_conf(repo_root / "conf" / "vad.conf")))
    assert prepare_xvector_input(feats, vad).shape == (int(vad.sum()), 23)
