"""Stage 6's per-fold SV protocol on small corpora (issue 22): folds whose test speakers differ in gender.

A manifest corpus of 10 speakers (5 m, 5 f) in 5 folds puts one man and one woman in each fold's test set,
so no fold alone has a same-gender nontarget trial: the SV protocol merges folds, calibration groups are
gender-aware, and a corpus that cannot give both kinds of trial says so in one line.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from pyxv.backend import Backend, CalibrationError, calibration_groups
from pyxv.emotion.data import discover_protocol
from pyxv.io import read_table
from pyxv.sv.folds import PerFoldNotPossible, plan_sv_folds

from sv_synth import EMOS, emotional_set

N_UTT = 4   # utterances per speaker and emotion


def make_corpus(root: Path, name: str, n_spk: int, folds: int, seed: int = 0, posteriors: bool = True) -> Path:
    """data/<name>/{all,fold<k>} through the manifest path (speakers spkNN, odd ones male), emotional
    x-vectors in exp/xvector_syn/xvectors_<name>/all (``emotional_set``'s speakers, same genders) and
    stage-5-style posteriors (70 % on the true emotion) of each fold's test utterances."""
    from pyxv.corpora.manifest import prepare_manifest

    audio = root / f"audio_{name}"
    audio.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_spk):
        for e in EMOS:
            for i in range(N_UTT):
                f = audio / f"s{s:02d}_{e}_{i}.wav"
                sf.write(f, 0.01 * rng.normal(size=2000).astype(np.float32), 8000)
                rows.append(f"{f},spk{s:02d},{e},{'m' if s % 2 else 'f'},s{s:02d}_{e}_{i}")
    (root / f"{name}.csv").write_text("path,speaker,emotion,gender,utt\n" + "\n".join(rows) + "\n")
    prepare_manifest(root / f"{name}.csv", root / "data" / name, folds=folds, emotions=EMOS, nj=1)
    X, spk, gen, emo, _ = emotional_set(n_spk, seed=seed, n_utt=N_UTT)
    u2s = read_table(root / "data" / name / "all/utt2spk")
    order = [f"spk{s:02d}-s{s:02d}_{e}_{i}" for s in range(n_spk) for e in EMOS for i in range(N_UTT)]
    assert sorted(order) == sorted(u2s)                     # the manifest kept every clip, ids as expected
    assert [g for g in gen[::len(EMOS) * N_UTT]] == ["m" if s % 2 else "f" for s in range(n_spk)]
    xdir = root / f"exp/xvector_syn/xvectors_{name}/all"
    xdir.mkdir(parents=True)
    kaldiio.save_ark(str(xdir / "xvector.ark"), {u: X[i].astype(np.float32) for i, u in enumerate(order)},
                     scp=str(xdir / "xvector.scp"))
    if posteriors:
        u2e = read_table(root / "data" / name / "all/utt2emo")
        cls = ["angry", "happy", "neutral", "sad"]
        for k in range(1, folds + 1):
            d = root / f"exp/emotion/{name}/frozen_lr_syn_clean/fold{k}"
            d.mkdir(parents=True)
            (d / "classes.txt").write_text("\n".join(cls) + "\n")
            (d / "posteriors").write_text("".join(
                u + " " + " ".join(f"{0.7 * (c == u2e[u]) + 0.1 * (c != u2e[u]):.2f}" for c in cls) + "\n"
                for u in sorted(read_table(root / f"data/{name}/fold{k}/test/utt2spk"))))
    return root / "data" / name


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """10 speakers (5 m, 5 f), 5 folds: each fold tests one man and one woman."""
    root = tmp_path_factory.mktemp("small")
    make_corpus(root, "small", n_spk=10, folds=5)
    return root


def score_sv(root, name, config, out, *extra):
    return subprocess.run([sys.executable, "-m", "pyxv.bin.score_sv", "--folds", f"data/{name}", "--config",
                           str(Path(__file__).resolve().parents[1] / config), *extra,
                           f"exp/xvector_syn/xvectors_{name}/all", f"data/{name}/all", str(out)],
                          cwd=root, capture_output=True, text=True)


# ------------------------------------------------------------ calibration groups
@pytest.mark.parametrize("n_m,n_f,n_splits", [(4, 4, 4), (10, 10, 4), (3, 5, 4), (1, 4, 4), (2, 2, 4), (7, 0, 3),
                                              (3, 3, 2)])
