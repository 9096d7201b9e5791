"""Model files store parameters, not objects: loading one runs no code.

Back-ends and emotion LR models are written as JSON + npz and read back with
identical outputs; the old pickled files and checkpoints that need
``torch.load(weights_only=False)`` are refused without trust (a crafted file that
would run a command never runs it) and still load with trust.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from pyxv.backend import Backend
from pyxv.params import TRUST_ENV, ParamsError, UntrustedFileError, read_params, write_params

EMOS = ["angry", "happy", "neutral", "sad"]


class RunsCode:
    """Unpickling this runs a shell command that creates ``marker`` (what a hostile model file could do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(autouse=True)
def no_trust_from_outside(monkeypatch):
    """Trust only where a test gives it."""
    from pyxv import params

    monkeypatch.delenv(TRUST_ENV, raising=False)
    monkeypatch.setattr(params, "_TRUST", False)


def emotional_set(n_spk, seed, dim=16, n_utt=3):
    """Speakers (alternating gender) with a shared per-emotion offset plus noise: X (N, D), spk, gender, emo."""
    rng = np.random.default_rng(seed)
    offsets = np.random.default_rng(5).normal(size=(len(EMOS), dim))
    X, spk, gen, emo = [], [], [], []
    for s in range(n_spk):
        c = rng.normal(size=dim)
        for e, name in enumerate(EMOS):
            for _ in range(n_utt):
                X.append(c + offsets[e] + 0.7 * rng.normal(size=dim))
                spk.append(f"s{s:03d}")
                gen.append("mf"[s % 2])
                emo.append(name)
    return np.array(X), np.array(spk), np.array(gen), np.array(emo)


BACKENDS = {
    "cosine": ({}, "cosine"),
    "cosine_lda_whiten_asnorm": ({"cosine": {"lda_dim": 8, "whiten": True},
                                  "asnorm": {"enabled": True, "cohort_size": 10, "top_k": 5}}, "cosine"),
    "plda": ({"plda": {"lda_dim": 10, "n_iter": 3}}, "plda"),
    "plda_nap_emotion_asnorm_calibrated": (
        {"plda": {"lda_dim": 10, "n_iter": 3}, "nap": {"enabled": True, "dim": 2},
         "asnorm": {"enabled": True, "emotion_aware": True, "top_k": 5},
         "calibration": {"enabled": True, "by_emotion": True, "max_utts": 400}}, "plda"),
    "cosine_nap_auto_calibrated": ({"nap": {"enabled": True, "dim": "auto", "dim_candidates": [0, 2]},
                                    "calibration": {"enabled": True}}, "cosine"),
}


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_backend_parameters_round_trip_with_identical_scores(tmp_path, name):
    cfg, kind = BACKENDS[name]
    X, spk, gen, emo = emotional_set(16, seed=1)
    T, _, _, temo = emotional_set(4, seed=2)
    be = Backend.from_config(cfg, kind).fit(X, spk, emo, gen)
    path = be.save(tmp_path / "backend.json")
    assert path == tmp_path / "backend.json" and (tmp_path / "backend.npz").is_file()
    head = json.loads(path.read_text())
    assert head["type"] == "sv_backend" and head["params"]["kind"] == kind
    be2 = Backend.load(tmp_path / "backend.json")
    post = np.random.default_rng(3).dirichlet(np.ones(len(EMOS)), size=len(T))
    ea, eb = (temo, temo[::-1]) if be.needs_trial_emotions else (None, None)
    np.testing.assert_array_equal(be2.score_matrix(T, T[::-1], ea, eb), be.score_matrix(T, T[::-1], ea, eb))
    np.testing.assert_array_equal(be2.score_pairs(T, T[::-1], ea, eb), be.score_pairs(T, T[::-1], ea, eb))
    if be.needs_trial_emotions:     # posteriors instead of labels
        np.testing.assert_array_equal(be2.score_matrix(T, T, post, post), be.score_matrix(T, T, post, post))
    assert be2.threshold == be.threshold and be2.info == json.loads(json.dumps(be.info))
    assert repr(be2) == repr(be)
    # The .npz path or the stem name the same back-end.
    np.testing.assert_array_equal(Backend.load(tmp_path / "backend.npz").score_pairs(T, T[::-1], ea, eb),
                                  be.score_pairs(T, T[::-1], ea, eb))


def old_pickled_backend(be: Backend, path: Path) -> None:
    """A back-end file as pyxv wrote it before parameters: the pickled object."""
    with open(path, "wb") as f:
        pickle.dump({"format": "pyxv-sv-backend", "version": 2, "backend": be}, f)


def test_old_pickled_backend_needs_trust_and_then_scores_the_same(tmp_path, monkeypatch, caplog):
    X, spk, gen, emo = emotional_set(8, seed=4)
    be = Backend.from_config({}, "plda").fit(X, spk)
    old_pickled_backend(be, tmp_path / "backend.pkl")
    with pytest.raises(UntrustedFileError) as e:
        Backend.load(tmp_path / "backend.pkl")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path / 'backend.pkl'}: ") and "can run code" in msg
    assert "--trust" in msg and f"{TRUST_ENV}=1" in msg
    old = Backend.load(tmp_path / "backend.pkl", trust=True)
    assert "old pickled form" in caplog.text
    np.testing.assert_array_equal(old.score_pairs(X[:6], X[6:12]), be.score_pairs(X[:6], X[6:12]))
    monkeypatch.setenv(TRUST_ENV, "1")
    np.testing.assert_array_equal(Backend.load(tmp_path / "backend.pkl").score_pairs(X[:6], X[6:12]),
                                  be.score_pairs(X[:6], X[6:12]))
    # Converting: load with trust, save as parameters.
    old.save(tmp_path / "new.json")
    monkeypatch.delenv(TRUST_ENV)
    np.testing.assert_array_equal(Backend.load(tmp_path / "new.json").score_pairs(X[:6], X[6:12]),
                                  be.score_pairs(X[:6], X[6:12]))


