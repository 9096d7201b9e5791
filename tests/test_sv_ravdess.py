"""SV by emotion on the real RAVDESS clips (672 clips of the 4 classes, 24 actors).

No trained x-vector model is assumed: the embedding is deterministic and quick,
the mean and standard deviation of 40 log-mel filterbank energies
(kaldi-native-fbank) over each clip. It carries enough speaker information for
EER well below chance, which is all the table logic needs.
"""
from __future__ import annotations

import csv
import json
import subprocess
from collections import Counter

import kaldiio
import numpy as np
import pytest
import soundfile as sf

EMO = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}


def fbank_stats(path) -> np.ndarray:
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = 40
    x, sr = sf.read(path, dtype="float32")
    assert sr == 16000, path
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(sr, (x * 32768).tolist())
    fb.input_finished()
    F = np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])
    return np.r_[F.mean(0), F.std(0)].astype(np.float32)


@pytest.fixture(scope="module")
def ravdess_set(ravdess_root, tmp_path_factory):
    """A data dir (utt2spk, spk2gender, utt2emo, wav.scp) and an x-vector-style dir for the 672 clips."""
    root = tmp_path_factory.mktemp("sv_ravdess")
    data = root / "data/ravdess/all"
    xdir = root / "exp/xvector_fbank/xvectors_ravdess/all"
    data.mkdir(parents=True)
    xdir.mkdir(parents=True)
    u2s, u2e, s2g, wav, vecs = {}, {}, {}, {}, {}
    for f in sorted(ravdess_root.glob("Actor_*/*.flac")):
        fields = f.stem.split("-")
        if fields[2] not in EMO:
            continue
        actor = int(fields[6])
        spk = f"actor{actor:02d}"
        utt = f"{spk}-{f.stem}"
        u2s[utt], u2e[utt], wav[utt] = spk, EMO[fields[2]], str(f)
        s2g[spk] = "m" if actor % 2 else "f"
        vecs[utt] = fbank_stats(f)
    for name, tab in (("utt2spk", u2s), ("utt2emo", u2e), ("spk2gender", s2g), ("wav.scp", wav)):
        (data / name).write_text("".join(f"{k} {tab[k]}\n" for k in sorted(tab)))
    kaldiio.save_ark(str(xdir / "xvector.ark"), vecs, scp=str(xdir / "xvector.scp"))
    return root, u2s, u2e, s2g


def test_ravdess_table(ravdess_set, repo_root):
    root, u2s, u2e, s2g = ravdess_set
    assert len(u2s) == 672 and len(set(u2s.values())) == 24
    out = root / "exp/sv/ravdess/xvector_fbank/cosine"
    # Whitening (unsupervised, fitted on the set itself: no --backend-train) evens out the filterbank dims.
    (root / "sv.yaml").write_text("cosine:\n  whiten: true\n")
    r = subprocess.run(["bash", str(repo_root / "steps/score_sv.sh"), "--backend", "cosine", "--config", "sv.yaml",
                        "exp/xvector_fbank/xvectors_ravdess/all", "data/ravdess/all", str(out)],
                       cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = list(csv.DictReader(open(out / "eer_by_emotion.csv")))
    emos = ["angry", "happy", "sad", "neutral"]
    assert [(x["enroll"], x["test"]) for x in rows] == [(a, b) for a in emos for b in emos]  # the 4x4 table
    cell = {(x["enroll"], x["test"]): x for x in rows}
    # Counts by formula: same-emotion cells sum_g C(n_ga, 2); cross cells sum_g n_ga n_gb.
    n = Counter((s2g[u2s[u]], u2e[u]) for u in u2s)
    nspk = Counter((u2s[u], u2e[u]) for u in u2s)
    for a in emos:
        for b in emos:
            x = cell[(a, b)]
            assert x == {**cell[(b, a)], "enroll": a, "test": b}           # symmetric
            tot = sum(n[(g, a)] * (n[(g, a)] - 1) // 2 if a == b else n[(g, a)] * n[(g, b)] for g in "mf")
            tar = sum(nspk[(s, a)] * (nspk[(s, a)] - 1) // 2 if a == b else nspk[(s, a)] * nspk[(s, b)]
                      for s in set(u2s.values()))
            assert int(x["n_target"]) == tar and int(x["n_target"]) + int(x["n_nontarget"]) == tot
            assert 0 <= float(x["eer"]) < 50
    s = json.loads((out / "summary.json").read_text())
    assert s["n_target"] == 24 * 28 * 27 // 2                  # 28 clips per actor
    assert s["n_target"] + s["n_nontarget"] == 2 * (336 * 335 // 2)   # 12 actors x 28 clips per gender
    assert s["eer"] < 35, s["eer"]                             # speaker information, far from chance (~31 %)
    # The paper's finding holds on RAVDESS even for this crude embedding: same-emotion trials are
    # easier than cross-emotion ones (about 19 % vs 32 % mean EER).
    assert s["same_emotion_mean_eer"] < s["cross_emotion_mean_eer"] - 5
    md = (out / "eer_by_emotion.md").read_text()
    assert "| Enroll \\ Test | Angry | Happy | Sad | Neutral |" in md
    assert (out / "det.png").stat().st_size > 5000


def test_ravdess_plda_leave_speakers_out(ravdess_set):
    """PLDA fitted on 12 actors, scored on the other 12: a genuine held-out table."""
    from pyxv.backend import Backend
    from pyxv.sv.cells import table_summary
    from pyxv.sv.scoring import score_all_pairs
    from pyxv.sv.trials import load_trial_set

    root, u2s, u2e, s2g = ravdess_set
    X = dict(kaldiio.load_scp(str(root / "exp/xvector_fbank/xvectors_ravdess/all/xvector.scp")))
    train = [u for u in sorted(u2s) if int(u2s[u][5:]) <= 12]
    test = {u for u in u2s if int(u2s[u][5:]) > 12}
    be = Backend.from_config({"plda": {"lda_dim": 11}}, "plda").fit(np.stack([X[u] for u in train]),
                                                                     [u2s[u] for u in train])
    ts = load_trial_set(root / "data/ravdess/all", available=test)
    assert ts.skipped == {"no_xvector": 336}
    table = score_all_pairs(ts, be.prepare(np.stack([X[u] for u in ts.utts])), be.score_block)
    summ = table_summary(table)
    assert summ["overall"].n_target == 12 * 28 * 27 // 2
    assert summ["overall"].n_target + summ["overall"].n_nontarget == 2 * (168 * 167 // 2)
    assert summ["overall"].eer < 40
