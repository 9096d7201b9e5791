"""Frozen x-vector + LR system on synthetic embeddings: selection, fold loop, bad input."""
import json
import logging

import kaldiio
import numpy as np
import pytest

from pyxv.datadir import write_datadir
from pyxv.emotion import systems
from pyxv.emotion.config import load_emotion_config
from pyxv.emotion.data import discover_protocol, training_set
from pyxv.emotion.lr import EmbeddingPreprocessor, EmotionLR
from pyxv.io import write_table

from emotion_synth import labelled_speakers

CLASSES = ["angry", "happy", "neutral", "sad"]


def separable(n_per=20, dim=16, seed=0, shift=6.0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(len(CLASSES), dim)) * shift
    X = np.concatenate([means[i] + rng.normal(size=(n_per, dim)) for i in range(len(CLASSES))])
    y = [c for c in CLASSES for _ in range(n_per)]
    spk = [f"spk{j % 5}" for j in range(len(y))]
    return X, y, spk, means


@pytest.mark.parametrize("transform", ["none", "whiten", "lda"])
def test_lr_separable_reaches_100(transform):
    X, y, spk, means = separable()
    lr = EmotionLR(CLASSES, pre={"projection": transform}).fit(X, y, groups=spk)
    assert lr.selection["method"] == "5-fold speaker CV"
    rng = np.random.default_rng(1)
    Xt = np.concatenate([m + rng.normal(size=(10, X.shape[1])) for m in means])
    yt = [c for c in CLASSES for _ in range(10)]
    assert lr.predict(Xt) == yt
    p = lr.predict_proba(Xt)
    assert p.shape == (40, 4) and np.allclose(p.sum(1), 1)


def test_preprocessor_shapes_and_lengths():
    X, y, _, _ = separable(dim=8)
    Z = EmbeddingPreprocessor(projection="whiten").fit(X).transform(X)
    assert np.allclose(np.linalg.norm(Z, axis=1), np.sqrt(8))
    assert EmbeddingPreprocessor(projection="lda").fit(X, y).transform(X).shape == (80, 3)


def test_lr_class_absent_from_training_gets_zero_posterior():
    X, y, spk, _ = separable()
    keep = [i for i, c in enumerate(y) if c != "sad"]
    lr = EmotionLR(CLASSES, C=1.0).fit(X[keep], [y[i] for i in keep])
    assert np.all(lr.predict_proba(X)[:, CLASSES.index("sad")] == 0)


# ------------------------------------------------------------- a synthetic corpus
def make_corpus(root, n_folds=3, spk_per_fold=2, utts_per_class=3, dim=12, drop_class=None, seed=0,
                with_dev=False):
    """data/<c>/{all,all_aug,fold<k>/{train,(dev),test}} and exp/xvector_{clean,aug}/xvectors_<c>/{all,all_aug}."""
    rng = np.random.default_rng(seed)
    means = {c: rng.normal(size=dim) * 4 for c in CLASSES}
    emo = root / "data" / "synth"
    spks, u2s, u2e = labelled_speakers(n_folds, spk_per_fold, utts_per_class, CLASSES)
    wav = {u: "/dev/null" for u in u2s}
    write_datadir(emo / "all", utt2spk=u2s, wav_scp=wav, utt2emo=u2e)
    aug = {f"{u}-noise": u for u in u2s}
    write_datadir(emo / "all_aug", utt2spk={a: u2s[o] for a, o in aug.items()}, wav_scp={a: "/dev/null" for a in aug},
                  utt2emo={a: u2e[o] for a, o in aug.items()}, utt2orig=aug)
    for k in range(1, n_folds + 1):
        test_spk = {s for s in spks if s.startswith(f"s{k}")}
        dev_spk = {s for s in spks if s.startswith(f"s{k % n_folds + 1}")} if with_dev else set()
        parts = {"test": test_spk, "train": set(spks) - test_spk - dev_spk}
        if with_dev:
            parts["dev"] = dev_spk
        for name, ss in parts.items():
            us = {u: s for u, s in u2s.items() if s in ss
                  and not (name == "train" and drop_class and k == 1 and u2e[u] == drop_class)}
            write_datadir(emo / f"fold{k}" / name, utt2spk=us, wav_scp={u: wav[u] for u in us},
                          utt2emo={u: u2e[u] for u in us})
    for m in ("clean", "aug"):
        for sub, table in (("all", {u: u2e[u] for u in u2s}), ("all_aug", {a: u2e[o] for a, o in aug.items()})):
            d = root / "exp" / f"xvector_{m}" / "xvectors_synth" / sub
            d.mkdir(parents=True)
            with kaldiio.WriteHelper(f"ark,scp:{d}/xvector.ark,{d}/xvector.scp") as w:
                for u in sorted(table):
                    w(u, (means[table[u]] + rng.normal(size=dim)).astype(np.float32))
    return emo


