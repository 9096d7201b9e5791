"""The GE2E speaker encoder: front-end, network and import against Resemblyzer's own code.

Resemblyzer (0.1.4), librosa and webrtcvad are test-only dependencies
(utils/setup_test_env.sh installs them into .venv-test, never into the recipe's
.venv); the comparisons skip with the reason when they are missing. The RAVDESS comparisons need ../shared.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyxv.features.ge2e_mel import Ge2eMelOptions, MelSpectrogram, mel_filterbank, preprocess_waveform
from pyxv.config import ConfigError
from pyxv.nnet.config import build_encoder, validate_config
from pyxv.nnet.registry import encoder_class


def _need(mod):
    return pytest.importorskip(mod, reason=f"{mod} is a test-only dependency (utils/setup_test_env.sh installs it)")


def neutral_clips(root):
    """One neutral clip per actor (statement 1, repetition 1)."""
    out = []
    for a in range(1, 25):
        f = sorted(glob.glob(os.path.join(root, f"Actor_{a:02d}", "03-01-01-01-01-01-*")))
        assert f, f"no neutral clip for actor {a} in {root}"
        out.append(f[0])
    return out


@pytest.fixture(scope="module")
def ge2e_model(tmp_path_factory):
    _need("resemblyzer")
    from pyxv.train.import_encoder import import_ge2e
    from pyxv.train.checkpoint import load_model

    d = tmp_path_factory.mktemp("ge2e")
    path = import_ge2e(d, download=False)
    net, ck = load_model(path)
    return d, net, ck


# ------------------------------------------------------------------- front-end
def test_mel_filterbank_equals_librosa():
    librosa = _need("librosa")
    for sr, n_fft, n_mels in ((16000, 400, 40), (8000, 256, 23), (22050, 1024, 80)):
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
        np.testing.assert_allclose(mel_filterbank(sr, n_fft, n_mels), ref, rtol=1e-5, atol=1e-7)


def test_mel_spectrogram_equals_librosa_with_resemblyzers_arguments(ravdess_root):
    librosa = _need("librosa")
    import soundfile as sf

    mel = MelSpectrogram()
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(16000 * 2).astype(np.float32) * 0.1, np.zeros(1234, np.float32),
             rng.standard_normal(401).astype(np.float32)]
    waves += [sf.read(f, dtype="float32")[0] for f in neutral_clips(ravdess_root)[:4]]
    for w in waves:
        ref = librosa.feature.melspectrogram(y=w, sr=16000, n_fft=400, hop_length=160, n_mels=40).astype(np.float32).T
        ours = mel(w)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * max(1.0, float(np.abs(ref).max())))


def test_volume_normalisation_and_silence_trimming():
    opts = Ge2eMelOptions()
    rng = np.random.default_rng(1)
    tone = 0.01 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)
    silence = 1e-6 * rng.standard_normal(16000 * 2)
    x = np.concatenate([silence, tone, silence, tone, silence]).astype(np.float32) * 32768
    untrimmed = preprocess_waveform(x, 16000, Ge2eMelOptions(trim_silence=False))
    rms_db = 20 * np.log10(np.sqrt(np.mean(untrimmed.astype(np.float64) ** 2)))
    assert abs(rms_db - (-30)) < 0.01  # the quiet input raised to -30 dBFS
    wav = preprocess_waveform(x, 16000, opts)
    # the tones stay whole, the 2 s silences shrink to the kept margins (< 0.3 s each)
    assert 2.0 <= len(wav) / 16000 < 2.0 + 3 * 0.3
    loud = (0.9 * np.sin(np.arange(16000) / 3.0)).astype(np.float32) * 32768
    w2 = preprocess_waveform(loud, 16000, Ge2eMelOptions(trim_silence=False))
    np.testing.assert_allclose(w2, loud / 32768.0, rtol=1e-6)  # never lowered


def test_resampling_to_16k():
    x = (np.sin(2 * np.pi * 300 * np.arange(48000) / 48000) * 3000).astype(np.float32)
    w = preprocess_waveform(x, 48000, Ge2eMelOptions(trim_silence=False))
    assert abs(len(w) - 16000) <= 1


# -------------------------------------------------------------------- network
def test_partial_windows_equal_resemblyzers():
    _need("resemblyzer")
    from resemblyzer import VoiceEncoder

    net = build_encoder({"model": {"type": "ge2e_lstm"}}, 0)
    for n_samples in [100, 16000, 25599, 25600, 27000, 27100, 40000, 53333, 160000]:
        _, ref = VoiceEncoder.compute_partial_slices(n_samples, 1.3, 0.75)
        n_frames = 1 + n_samples // 160
        ours = net.partial_windows(n_frames)
        # Coverage is measured in samples there and in frames here: equal but at a window's edge.
        if [(s.start, s.stop) for s in ref] != ours:
            assert abs(len(ref) - len(ours)) == 1 and [(s.start, s.stop) for s in ref][:len(ours)] == ours[:len(ref)]


def test_embeddings_equal_resemblyzers_on_24_ravdess_clips(ge2e_model, ravdess_root):
    """Same preprocessed waveform into both: cosine >= 0.999 per clip."""
    _need("librosa")
    from resemblyzer import VoiceEncoder, preprocess_wav

    _, net, ck = ge2e_model
    front = type(net).frontend(ck["config"])
    enc = VoiceEncoder("cpu", verbose=False)
    cos = []
    for f in neutral_clips(ravdess_root):
        wav = preprocess_wav(f)
        ref = enc.embed_utterance(wav)
        ours = net.embed_utterances([front.mel(wav)])[0]
        cos.append(float(ref @ ours))
    assert min(cos) >= 0.999, cos


def test_whole_path_close_to_resemblyzers(ge2e_model, ravdess_root):
    """Audio file -> embedding with pyxv's own silence trimming (no webrtcvad):
    close to Resemblyzer's whole path on average (measured: mean ~0.99)."""
    _need("librosa")
    from resemblyzer import VoiceEncoder, preprocess_wav

    _, net, ck = ge2e_model
    front = type(net).frontend(ck["config"])
    enc = VoiceEncoder("cpu", verbose=False)
    files = neutral_clips(ravdess_root)
    ref = np.stack([enc.embed_utterance(preprocess_wav(f)) for f in files])
    ours = net.embed_utterances([front(f) for f in files])
    cos = (ref * ours).sum(1)
    assert cos.mean() > 0.98 and cos.min() > 0.85, cos
    # and it still tells speakers apart: each clip is nearest to its own Resemblyzer vector
    assert (np.argmax(ours @ ref.T, axis=1) == np.arange(len(files))).mean() >= 0.9