def test_crafted_backend_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    with open(tmp_path / "backend.pkl", "wb") as f:
        pickle.dump({"format": "pyxv-sv-backend", "version": 2, "backend": RunsCode(marker)}, f)
    with pytest.raises(UntrustedFileError, match="can run code"):
        Backend.load(tmp_path / "backend.pkl")
    # Renamed to look like the new form: not JSON, refused by the JSON reader.
    (tmp_path / "evil.json").write_bytes((tmp_path / "backend.pkl").read_bytes())
    with pytest.raises(ParamsError, match="not JSON"):
        Backend.load(tmp_path / "evil.json")
    # An npz holding a pickled object array: np.load(allow_pickle=False) refuses it.
    be = Backend.from_config({}, "cosine").fit(*emotional_set(4, seed=6)[:2])
    be.save(tmp_path / "b.json")
    np.savez(tmp_path / "b.npz", **{"steps.0.mean_": np.array([RunsCode(marker)], dtype=object)})
    head = json.loads((tmp_path / "b.json").read_text())
    import hashlib

    head["arrays_sha256"] = hashlib.sha256((tmp_path / "b.npz").read_bytes()).hexdigest()
    (tmp_path / "b.json").write_text(json.dumps(head))
    with pytest.raises(ParamsError, match="cannot read its arrays"):
        Backend.load(tmp_path / "b.json")
    assert not marker.exists()