@pytest.fixture
def cfg(tmp_path):
    return load_emotion_config(None, overrides={"xvector_models": {
        "clean": str(tmp_path / "exp" / "xvector_clean"), "aug": str(tmp_path / "exp" / "xvector_aug")}})


def test_xvector_dir_naming():
    assert str(systems.xvector_dir("exp/xvector_clean", "data/demo", "all")) == "exp/xvector_clean/xvectors_demo/all"
    assert str(systems.xvector_dir("m", "/a/data/iemocap", "all_aug")) == "m/xvectors_iemocap/all_aug"


def test_fold_loop_clean_and_aug(tmp_path, cfg):
    emo = make_corpus(tmp_path)
    out = tmp_path / "exp" / "emotion" / "synth"
    splits = discover_protocol(emo)
    assert [s.name for s in splits] == ["fold1", "fold2", "fold3"]
    for data in ("clean", "clean+aug"):
        for k in range(1, 4):
            m = systems.run_fold("frozen_lr_clean", data, emo, k, out, cfg)
            assert m["weighted_f1"] == 1.0 and m["n_test"] == 24
        s = systems.summarize("frozen_lr_clean", data, emo, out)
        assert s["mean_weighted_f1"] == 1.0 and s["pooled"]["n_test"] == 72
    d = out / "frozen_lr_clean_clean_aug"
    f1 = json.loads((d / "fold1" / "metrics.json").read_text())
    assert f1["n_train"] == 2 * 48 and f1["n_train_aug"] == 48   # copies of training utts only
    assert set(f1) >= {"weighted_f1", "unweighted_accuracy", "accuracy", "labels", "confusion", "n_test", "fold"}
    lines = (d / "fold1" / "predictions.txt").read_text().split("\n")
    assert lines[0].split()[0].startswith("s1")
    summ = json.loads((d / "summary.json").read_text())
    assert summ["system"] == "frozen_lr_clean" and summ["train_data"] == "clean+aug" and summ["corpus"] == "synth"


def test_aug_copies_of_test_never_in_training(tmp_path):
    emo = make_corpus(tmp_path)
    sp = discover_protocol(emo)[0]
    tr = training_set(sp, "clean+aug", emo / "all_aug")
    assert not any(s.startswith("s1") for s in tr.spks)
    assert all(o.split("-")[0] != "s1" for o in tr.orig)


def test_dev_set_selects_C(tmp_path, cfg):
    emo = make_corpus(tmp_path, with_dev=True)
    systems.run_fold("frozen_lr_aug", "clean", emo, 1, tmp_path / "out", cfg)
    from pyxv.emotion.lr import load_lr_model
    _, meta = load_lr_model(tmp_path / "out" / "frozen_lr_aug_clean" / "fold1")
    assert meta["selection"]["method"] == "dev"


def test_missing_class_warns_and_scores_present_labels(tmp_path, cfg, caplog):
    emo = make_corpus(tmp_path, drop_class="sad")
    with caplog.at_level(logging.WARNING, logger="pyxv.emotion"):
        m = systems.run_fold("frozen_lr_clean", "clean", emo, 1, tmp_path / "out", cfg)
    assert any("fold1" in r.message and "'sad'" in r.message for r in caplog.records)
    assert m["labels"] == CLASSES                      # sad is in the test set, never predicted
    assert m["confusion"][3][3] == 0 and m["unweighted_accuracy"] == pytest.approx(0.75)


def test_unknown_test_labels_error(tmp_path, cfg):
    emo = make_corpus(tmp_path)
    t = emo / "fold2" / "test" / "utt2emo"
    lab = {l.split()[0]: l.split()[1] for l in t.read_text().splitlines()}
    lab[next(iter(lab))] = "fear"
    write_table(t, lab)
    cfg["classes"] = CLASSES
    with pytest.raises(ValueError, match=r"fold2: test labels \['fear'\] are unknown to the model"):
        systems.run_fold("frozen_lr_clean", "clean", emo, 2, tmp_path / "out", cfg)


def test_test_speaker_in_training_is_refused(tmp_path, cfg):
    emo = make_corpus(tmp_path)
    tr = emo / "fold1" / "train"
    u2s = {l.split()[0]: l.split()[1] for l in (tr / "utt2spk").read_text().splitlines()}
    u2s["s10-angry-0"] = "s10"
    u2e = {l.split()[0]: l.split()[1] for l in (tr / "utt2emo").read_text().splitlines()}
    u2e["s10-angry-0"] = "angry"
    write_datadir(tr, utt2spk=u2s, wav_scp={u: "/dev/null" for u in u2s}, utt2emo=u2e)
    with pytest.raises(AssertionError, match="fold1: test speakers .*s10.* also appear in training"):
        systems.run_fold("frozen_lr_clean", "clean", emo, 1, tmp_path / "out", cfg)
