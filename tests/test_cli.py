"""``pyxv emotion|verify|embed`` on real RAVDESS clips with the tiny models of tests/cli_models.py."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cli_models import run_cli
from cli_models import setup  # noqa: F401  (the module's fixture: tiny models trained on RAVDESS clips)


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_emotion_json_posteriors(setup, capsys):
    files = [p for _, p, _, _ in setup["test"]][:3]
    for d in (setup["lr_dir"], setup["ft_dir"], setup["g_dir"]):
        rc, out, err = run_cli(["emotion", d, *files, "--json"], capsys)
        assert rc == 0, err
        res = json.loads(out)
        assert res["classes"] == ["angry", "happy", "neutral", "sad"]
        assert [r["file"] for r in res["results"]] == files
        for r in res["results"]:
            p = np.array(list(r["posteriors"].values()))
            assert p.sum() == pytest.approx(1.0, abs=1e-4) and (p >= 0).all()
            assert r["emotion"] == max(r["posteriors"], key=r["posteriors"].get)
    # The table form: a header and one row per file, numbers that parse.
    rc, out, _ = run_cli(["emotion", setup["lr_dir"].parent, *files], capsys)  # system dir -> its first fold
    lines = out.strip().splitlines()
    assert rc == 0 and lines[0].split()[:2] == ["file", "emotion"] and len(lines) == 4
    assert sum(float(x) for x in lines[1].split()[2:]) == pytest.approx(1.0, abs=1e-3)


def test_frozen_lr_posteriors_match_model(setup):
    """The CLI's posteriors equal the LR applied to the x-vectors of the same files."""
    from pyxv.inference import load_emotion_model

    m = load_emotion_model(setup["lr_dir"])
    utts = setup["train"][:4]
    _, P = m.posteriors([p for _, p, _, _ in utts], [u for u, _, _, _ in utts])
    assert np.allclose(P, m.lr.predict_proba(setup["X"][:4]), atol=1e-6)


def test_verify_self_beats_other_speaker(setup, capsys):
    a = setup["test"][0][1]                                          # actor 09
    b = next(p for _, p, s, _ in setup["test"] if s == "actor10")   # another speaker
    rc, out, err = run_cli(["verify", setup["xdir"], a, a, "--json"], capsys)
    assert rc == 0, err
    same = json.loads(out)
    assert same["same"] is True and same["backend"] == "cosine" and same["backend_source"].endswith("backend.json")
    rc2, out, _ = run_cli(["verify", setup["xdir"], a, b, "--json"], capsys)
    diff = json.loads(out)
    assert same["score"] > diff["score"]
    assert diff["threshold"] == pytest.approx(same["threshold"])
    assert rc2 == (0 if diff["same"] else 2)
    # A stored threshold can be overridden; text output names the decision.
    rc, out, _ = run_cli(["verify", setup["xdir"], a, b, "--threshold", "2"], capsys)
    assert rc == 2 and "different speakers" in out


def test_verify_fits_cosine_without_saved_backend(setup, tmp_path, capsys):
    """No stage-6 back-end: a cosine one is fitted on xvectors_pretrain/train."""
    import kaldiio

    xdir = tmp_path / "exp/xvector_x"
    shutil.copytree(setup["xdir"], xdir, ignore=shutil.ignore_patterns("checkpoints"))
    pre = xdir / "xvectors_pretrain/train"
    pre.mkdir(parents=True)
    with kaldiio.WriteHelper(f"ark,scp:{pre}/xvector.ark,{pre}/xvector.scp") as w:
        for (u, _, _, _), x in zip(setup["train"], setup["X"]):
            w(u, x.astype(np.float32))
    (pre / "utt2spk").write_text("".join(f"{u} {s}\n" for u, _, s, _ in setup["train"]))
    a = setup["test"][0][1]
    rc, out, err = run_cli(["verify", xdir, a, a, "--json"], capsys)
    assert rc == 0, err
    r = json.loads(out)
    assert "fitted now" in r["backend_source"] and np.isfinite(r["threshold"])
    rc, _, err = run_cli(["verify", xdir, a, a, "--backend", "plda"], capsys)
    assert rc == 1 and "no saved plda back-end" in err


def test_embed_any_rate_and_channels(setup, tmp_path, capsys):
    import kaldiio

    from pyxv.io import read_audio

    utt, path, _, _ = setup["test"][0]
    x, sr = read_audio(path)
    # The same clip as 44.1 kHz stereo wav (name kept so the dither seed is the same).
    from scipy.signal import resample_poly

    y = resample_poly(x / 32768.0, 441, 160)
    (tmp_path / "st").mkdir()
    stereo = tmp_path / "st" / (Path(path).stem + ".wav")
    sf.write(stereo, np.stack([y, y], axis=1), 44100, subtype="FLOAT")
    scp = tmp_path / "wav.scp"
    scp.write_text(f"{utt} {path}\nbroken {tmp_path}/missing.wav\nst {stereo}\n")
    rc, _, err = run_cli(["embed", setup["xdir"], scp, tmp_path / "out/xv.ark"], capsys)
    # The bad entry is named in one line, the others written, and the exit status says some were skipped.
    assert rc == 3 and "2 x-vectors" in err and "1 input(s) skipped" in err
    assert [ln for ln in err.splitlines() if "skipped utterance broken" in ln and "missing.wav" in ln]
    got = dict(kaldiio.load_scp(str(tmp_path / "out/xv.scp")))
    assert set(got) == {utt, "st"}
    assert np.allclose(got[utt], setup["xv"].embed_file(path, utt), atol=1e-5)
    assert _cos(got[utt], got["st"]) > 0.95
    # One file in, one x-vector out, named by the file's stem.
    rc, _, _ = run_cli(["embed", setup["xdir"], stereo, tmp_path / "one.ark"], capsys)
    one = dict(kaldiio.load_scp(str(tmp_path / "one.scp")))
    assert rc == 0 and list(one) == [Path(path).stem] and one[Path(path).stem].shape == (16,)


