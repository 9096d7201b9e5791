"""The report builder on a small hand-made exp/ tree with known numbers."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyxv.report import build_report
from pyxv.emotion.spec import SYSTEMS as SYSTEM_SPECS
from pyxv.report.collect import EmotionResult, Notes, read_sv_result
from pyxv.report.tables import reference_comparison

EMOS = ["neutral", "happy", "sad", "angry"]
SYSTEMS = tuple((s.name, s.label) for s in SYSTEM_SPECS if s.paper)                # (name, label) rows
REFERENCE_SYSTEMS = tuple((s.name, s.label) for s in SYSTEM_SPECS if not s.paper)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _w(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _metrics(fold: str, wf1: float, ua: float, rng) -> dict:
    cm = rng.integers(0, 9, size=(4, 4)).tolist()
    return {"weighted_f1": wf1, "unweighted_accuracy": ua, "accuracy": (wf1 + ua) / 2, "labels": EMOS,
            "confusion": cm, "n_test": int(np.sum(cm)), "fold": fold}


def make_tree(root: Path, missing=("finetune_aug", "clean_aug")) -> dict:
    """data/ and exp/ of a 3-fold demo run; returns the per-fold numbers written."""
    rng = np.random.default_rng(7)
    data, exp = root / "data", root / "exp"
    spks = [f"spk{i}" for i in range(6)]
    utts = [f"{s}-u{j:02d}" for s in spks for j in range(8)]
    _w(data / "demo/all/utt2spk", "".join(f"{u} {u.split('-')[0]}\n" for u in utts))
    _w(data / "demo/all/utt2emo", "".join(f"{u} {EMOS[k % 4]}\n" for k, u in enumerate(utts)))
    _w(data / "demo/all/utt2dur", "".join(f"{u} {1 + (k % 5) * 0.5:.2f}\n" for k, u in enumerate(utts)))
    _w(data / "demo/all/wav.scp", "".join(f"{u} data/local/demo_corpus/wav/{u}.wav\n" for u in utts))
    for f in range(3):
        test = [u for u in utts if u.split("-")[0] in spks[2 * f:2 * f + 2]]
        train = [u for u in utts if u not in test]
        for sub, us in (("train", train), ("test", test)):
            _w(data / f"demo/fold{f + 1}/{sub}/utt2spk", "".join(f"{u} {u.split('-')[0]}\n" for u in us))
    pre = [f"pspk{i}-p{j}" for i in range(4) for j in range(5)]
    _w(data / "pretrain/train/utt2spk", "".join(f"{u} {u.split('-')[0]}\n" for u in pre))
    _w(data / "pretrain/train/utt2dur", "".join(f"{u} {2 + k * 0.1:.2f}\n" for k, u in enumerate(pre)))
    _w(data / "pretrain/train/wav.scp", "".join(f"{u} data/local/demo_corpus/pretrain/{u}.wav\n" for u in pre))

    written = {}
    for s, _ in SYSTEMS + REFERENCE_SYSTEMS:
        for d in ("clean", "clean_aug"):
            if (s, d) == tuple(missing):
                continue
            sysdir = exp / "emotion/demo" / f"{s}_{d}"
            folds = {}
            for f in range(3):
                m = _metrics(f"fold{f + 1}", float(rng.uniform(0.2, 0.9)), float(rng.uniform(0.2, 0.9)), rng)
                folds[f"fold{f + 1}"] = m
                _w(sysdir / f"fold{f + 1}/metrics.json", json.dumps(m))
            written[(s, d)] = folds
            _w(sysdir / "summary.json", json.dumps({"system": s, "train_data": d, "corpus": "demo",
                                                    "folds": folds}))

    # SV: clean/cosine (symmetric, known worst pair angry-sad) and aug/plda.
    eer = {("neutral", "neutral"): 5.0, ("happy", "happy"): 7.0, ("sad", "sad"): 6.0, ("angry", "angry"): 9.0}
    for a in EMOS:
        for b in EMOS:
            if a != b:
                eer[(a, b)] = 10.0 + EMOS.index(a) + EMOS.index(b)
    eer[("angry", "sad")] = eer[("sad", "angry")] = 31.5
    for model, backend, shift in (("clean", "cosine", 0.0), ("aug", "plda", -1.0)):
        d = exp / f"sv/demo/xvector_{model}/{backend}"
        lines = ["enroll,test,eer,min_dcf_0.01,min_dcf_0.001,n_target,n_nontarget"]
        lines += [f"{a},{b},{eer[(a, b)] + shift},0.5,0.7,10,90" for a in EMOS for b in EMOS]
        _w(d / "eer_by_emotion.csv", "\n".join(lines) + "\n")
        _w(d / "summary.json", json.dumps({"eer": 12.34 + shift, "min_dcf_0.01": 0.61, "min_dcf_0.001": 0.8,
                                           "n_target": 160, "n_nontarget": 1440, "emotions": EMOS,
                                           "backend": backend, "model": model, "corpus": "demo"}))
    hist = [{"epoch": e, "train_loss": 3.0 / e, "train_acc": 0.2 * e, "valid_loss": 3.5 / e, "valid_acc": 0.18 * e,
             "lr": 0.01} for e in range(1, 5)]
    _w(exp / "xvector_clean/log/history.json", json.dumps(hist))
    _w(exp / "xvector_clean/config.yaml", "model: {embed_dim: 8}\n")
    import kaldiio

    xdir = exp / "xvector_clean/xvectors_demo/all"
    xdir.mkdir(parents=True)
    with kaldiio.WriteHelper(f"ark,scp:{xdir}/xvector.ark,{xdir}/xvector.scp") as w:
        for k, u in enumerate(utts):
            w(u, (rng.normal(size=8) + np.eye(8)[k % 4] * 3).astype(np.float32))
    _w(exp / "stage_times", "0 12\n1 30\n2 45\n3 300\n4 20\n5 200\n6 15\n0 1\n")
    return written


def _table2_row(md: str, system: str) -> list[str]:
    sec = md.split("## Emotion recognition")[1].split("###")[0]
    for line in sec.splitlines():
        if f"(`{system}`)" in line:
            return [c.strip() for c in line.strip().strip("|").split("|")]
    raise AssertionError(f"no Table 2 row for {system}")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep")
    written = make_tree(root)
    out = build_report(root / "exp", root / "exp/RESULTS.md", corpus="demo", repo=root)
    return root, written, out.read_text()


def test_table2_numbers_equal_fold_json(report):
    root, written, md = report
    for s, _ in SYSTEMS + REFERENCE_SYSTEMS:
        row = _table2_row(md, s)
        assert len(row) == 5, row
        for k, d in enumerate(("clean", "clean_aug")):
            f1_cell, ua_cell = row[1 + 2 * k], row[2 + 2 * k]
            if (s, d) not in written:
                assert f1_cell == "—" and ua_cell == "—"
                continue
            f1 = np.array([m["weighted_f1"] for m in written[(s, d)].values()])
            ua = np.array([m["unweighted_accuracy"] for m in written[(s, d)].values()])
            assert f1_cell == f"{100 * f1.mean():.2f} ± {100 * f1.std():.2f}"
            assert ua_cell == f"{100 * ua.mean():.2f} ± {100 * ua.std():.2f}"
    # The missing system is named in a note.
    assert "exp/emotion/demo/finetune_aug_clean_aug" in md
    # The per-fold table holds each fold's value.
    m = written[("frozen_lr_aug", "clean")]
    line = next(l for l in md.splitlines() if l.startswith("| `frozen_lr_aug` | clean |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:5] == [f"{100 * m[f'fold{k}']['weighted_f1']:.2f}" for k in (1, 2, 3)]
    # Paper reference numbers are there, with the citation.
    assert "65.95" in md and "81.54" in md and "Pappagari" in md


def test_reference_rows_marked_and_last(report):
    root, written, md = report
    sec = md.split("## Emotion recognition")[1].split("###")[0]
    order = [re.search(r"\(`(\w+)`\)", l).group(1) for l in sec.splitlines() if l.startswith("| ") and "(`" in l]
    assert order == [s for s, _ in SYSTEMS] + ["ref_egemaps_lr", "ref_mfccstats_lr"]
    assert _table2_row(md, "ref_egemaps_lr")[0] == "*Reference:* eGeMAPS functionals + LR (`ref_egemaps_lr`)"
    assert _table2_row(md, "ref_mfccstats_lr")[0] == "*Reference:* MFCC mean/std + LR (`ref_mfccstats_lr`)"
    # the per-fold table and the sentence comparing the systems with them
    assert any(l.startswith("| `ref_mfccstats_lr` | clean+aug |") for l in md.splitlines())
    assert "**Against the references** (`demo`, mean weighted F1 %): on clean data" in md


def test_reference_names_match_the_recipe():
    from pyxv.emotion.spec import REFERENCE_SYSTEMS as recipe

    assert tuple(s for s, _ in REFERENCE_SYSTEMS) == recipe


def _result(system, data, f1s):
    return EmotionResult("c", system, data, Path("."), folds={
        f"fold{k}": {"weighted_f1": v, "unweighted_accuracy": v} for k, v in enumerate(f1s, 1)})


def test_reference_comparison_sentence():
    res = {("ref_egemaps_lr", "clean"): _result("ref_egemaps_lr", "clean", [0.60, 0.70]),      # 65.00
           ("ref_mfccstats_lr", "clean"): _result("ref_mfccstats_lr", "clean", [0.60, 0.62]),  # 61.00
           ("frozen_lr_clean", "clean"): _result("frozen_lr_clean", "clean", [0.40, 0.50]),    # 45.00
           ("finetune_aug", "clean"): _result("finetune_aug", "clean", [0.70, 0.72]),          # 71.00
           ("randinit_mfcc", "clean"): _result("randinit_mfcc", "clean", [0.66, 0.66]),        # 66.00
           ("ref_mfccstats_lr", "clean_aug"): _result("ref_mfccstats_lr", "clean_aug", [0.50, 0.54]),  # 52.00
           ("frozen_lr_aug", "clean_aug"): _result("frozen_lr_aug", "clean_aug", [0.45, 0.47]),        # 46.00
           ("finetune_clean", "clean_aug"): _result("finetune_clean", "clean_aug", [0.50, 0.51])}      # 50.50
    assert reference_comparison("iemocap", res) == (
        "**Against the references** (`iemocap`, mean weighted F1 %): "
        "on clean data 2 of 3 systems beat the better reference (eGeMAPS functionals + LR, 65.00), "
        "the best (`finetune_aug`, 71.00) by 6.00 points; "
        "on clean+aug data none of 2 systems beats the better reference (MFCC mean/std + LR, 52.00): "
        "the best (`finetune_clean`, 50.50) is 1.50 points below it.")
    only_refs = {k: v for k, v in res.items() if k[0].startswith("ref_")}
    assert reference_comparison("iemocap", only_refs) is None


def test_results_csv_matches(report):
    root, written, _ = report
    rows = list(csv.DictReader(open(root / "exp/results.csv")))
    got = {(r["system"], r["train_data"]): float(r["value"]) for r in rows
           if r["table"] == "table2" and r["metric"] == "mean_weighted_f1"}
    assert len(got) == 15
    f1 = np.mean([m["weighted_f1"] for m in written[("randinit_mfcc", "clean_aug")].values()])
    assert got[("randinit_mfcc", "clean+aug")] == pytest.approx(f1, abs=1e-6)
    eers = [r for r in rows if r["table"] == "eer_by_emotion" and r["metric"] == "eer"]
    assert len(eers) == 32


def test_eer_tables(report):
    _, _, md = report
    sec = md.split("#### demo: ResNet-clean, cosine back-end (EER %)")[1].split("####")[0]
    assert "| **angry** | 31.50 |" not in sec  # angry row: angry sad column order is paper's
    rows = {l.split("|")[1].strip(): [c.strip() for c in l.strip().strip("|").split("|")[1:]]
            for l in sec.splitlines() if l.startswith("| **")}
    # Paper order: angry, happy, sad, neutral.
    header = next(l for l in sec.splitlines() if l.startswith("| enrolment"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == ["angry", "happy", "sad", "neutral"]
    assert rows["**angry**"][2] == "31.50" and rows["**neutral**"][3] == "5.00"
    same = np.mean([5, 7, 6, 9])
    off = [10.0 + EMOS.index(a) + EMOS.index(b) for a in EMOS for b in EMOS if a != b
           and {a, b} != {"angry", "sad"}] + [31.5, 31.5]
    assert f"same-emotion mean EER {same:.2f} %" in sec
    assert f"cross-emotion mean EER {np.mean(off):.2f} %" in sec
    assert "worst pair: angry vs sad (31.50 %)" in sec
    assert "best same-emotion pair: neutral vs neutral (5.00 %)" in sec
    # Summary line carries summary.json's pooled EER.
    assert "| ResNet-aug | plda | 11.34 |" in md


def test_pictures_are_valid_png(report):
    root, _, md = report
    import matplotlib.image as mpimg

    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    names = {Path(l).name for l in links}
    assert {"confusion_demo.png", "eer_demo.png", "durations.png", "training_curves.png",
            "xvectors_demo_clean.png"} <= names
    for l in links:
        p = root / "exp" / l
        assert p.read_bytes()[:8] == PNG_MAGIC
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert float(img[..., :3].std()) > 0.01  # not a blank canvas


def test_what_was_run(report):
    _, _, md = report
    sec = md.split("## What was run")[1].split("## Data and models")[0]
    assert "synthetic demo voices (espeak-ng)" in sec
    assert "3 speaker-independent folds" in sec
    assert "| fold2 | 32 | — | 16 | spk2, spk3 |" in sec
    assert "4 speakers, 20 utterances" in sec
    assert "Git revision: `unknown" in sec  # the temp tree is no git work tree
    # stage 0 ran twice: last run 1 s, both listed; stage 3 300 s.
    assert "| 0 | data directories | 1 s | 12, 1 |" in sec
    assert "| 3 | x-vector training | 300 s (5.0 min) | 300 |" in sec
    assert "[xvector_clean/config.yaml](xvector_clean/config.yaml)" in sec


def test_missing_and_broken_pieces(tmp_path):
    """An empty exp dir and a broken metrics file still give a report."""
    out = build_report(tmp_path / "exp_empty", tmp_path / "empty/RESULTS.md", corpus="demo", plots=False)
    md = out.read_text()
    assert md.count("—") >= 16 and "16 cells" in md
    assert "exp/emotion/demo/ref_egemaps_lr_clean_aug" in md and "Against the references" not in md
    assert "no speaker-verification results" in md
    exp = tmp_path / "exp"
    _w(exp / "emotion/demo/randinit_mfcc_clean/fold1/metrics.json", "{not json")
    _w(exp / "emotion/demo/randinit_mfcc_clean/fold2/metrics.json",
       json.dumps({"weighted_f1": 0.5, "unweighted_accuracy": 0.25, "accuracy": 0.5, "labels": ["a", "b"],
                   "confusion": [[1, 1], [0, 2]], "n_test": 4}))
    _w(exp / "sv/demo/xvector_clean/cosine/eer_by_emotion.csv", "enroll,test,eer\nsad,sad,oops\nsad,sad,3\n")
    md = build_report(exp, exp / "RESULTS.md", corpus="demo", plots=False).read_text()
    assert "fold1/metrics.json: cannot read JSON" in md
    assert _table2_row(md, "randinit_mfcc")[1:3] == ["50.00", "25.00"]
    assert "eer_by_emotion.csv:2: cannot parse" in md


def test_sv_reader_ignores_pooled_rows(tmp_path):
    d = tmp_path / "sv"
    _w(d / "eer_by_emotion.csv", "enroll,test,eer,min_dcf_0.01,min_dcf_0.001,n_target,n_nontarget\n"
       "all,all,9,0.1,0.2,5,6\nhappy,sad,12,0.1,0.2,5,6\nsad,happy,14,0.1,0.2,5,6\n")
    r = read_sv_result(d, "x", "clean", "cosine", Notes())
    assert r.emotions == ["happy", "sad"]
    assert np.isnan(r.eer[0, 0]) and r.eer[0, 1] == 12 and r.eer[1, 0] == 14
    assert np.isnan(r.same_mean()) and r.cross_mean() == 13
    assert r.extreme(None) == ("sad", "happy", 14.0)


def test_make_report_script(tmp_path, repo_root):
    make_tree(tmp_path)
    p = subprocess.run([sys.executable, str(repo_root / "local/make_report.py"), "--corpus", "demo", "--no-plots",
                        str(tmp_path / "exp"), str(tmp_path / "exp/RESULTS.md")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "exp/RESULTS.md").is_file() and (tmp_path / "exp/results.csv").is_file()
    bad = subprocess.run([sys.executable, str(repo_root / "local/make_report.py"), str(tmp_path / "nope"),
                          str(tmp_path / "x.md")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "does not exist" in bad.stderr
