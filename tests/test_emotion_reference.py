"""Reference systems of Table 2 (eGeMAPS functionals + LR, MFCC mean/std + LR):
the statistics, the standardised LR, the fold loop on generated features with a
known answer, and both references on real RAVDESS clips."""
import json

import kaldiio
import numpy as np
import pytest

from pyxv.corpora.ravdess import EMOTIONS as EMO  # the recipe's four RAVDESS classes
from pyxv.datadir import write_datadir
from pyxv.emotion import systems
from pyxv.emotion.config import load_emotion_config
from pyxv.emotion.data import discover_protocol, labeled_set
from pyxv.emotion.lr import StandardizedLR, load_lr_model
from pyxv.emotion.reference import mfcc_stats
from pyxv.emotion.spec import REFERENCE_SYSTEMS

from emotion_synth import labelled_speakers, write_folds, write_ravdess_folds

CLASSES = ["angry", "happy", "neutral", "sad"]


def test_mfcc_stats_over_voiced_frames():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(60, 3)) + np.arange(60)[:, None]   # voiced frames differ from the rest
    vad = np.zeros(60)
    vad[10:30] = 1
    v = mfcc_stats(feats, vad)
    assert v.shape == (6,)
    assert np.allclose(v, np.concatenate([feats[10:30].mean(0), feats[10:30].std(0)]))
    # fewer than 10 voiced frames: every frame counts
    vad[:] = 0
    vad[5:9] = 1
    assert np.allclose(mfcc_stats(feats, vad), np.concatenate([feats.mean(0), feats.std(0)]))
    with pytest.raises(ValueError, match="utt7: 60 MFCC frames but 59 VAD decisions"):
        mfcc_stats(feats, vad[:59], what="utt7")


def test_standardisation_lets_a_small_scale_feature_count():
    """The class lives in a dimension of scale 1e-3 beside a noise dimension of scale
    1e3: the regularised LR finds it only after standardisation."""
    rng = np.random.default_rng(1)
    y = [CLASSES[i % 4] for i in range(400)]
    signal = np.array([CLASSES.index(c) for c in y], float) * 1e-3 + rng.normal(scale=1e-4, size=400)
    X = np.stack([signal, rng.normal(scale=1e3, size=400), np.full(400, 5.0)], 1)   # + a constant dim
    spk = [f"s{i % 10}" for i in range(400)]
    m = StandardizedLR(CLASSES, {"C_grid": [0.01, 1.0, 100.0], "cv_folds": 3}, seed=0)
    m.fit(X[:300], y[:300], groups=spk[:300])
    assert np.allclose(m.mean_, X[:300].mean(0)) and m.scale_[2] == 1.0
    assert np.mean(np.array(m.predict(X[300:])) == np.array(y[300:])) > 0.95
    p = m.predict_proba(X[300:])
    assert p.shape == (100, 4) and np.allclose(p.sum(1), 1)
    from pyxv.emotion.lr import EmotionLR

    raw = EmotionLR(CLASSES, pre={"center": False, "length_norm": False}, C_grid=[0.01, 1.0, 100.0], cv_folds=3)
    raw.fit(X[:300], y[:300], groups=spk[:300])
    assert np.mean(np.array(raw.predict(X[300:])) == np.array(y[300:])) < 0.5