def test_errors_and_help(setup, tmp_path, capsys):
    rc, _, err = run_cli(["emotion", tmp_path / "nope", setup["test"][0][1]], capsys)
    assert rc == 1 and "no such model dir" in err
    bad = tmp_path / "bad.txt"
    bad.write_text("")
    rc, _, err = run_cli(["embed", setup["xdir"], bad, tmp_path / "o.ark"], capsys)
    assert rc == 1 and "neither audio nor a wav.scp" in err
    for sub in ("emotion", "verify", "embed"):
        p = subprocess.run([sys.executable, "-m", "pyxv.cli", sub, "--help"], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0 and f"usage: pyxv {sub}" in p.stdout


def test_old_pickled_models_load_only_with_trust(setup, tmp_path, capsys, caplog, monkeypatch):
    """model.pkl, backend.pkl and a checkpoint in an older pyxv's form: one line naming the file without
    --trust; with it a warning and the same outputs as the parameter files give."""
    import pickle

    import kaldiio
    import torch

    from pyxv import params
    from pyxv.backend.pipeline import Backend
    from pyxv.emotion.lr import load_lr_model

    monkeypatch.delenv(params.TRUST_ENV, raising=False)
    monkeypatch.setattr(params, "_TRUST", False)     # --trust sets it for the process; restored after the test
    files = [p for _, p, _, _ in setup["test"]][:2]
    a, b = files

    def one_line(err, path, what):
        lines = err.strip().splitlines()
        return len(lines) == 1 and f"{path}: {what} in the old pickled form, which can run code" in lines[0] \
            and "--trust" in lines[0]

    # model.pkl: the same LR pickled as stage 5 wrote it before.
    rc, want, err = run_cli(["emotion", setup["lr_dir"], *files, "--json"], capsys)
    assert rc == 0, err
    old = setup["exp"] / "emotion/ravdess/frozen_lr_pickled_clean/fold1"
    old.mkdir(parents=True)
    lr, meta = load_lr_model(setup["lr_dir"])
    with open(old / "model.pkl", "wb") as f:
        pickle.dump({**meta, "lr": lr}, f)
    rc, out, err = run_cli(["emotion", old, *files, "--json"], capsys)
    assert rc == 1 and out == "" and one_line(err, old / "model.pkl", "an emotion LR model"), err
    caplog.clear()
    rc, out, err = run_cli(["emotion", old, *files, "--json", "--trust"], capsys)
    assert rc == 0, err
    assert json.loads(out)["results"] == json.loads(want)["results"] and "old pickled form" in caplog.text
    # backend.pkl
    be_new = setup["exp"] / "sv/ravdess/xvector_tiny/cosine/backend.json"
    with open(tmp_path / "backend.pkl", "wb") as f:
        pickle.dump({"format": "pyxv-sv-backend", "version": 2, "backend": Backend.load(be_new)}, f)
    rc, want, err = run_cli(["verify", setup["xdir"], a, b, "--json", "--backend", be_new], capsys)
    assert rc in (0, 2), err
    rc, out, err = run_cli(["verify", setup["xdir"], a, b, "--json", "--backend", tmp_path / "backend.pkl"], capsys)
    assert rc == 1 and one_line(err, tmp_path / "backend.pkl", "an SV back-end"), err
    rc, out, err = run_cli(["verify", setup["xdir"], a, b, "--json", "--trust", "--backend",
                            tmp_path / "backend.pkl"], capsys)
    assert json.loads(out)["score"] == json.loads(want)["score"]
    # final.pt with numpy values in it (needs torch.load(weights_only=False)).
    xdir = tmp_path / "exp/xvector_np"
    shutil.copytree(setup["xdir"], xdir, ignore=shutil.ignore_patterns("checkpoints", "xvectors_*"))
    ck = torch.load(xdir / "final.pt", weights_only=True)
    ck["history"] = [{k: np.float64(v) if isinstance(v, float) else v for k, v in h.items()} for h in ck["history"]]
    torch.save(ck, xdir / "final.pt")
    rc, _, err = run_cli(["embed", xdir, a, tmp_path / "o1.ark"], capsys)
    assert rc == 1 and "final.pt: a checkpoint that needs torch.load(weights_only=False)" in err
    assert len(err.strip().splitlines()) == 1 and "can run code" in err and not (tmp_path / "o1.ark").exists()
    rc, _, err = run_cli(["embed", xdir, a, tmp_path / "o2.ark", "--trust"], capsys)
    assert rc == 0, err
    rc, _, err = run_cli(["embed", setup["xdir"], a, tmp_path / "o3.ark"], capsys)
    got, want = (dict(kaldiio.load_scp(str(tmp_path / f"{n}.scp"))) for n in ("o2", "o3"))
    np.testing.assert_array_equal(got[Path(a).stem], want[Path(a).stem])
