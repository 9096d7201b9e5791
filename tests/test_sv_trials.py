"""Trials by rule, block scoring against brute force, trials files, bad input, the CLI."""
from __future__ import annotations

import itertools
import math
import subprocess
import sys

import kaldiio
import numpy as np
import pytest

from pyxv.metrics.sv import sv_metrics
from pyxv.sv.results import write_results
from pyxv.sv.scoring import score_all_pairs, score_trials_file
from pyxv.sv.trials import iter_trials, load_trial_set

EMOS = ["neutral", "happy", "sad", "angry"]


def make_datadir(path, n_spk=6, per_spk=7, seed=0, unknown=2, genders="mf"):
    """Speakers spkNN (gender alternating), utterances with emotions cycling; plus unknown-speaker utts."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    utt2spk, utt2emo, spk2gender = {}, {}, {}
    for s in range(n_spk):
        spk = f"spk{s:02d}"
        spk2gender[spk] = genders[s % len(genders)]
        for u in range(per_spk):
            utt = f"{spk}-u{u:02d}"
            utt2spk[utt] = spk
            utt2emo[utt] = EMOS[rng.integers(4)]
    unk = []
    for k in range(unknown):
        utt = f"unknown_x{k}-u00"
        utt2spk[utt] = f"unknown_x{k}"
        utt2emo[utt] = "sad"
        spk2gender[f"unknown_x{k}"] = "m"
        unk.append(utt)

    def w(name, d):
        with open(path / name, "w") as f:
            for k in sorted(d):
                f.write(f"{k} {d[k]}\n")
    w("utt2spk", utt2spk)
    w("utt2emo", utt2emo)
    w("spk2gender", spk2gender)
    w("wav.scp", {u: "/dev/null" for u in utt2spk})
    (path / "unknown_spk_utts").write_text("".join(u + "\n" for u in unk))
    return utt2spk, utt2emo, spk2gender


def brute_force(utts, utt2spk, utt2emo, spk2gender):
    """Every unordered pair the slow way: dict (enroll, test) -> target."""
    out = {}
    for u, v in itertools.combinations(sorted(utts), 2):
        if spk2gender[utt2spk[u]] == spk2gender[utt2spk[v]]:
            out[(u, v)] = utt2spk[u] == utt2spk[v]
    return out


def test_trial_counts_by_formula(tmp_path):
    u2s, u2e, s2g = make_datadir(tmp_path / "d", n_spk=7, per_spk=5)
    ts = load_trial_set(tmp_path / "d")
    assert ts.skipped == {"unknown_speaker": 2}
    trials = list(iter_trials(ts))
    ng = {g: sum(1 for u in ts.utts if s2g[u2s[u]] == g) for g in "mf"}
    assert len(trials) == sum(n * (n - 1) // 2 for n in ng.values())
    assert ts.count_trials()[0] == len(trials)
    assert ts.count_trials()[1] == 7 * 5 * 4 // 2
    pairs = set()
    for i, j, tgt in trials:
        u, v = ts.utts[i], ts.utts[j]
        assert u != v                                       # no self pairs
        assert s2g[u2s[u]] == s2g[u2s[v]]                   # no cross-gender pairs
        assert tgt == (u2s[u] == u2s[v])                    # targets right
        pairs.add(frozenset((u, v)))
    assert len(pairs) == len(trials)                        # each pair once
    ref = brute_force(ts.utts, u2s, u2e, s2g)
    assert {frozenset(k) for k in ref} == pairs


def test_make_sv_trials_script(tmp_path, repo_root):
    make_datadir(tmp_path / "d", n_spk=4, per_spk=4)
    out = tmp_path / "trials"
    r = subprocess.run([sys.executable, str(repo_root / "local/make_sv_trials.py"), str(tmp_path / "d"), str(out)],
                       capture_output=True, text=True, cwd=repo_root)
    assert r.returncode == 0, r.stderr
    lines = [ln.split() for ln in out.read_text().splitlines()]
    assert len(lines) == 2 * (8 * 7 // 2)                   # 2 genders x 8 utts
    assert sum(ln[2] == "target" for ln in lines) == 4 * 6
    assert "2 utterance(s) left out" in r.stderr
    # Refuses a big set without --force.
    r = subprocess.run([sys.executable, str(repo_root / "local/make_sv_trials.py"), "--max-trials", "10",
                        str(tmp_path / "d"), str(tmp_path / "t2")], capture_output=True, text=True, cwd=repo_root)
    assert r.returncode != 0 and "--force" in r.stderr and not (tmp_path / "t2").exists()


@pytest.mark.parametrize("block", [3, 1000])
def test_block_scoring_matches_brute_force(tmp_path, block):
    u2s, u2e, s2g = make_datadir(tmp_path / "d", n_spk=9, per_spk=8, seed=1)
    ts = load_trial_set(tmp_path / "d")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(len(ts), 5)).astype(np.float32)
    X[:, 0] += ts.spk  # some speaker information
    X = np.round(X, 1)  # ties
    table = score_all_pairs(ts, X, lambda A, B: A @ B.T, block_size=block)
    E = ts.emotions
    ref = brute_force(ts.utts, u2s, u2e, s2g)
    pos = {u: i for i, u in enumerate(ts.utts)}
    for a, b in itertools.product(range(len(E)), repeat=2):
        tar, non = [], []
        for (u, v), tgt in ref.items():
            if {u2e[u], u2e[v]} == {E[a], E[b]} and (u2e[u], u2e[v]) in ((E[a], E[b]), (E[b], E[a])):
                s = float(X[pos[u]] @ X[pos[v]])
                (tar if tgt else non).append(s)
        t, n = table.cell(a, b)
        assert t.size == len(tar) and n.size == len(non)
        assert np.allclose(np.sort(t), np.sort(tar), atol=1e-4) and np.allclose(n, np.sort(non), atol=1e-4)
    m = write_results(tmp_path / "out", table, {"corpus": "t", "model": "m", "backend": "dot"})
    assert m["n_target"] == sum(ref.values()) and m["n_nontarget"] == len(ref) - sum(ref.values())
    allt = [float(X[pos[u]] @ X[pos[v]]) for (u, v), g in ref.items() if g]
    alln = [float(X[pos[u]] @ X[pos[v]]) for (u, v), g in ref.items() if not g]
    assert m["eer"] == pytest.approx(sv_metrics(allt, alln).eer, abs=1e-6)
    csv = (tmp_path / "out/eer_by_emotion.csv").read_text().splitlines()
    assert csv[0] == "enroll,test,eer,min_dcf_0.01,min_dcf_0.001,n_target,n_nontarget"
    assert len(csv) == 1 + len(E) ** 2
    assert (tmp_path / "out/det.png").stat().st_size > 1000


def test_trials_file_scoring_and_unknown_utts(tmp_path):
    make_datadir(tmp_path / "d", n_spk=4, per_spk=6, seed=2)
    ts = load_trial_set(tmp_path / "d")
    X = np.random.default_rng(1).normal(size=(len(ts), 4))
    tr = tmp_path / "trials"
    lines = [f"{ts.utts[i]} {ts.utts[j]} {'target' if t else 'nontarget'}" for i, j, t in iter_trials(ts)]
    tr.write_text("\n".join(lines + ["ghost-1 spk00-u00 nontarget"]) + "\n")

    def pairs(A, B):
        return np.einsum("ij,ij->i", A, B)
    with pytest.raises(ValueError, match="ghost-1"):
        score_trials_file(tr, ts, X, pairs)
    table = score_trials_file(tr, ts, X, pairs, skip_unknown=True)
    assert table.info["n_skipped_trials"] == 1 and table.info["n_trials"] == len(lines)
    # Same result as the rule-based scorer.
    ref = score_all_pairs(ts, X, lambda A, B: A @ B.T)
    for a, b in itertools.product(range(len(ts.emotions)), repeat=2):
        assert np.allclose(table.cell(a, b)[0], ref.cell(a, b)[0]) and np.allclose(table.cell(a, b)[1], ref.cell(a, b)[1])
    bad = tmp_path / "bad"
    bad.write_text("a b maybe\n")
    with pytest.raises(ValueError, match="bad:1"):
        score_trials_file(bad, ts, X, pairs)


def test_one_speaker_and_one_gender(tmp_path):
    make_datadir(tmp_path / "d", n_spk=1, per_spk=6, unknown=0)
    ts = load_trial_set(tmp_path / "d")
    assert any("no nontarget trials" in m for m in ts.messages)
    assert any("only one gender" in m for m in ts.messages)
    table = score_all_pairs(ts, np.eye(6)[: len(ts)], lambda A, B: A @ B.T)
    s = write_results(tmp_path / "o", table, {})
    assert s["eer"] is None and s["n_target"] == 15 and s["n_nontarget"] == 0
    rows = [r.split(",") for r in (tmp_path / "o/eer_by_emotion.csv").read_text().splitlines()[1:]]
    assert rows and all(r[2:5] == ["", "", ""] and r[6] == "0" for r in rows)
    assert sum(int(r[5]) for r in rows if r[0] == r[1]) <= 15
    assert "Undefined cells" in (tmp_path / "o/eer_by_emotion.md").read_text()


def test_score_sv_cli_end_to_end(tmp_path, repo_root):
    """steps/score_sv.sh with a written x-vector set: missing utts, both back-ends, idempotence."""
    u2s, u2e, s2g = make_datadir(tmp_path / "data/emo/all", n_spk=8, per_spk=8, seed=3)
    make_datadir(tmp_path / "data/pre/train", n_spk=20, per_spk=6, seed=4, unknown=0)
    rng = np.random.default_rng(5)
    centres = {}

    def xv(dirname, datadir, drop=0):
        u2s_ = dict(l.split() for l in open(datadir / "utt2spk"))
        (dirname).mkdir(parents=True, exist_ok=True)
        utts = sorted(u2s_)[drop:]
        d = {}
        for u in utts:
            c = centres.setdefault(u2s_[u], rng.normal(size=16) * 2)
            d[u] = (c + rng.normal(size=16)).astype(np.float32)
        kaldiio.save_ark(str(dirname / "xvector.ark"), d, scp=str(dirname / "xvector.scp"))
    xv(tmp_path / "exp/xv/xvectors_emo/all", tmp_path / "data/emo/all", drop=3)
    xv(tmp_path / "exp/xv/xvectors_pre/train", tmp_path / "data/pre/train")
    (tmp_path / "sv.yaml").write_text("plda:\n  lda_dim: 8\n  n_iter: 5\n")
    for backend in ("cosine", "plda"):
        cmd = ["bash", str(repo_root / "steps/score_sv.sh"), "--backend", backend, "--config", str(tmp_path / "sv.yaml"),
               "--backend-train", "exp/xv/xvectors_pre/train", "--write-scores", "true",
               "exp/xv/xvectors_emo/all", "data/emo/all", f"exp/sv/{backend}"]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        out = tmp_path / f"exp/sv/{backend}"
        log = (out / "log/score_sv.log").read_text()
        assert "3 utterance(s) left out of the trials: no xvector" in log
        ts = load_trial_set(tmp_path / "data/emo/all", available=set(sorted(u2s)[3:]))
        n_all, n_tar = ts.count_trials()
        import json
        s = json.loads((out / "summary.json").read_text())
        assert s["n_target"] == n_tar and s["n_target"] + s["n_nontarget"] == n_all
        assert s["eer"] < 10 and s["backend"] == backend
        assert sum(1 for _ in open(out / "scores")) == n_all
        assert (out / "backend.json").is_file() and (out / "backend.npz").is_file() and (out / "det.png").is_file()
        r2 = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
        assert r2.returncode == 0 and "already" in r2.stdout + r2.stderr


def test_histogram_mode_close_to_exact(tmp_path):
    """Above max_exact_trials the nontargets go into histograms: EER within 0.01 % of exact."""
    make_datadir(tmp_path / "d", n_spk=12, per_spk=20, seed=6)
    ts = load_trial_set(tmp_path / "d")
    rng = np.random.default_rng(2)
    X = rng.normal(size=(len(ts), 6)).astype(np.float32)
    X[:, 0] += 0.7 * ts.spk
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    exact = score_all_pairs(ts, X, lambda A, B: A @ B.T, block_size=50)
    hist = score_all_pairs(ts, X, lambda A, B: A @ B.T, block_size=50, max_exact_trials=0, hist_bins=1 << 16)
    assert exact.info["mode"] == "exact" and hist.info["mode"].startswith("histogram")
    from pyxv.sv.cells import table_summary
    se, sh = table_summary(exact), table_summary(hist)
    assert sh["overall"].n_nontarget == se["overall"].n_nontarget
    assert sh["overall"].n_target == se["overall"].n_target
    for k, m in se["cells"].items():
        assert sh["cells"][k].n_nontarget == m.n_nontarget
        assert sh["cells"][k].eer == pytest.approx(m.eer, abs=0.01)
        assert sh["cells"][k].min_dcf_0_01 == pytest.approx(m.min_dcf_0_01, abs=0.01)
    assert sh["overall"].eer == pytest.approx(se["overall"].eer, abs=0.01)
    write_results(tmp_path / "o", hist, {})  # DET and tables work on histograms too


def test_score_sv_tool_trials_file_and_saved_backend(tmp_path, repo_root):
    """--trials with unknown utterances (error / --skip-unknown) and --backend-in, through the tool."""
    make_datadir(tmp_path / "data/emo/all", n_spk=6, per_spk=6, seed=7)
    rng = np.random.default_rng(8)
    u2s = dict(l.split() for l in open(tmp_path / "data/emo/all/utt2spk"))
    cent = {s: rng.normal(size=8) * 2 for s in sorted(set(u2s.values()))}
    xd = tmp_path / "exp/xvector_t/xvectors_emo/all"
    xd.mkdir(parents=True)
    kaldiio.save_ark(str(xd / "xvector.ark"), {u: (cent[s] + rng.normal(size=8)).astype(np.float32)
                                               for u, s in u2s.items()}, scp=str(xd / "xvector.scp"))
    base = [sys.executable, "-m", "pyxv.bin.score_sv", "--config", str(repo_root / "conf/sv.yaml")]
    r = subprocess.run(base + ["--backend", "plda", str(xd), str(tmp_path / "data/emo/all"), str(tmp_path / "o1")],
                       capture_output=True, text=True, cwd=repo_root)
    assert r.returncode == 0, r.stderr
    utts = sorted(u for u in u2s if not u.startswith("unknown"))
    tr = tmp_path / "trials"
    tr.write_text(f"{utts[0]} {utts[1]} target\n{utts[0]} {utts[-1]} nontarget\n{utts[2]} nobody-1 nontarget\n")
    args = ["--backend-in", str(tmp_path / "o1/backend.json"), "--trials", str(tr), "--write-scores", "true",
            str(xd), str(tmp_path / "data/emo/all"), str(tmp_path / "o2")]
    r = subprocess.run(base + args, capture_output=True, text=True, cwd=repo_root)
    assert r.returncode == 1 and "nobody-1" in r.stderr
    r = subprocess.run(base + ["--skip-unknown", "true"] + args, capture_output=True, text=True, cwd=repo_root)
    assert r.returncode == 0, r.stderr
    import json
    s = json.loads((tmp_path / "o2/summary.json").read_text())
    assert (s["n_target"], s["n_nontarget"], s["backend"]) == (1, 1, "plda")
    assert len((tmp_path / "o2/scores").read_text().splitlines()) == 2
    assert "1 trial(s)" in (tmp_path / "o2/eer_by_emotion.md").read_text()
    # An older pyxv's pickled backend.pkl: refused in one line, read with PYXV_TRUST_PICKLE=1, same scores.
    import os
    import pickle

    from pyxv.backend import Backend
    with open(tmp_path / "old.pkl", "wb") as f:
        pickle.dump({"format": "pyxv-sv-backend", "version": 2, "backend": Backend.load(tmp_path / "o1/backend.json")}, f)
    args[1] = str(tmp_path / "old.pkl")
    args[-1] = str(tmp_path / "o3")
    env = {k: v for k, v in os.environ.items() if k != "PYXV_TRUST_PICKLE"}
    r = subprocess.run(base + ["--skip-unknown", "true"] + args, capture_output=True, text=True, cwd=repo_root, env=env)
    assert r.returncode == 1 and "old.pkl: an SV back-end in the old pickled form, which can run code" in r.stderr
    r = subprocess.run(base + ["--skip-unknown", "true"] + args, capture_output=True, text=True, cwd=repo_root,
                       env={**env, "PYXV_TRUST_PICKLE": "1"})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o3/scores").read_text() == (tmp_path / "o2/scores").read_text()


def test_eer_by_emotion_from_arrays():
    from pyxv.sv.scoring import eer_by_emotion

    rng = np.random.default_rng(9)
    spk = np.repeat(np.arange(10), 12)
    gender = np.where(spk % 2, "m", "f")
    emo = np.array(["sad", "angry", "neutral"])[rng.integers(3, size=spk.size)]
    X = rng.normal(size=(10, 6))[spk] + rng.normal(size=(spk.size, 6))
    r = eer_by_emotion(X, spk, gender, emo, block_size=7)
    assert r["emotions"] == ["angry", "sad", "neutral"]          # the paper's order
    iu = np.triu_indices(spk.size, 1)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = (Xn @ Xn.T)[iu]
    same_g = (gender[:, None] == gender[None, :])[iu]
    tgt = (spk[:, None] == spk[None, :])[iu]
    ref = sv_metrics(S[same_g & tgt], S[same_g & ~tgt])
    assert r["overall"].eer == pytest.approx(ref.eer, abs=1e-4)
    assert r["overall"].n_nontarget == ref.n_nontarget