# ------------------------------------------------------- generated features, known answer
def make_corpus(root, n_folds=3, spk_per_fold=2, utts_per_class=4, seed=0):
    """data/gen/{all,all_aug,fold<k>/{train,test}} with feats.scp, vad.scp and gemaps.scp
    whose statistics depend on the class (so both references can reach ~100 %)."""
    rng = np.random.default_rng(seed)
    cls_mfcc = {c: rng.normal(size=23) * 3 for c in CLASSES}
    cls_gem = {c: rng.normal(size=88) * 3 for c in CLASSES}
    emo = root / "data" / "gen"
    spks, u2s, u2e = labelled_speakers(n_folds, spk_per_fold, utts_per_class, CLASSES)
    aug = {f"{u}-noise": u for u in u2s}

    def features(d, table):
        d.mkdir(parents=True, exist_ok=True)
        with kaldiio.WriteHelper(f"ark,scp:{d}/feats.ark,{d}/feats.scp") as wf, \
                kaldiio.WriteHelper(f"ark,scp:{d}/vad.ark,{d}/vad.scp") as wv, \
                kaldiio.WriteHelper(f"ark,scp:{d}/gemaps.ark,{d}/gemaps.scp") as wg:
            for u in sorted(table):
                c = table[u]
                T = int(rng.integers(80, 150))
                vad = (rng.random(T) > 0.3).astype(np.float32)
                # voiced frames carry the class; silence is loud noise the statistics must skip
                f = np.where(vad[:, None] > 0, cls_mfcc[c] + rng.normal(size=(T, 23)),
                             rng.normal(scale=30, size=(T, 23)))
                wf(u, f.astype(np.float32))
                wv(u, vad)
                wg(u, (cls_gem[c] + rng.normal(size=88)).astype(np.float32)[None, :])

    write_datadir(emo / "all", utt2spk=u2s, wav_scp={u: "/dev/null" for u in u2s}, utt2emo=u2e)
    write_datadir(emo / "all_aug", utt2spk={a: u2s[o] for a, o in aug.items()},
                  wav_scp={a: "/dev/null" for a in aug}, utt2emo={a: u2e[o] for a, o in aug.items()}, utt2orig=aug)
    features(emo / "all", u2e)
    features(emo / "all_aug", {a: u2e[o] for a, o in aug.items()})
    write_folds(emo, u2s, u2e, [{s for s in spks if s.startswith(f"s{k}")} for k in range(1, n_folds + 1)])
    return emo


@pytest.mark.parametrize("system", REFERENCE_SYSTEMS)
def test_reference_fold_loop_clean_and_aug(tmp_path, system):
    emo = make_corpus(tmp_path)
    out = tmp_path / "exp" / "emotion" / "gen"
    cfg = load_emotion_config(None)
    for data in ("clean", "clean+aug"):
        for k in (1, 2, 3):
            m = systems.run_fold(system, data, emo, k, out, cfg)
            assert m["n_test"] == 32 and m["weighted_f1"] > 0.95
            assert m["n_train"] == (64 if data == "clean" else 128) and m["n_train_aug"] == (m["n_train"] - 64)
        s = systems.summarize(system, data, emo, out)
        assert sorted(s["folds"]) == ["fold1", "fold2", "fold3"] and s["pooled"]["n_test"] == 96
    d = out / f"{system}_clean_aug" / "fold2"
    for f in ("predictions.txt", "posteriors", "classes.txt", "metrics.json", "model.json", "model.npz"):
        assert (d / f).is_file(), f
    model, meta = load_lr_model(d)
    assert meta["type"] == "reference_lr" and meta["system"] == system
    assert meta["selection"]["method"] == "4-fold speaker CV"  # 4 training speakers, as for frozen_lr_*
    assert model.scale_.shape == ((88,) if system == "ref_egemaps_lr" else (46,))
    post = [l.split() for l in (d / "posteriors").read_text().splitlines()]
    assert len(post) == 32 and all(abs(sum(map(float, p[1:])) - 1) < 1e-4 for p in post)
    # the step script's freshness check knows what the system reads
    ins = [str(p.relative_to(emo)) for p, _ in systems.system_inputs(system, "clean+aug", emo, cfg)]
    want = ["all/gemaps.scp", "all_aug/gemaps.scp"] if system == "ref_egemaps_lr" else \
        ["all/feats.scp", "all/vad.scp", "all_aug/feats.scp", "all_aug/vad.scp"]
    assert ins == want + ["all_aug/utt2orig"]


def test_reference_missing_features_named(tmp_path):
    emo = make_corpus(tmp_path, n_folds=2)
    (emo / "all" / "gemaps.scp").unlink()
    with pytest.raises(FileNotFoundError, match=r"all/gemaps.scp does not exist \(run stage 2, features\)"):
        systems.run_fold("ref_egemaps_lr", "clean", emo, 1, tmp_path / "out", load_emotion_config(None))


# ------------------------------------------------------------------ real RAVDESS clips
MFCC_8K = ("--sample-frequency=8000\n--frame-length=25\n--low-freq=20\n--high-freq=3700\n"
           "--num-ceps=23\n--snip-edges=false\n")