def test_batched_utterances_equal_one_at_a_time(ge2e_model):
    _, net, _ = ge2e_model
    rng = np.random.default_rng(3)
    mats = [np.abs(rng.standard_normal((T, 40))).astype(np.float32) for T in (30, 160, 161, 400, 1000)]
    batched = net.embed_utterances(mats, batch_frames=800)
    single = np.stack([net.embed_utterances([m])[0] for m in mats])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------- registry, errors
def test_registry_and_config_errors():
    assert encoder_class("ge2e_lstm").type_name == "ge2e_lstm"
    with pytest.raises(ConfigError, match="unknown encoder type 'lstm9'"):
        validate_config({"model": {"type": "lstm9"}})
    with pytest.raises(ConfigError, match="model.channels: unknown key of model type ge2e_lstm"):
        validate_config({"model": {"type": "ge2e_lstm", "channels": [1, 2]}})
    with pytest.raises(ConfigError, match="frontend.n_mels"):
        validate_config({"model": {"type": "ge2e_lstm", "input_dim": 30}})
    cfg = validate_config({"model": {"type": "ge2e_lstm"}})
    assert cfg["data"]["apply_vad"] is False and cfg["data"]["chunk_min"] == 160
    assert validate_config({})["model"]["type"] == "resnet"


def test_fine_tuning_head_and_freeze(ge2e_model):
    _, net, _ = ge2e_model
    assert net.num_classes == 0
    with pytest.raises(RuntimeError, match="no output layer"):
        net(torch.zeros(1, 160, 40))
    net2 = build_encoder({"model": {"type": "ge2e_lstm"}}, 0)
    net2.load_state_dict(net.state_dict())
    net2.replace_head(4, loss="softmax")
    assert net2(torch.zeros(2, 160, 40)).shape == (2, 4)
    assert [type(m).__name__ for m in net2.embedding_layers()] == ["LSTM", "Linear"]


def test_checkpoint_type_mismatch_and_foreign_weights(ge2e_model, tmp_path):
    from pyxv.train.import_encoder import EncoderImportError, ge2e_state_dict
    from pyxv.train import checkpoint as ckpt

    d, net, ck = ge2e_model
    with pytest.raises(ckpt.CheckpointError, match="type 'ge2e_lstm' cannot be loaded as type 'resnet'"):
        ckpt.check_arch(ck, validate_config({}), d / "final.pt")
    # a pyxv checkpoint whose weights are not the config's
    bad = dict(ck)
    bad["model"] = {k: v for k, v in ck["model"].items() if k != "linear.bias"}
    bad["model"]["extra.weight"] = torch.zeros(2)
    ckpt.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ckpt.CheckpointError, match=r"bad.pt: weights do not fit.*missing keys \['linear.bias'\]"
                                                   r".*unexpected keys \['extra.weight'\]"):
        ckpt.load_model(tmp_path / "bad.pt")
    # foreign and corrupt weight files at import
    torch.save({"model_state": {"conv.weight": torch.zeros(3)}}, tmp_path / "foreign.pt")
    with pytest.raises(EncoderImportError, match=r"foreign.pt: not GE2E encoder weights: missing keys .*lstm"
                                                 r".*unexpected keys \['conv.weight'\]"):
        ge2e_state_dict(tmp_path / "foreign.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderImportError, match="corrupt.pt: cannot read"):
        ge2e_state_dict(tmp_path / "corrupt.pt")


def test_import_step_from_a_wheel(tmp_path, repo_root):
    """local/import_encoder.sh with --wheel (a wheel built here around the weights); the download
    branch and pip's failures: tests/test_fresh_machine.py."""
    _need("resemblyzer")
    import zipfile

    from pyxv.train.import_encoder import _installed_weights

    wheel = tmp_path / "resemblyzer-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(_installed_weights(), "resemblyzer/pretrained.pt")
    env = dict(os.environ)
    r = subprocess.run(["local/import_encoder.sh", "--wheel", str(wheel), "ge2e", str(tmp_path / "exp")],
                       cwd=repo_root, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    readme = (tmp_path / "exp" / "README.txt").read_text()
    assert "Apache" in readme and "resemblyzer-0.1.4-py3-none-any.whl" in readme
