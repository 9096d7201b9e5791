"""Emotion-compensating SV back-ends: NAP, emotion-aware AS-norm, calibration, the fold protocol."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from pyxv.backend import Backend
from pyxv.backend.calibration import LinearCalibration
from pyxv.backend.nap import EmotionNAP
from pyxv.backend.nap import select_nap_dim
from pyxv.metrics.sv import act_dcf, cllr, eer, min_cllr
from pyxv.sv.scoring import eer_by_emotion

from sv_synth import EMOS, emotional_set


def cosine_summary(X, spk, gen, emo):
    from pyxv.metrics.sv import eer_sorted

    r = eer_by_emotion(X, spk, gen, emo)
    t = r["table"]
    return (r["same_emotion_mean_eer"], r["cross_emotion_mean_eer"],
            100 * eer_sorted(*t.pooled("same")), 100 * eer_sorted(*t.pooled("cross")))


# ------------------------------------------------------------------ projection
def test_nap_removes_emotion_offset_cross_drops_to_same_level():
    Xtr, str_, _, etr, basis = emotional_set(40, seed=1)
    Xte, ste, gte, ete, _ = emotional_set(20, seed=2)
    same0, cross0, _, _ = cosine_summary(Xte, ste, gte, ete)
    assert cross0 > same0 + 10, (same0, cross0)        # the emotion penalty is there
    nap = EmotionNAP(3).fit(Xtr, str_, etr)
    # The learned directions are the emotion subspace (principal angles ~ 0).
    overlap = np.linalg.svd(basis.T @ nap.U_, compute_uv=False)
    assert overlap.min() > 0.99, overlap
    same1, cross1, _, _ = cosine_summary(nap.transform(Xte), ste, gte, ete)
    assert cross1 < cross0 / 2, (cross0, cross1)
    assert cross1 <= same1 + 1.0, (same1, cross1)        # cross-emotion at the same-emotion level


def test_nap_dim_chosen_on_held_out_speakers():
    X, spk, gen, emo, _ = emotional_set(24, seed=3)
    k, table = select_nap_dim(X - X.mean(0), spk, emo, gen, candidates=(0, 1, 3, 8))
    assert k == 3 or (k == 8 and table[8]["cross"] <= table[3]["cross"])
    assert table[3]["cross"] < table[0]["cross"] / 2 and table[1]["cross"] > table[3]["cross"]


def test_backend_nap_through_config_and_save(tmp_path):
    Xtr, str_, gtr, etr, _ = emotional_set(30, seed=4)
    Xte, ste, gte, ete, _ = emotional_set(12, seed=5)
    be = Backend.from_config({"nap": {"enabled": True, "dim": "auto", "dim_candidates": [0, 3, 6]}}, "cosine")
    be.fit(Xtr, str_, etr, gtr)
    assert be.info["nap_dim"] in (3, 6)
    be.save(tmp_path / "b.json")
    be2 = Backend.load(tmp_path / "b.json")
    np.testing.assert_array_equal(be2.score_pairs(Xte[:5], Xte[5:10]), be.score_pairs(Xte[:5], Xte[5:10]))
    P = be.prepare(Xte)
    r = eer_by_emotion(P, ste, gte, ete, score_block=be.score_block)
    plain_cross = cosine_summary(Xte, ste, gte, ete)[1]
    assert r["cross_emotion_mean_eer"] < plain_cross / 2, (r["cross_emotion_mean_eer"], plain_cross)


# ------------------------------------------------------------- emotion S-norm
def test_emotion_asnorm_equals_direct_computation():
    Xtr, str_, gtr, etr, _ = emotional_set(10, seed=6, n_utt=3)
    Xte, ste, gte, ete, _ = emotional_set(3, seed=7, n_utt=2)
    k = 5
    be = Backend.from_config({"cosine": {"center": False}, "asnorm": {"enabled": True, "emotion_aware": True,
                                                                      "top_k": k}}, "cosine").fit(Xtr, str_, etr)
    unit = (lambda A: A / np.linalg.norm(A, axis=1, keepdims=True))
    Zt, Ze = unit(Xtr), unit(Xte)

    def stats_(z, emotion):
        s = np.sort(Zt[etr == emotion] @ z)[::-1][:k]
        return s.mean(), s.std()

    def direct(i, j, post_i=None, post_j=None):
        s = Ze[i] @ Ze[j]
        if post_i is None:
            mi, si = stats_(Ze[i], ete[j])     # enrolment side against the test side's emotion
            mj, sj = stats_(Ze[j], ete[i])
        else:
            mi = sum(post_j[e] * stats_(Ze[i], name)[0] for e, name in enumerate(be.emotions))
            si = sum(post_j[e] * stats_(Ze[i], name)[1] for e, name in enumerate(be.emotions))
            mj = sum(post_i[e] * stats_(Ze[j], name)[0] for e, name in enumerate(be.emotions))
            sj = sum(post_i[e] * stats_(Ze[j], name)[1] for e, name in enumerate(be.emotions))
        return 0.5 * ((s - mi) / si + (s - mj) / sj)

    P = be.prepare(Xte, ete)
    S = be.score_block(P, P)
    n = len(Xte)
    D = np.array([[direct(i, j) for j in range(n)] for i in range(n)])
    np.testing.assert_allclose(S, D, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(be.score_prepared_pairs(P[np.arange(n)], P[::-1].take(np.arange(n))),
                               D[np.arange(n), np.arange(n)[::-1]], rtol=1e-4, atol=1e-4)
    # Posteriors instead of labels: the statistics are the posterior-weighted mixtures.
    post = np.random.default_rng(0).dirichlet(np.ones(4), size=n)
    Pp = be.prepare(Xte, post)
    Sp = be.score_block(Pp, Pp)
    Dp = np.array([[direct(i, j, post[i], post[j]) for j in range(n)] for i in range(n)])
    np.testing.assert_allclose(Sp, Dp, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- calibration
def analytic_cllr(mu, sigma):
    """Cllr of the true LLR of tar ~ N(mu, s^2) vs non ~ N(-mu, s^2): llr = 2 mu x / s^2."""
    def cost(x):
        return np.logaddexp(0.0, -2 * mu * x / sigma ** 2) / math.log(2) * stats.norm.pdf(x, mu, sigma)
    return integrate.quad(cost, mu - 12 * sigma, mu + 12 * sigma)[0]  # symmetric: the nontarget half is equal


def test_calibration_of_gaussian_scores_reaches_analytic_cllr():
    rng = np.random.default_rng(0)
    mu, sigma = 1.5, 1.0
    t, n = rng.normal(mu, sigma, 20000), rng.normal(-mu, sigma, 20000)
    ref = analytic_cllr(mu, sigma)
    assert 0.05 < ref < 0.3                                  # well separated, not perfect
    raw_t, raw_n = 0.2 * t + 3.0, 0.2 * n + 3.0              # an uncalibrated scorer
    assert cllr(raw_t, raw_n) > 1.0
    cal = LinearCalibration().fit(np.r_[raw_t, raw_n], np.r_[np.ones(t.size, bool), np.zeros(n.size, bool)])
    assert cal.a_ == pytest.approx(2 * mu / sigma ** 2 / 0.2, rel=0.03)
    # Calibrated on these scores, evaluated on fresh ones from the same distributions.
    t2, n2 = rng.normal(mu, sigma, 20000), rng.normal(-mu, sigma, 20000)
    got = cllr(cal.apply(0.2 * t2 + 3.0), cal.apply(0.2 * n2 + 3.0))
    assert got == pytest.approx(ref, abs=0.01)
    assert min_cllr(t2, n2) == pytest.approx(ref, abs=0.015) and min_cllr(t2, n2) <= got + 1e-9
    # Actual DCF at the Bayes threshold of calibrated LLRs is close to the minimum.
    from pyxv.metrics.sv import min_dcf
    assert act_dcf(cal.apply(0.2 * t2 + 3), cal.apply(0.2 * n2 + 3), 0.01) < min_dcf(t2, n2, 0.01) + 0.05


def test_min_cllr_equals_pav_reference():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(5)
    for _ in range(3):
        t, n = rng.normal(1.5, 1, 400).round(1), rng.normal(0, 1.3, 2500).round(1)
        s = np.r_[t, n]
        y = np.r_[np.ones(t.size), np.zeros(n.size)]
        u, inv = np.unique(s, return_inverse=True)       # ties pooled, as PAV on the ROC does
        w = np.bincount(inv)
        p = IsotonicRegression(y_min=0, y_max=1).fit(u, np.bincount(inv, y) / w, sample_weight=w).predict(u)[inv]
        with np.errstate(divide="ignore"):
            llr = np.log(p) - np.log1p(-p) - math.log(t.size / n.size)
        ref = 0.5 * (np.logaddexp(0, -llr[:t.size]).mean() + np.logaddexp(0, llr[t.size:]).mean()) / math.log(2)
        assert min_cllr(t, n) == pytest.approx(ref, abs=1e-9)


def test_emotion_pair_calibration_aligns_cells():
    rng = np.random.default_rng(1)
    ea = rng.integers(0, 2, 20000)
    eb = rng.integers(0, 2, 20000)
    y = rng.random(20000) < 0.5
    shift = np.where(ea != eb, -2.0, 0.0)                     # cross-emotion trials score lower
    s = np.where(y, 1.0, -1.0) + rng.normal(size=y.size) + shift
    glob = LinearCalibration().fit(s, y)
    pair = LinearCalibration(by_emotion=True).fit(s, y, ea, eb, n_emotions=2)
    oh = np.eye(2)
    l_pair = pair.apply(s, oh[ea], oh[eb])
    assert eer(l_pair[y], l_pair[~y]) < eer(s[y], s[~y]) - 0.05
    assert cllr(l_pair[y], l_pair[~y]) < cllr(glob.apply(s)[y], glob.apply(s)[~y]) - 0.1


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize("cfg", [{"nap": {"enabled": True}},
                                 {"asnorm": {"enabled": True, "emotion_aware": True}},
                                 {"calibration": {"enabled": True, "by_emotion": True}}])
def test_methods_needing_emotions_say_what_is_missing(cfg):
    X, spk, gen, emo, _ = emotional_set(6, seed=8, n_utt=2)
    with pytest.raises(ValueError, match="needs the emotion label"):
        Backend.from_config(cfg, "cosine").fit(X, spk, None)
    with pytest.raises(ValueError, match="at least 2 emotions; it has only angry"):
        Backend.from_config(cfg, "cosine").fit(X, spk, np.full(spk.size, "angry"))
    one = emo.copy()
    one[(emo == "sad") & (spk != spk[0])] = "happy"             # sad: spoken by a single speaker
    with pytest.raises(ValueError, match=r"sad \(s8_000\) has only one"):
        Backend.from_config(cfg, "cosine").fit(X, spk, one)


def test_trials_without_emotion_are_an_error():
    X, spk, gen, emo, _ = emotional_set(8, seed=9, n_utt=2)
    be = Backend.from_config({"asnorm": {"enabled": True, "emotion_aware": True}}, "cosine").fit(X, spk, emo)
    with pytest.raises(ValueError, match="no emotion labels and no emotion posteriors"):
        be.prepare(X[:3])
    with pytest.raises(ValueError, match=r"emotion\(s\) \['calm'\] were not in the back-end training data"):
        be.prepare(X[:2], ["calm", "sad"])
    with pytest.raises(ValueError, match=r"1 of the trial utterances have no emotion label \(rows 1\)"):
        be.prepare(X[:2], ["sad", ""])
    with pytest.raises(ValueError, match="3 columns"):
        be.prepare(X[:2], np.full((2, 3), 1 / 3))


def test_posteriors_missing_for_a_trial_utterance_named(tmp_path):
    from pyxv.sv.posteriors import posterior_matrix, read_posteriors

    d = tmp_path / "fold1"
    d.mkdir()
    (d / "classes.txt").write_text("angry\nhappy\nneutral\nsad\n")
    (d / "posteriors").write_text("u1 0.1 0.2 0.3 0.4\nu2 0.7 0.1 0.1 0.1\n")
    classes, post = read_posteriors(d)
    P = posterior_matrix(["u2", "u1"], classes, post, EMOS, str(d))
    np.testing.assert_allclose(P[1], [0.1, 0.2, 0.4, 0.3])       # columns matched by name (EMOS order)
    with pytest.raises(ValueError, match="1 trial utterance.*no emotion posteriors, e.g. u3"):
        posterior_matrix(["u1", "u3"], classes, post, EMOS, str(d))
    (d / "posteriors").write_text("u1 0.1 0.2 0.3\n")
    with pytest.raises(ValueError, match="posteriors:1: expected the utterance and 4 probabilities"):
        read_posteriors(d)


# ------------------------------------------------------- the fold protocol (real ids)
def test_fold_protocol_never_trains_on_a_test_speaker(ravdess_root, tmp_path, monkeypatch):
    from pyxv.corpora.ravdess import prepare_ravdess
    from pyxv.emotion.data import discover_protocol
    from pyxv.io import read_table
    from pyxv.sv.folds import ProtocolLeak, score_folds

    prepare_ravdess(ravdess_root, tmp_path / "ravdess", nj=2)
    data = tmp_path / "ravdess"
    labels = {k: read_table(data / "all" / k) for k in ("utt2spk", "utt2emo", "spk2gender")}
    utts = sorted(labels["utt2spk"])
    assert len(utts) == 672 and len(set(labels["utt2spk"].values())) == 24
    rng = np.random.default_rng(0)
    spk_vec = {s: rng.normal(size=16) for s in sorted(set(labels["utt2spk"].values()))}
    X = np.stack([spk_vec[labels["utt2spk"][u]] + rng.normal(size=16) for u in utts])
    splits = discover_protocol(data)
    assert [s.name for s in splits] == [f"fold{k}" for k in range(1, 7)]
    seen = []  # every array of speakers any piece was fitted on, with the fold being scored
    real_fit = Backend.fit

    def spy(self, X, spk, *a, **kw):
        seen.append(set(np.asarray(spk).tolist()))
        return real_fit(self, X, spk, *a, **kw)
    monkeypatch.setattr(Backend, "fit", spy)
    cfg = {"nap": {"enabled": True, "dim": 2}, "asnorm": {"enabled": True, "emotion_aware": True, "top_k": 20},
           "calibration": {"enabled": True, "by_emotion": True}}
    tested = set()
    for sp in splits:
        n0 = len(seen)
        table, infos = score_folds(X, utts, [sp], lambda: Backend.from_config(cfg, "cosine"), labels)
        test_spk = set(read_table(sp.test / "utt2spk").values())
        assert len(test_spk) == 4 and not test_spk & tested
        tested |= test_spk
        assert len(seen) - n0 >= 5          # the fold's back-end and its held-out calibration back-ends
        for s in seen[n0:]:
            assert not s & test_spk, (sp.name, s & test_spk)
        assert infos[0]["n_test_spk"] == 4 and table.info["n_trials"] == 2 * (56 * 55 // 2)
    assert len(tested) == 24
    # A protocol whose training list names a test speaker is refused.
    sp = splits[0]
    leak = sorted(read_table(sp.test / "utt2spk").items())[0]
    with open(sp.train / "utt2spk", "a") as f:
        f.write(f"{leak[0]} {leak[1]}\n")
    with pytest.raises(ProtocolLeak, match="reached the back-end training data"):
        score_folds(X, utts, [sp], lambda: Backend.from_config({}, "cosine"), labels)


# ------------------------------------------------ one pre-processing vocabulary
def test_emotion_lr_and_sv_share_one_preprocessing_chain():
    from pyxv.backend import preprocess
    from pyxv.emotion import lr

    assert lr.EmbeddingPreprocessor is preprocess.EmbeddingPreprocessor
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8)) * np.arange(1, 9) + 3
    y = rng.integers(0, 3, 60)
    pre = preprocess.EmbeddingPreprocessor(projection="whiten", eps=1e-10).fit(X, y)
    assert [type(s).__name__ for s in pre.steps_] == ["Center", "Whiten", "LengthNorm"]
    # The same steps as the SV back-end's cosine chain with whitening: identical vectors.
    be = Backend("cosine", center=True, whiten=True, length_norm=True).fit(X, y)
    np.testing.assert_allclose(pre.transform(X), be.transform(X), atol=1e-10)
    Z = preprocess.EmbeddingPreprocessor(projection="lda").fit(X, y).transform(X)
    assert Z.shape == (60, 2) and np.allclose(np.linalg.norm(Z, axis=1), np.sqrt(2))


# ------------------------------------------------------ steps/score_sv.sh --folds
def test_score_sv_folds_cli_on_real_ravdess_ids(ravdess_root, tmp_path, repo_root):
    """The per-fold mode end to end: RAVDESS protocol dirs, emotional x-vectors, stage-5-style posteriors."""
    import json
    import subprocess

    import kaldiio

    from pyxv.corpora.ravdess import prepare_ravdess
    from pyxv.io import read_table

    prepare_ravdess(ravdess_root, tmp_path / "data/ravdess", nj=2)
    all_ = tmp_path / "data/ravdess/all"
    u2s, u2e = read_table(all_ / "utt2spk"), read_table(all_ / "utt2emo")
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(24, 3)))[0]
    spk_vec = {s: rng.normal(size=24) for s in sorted(set(u2s.values()))}   # sorted: str hashes vary per run
    off = {(s, e): basis @ rng.normal(size=3) * 2.5 for s in spk_vec for e in EMOS}
    vecs = {u: (spk_vec[u2s[u]] + off[(u2s[u], u2e[u])] + rng.normal(size=24)).astype(np.float32) for u in u2s}
    xdir = tmp_path / "exp/xvector_syn/xvectors_ravdess/all"
    xdir.mkdir(parents=True)
    kaldiio.save_ark(str(xdir / "xvector.ark"), vecs, scp=str(xdir / "xvector.scp"))
    post = tmp_path / "exp/emotion/ravdess/frozen_lr_syn_clean"
    for k in range(1, 7):   # a recogniser that is right 70 % of the time, on each fold's test clips only
        d = post / f"fold{k}"
        d.mkdir(parents=True)
        (d / "classes.txt").write_text("angry\nhappy\nneutral\nsad\n")
        cls = ["angry", "happy", "neutral", "sad"]
        (d / "posteriors").write_text("".join(
            u + " " + " ".join(f"{0.7 * (c == u2e[u]) + 0.1 * (c != u2e[u]):.2f}" for c in cls) + "\n"
            for u in sorted(read_table(tmp_path / f"data/ravdess/fold{k}/test/utt2spk"))))

    def score(out, config, *extra):
        return subprocess.run(["bash", str(repo_root / "steps/score_sv.sh"), "--folds", "data/ravdess", "--config",
                               str(repo_root / config), *extra, "exp/xvector_syn/xvectors_ravdess/all",
                               "data/ravdess/all", str(out)], cwd=tmp_path, capture_output=True, text=True)

    plain = tmp_path / "exp/sv/ravdess/xvector_syn/cosine_folds"
    comp = tmp_path / "exp/sv/ravdess/xvector_syn/compensated_folds"
    r = score(plain, "conf/sv.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    r = score(comp, "conf/sv_emotion.yaml", "--emotion-posteriors", str(post))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Cllr" in r.stdout
    sp, sc = (json.loads((d / "summary.json").read_text()) for d in (plain, comp))
    assert sp["n_target"] + sp["n_nontarget"] == 6 * 2 * (56 * 55 // 2) == sc["n_target"] + sc["n_nontarget"]
    assert sc["cross_emotion_pooled_eer"] < 0.8 * sp["cross_emotion_pooled_eer"], (sc, sp)
    assert sc["cllr"] < 1 and sc["min_cllr"] <= sc["cllr"] and "cllr" not in sp
    assert sorted(p.name for p in (comp / "backends").iterdir()) == [f"fold{k}.{x}" for k in range(1, 7)
                                                                     for x in ("json", "npz")]
    md = (comp / "eer_by_emotion.md").read_text()
    assert "per-fold protocol over 6 folds" in md and "emotion recogniser" in md and "Cllr" in md
    assert "already up to date" in score(comp, "conf/sv_emotion.yaml", "--emotion-posteriors", str(post)).stdout
    # Stage 7: the compensated back-end's 4x4 table beside the plain one, ratio and calibration figures.
    r = subprocess.run([str(repo_root / "local/make_report.py"), "--corpus", "ravdess", "exp", "exp/RESULTS.md"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    res = (tmp_path / "exp/RESULTS.md").read_text()
    assert res.index("ResNet-syn, cosine_folds back-end") < res.index("ResNet-syn, compensated_folds back-end")
    assert f"| ResNet-syn | compensated_folds | {sc['eer']:.2f} |" in res
    ratio = sc["cross_emotion_pooled_eer"] / sc["same_emotion_pooled_eer"]
    assert f"| {ratio:.2f} | {sc['cllr']:.3f} |" in res
    assert f"compensated_folds: Cllr {sc['cllr']:.3f} bits (min Cllr {sc['min_cllr']:.3f}" in res
    # Posteriors of another fold's model (covering utterances outside this fold's test set) are refused.
    (post / "fold2" / "posteriors").write_text((post / "fold1" / "posteriors").read_text()
                                               + (post / "fold2" / "posteriors").read_text())
    r = score(tmp_path / "exp/sv_leak", "conf/sv_emotion.yaml", "--emotion-posteriors", str(post))
    assert r.returncode != 0 and "outside the fold's test set" in r.stderr


def test_backend_files_of_the_previous_format_still_load(tmp_path):
    """A back-end saved before the emotion-aware pieces (format 1, without their attributes) scores as before."""
    import pickle

    X, spk, gen, emo, _ = emotional_set(8, seed=10, n_utt=2)
    be = Backend.from_config({"asnorm": {"enabled": True, "top_k": 3}}, "cosine").fit(X, spk)
    want = be.score_pairs(X[:4], X[4:8])
    for name in ("nap_cfg", "calibration_cfg", "calibration", "emotions", "train_speakers"):
        delattr(be, name)
    del be.asnorm_cfg["emotion_aware"]
    with open(tmp_path / "old.pkl", "wb") as f:
        pickle.dump({"format": "pyxv-sv-backend", "version": 1, "backend": be}, f)
    old = Backend.load(tmp_path / "old.pkl", trust=True)   # pickled: loads only with trust
    np.testing.assert_allclose(old.score_pairs(X[:4], X[4:8]), want)
    assert not old.needs_trial_emotions