def test_calibration_groups_each_hold_a_same_gender_pair(n_m, n_f, n_splits):
    spk = np.repeat([f"m{i}" for i in range(n_m)] + [f"f{i}" for i in range(n_f)], 3)
    gender = np.array([s[0] for s in spk])
    units = n_m // 2 + n_f // 2
    for seed in range(6):
        groups = calibration_groups(spk, gender, n_splits, np.random.default_rng(seed))
        assert len(groups) == min(n_splits, units)
        flat = [s for g in groups for s in g.tolist()]
        assert sorted(flat) == sorted(set(spk.tolist()))               # disjoint, every speaker once
        for g in groups:
            by_gender = {x: {s for s in g.tolist() if s[0] == x} for x in "mf"}
            assert max(len(v) for v in by_gender.values()) >= 2, groups  # a same-gender pair: nontargets
    again = calibration_groups(spk, gender, n_splits, np.random.default_rng(0))
    first = calibration_groups(spk, gender, n_splits, np.random.default_rng(0))
    assert [g.tolist() for g in again] == [g.tolist() for g in first]  # seeded: the same groups


def test_calibration_groups_without_gender_labels_are_pairs_of_any_speakers():
    spk = np.repeat([f"s{i}" for i in range(5)], 2)
    groups = calibration_groups(spk, None, 4, np.random.default_rng(1))
    assert sorted(len(g) for g in groups) == [2, 3]


@pytest.mark.parametrize("n_m,n_f,want", [(2, 1, r"3 back-end training speakers \(by gender: f 1, m 2\) make 1 "),
                                          (1, 1, r"\(by gender: f 1, m 1\) make 0 such"),
                                          (3, 1, r"\(by gender: f 1, m 3\) make 1 such")])
def test_calibration_groups_too_few_speakers_of_one_gender(n_m, n_f, want):
    spk = np.repeat([f"m{i}" for i in range(n_m)] + [f"f{i}" for i in range(n_f)], 2)
    with pytest.raises(CalibrationError, match=want) as e:
        calibration_groups(spk, np.array([s[0] for s in spk]), 4, np.random.default_rng(0))
    assert isinstance(e.value, ValueError)


def test_calibration_on_four_men_and_four_women_always_has_nontargets():
    """8 training speakers: random pairs of speakers would be of mixed gender in every group for some seeds."""
    X, spk, gen, emo, _ = emotional_set(8, seed=11, n_utt=3)
    for seed in range(8):
        cfg = {"calibration": {"enabled": True, "n_splits": 4}, "seed": seed}
        be = Backend.from_config(cfg, "cosine").fit(X, spk, emo, gen)
        c = be.info["calibration"]
        assert c["splits"] == 4 and c["n_target"] > 0 and c["n_nontarget"] > 0, (seed, c)
    one = gen == "m"
    with pytest.raises(CalibrationError, match=r"by gender: m 2\) make 1 such group"):
        Backend.from_config({"calibration": {"enabled": True}}, "cosine").fit(X[one][:24], spk[one][:24], None,
                                                                             gen[one][:24])


# -------------------------------------------------------------------- SV folds
def test_sv_folds_merge_mixed_gender_test_folds(small):
    splits = discover_protocol(small / "data/small")
    s2g = read_table(small / "data/small/all/spk2gender")
    for sp in splits:   # the case: one man and one woman per fold
        assert sorted(s2g[s] for s in set(read_table(sp.test / "utt2spk").values())) == ["f", "m"]
    folds, notes = plan_sv_folds(splits)
    assert [f.name for f in folds] == ["fold1+fold2", "fold3+fold4+fold5"]
    assert [sp.name for f in folds for sp in f.splits] == [sp.name for sp in splits]
    u2s = read_table(small / "data/small/all/utt2spk")
    for f in folds:
        test_spk = set(f.trials.speakers)
        assert test_spk == {s for sp in f.splits for s in read_table(sp.test / "utt2spk").values()}
        assert len(f.trials) == sum(len(read_table(sp.test / "utt2spk")) for sp in f.splits)
        genders = [s2g[s] for s in test_spk]
        assert max(genders.count("m"), genders.count("f")) >= 2       # a same-gender pair of distinct speakers
        train_spk = {u2s[u] for u in f.train_utts}
        assert train_spk == set(s2g) - test_spk                        # every speaker outside the SV fold
        n_all, n_tar = f.trials.count_trials()
        assert n_all > n_tar > 0
    assert len(notes) == 2 and notes[0].startswith("SV fold fold1+fold2 merges emotion folds fold1, fold2")
    assert "fitted on the 6 speakers outside all of them" in notes[0]