@pytest.fixture(scope="module")
def ravdess(ravdess_root, tmp_path_factory):
    """data/ravd/{all,fold1..6/{train,test}}: 4 classes, 2 clips per class and actor
    (normal intensity, statement 1), with stage 2's features: 8 kHz MFCC + energy VAD
    (feats.scp, vad.scp) and eGeMAPS functionals of the clip at its own rate (gemaps.scp)."""
    from pyxv.features.gemaps import Gemaps
    from pyxv.features.mfcc import Mfcc
    from pyxv.features.vad import VadOptions, compute_vad
    from pyxv.io import read_audio

    root = tmp_path_factory.mktemp("ref")
    (root / "mfcc.conf").write_text(MFCC_8K)
    mfcc, gem = Mfcc.from_conf(root / "mfcc.conf"), Gemaps()
    vopt = VadOptions(vad_energy_threshold=5.5, vad_energy_mean_scale=0.5, vad_frames_context=2,
                      vad_proportion_threshold=0.12)
    u2s, u2e, wav, feats, vads, gems = {}, {}, {}, {}, {}, {}
    for a in range(1, 25):
        for code, emo in EMO.items():
            for rep in ("01", "02"):
                f = ravdess_root / f"Actor_{a:02d}" / f"03-01-{code}-01-01-{rep}-{a:02d}.flac"
                utt = f"a{a:02d}-{f.stem}"
                u2s[utt], u2e[utt], wav[utt] = f"a{a:02d}", emo, str(f)
                x, _ = read_audio(str(f), sample_rate=8000)
                feats[utt] = mfcc(x, dither=0.0)
                vads[utt] = compute_vad(feats[utt], vopt)
                x, sr = read_audio(str(f))
                gems[utt] = gem.functionals(x, sr)[None, :]
    emo_dir = root / "data" / "ravd"
    write_datadir(emo_dir / "all", utt2spk=u2s, wav_scp=wav, utt2emo=u2e)
    for name, table in (("feats", feats), ("vad", vads), ("gemaps", gems)):
        with kaldiio.WriteHelper(f"ark,scp:{emo_dir}/all/{name}.ark,{emo_dir}/all/{name}.scp") as w:
            for u in sorted(table):
                w(u, table[u])
    write_ravdess_folds(emo_dir, u2s, wav, u2e)
    return root, emo_dir


@pytest.mark.parametrize("system", REFERENCE_SYSTEMS)
def test_references_on_ravdess(ravdess, system):
    root, emo = ravdess
    out = root / "exp" / "emotion" / "ravd"
    cfg = load_emotion_config(None)
    splits = discover_protocol(emo)
    for k, sp in enumerate(splits, 1):
        m = systems.run_fold(system, "clean", emo, k, out, cfg)
        d = out / f"{system}_clean" / sp.name
        preds = systems.read_predictions(d / "predictions.txt")
        assert len(preds) == 32 and m["n_test"] == 32 and m["n_train"] == 160
        # speaker independence: the fold's test actors, none of them in training
        test_spk = {u.split("-")[0] for u, _, _ in preds}
        assert test_spk == {f"a{a:02d}" for a in range(4 * k - 3, 4 * k + 1)}
        assert not test_spk & labeled_set(sp.train).speakers
        assert json.loads((d / "metrics.json").read_text())["weighted_f1"] == m["weighted_f1"]
    s = systems.summarize(system, "clean", emo, out)
    print(f"\n{system} on RAVDESS (2 clips per class and actor, 6 folds): mean weighted F1 "
          f"{100 * s['mean_weighted_f1']:.1f}, folds " + " ".join(
              f"{100 * f['weighted_f1']:.1f}" for f in s["folds"].values()))
    # 4 balanced-ish classes: chance is about 25 %; both references are far above it
    assert s["mean_weighted_f1"] > 0.40


def test_reference_refuses_a_leaking_protocol(ravdess, tmp_path):
    """A test actor in the training set is an error, not a figure."""
    import shutil

    _, emo = ravdess
    leak = tmp_path / "leak"
    shutil.copytree(emo / "all", leak / "all")
    shutil.copytree(emo / "fold1", leak / "fold1")
    u2s = dict(line.split() for line in (leak / "fold1" / "test" / "utt2spk").read_text().splitlines())
    tr = leak / "fold1" / "train"
    one = sorted(u2s)[0]
    for name in ("utt2spk", "utt2emo"):
        src = dict(line.split() for line in (leak / "all" / name).read_text().splitlines())
        rows = dict(line.split() for line in (tr / name).read_text().splitlines())
        rows[one] = src[one]
        (tr / name).write_text("".join(f"{u} {v}\n" for u, v in sorted(rows.items())))
    with pytest.raises(AssertionError, match="test speakers .*a0[1-4].* also appear in training"):
        systems.run_fold("ref_egemaps_lr", "clean", leak, 1, tmp_path / "out", load_emotion_config(None))