def test_damaged_parameter_files_give_one_line_naming_the_file(tmp_path):
    X, spk, *_ = emotional_set(4, seed=7)
    be = Backend.from_config({}, "cosine").fit(X, spk)
    j = be.save(tmp_path / "backend.json")
    n = tmp_path / "backend.npz"
    good_j, good_n = j.read_bytes(), n.read_bytes()

    def err():
        with pytest.raises(ParamsError) as e:
            Backend.load(j)
        assert "\n" not in str(e.value)
        return str(e.value)

    n.write_bytes(good_n[: len(good_n) // 2])                     # truncated npz
    assert err().startswith(f"{n}: does not match backend.json")
    n.unlink()
    assert err() == f"{n}: missing (the arrays of backend.json)"
    n.write_bytes(good_n)
    j.write_bytes(good_j[: len(good_j) // 2])                     # truncated JSON
    assert err().startswith(f"{j}: not a pyxv parameter file (not JSON")
    j.write_text(json.dumps({"format": "pyxv-params", "version": 1, "type": "emotion_lr", "params": {}}))
    assert err().startswith(f"{j}: holds a 'emotion_lr', not one of sv_backend")
    # Arrays that match the JSON but are not a zip archive.
    write_params(tmp_path / "x", "sv_backend", {"a": np.zeros(2)})
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    head = json.loads((tmp_path / "x.json").read_text())
    import hashlib

    head["arrays_sha256"] = hashlib.sha256(b"not a zip").hexdigest()
    (tmp_path / "x.json").write_text(json.dumps(head))
    with pytest.raises(ParamsError, match=r"x\.npz: cannot read its arrays"):
        read_params(tmp_path / "x.json")
    # A type name no reader knows.
    write_params(tmp_path / "y", "sv_backend", {**be.to_params(), "steps": [{"type": "Centre2"}]})
    with pytest.raises(ParamsError, match="unknown back-end step type 'Centre2'"):
        Backend.load(tmp_path / "y.json")


def test_parameters_hold_only_plain_values_and_numeric_arrays(tmp_path):
    write_params(tmp_path / "p", "t", {"a": np.arange(3.0), "n": [1, {"b": np.ones((2, 2), np.float32)}],
                                       "s": np.array(["x", "yy"]), "f": np.float64(0.1)})
    kind, p, _ = read_params(tmp_path / "p.json")
    assert kind == "t" and p["f"] == 0.1 and p["n"][0] == 1
    assert p["a"].dtype == np.float64 and p["n"][1]["b"].dtype == np.float32 and p["s"].tolist() == ["x", "yy"]
    with pytest.raises(TypeError, match="'o': arrays of dtype object"):
        write_params(tmp_path / "q", "t", {"o": np.array([object()])})
    with pytest.raises(TypeError, match="'x': a PosixPath is not a plain value"):
        write_params(tmp_path / "q", "t", {"x": tmp_path})
    assert not (tmp_path / "q.json").exists() and not (tmp_path / "q.npz").exists()


# ------------------------------------------------------------------ emotion LR models
@pytest.mark.parametrize("projection", ["none", "whiten", "lda"])
def test_lr_model_parameters_round_trip_with_identical_posteriors(tmp_path, projection):
    from pyxv.emotion.lr import EmotionLR, load_lr_model, save_lr_model

    X, spk, _, emo = emotional_set(10, seed=8)
    T = emotional_set(3, seed=9)[0]
    lr = EmotionLR(EMOS + ["calm"], pre={"projection": projection}, C_grid=[0.1, 1.0], cv_folds=3)
    lr.fit(X, emo, groups=spk)
    pickled = pickle.loads(pickle.dumps(lr))       # what model.pkl held
    save_lr_model(tmp_path, lr, {"type": "frozen_lr", "classes": lr.classes, "xvector_model": "exp/xvector_x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.npz"]
    back, meta = load_lr_model(tmp_path)
    assert meta == {"type": "frozen_lr", "classes": lr.classes, "xvector_model": "exp/xvector_x",
                    "selection": json.loads(json.dumps(lr.selection))}
    np.testing.assert_array_equal(back.predict_proba(T), pickled.predict_proba(T))
    np.testing.assert_array_equal(back.predict_proba(T), lr.predict_proba(T))
    assert back.predict(T) == lr.predict(T) and back.classes == lr.classes and back.C == lr.C
    assert back.predict_proba(T)[:, -1].max() == 0     # "calm" was never trained: probability 0


def test_reference_lr_round_trip(tmp_path):
    from pyxv.emotion.lr import StandardizedLR, load_lr_model, save_lr_model

    X, spk, _, emo = emotional_set(8, seed=10)
    X = X * np.linspace(1, 100, X.shape[1])            # mixed scales, as hand-crafted features have
    m = StandardizedLR(EMOS, {"C_grid": [1.0], "cv_folds": 2}).fit(X, emo, groups=spk)
    save_lr_model(tmp_path, m, {"type": "reference_lr", "system": "ref_mfccstats_lr", "classes": EMOS})
    back, meta = load_lr_model(tmp_path)
    assert isinstance(back, StandardizedLR) and meta["system"] == "ref_mfccstats_lr"
    np.testing.assert_array_equal(back.predict_proba(X[:9]), m.predict_proba(X[:9]))


def old_model_pkl(fold_dir: Path, lr, xvector_model: str) -> None:
    """model.pkl as stage 5 wrote it before parameters."""
    with open(fold_dir / "model.pkl", "wb") as f:
        pickle.dump({"type": "frozen_lr", "classes": lr.classes, "lr": lr, "xvector_model": xvector_model,
                     "selection": lr.selection}, f)


def test_old_model_pkl_needs_trust(tmp_path, caplog):
    from pyxv.emotion.lr import EmotionLR, load_lr_model

    X, spk, _, emo = emotional_set(6, seed=11)
    lr = EmotionLR(EMOS, C=1.0).fit(X, emo)
    old_model_pkl(tmp_path, lr, "exp/xvector_x")
    with pytest.raises(UntrustedFileError) as e:
        load_lr_model(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'model.pkl'}: an emotion LR model in the old pickled form, "
                                   "which can run code when loaded; refused.") and "--trust" in str(e.value)
    back, meta = load_lr_model(tmp_path, trust=True)
    assert "old pickled form" in caplog.text and meta["xvector_model"] == "exp/xvector_x"
    np.testing.assert_array_equal(back.predict_proba(X), lr.predict_proba(X))
    # The new form beside an old one is read first; writing it removes the old one.
    from pyxv.emotion.lr import save_lr_model

    save_lr_model(tmp_path, back, meta)
    assert not (tmp_path / "model.pkl").exists()
    np.testing.assert_array_equal(load_lr_model(tmp_path)[0].predict_proba(X), lr.predict_proba(X))


def test_crafted_model_pkl_is_refused_by_every_emotion_loader(tmp_path):
    from pyxv.emotion.lr import load_lr_model
    from pyxv.inference import InferenceError, load_emotion_model

    marker = tmp_path / "ran"
    fold = tmp_path / "frozen_lr_clean_clean" / "fold1"
    fold.mkdir(parents=True)
    with open(fold / "model.pkl", "wb") as f:
        pickle.dump({"type": "frozen_lr", "lr": RunsCode(marker), "xvector_model": "x"}, f)
    with pytest.raises(UntrustedFileError):
        load_lr_model(fold)
    for path in (fold, fold.parent):                   # a fold dir, or the system dir naming it
        with pytest.raises(InferenceError, match="model.pkl: an emotion LR model in the old pickled form"):
            load_emotion_model(path)
    assert not marker.exists()


def test_a_speaker_file_that_is_a_pickle_is_refused(tmp_path):
    from pyxv.speaker import SpeakerFileError, SpeakerModel

    marker = tmp_path / "ran"
    (tmp_path / "alice.json").write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(SpeakerFileError, match="not a speaker file"):
        SpeakerModel.load(tmp_path / "alice.json")
    assert not marker.exists()


# ------------------------------------------------------------------ checkpoints
def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    import torch

    from pyxv.inference import InferenceError, XVectorModel
    from pyxv.train import checkpoint as ckpt

    marker = tmp_path / "ran"
    exp = tmp_path / "exp" / "xvector_x"
    exp.mkdir(parents=True)
    torch.save({"format": ckpt.FORMAT, "model": {}, "config": RunsCode(marker)}, exp / "final.pt")
    with pytest.raises(ckpt.UntrustedCheckpointError) as e:
        ckpt.load(exp / "final.pt")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{exp / 'final.pt'}: a checkpoint that needs "
                                              "torch.load(weights_only=False) (") and "can run code" in msg
    assert "system" in msg and "--trust" in msg                 # names what it refused: os.system
    with pytest.raises(ckpt.CheckpointError, match="can run code"):
        ckpt.load_model(exp / "final.pt")
    with pytest.raises(InferenceError, match="can run code"):
        XVectorModel(exp)
    assert not marker.exists()
    # A damaged file is damage, not a trust question.
    (exp / "bad.pt").write_bytes((exp / "final.pt").read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.load(exp / "bad.pt")
    assert not isinstance(e.value, ckpt.UntrustedCheckpointError) and "cannot read checkpoint" in str(e.value)
    assert "\n" not in str(e.value)


def test_save_writes_only_what_loads_with_weights_only(tmp_path):
    import torch

    from pyxv.train import checkpoint as ckpt

    state = {"format": ckpt.FORMAT, "model": {"w": torch.arange(3.0)}, "history": [{"loss": np.float64(0.25),
             "n": np.int64(3)}], "extra": {"gemaps_mean": np.arange(2.0)}, "betas": (0.9, np.float32(0.5))}
    ckpt.save(state, tmp_path / "a.pt")
    ck = torch.load(tmp_path / "a.pt", weights_only=True)
    assert ck["history"] == [{"loss": 0.25, "n": 3}] and type(ck["history"][0]["loss"]) is float
    assert ck["extra"]["gemaps_mean"] == [0.0, 1.0] and ck["betas"] == (0.9, 0.5)
    assert torch.equal(ck["model"]["w"], torch.arange(3.0))
    with pytest.raises(ckpt.CheckpointError, match=r"b\.pt: not written: .*PosixPath"):
        ckpt.save({"format": ckpt.FORMAT, "where": tmp_path}, tmp_path / "b.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]


@pytest.fixture(scope="module")
def xv_data(tmp_path_factory):
    from xvector_synth import make_datadir

    d = tmp_path_factory.mktemp("xv") / "data"
    return d, make_datadir(d, n_spk=4, n_utt=8)


def test_training_state_loads_with_weights_only_and_old_state_resumes_only_with_trust(xv_data, tmp_path,
                                                                                        monkeypatch, caplog):
    """Every file the trainer writes loads with weights_only=True; a checkpoint in the old form (numpy
    values in it) stops a resume in one line without trust (nothing moved aside) and resumes exactly
    with PYXV_TRUST_PICKLE=1."""
    import copy

    import torch

    from pyxv.train import checkpoint as ckpt
    from pyxv.train.trainer import train_classifier
    from xvector_synth import TINY, feature_source

    d, u2s = xv_data
    c = copy.deepcopy(TINY)
    c["train"].update(epochs=3, checkpoint_interval=3)
    full = train_classifier(feature_source(d), u2s, c, tmp_path / "a", progress=False)
    files = sorted((tmp_path / "a").rglob("*.pt"))
    assert len(files) >= 4
    for p in files:
        torch.load(p, map_location="cpu", weights_only=True)

    def stop_after_1(epoch, rec):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_classifier(feature_source(d), u2s, c, tmp_path / "b", progress=False, on_epoch_end=stop_after_1)
    p = tmp_path / "b" / "checkpoints" / "epoch_1.pt"
    old = torch.load(p, weights_only=True)
    old["history"] = [{k: np.float64(v) if isinstance(v, float) else v for k, v in h.items()}
                      for h in old["history"]]
    torch.save(old, p)                                  # as an older pyxv could write it: numpy scalars inside
    before = p.read_bytes()
    with pytest.raises(ckpt.UntrustedCheckpointError, match="epoch_1.pt: a checkpoint that needs"):
        train_classifier(feature_source(d), u2s, c, tmp_path / "b", progress=False)
    assert p.read_bytes() == before and not list((tmp_path / "b").glob("stale_*"))
    monkeypatch.setenv(TRUST_ENV, "1")
    resumed = train_classifier(feature_source(d), u2s, c, tmp_path / "b", progress=False)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]


# ------------------------------------------------------------------ conversion
def test_convert_models_rewrites_old_files_only_with_trust(tmp_path, capsys):
    import torch

    from pyxv.bin.convert_models import main as convert
    from pyxv.emotion.lr import EmotionLR, load_lr_model
    from pyxv.train import checkpoint as ckpt

    X, spk, gen, emo = emotional_set(10, seed=12)
    fold = tmp_path / "emotion" / "frozen_lr_clean_clean" / "fold1"
    fold.mkdir(parents=True)
    lr = EmotionLR(EMOS, pre={"projection": "lda"}, C=1.0).fit(X, emo)
    old_model_pkl(fold, lr, "exp/xvector_x")
    sv = tmp_path / "sv" / "plda"
    (sv / "backends").mkdir(parents=True)
    be = Backend.from_config({"plda": {"lda_dim": 8, "n_iter": 2}}, "plda").fit(X, spk)
    old_pickled_backend(be, sv / "backend.pkl")
    be_emo = Backend.from_config({"asnorm": {"enabled": True, "emotion_aware": True, "top_k": 4}},
                                 "cosine").fit(X, spk, emo, gen)
    old_pickled_backend(be_emo, sv / "backends" / "fold1.pkl")
    ck = {"format": ckpt.FORMAT, "model": {"w": torch.ones(2)}, "history": [{"loss": np.float64(0.5)}]}
    torch.save(ck, tmp_path / "final.pt")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert convert([str(tmp_path)]) == 1 and "give --trust" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert convert([str(tmp_path), "--trust"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and not list(tmp_path.rglob("*.pkl"))
    np.testing.assert_array_equal(load_lr_model(fold)[0].predict_proba(X), lr.predict_proba(X))
    np.testing.assert_array_equal(Backend.load(sv / "backend.json").score_matrix(X, X), be.score_matrix(X, X))
    np.testing.assert_array_equal(Backend.load(sv / "backends" / "fold1.json").score_matrix(X, X, emo, emo),
                                  be_emo.score_matrix(X, X, emo, emo))
    assert torch.load(tmp_path / "final.pt", weights_only=True)["history"] == [{"loss": 0.5}]
    assert convert([str(tmp_path), "--trust"]) == 0 and capsys.readouterr().out == ""   # nothing left to do


def test_missing_backend_file_is_named(tmp_path):
    for name in ("backend.pkl", "backend.json", "backend"):
        with pytest.raises(ParamsError, match="no such"):
            Backend.load(tmp_path / name)


def test_convert_models_keeps_the_pickle_when_the_check_fails(tmp_path, monkeypatch, capsys):
    """A converted LR model whose posteriors differ from the pickled one's leaves the
    trusted original in place (the new files kept beside it for inspection)."""
    from pyxv.bin import convert_models
    from pyxv.emotion import lr as lr_mod
    from pyxv.emotion.lr import EmotionLR

    X, _, _, emo = emotional_set(10, seed=12)
    fold = tmp_path / "fold1"
    fold.mkdir()
    old_model_pkl(fold, EmotionLR(EMOS, C=1.0).fit(X, emo), "exp/xvector_x")
    real = lr_mod.load_lr_model

    def off_by_a_bit(model_dir, trust=None):
        model, meta = real(model_dir, trust=trust)
        if trust is None:   # the converted model.json: made to disagree
            model.predict_proba = lambda Z, f=model.predict_proba: f(Z) + 1e-9
        return model, meta

    monkeypatch.setattr(lr_mod, "load_lr_model", off_by_a_bit)
    assert convert_models.main([str(tmp_path), "--trust"]) == 1
    assert "posteriors differ; model.json kept for inspection" in capsys.readouterr().err
    assert (fold / "model.pkl").is_file() and (fold / "model.json").is_file()