def test_sv_folds_of_gender_paired_folds_are_the_emotion_folds(tmp_path):
    make_corpus(tmp_path, "pairs", n_spk=12, folds=3, posteriors=False)      # 2 m + 2 f per fold
    splits = discover_protocol(tmp_path / "data/pairs")
    folds, notes = plan_sv_folds(splits)
    assert [f.name for f in folds] == ["fold1", "fold2", "fold3"] and notes == []
    for f, sp in zip(folds, splits):
        assert f.train_utts == list(read_table(sp.train / "utt2spk")) and not f.merged


def test_one_speaker_per_gender_is_one_clear_line_and_the_report_says_so(tmp_path, repo_root):
    """1 man, 1 woman: no same-gender nontarget trial anywhere. Exit 0, one line, a marker, no stale results."""
    make_corpus(tmp_path, "duo", n_spk=2, folds=2)
    with pytest.raises(PerFoldNotPossible, match="no two speakers of one gender"):
        plan_sv_folds(discover_protocol(tmp_path / "data/duo"))
    out = tmp_path / "exp/sv/duo/xvector_syn/cosine_folds"
    (out / "backends").mkdir(parents=True)
    for f in ("eer_by_emotion.csv", "eer_by_emotion.md", "summary.json", "backends/fold1.json"):
        (out / f).write_text("from an earlier run\n")
    cmd = ["bash", str(repo_root / "steps/score_sv.sh"), "--folds", "data/duo", "--config",
           str(repo_root / "conf/sv.yaml"), "exp/xvector_syn/xvectors_duo/all", "data/duo/all", str(out)]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    line = [ln for ln in r.stdout.splitlines() if "not possible" in ln]
    assert len(line) == 1 and "data/duo" in line[0] and "spk00 (f), spk01 (m)" in line[0], r.stdout
    assert "Traceback" not in r.stdout + r.stderr + (out / "log/score_sv.log").read_text()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["log", "not_possible.txt"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and "already up to date" in r.stdout and "not possible" in r.stdout
    r = subprocess.run([str(repo_root / "local/make_report.py"), "--corpus", "duo", "--no-plots", "exp",
                        "exp/RESULTS.md"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    res = (tmp_path / "exp/RESULTS.md").read_text()
    assert ("- ResNet-syn, cosine_folds: per-fold back-ends not possible: the test speakers of all 2 fold(s) "
            "together have no two speakers of one gender") in res


def test_calibration_impossible_in_an_sv_fold_keeps_the_plain_per_fold_backend(tmp_path):
    """3 m + 3 f in 3 folds: fold1+fold2 is the one SV fold (fold3 would leave no training speaker), trained on
    one man and one woman: cosine scores it, calibration cannot (no same-gender pair to hold out)."""
    make_corpus(tmp_path, "six", n_spk=6, folds=3)
    folds, notes = plan_sv_folds(discover_protocol(tmp_path / "data/six"))
    assert [f.name for f in folds] == ["fold1+fold2"]
    assert any(n.startswith("Emotion fold(s) fold3 not scored") for n in notes), notes
    plain = tmp_path / "exp/sv/six/xvector_syn/cosine_folds"
    r = score_sv(tmp_path, "six", "conf/sv.yaml", plain)
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads((plain / "summary.json").read_text())
    assert s["eer"] is not None and s["n_target"] > 0 and s["n_nontarget"] > 0
    assert any("fold3 not scored" in n for n in s["protocol_notes"])
    comp = tmp_path / "exp/sv/six/xvector_syn/compensated_folds"
    r = score_sv(tmp_path, "six", "conf/sv_emotion.yaml", comp, "--emotion-posteriors",
                 "exp/emotion/six/frozen_lr_syn_clean")
    assert r.returncode == 0, r.stdout + r.stderr
    reason = (comp / "not_possible.txt").read_text()
    assert reason.startswith("SV fold fold1+fold2: calibration needs 2 held-out groups") and reason.count("\n") == 1
    assert not (comp / "summary.json").exists() and "Traceback" not in r.stdout + r.stderr


# ---------------------------------------------- the real entry point, 4 ways
def test_score_sv_folds_on_ten_speakers_gives_real_numbers(small, repo_root):
    """cosine (conf/sv.yaml) and the compensated back-end (conf/sv_emotion.yaml), each with trial emotions
    from labels and from the recogniser's posteriors: EER, both kinds of trial, calibration on every fold."""
    post = "exp/emotion/small/frozen_lr_syn_clean"
    folds, _ = plan_sv_folds(discover_protocol(small / "data/small"))
    n_trials = sum(f.trials.count_trials()[0] for f in folds)
    n_targets = sum(f.trials.count_trials()[1] for f in folds)
    runs = {"cosine_folds": ("conf/sv.yaml", []), "cosine_folds_post": ("conf/sv.yaml", ["--emotion-posteriors", post]),
            "compensated_labels": ("conf/sv_emotion.yaml", []),
            "compensated_folds": ("conf/sv_emotion.yaml", ["--emotion-posteriors", post])}
    summ = {}
    for name, (config, extra) in runs.items():
        out = small / "exp/sv/small/xvector_syn" / name
        r = score_sv(small, "small", config, out, *extra)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "EER n/a" not in r.stdout and not (out / "not_possible.txt").exists()
        s = summ[name] = json.loads((out / "summary.json").read_text())
        assert s["eer"] is not None and 0 <= s["eer"] < 40, s["eer"]
        assert (s["n_target"], s["n_target"] + s["n_nontarget"]) == (n_targets, n_trials) and s["n_nontarget"] > 0
        assert [f["fold"] for f in s["folds"]] == ["fold1+fold2", "fold3+fold4+fold5"]
        assert s["folds"][1]["emotion_folds"] == ["fold3", "fold4", "fold5"]
        assert sorted(p.name for p in (out / "backends").iterdir()) == [
            f"{f}.{x}" for f in ("fold1+fold2", "fold3+fold4+fold5") for x in ("json", "npz")]
        assert s["protocol_notes"][0].startswith("SV fold fold1+fold2 merges emotion folds fold1, fold2")
        assert "merges emotion folds" in (out / "eer_by_emotion.md").read_text()
        if config == "conf/sv_emotion.yaml":
            assert s["cllr"] is not None and s["min_cllr"] <= s["cllr"]
            for f in s["folds"]:
                c = f["backend"]["calibration"]
                assert c["splits"] == 2 and c["n_target"] > 0 and c["n_nontarget"] > 0, f
        else:
            assert "cllr" not in s
    caveat = "may have been trained on the speaker on the other side"
    assert any(caveat in n for n in summ["compensated_folds"]["protocol_notes"])
    assert not any(caveat in n for n in summ["compensated_labels"]["protocol_notes"] + summ["cosine_folds_post"][
        "protocol_notes"])                           # cosine does not use the trial emotions
    # The recogniser's posteriors reach the scores: not the same numbers as with the labels.
    assert summ["compensated_folds"]["eer"] != summ["compensated_labels"]["eer"] or \
        summ["compensated_folds"]["cllr"] != summ["compensated_labels"]["cllr"]
    r = subprocess.run([str(repo_root / "local/make_report.py"), "--corpus", "small", "--no-plots", "exp",
                        "exp/RESULTS.md"], cwd=small, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    res = (small / "exp/RESULTS.md").read_text()
    merged = [ln for ln in res.splitlines() if ln.startswith("- SV fold fold1+fold2 merges emotion folds fold1, fold2")]
    assert len(merged) == 1 and " outside all of them (" in merged[0]        # one line, with the results it is of
    assert set(merged[0].split(" outside all of them (")[1].rstrip(").").split(", ")) == {
        f"ResNet-syn {name}" for name in runs}
    assert f"| ResNet-syn | compensated_folds | {summ['compensated_folds']['eer']:.2f} |" in res
    # In a merged fold each utterance's posteriors must still come from its own fold's model.
    bad = small / "exp/emotion/small/leaky"
    for k in range(1, 6):
        d = bad / f"fold{k}"
        d.mkdir(parents=True)
        src = small / post / f"fold{k}"
        (d / "classes.txt").write_text((src / "classes.txt").read_text())
        extra = (small / post / "fold1/posteriors").read_text() if k == 2 else ""
        (d / "posteriors").write_text((src / "posteriors").read_text() + extra)
    r = score_sv(small, "small", "conf/sv_emotion.yaml", small / "exp/sv_leak", "--emotion-posteriors", str(bad))
    assert r.returncode == 1 and "fold2" in r.stderr and "outside the fold's test set" in r.stderr
