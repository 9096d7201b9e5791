"""``pyxv export`` (issue 25 part 1): the torch twins of the numpy front-end
steps equal to them, and exported models (ONNX through onnxruntime in a process
without pyxv or torch, torch.export through ``torch.export.load``) against
``pyxv embed`` / ``pyxv emotion`` with dither off, on real RAVDESS clips, with
the tiny models of tests/cli_models.py and a small random GE2E encoder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_models import run_cli, setup  # noqa: F401 - the module's fixture, trained once here too

from pyxv.features.cmvn import apply_sliding_cmn, apply_sliding_cmn_torch
from pyxv.features.vad import VadOptions, compute_vad, compute_vad_torch

COS_MIN, POST_TOL = 0.9999, 1e-4


def _cos(a, b):
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def _mfcc_of_clips(ravdess_root, repo_root, n=4):
    from pyxv.features.mfcc import Mfcc
    from pyxv.io import read_audio

    mfcc = Mfcc.from_conf(repo_root / "conf/mfcc_8k.conf")
    clips = sorted((ravdess_root / "Actor_02").glob("03-01-0[1-5]-*.flac"))[:n]
    return [mfcc(read_audio(str(c), sample_rate=8000)[0], seed=3) for c in clips]


# ------------------------------------------------------------ torch twins
def test_vad_torch_equals_numpy(ravdess_root, repo_root):
    feats = _mfcc_of_clips(ravdess_root, repo_root)
    rng = np.random.default_rng(0)
    feats += [rng.normal(10, 3, size=(T, 23)).astype(np.float32) for T in (1, 2, 7, 301)]
    opts = [VadOptions.from_conf(repo_root / "conf/vad.conf"), VadOptions(),
            VadOptions(vad_energy_mean_scale=0.0, vad_frames_context=5, vad_proportion_threshold=0.5)]
    some_voiced = some_not = False
    for o in opts:
        for f in feats:
            want = compute_vad(f, o)
            got = compute_vad_torch(torch.from_numpy(f), o).numpy()
            np.testing.assert_array_equal(got, want)
            some_voiced |= bool(want.any())
            some_not |= bool((want == 0).any())
    assert some_voiced and some_not   # both decisions were compared


def test_sliding_cmn_torch_equals_numpy(ravdess_root, repo_root):
    feats = _mfcc_of_clips(ravdess_root, repo_root, 2)
    rng = np.random.default_rng(1)
    feats += [rng.normal(size=(T, 5)).astype(np.float32) * 4 + 7 for T in (1, 2, 50, 299, 300, 301, 777)]
    for f in feats:
        for window, center, norm_vars, min_window in ((300, True, False, 100), (300, False, False, 100),
                                                      (31, True, True, 100), (40, False, True, 10)):
            want = apply_sliding_cmn(f, window, center, norm_vars, min_window)
            got = apply_sliding_cmn_torch(torch.from_numpy(f), window, center, norm_vars, min_window).numpy()
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_ge2e_front_end_twins_equal_numpy(ravdess_root):
    import soundfile as sf

    from pyxv.features.ge2e_mel import (Ge2eMelOptions, normalize_volume, normalize_volume_torch, speech_mask,
                                        speech_mask_torch, trim_long_silences, trim_long_silences_torch)
    from pyxv.io import _resample

    rng = np.random.default_rng(2)
    tone = 0.01 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)
    silence = 1e-6 * rng.standard_normal(16000 * 2)
    waves = [np.concatenate([silence, tone, silence, tone, silence]).astype(np.float32),
             (0.9 * np.sin(np.arange(16000) / 3.0)).astype(np.float32),            # loud: not raised
             np.zeros(4800, np.float32), (1e-7 * rng.standard_normal(9999)).astype(np.float32)]
    for c in sorted((ravdess_root / "Actor_03").glob("03-01-0[1-5]-01-01-01-03.flac")):
        x, sr = sf.read(c, dtype="float32")
        waves.append(_resample(x, sr, 16000))
    for opts in (Ge2eMelOptions(), Ge2eMelOptions(vad_max_silence=3, vad_average_width=5),
                 Ge2eMelOptions(vad_max_silence=0)):
        for w in waves:
            t = torch.from_numpy(w)
            np.testing.assert_allclose(normalize_volume_torch(t, opts.target_dbfs).numpy(),
                                       normalize_volume(w, opts.target_dbfs), rtol=1e-6, atol=1e-9)
            np.testing.assert_array_equal(speech_mask_torch(t, opts).numpy(), speech_mask(w, opts))
            np.testing.assert_array_equal(trim_long_silences_torch(t, opts).numpy(), trim_long_silences(w, opts))
    assert not speech_mask(waves[0], Ge2eMelOptions()).all()   # the trimming was exercised


def test_kaldi_frames_equal_mfcc_framing():
    from pyxv.export import kaldi_frames
    from pyxv.features.mfcc import Mfcc, MfccOptions

    x = torch.arange(3001, dtype=torch.float32)
    for snip in (True, False):
        m = Mfcc(MfccOptions(sample_frequency=8000, snip_edges=snip))
        for n in (200, 201, 3001):
            np.testing.assert_array_equal(kaldi_frames(x[:n], m.opts).numpy(), m._frames(x[:n]).numpy())


# ------------------------------------------------------------ exports
def _clips(setup, n=4):
    """(name, path) of ``n`` clips of unseen actors, each of its own length."""
    import soundfile as sf

    out, seen = [], set()
    for u, p, _, _ in setup["test"]:
        if sf.info(p).frames not in seen and len(out) < n:
            seen.add(sf.info(p).frames)
            out.append((u, p))
    return out


def _waveform(path, sr):
    from pyxv.io import read_audio

    return (read_audio(path, sample_rate=sr)[0] / 32768.0).astype(np.float32)


def _no_dither(front):
    front.mfcc.opts.dither = 0.0


def _onnx_run(model: Path, waves: list[np.ndarray], tmp: Path) -> list[np.ndarray]:
    """Outputs of an ONNX model run by onnxruntime in a fresh process that imports
    neither pyxv nor torch (checked there)."""
    np.savez(tmp / "in.npz", *waves)
    code = ("import sys, numpy as np, onnxruntime as ort\n"
            "s = ort.InferenceSession(sys.argv[1])\n"
            "ins = np.load(sys.argv[2])\n"
            "outs = [s.run(None, {'waveform': ins[f'arr_{i}']})[0] for i in range(len(ins.files))]\n"
            "assert not any(m.split('.')[0] in ('pyxv', 'torch') for m in sys.modules), 'pyxv/torch imported'\n"
            "np.savez(sys.argv[3], *outs)\n")
    r = subprocess.run([sys.executable, "-I", "-c", code, str(model), str(tmp / "in.npz"), str(tmp / "out.npz")],
                       capture_output=True, text=True, cwd=tmp)
    assert r.returncode == 0, r.stderr
    out = np.load(tmp / "out.npz")
    return [out[f"arr_{i}"] for i in range(len(waves))]


@pytest.fixture(scope="module")
def exported(setup, tmp_path_factory):
    """Each model exported once: x-vector -> ONNX, frozen LR -> torch.export,
    fine-tuned network -> ONNX."""
    pytest.importorskip("onnxscript", reason="onnx/onnxscript not installed (utils/setup_test_env.sh adds them)")
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (utils/setup_test_env.sh adds it)")
    out = tmp_path_factory.mktemp("exported")
    paths = {"xvector": out / "xvector.onnx", "lr": out / "lr.pt2", "ft": out / "ft.onnx"}
    for key, d, fmt in (("xvector", setup["xdir"], "onnx"), ("lr", setup["lr_dir"].parent, "torch"),
                        ("ft", setup["ft_dir"], "onnx")):
        rc = subprocess.run([sys.executable, "-m", "pyxv.cli", "export", str(d), str(paths[key]), "--format", fmt],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert rc.returncode == 0, rc.stderr
        assert "written" in rc.stderr.splitlines()[-1]
    return paths


def test_xvector_onnx_matches_pyxv_embed(setup, exported, tmp_path):
    from pyxv.inference import XVectorModel

    xv = XVectorModel(setup["xdir"])
    _no_dither(xv.front)
    clips = _clips(setup)
    want = xv.embed_batch([p for _, p in clips], names=[u for u, _ in clips])
    card = json.loads(Path(str(exported["xvector"]) + ".card.json").read_text())
    sr = card["input"]["sample_rate"]
    assert sr == 8000 and card["output"]["dim"] == xv.dim
    waves = [_waveform(p, sr) for _, p in clips]
    assert len({len(w) for w in waves}) == len(waves)          # one graph, several lengths
    got = _onnx_run(exported["xvector"], waves, tmp_path)
    for g, w in zip(got, want):
        assert g.shape == (xv.dim,)
        assert _cos(g, w) >= COS_MIN
    # The card: what a user needs to run it and to know where it came from.
    import hashlib

    assert card["sha256"] == hashlib.sha256(exported["xvector"].read_bytes()).hexdigest()
    assert card["source"]["weights_sha256"] == hashlib.sha256((setup["xdir"] / "final.pt").read_bytes()).hexdigest()
    assert card["front_end"]["mfcc"]["dither"] == 0.0 and card["front_end"]["mfcc"]["num_ceps"] == 23
    assert card["front_end"]["vad"]["vad_energy_threshold"] == 5.5 and card["front_end"]["sliding_cmn_window"] == 300
    assert card["chunk_frames"] == setup["xv"].cfg["extract"]["chunk_frames"]
    assert card["config"]["model"]["embed_dim"] == xv.dim and card["pyxv"]["version"]
    assert "resample" in card["input"]["resampling"] and "not recorded" in card["licence"]


def test_xvector_long_input_is_chunked_as_pyxv_embed(setup, exported, tmp_path):
    """More voiced frames than one chunk: the graph cuts them into chunks and
    averages, as pyxv embed does (the tiny model's chunks are 1000 frames)."""
    import soundfile as sf

    from pyxv.inference import XVectorModel

    xv = XVectorModel(setup["xdir"])
    _no_dither(xv.front)
    chunk = xv.cfg["extract"]["chunk_frames"]
    long_wav = tmp_path / "long.wav"
    sf.write(long_wav, np.concatenate([_waveform(p, 8000) for _, p, _, _ in setup["test"]]), 8000, subtype="FLOAT")
    frames = len(xv.features(str(long_wav), "long"))
    assert frames > chunk                                  # two chunks or more
    want = xv.embed_batch([str(long_wav)], names=["long"])[0]
    got = _onnx_run(exported["xvector"], [sf.read(long_wav, dtype="float32")[0]], tmp_path)[0]
    assert _cos(got, want) >= COS_MIN
    # Not the same as one chunk: the check above could not pass by ignoring the chunking.
    whole = XVectorModel(setup["xdir"])
    _no_dither(whole.front)
    whole.cfg["extract"]["chunk_frames"] = 10 * chunk
    assert _cos(got, whole.embed_batch([str(long_wav)], names=["long"])[0]) < COS_MIN


def test_frozen_lr_torch_export_matches_pyxv_emotion(setup, exported):
    from pyxv.inference import load_emotion_model

    m = load_emotion_model(setup["lr_dir"].parent)
    _no_dither(m.xvector.front)
    clips = _clips(setup)
    _, want = m.posteriors([p for _, p in clips], [u for u, _ in clips])
    card = json.loads(Path(str(exported["lr"]) + ".card.json").read_text())
    assert card["output"]["classes"] == m.classes and card["format"].startswith("torch.export")
    prog = torch.export.load(str(exported["lr"])).module()
    with torch.no_grad():
        got = np.stack([prog(torch.from_numpy(_waveform(p, 8000))).numpy() for _, p in clips])
    np.testing.assert_allclose(got, want, atol=POST_TOL)
    assert np.ptp(want, axis=0).max() > 1e-3           # posteriors that differ between clips were compared


def test_finetuned_onnx_matches_pyxv_emotion(setup, exported, tmp_path):
    from pyxv.inference import load_emotion_model

    m = load_emotion_model(setup["ft_dir"])
    _no_dither(m.front)
    clips = _clips(setup)
    _, want = m.posteriors([p for _, p in clips], [u for u, _ in clips])
    got = np.stack(_onnx_run(exported["ft"], [_waveform(p, 8000) for _, p in clips], tmp_path))
    np.testing.assert_allclose(got, want, atol=POST_TOL)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def ge2e_dir(tmp_path_factory):
    """A small random GE2E encoder saved as an imported one (licence recorded)."""
    from pyxv.nnet.config import build_encoder, validate_config
    from pyxv.train import checkpoint as ckpt

    torch.manual_seed(0)
    cfg = validate_config({"model": {"type": "ge2e_lstm", "hidden": 16, "layers": 2, "embed_dim": 16}})
    d = tmp_path_factory.mktemp("ge2e")
    ckpt.save(ckpt.model_file(build_encoder(cfg, 0), cfg, [], {"license": "Apache-2.0", "source": "a test"}),
              d / "final.pt")
    return d


def test_ge2e_onnx_matches_pyxv_embed(setup, ge2e_dir, tmp_path, capsys):
    pytest.importorskip("onnxscript", reason="onnx/onnxscript not installed (utils/setup_test_env.sh adds them)")
    from pyxv.inference import XVectorModel

    out = tmp_path / "ge2e.onnx"
    rc, _, err = run_cli(["export", ge2e_dir, out], capsys)
    assert rc == 0, err
    card = json.loads(Path(str(out) + ".card.json").read_text())
    assert card["input"]["sample_rate"] == 16000 and card["licence"].startswith("Apache-2.0")
    xv = XVectorModel(ge2e_dir)
    clips = _clips(setup, 3)
    want = xv.embed_batch([p for _, p in clips], names=[u for u, _ in clips])
    # Under one partial window, several, and with silence to trim at both ends.
    waves = [_waveform(p, 16000) for _, p in clips]
    waves.append(np.concatenate([np.zeros(16000, np.float32), waves[0], waves[1], np.zeros(8000, np.float32)]))
    want = np.vstack([want, xv.embed_batch([(waves[-1], 16000)])])
    got = _onnx_run(out, [waves[0][:12000]] + waves, tmp_path)
    np.testing.assert_allclose(got[0], xv.embed_batch([(waves[0][:12000], 16000)])[0], atol=1e-5)
    for g, w in zip(got[1:], want):
        assert _cos(g, w) >= COS_MIN


# ------------------------------------------------------------ bad input
def test_bad_input_one_line_each(setup, tmp_path, capsys):
    empty = tmp_path / "nothing"
    empty.mkdir()
    cases = [
        (["export", empty, tmp_path / "a.pt2", "--format", "torch"], "neither an x-vector model dir"),
        (["export", setup["xdir"], tmp_path / "a.tflite", "--format", "tflite"], "--format tflite: unknown"),
        (["export", setup["xdir"], tmp_path / "no/such/dir/a.pt2", "--format", "torch"], "does not exist"),
        (["export", setup["xdir"], tmp_path, "--format", "torch"], "is a directory"),
        (["export", setup["g_dir"], tmp_path / "g.pt2", "--format", "torch"], "GeMAPS system"),
    ]
    for args, what in cases:
        rc, out, err = run_cli(args, capsys)
        assert rc == 1 and what in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nothing"]   # nothing written


def test_failed_export_leaves_nothing(setup, tmp_path, monkeypatch):
    """Whole or nothing: the exporter failing half-way leaves no file, old outputs stay."""
    from pyxv import export

    def broken(mod, fmt, sr, tmp):
        Path(tmp).write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    out = tmp_path / "x.pt2"
    out.write_bytes(b"previous")
    monkeypatch.setattr(export, "_write", broken)
    with pytest.raises(export.ExportError, match="cannot write: No space left on device"):
        export.export_model(setup["xdir"], out, "torch")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt2"] and out.read_bytes() == b"previous"


def test_missing_onnx_package_in_the_recipe_env(setup, tmp_path, repo_root):
    """The recipe's .venv has no onnx (an extra): --format onnx says which package and how to install it."""
    r = subprocess.run(["bash", "-c", '. ./path.sh && exec python -m pyxv.cli export "$@"', "-",
                        str(setup["xdir"]), str(tmp_path / "x.onnx"), "--format", "onnx"],
                       cwd=repo_root, capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs the package 'onnx'" in lines[0] and "pip install 'pyxv[export]'" in lines[0]
    assert not list(tmp_path.iterdir())


def test_finetuned_ge2e_system_torch_export_matches_pyxv_emotion(setup, tmp_path):
    """A system dir of a GE2E network with an emotion output layer (its mel front-end in the graph)."""
    from pyxv.export import export_model
    from pyxv.inference import load_emotion_model
    from pyxv.nnet.config import build_encoder, validate_config
    from pyxv.train import checkpoint as ckpt

    torch.manual_seed(1)
    cfg = validate_config({"model": {"type": "ge2e_lstm", "hidden": 8, "layers": 1, "embed_dim": 8,
                                     "loss": "softmax"}})
    classes = ["angry", "happy", "neutral", "sad"]
    fold = tmp_path / "finetune_ge2e_clean" / "fold1"
    ckpt.save(ckpt.model_file(build_encoder(cfg, 4), cfg, classes,
                              {"emotion_system": "finetune_ge2e", "features": "ge2e_mel", "classes": classes}),
              fold / "final.pt")
    out = tmp_path / "emo.pt2"
    card = export_model(fold.parent, out, "torch")
    assert card["output"]["classes"] == classes and card["source"]["model_used"] == str(fold)
    clips = _clips(setup, 3)
    _, want = load_emotion_model(fold.parent).posteriors([p for _, p in clips], [u for u, _ in clips])
    prog = torch.export.load(str(out)).module()
    with torch.no_grad():
        got = np.stack([prog(torch.from_numpy(_waveform(p, 16000))).numpy() for _, p in clips])
    np.testing.assert_allclose(got, want, atol=POST_TOL)
