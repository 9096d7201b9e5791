"""Final models of stage 5 (one per system, trained on all labelled data after the
folds) and cross-corpus evaluation of them, on generated features with known
answers; the networks and the frozen x-vector system on real RAVDESS clips in
tests/test_emotion_final_ravdess.py."""
import json
import logging

import kaldiio
import numpy as np
import pytest

from pyxv.datadir import write_datadir
from pyxv.emotion import crosscorpus, systems
from pyxv.emotion.config import load_emotion_config
from pyxv.emotion.data import discover_protocol, final_training_set

from emotion_synth import labelled_speakers, write_folds
from run_sh_sandbox import fake_steps, recorded_calls
from run_sh_sandbox import sandbox  # noqa: F401  (the fixture: run.sh in a folder of its own)

CLASSES = ["angry", "happy", "neutral", "sad"]


def gen_corpus(root, name, *, n_folds=3, spk_per_fold=2, utts_per_class=4, labels=None, scale=1.0, offset=0.0,
               extra_label=None, fixed_split=False, seed=0):
    """data/<name>/{all,all_aug,fold<k>/{train,test}} (or {train,dev,test}) with 88-dim
    'eGeMAPS functionals' (gemaps.scp) whose mean depends on the class. The class means
    come from a fixed generator, so corpora made with another ``seed`` share them;
    ``scale``/``offset`` shift a corpus's features (a channel), ``labels`` renames the
    classes, ``extra_label`` adds utterances of a class the model does not have."""
    means = {c: np.random.default_rng(i).normal(size=88) * 3 for i, c in enumerate(CLASSES)}
    rng = np.random.default_rng(seed)
    spks, u2s, u2e = labelled_speakers(n_folds, spk_per_fold, utts_per_class, CLASSES)
    u2s = {f"{name}-{u}": f"{name}-{s}" for u, s in u2s.items()}
    u2e = {f"{name}-{u}": c for u, c in u2e.items()}
    spks = [f"{name}-{s}" for s in spks]
    feats = {u: (means[c] + rng.normal(size=88)) * scale + offset for u, c in u2e.items()}
    if extra_label:
        for s in spks:
            for r in range(utts_per_class):
                u = f"{s}-{extra_label}-{r}"
                u2s[u], u2e[u] = s, extra_label
                feats[u] = rng.normal(size=88) * 3 * scale + offset
    lab = {u: (labels or {}).get(c, c) for u, c in u2e.items()}
    emo = root / "data" / name
    aug = {f"{u}-noise": u for u in u2s}

    def write(d, table, fe):
        write_datadir(d, utt2spk={u: u2s[table[u]] for u in table}, wav_scp={u: "/dev/null" for u in table},
                      utt2emo={u: lab[table[u]] for u in table},
                      **({"utt2orig": table} if d.name == "all_aug" else {}))
        with kaldiio.WriteHelper(f"ark,scp:{d}/gemaps.ark,{d}/gemaps.scp") as w:
            for u in sorted(table):
                w(u, fe(u).astype(np.float32)[None, :])

    write(emo / "all", {u: u for u in u2s}, lambda u: feats[u])
    write(emo / "all_aug", aug, lambda u: feats[aug[u]] + rng.normal(size=88) * 0.5)
    if fixed_split:
        parts = {"test": {spks[0]}, "dev": {spks[1]}, "train": set(spks[2:])}
        for sub, ss in parts.items():
            us = {u: s for u, s in u2s.items() if s in ss}
            write_datadir(emo / sub, utt2spk=us, wav_scp={u: "/dev/null" for u in us}, utt2emo={u: lab[u] for u in us})
        return emo
    write_folds(emo, u2s, lab, [{s for s in spks if s.startswith(f"{name}-s{k}")} for k in range(1, n_folds + 1)])
    return emo


def train_system(tmp_path, system="ref_egemaps_lr", data="clean"):
    """Folds, summary and final model of a reference system on the generated corpus 'src'."""
    emo = gen_corpus(tmp_path, "src")
    out = tmp_path / "exp" / "emotion" / "src"
    cfg = load_emotion_config(None)
    for k in (1, 2, 3):
        systems.run_fold(system, data, emo, k, out, cfg)
    summary = systems.summarize(system, data, emo, out)
    rec = systems.run_final(system, data, emo, out, cfg)
    return emo, out, summary, rec


# ----------------------------------------------------------------- final models
def test_final_training_set_folds_all_fixed_split_train_dev(tmp_path):
    emo = gen_corpus(tmp_path, "f")
    s, what = final_training_set(discover_protocol(emo), "clean", emo / "all_aug")
    assert len(s) == 96 and len(set(s.utts)) == 96 and "3 folds" in what   # every utterance once
    s, _ = final_training_set(discover_protocol(emo), "clean+aug", emo / "all_aug")
    assert len(s) == 192 and sum(s.aug) == 96
    emo = gen_corpus(tmp_path, "x", fixed_split=True)
    splits = discover_protocol(emo)
    s, what = final_training_set(splits, "clean", None)
    assert what == "train + dev of the fixed split"
    test_spk = {"x-s10"}
    assert len(s) == 80 and not (s.speakers & test_spk)   # the fixed test set stays unseen


@pytest.mark.parametrize("data", ["clean", "clean+aug"])
def test_final_reference_model_on_all_data_leaves_the_folds_alone(tmp_path, data):
    emo, out, summary, rec = train_system(tmp_path, data=data)
    sdir = out / f"ref_egemaps_lr_{data.replace('+', '_')}"
    f = sdir / "final"
    assert rec["n_train"] == (96 if data == "clean" else 192) and rec["n_speakers"] == 6
    assert json.loads((f / "final.json").read_text()) == rec
    assert (f / "classes.txt").read_text().split() == CLASSES and (f / "model.json").is_file()
    assert "96 utterances" in (f / "README.txt").read_text() or "192 utterances" in (f / "README.txt").read_text()
    assert not (f / "metrics.json").exists() and not (f / "posteriors").exists()   # nothing is scored
    stats = json.loads((f / "input_stats.json").read_text())
    assert len(stats["mean"]) == 88 and stats["n"] == 96
    # the folds' figures do not move
    assert systems.summarize("ref_egemaps_lr", data, emo, out) == summary
    from pyxv.report.collect import Notes, read_emotion_results
    res = read_emotion_results(tmp_path / "exp", "src", Notes())
    assert sorted(res[("ref_egemaps_lr", data.replace("+", "_"))].folds) == ["fold1", "fold2", "fold3"]


def test_final_network_epochs_from_the_folds(tmp_path):
    hist = [{"epoch": 1, "dev_metric": 0.3}, {"epoch": 2, "dev_metric": 0.5}, {"epoch": 3, "dev_metric": 0.5},
            {"epoch": 4, "dev_metric": 0.4}]
    assert systems.fold_epochs(hist) == 2   # the first of the best, as the trainer keeps it
    assert systems.fold_epochs([{"epoch": 1}, {"epoch": 2}]) == 2   # no dev: every epoch
    emo = gen_corpus(tmp_path, "n")
    sdir = tmp_path / "out" / "randinit_mfcc_clean"
    splits = discover_protocol(emo)
    for sp, best in zip(splits, (2, 5, 4)):
        (sdir / sp.name / "log").mkdir(parents=True)
        h = [{"epoch": e, "dev_metric": 1.0 if e == best else 0.1} for e in range(1, 7)]
        (sdir / sp.name / "log" / "history.json").write_text(json.dumps(h))
    assert systems.final_epochs(sdir, splits) == (4, {"fold1": 2, "fold2": 5, "fold3": 4})
    cfg = systems._final_nnet_config(load_emotion_config(None), 4)
    for sec in [cfg["nnet"]] + list(cfg["finetune_by_type"].values()):
        assert sec["epochs"] == 4 and sec["dev_fraction"] == 0 and sec["patience"] == 0
    (sdir / "fold2" / "log" / "history.json").unlink()
    with pytest.raises(FileNotFoundError, match="fold2/log/history.json is missing: the folds of randinit_mfcc_clean "
                                                "must finish before its final model"):
        systems.final_epochs(sdir, splits)


def test_inference_takes_final_by_default(tmp_path, caplog):
    from pyxv.inference import InferenceError, emotion_model_dir

    _, out, _, _ = train_system(tmp_path)
    sdir = out / "ref_egemaps_lr_clean"
    assert emotion_model_dir(sdir) == sdir / "final"
    assert emotion_model_dir(sdir / "fold2") == sdir / "fold2"
    (sdir / "final" / "final.json").unlink()
    with pytest.raises(InferenceError, match="final/ is unfinished"):
        emotion_model_dir(sdir)
    import shutil
    shutil.rmtree(sdir / "final")
    with caplog.at_level(logging.WARNING, logger="pyxv.inference"):
        assert emotion_model_dir(sdir) == sdir / "fold1"
    assert "has no final/ model" in caplog.text
    with pytest.raises(InferenceError, match="neither a model dir"):
        emotion_model_dir(tmp_path / "data")


# ------------------------------------------------------------ cross-corpus
MAP = "ang angry\nhap happy\nneu neutral\nsad sad\ncal -   # no such class in the source\n"


def test_cross_corpus_label_map_and_standardisation(tmp_path):
    """The target has renamed labels, an extra class to leave out, and a channel
    (features x 0.3 - 20): plainly the LR misses, standardised on the target's own
    statistics it finds the classes again."""
    emo, out, _, _ = train_system(tmp_path)
    tgt = gen_corpus(tmp_path, "tgt", labels={"angry": "ang", "happy": "hap", "neutral": "neu"},
                     extra_label="cal", scale=0.3, offset=-20.0, seed=5)
    (tmp_path / "map.txt").write_text(MAP)
    res = tmp_path / "cross" / "tgt"
    m = crosscorpus.evaluate(out / "ref_egemaps_lr_clean", tgt / "all", res, label_map=str(tmp_path / "map.txt"),
                             standardise=True)
    assert m["n_test"] == 96 and m["left_out"] == {"cal": 24} and m["decision_classes"] == CLASSES
    assert m["source_corpus"] == "src" and m["target_corpus"] == "all"
    assert m["weighted_f1"] < 0.5 < 0.95 < m["standardised"]["weighted_f1"]
    rows = [l.split() for l in (res / "posteriors").read_text().splitlines()]
    assert len(rows) == 96 and all(abs(sum(map(float, r[1:])) - 1) < 1e-4 for r in rows)
    pred = [l.split() for l in (res / "predictions_standardised.txt").read_text().splitlines()]
    assert {p[1] for p in pred} == set(CLASSES)   # true labels mapped onto the model's classes
    # the same corpus without a channel: plain scoring is already right
    same = gen_corpus(tmp_path, "same", seed=7)
    m = crosscorpus.evaluate(out / "ref_egemaps_lr_clean", same / "all", tmp_path / "cross" / "same")
    assert m["weighted_f1"] > 0.95 and "standardised" not in m


def test_standardisation_uses_no_labels(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4)) * [1, 2, 3, 0] + [5, 6, 7, 8]   # + a constant dimension
    stats = {"mean": [0, 1, 2, 3], "std": [1, 1, 2, 2]}
    Y = crosscorpus.standardise_inputs(X, stats)
    assert np.allclose(Y[:, :3].mean(0), [0, 1, 2]) and np.allclose(Y[:, :3].std(0), [1, 1, 2])
    assert np.allclose(Y[:, 3], 3) and not np.allclose(Y, X)
    # end to end: permuting the target's labels changes no standardised posterior
    emo, out, _, _ = train_system(tmp_path)
    tgt = gen_corpus(tmp_path, "tgt", scale=0.3, offset=-20.0, seed=5)
    a = crosscorpus.evaluate(out / "ref_egemaps_lr_clean", tgt / "all", tmp_path / "a", standardise=True)
    u2e = (tgt / "all" / "utt2emo").read_text().splitlines()
    labs = [l.split()[1] for l in u2e]
    rng.shuffle(labs)
    (tgt / "all" / "utt2emo").write_text("".join(f"{l.split()[0]} {c}\n" for l, c in zip(u2e, labs)))
    b = crosscorpus.evaluate(out / "ref_egemaps_lr_clean", tgt / "all", tmp_path / "b", standardise=True)
    assert (tmp_path / "a" / "posteriors_standardised").read_text() == \
        (tmp_path / "b" / "posteriors_standardised").read_text()
    assert a["standardised"]["weighted_f1"] != b["standardised"]["weighted_f1"]   # only the scoring saw labels


def test_cross_corpus_bad_input_one_line(tmp_path):
    emo, out, _, _ = train_system(tmp_path)
    sdir = out / "ref_egemaps_lr_clean"
    tgt = gen_corpus(tmp_path, "tgt", labels={"angry": "ang"}, extra_label="cal", seed=5)
    with pytest.raises(crosscorpus.CrossCorpusError,
                       match=r"tgt/all/utt2emo: labels \['ang', 'cal'\] are not classes of the model "
                             r"\(angry happy neutral sad\) and no label map was given"):
        crosscorpus.evaluate(sdir, tgt / "all", tmp_path / "o")
    (tmp_path / "m.txt").write_text("ang angry\n")
    with pytest.raises(crosscorpus.CrossCorpusError, match=r"labels \['cal'\] .* the label map .*m.txt does not map"):
        crosscorpus.evaluate(sdir, tgt / "all", tmp_path / "o", label_map=str(tmp_path / "m.txt"))
    (tmp_path / "m.txt").write_text("ang furious\ncal -\n")
    with pytest.raises(crosscorpus.CrossCorpusError, match=r"m.txt: maps onto \['furious'\], which are not classes"):
        crosscorpus.evaluate(sdir, tgt / "all", tmp_path / "o", label_map=str(tmp_path / "m.txt"))
    (tmp_path / "m.txt").write_text("ang angry extra\n")
    with pytest.raises(crosscorpus.CrossCorpusError, match=r"m.txt:1: expected '<corpus label> <model class>'"):
        crosscorpus.evaluate(sdir, tgt / "all", tmp_path / "o", label_map=str(tmp_path / "m.txt"))
    # a system dir without final/
    import shutil
    shutil.rmtree(sdir / "final")
    with pytest.raises(crosscorpus.CrossCorpusError, match="ref_egemaps_lr_clean: no final/ model"):
        crosscorpus.evaluate(sdir, tgt / "all", tmp_path / "o")
    # a target without the features the system reads
    _, out2, _, _ = train_system(tmp_path / "b")
    same = gen_corpus(tmp_path, "same", seed=7)
    (same / "all" / "gemaps.scp").unlink()
    with pytest.raises(crosscorpus.CrossCorpusError, match=r"same/all/gemaps.scp does not exist: ref_egemaps_lr "
                                                           "needs it"):
        crosscorpus.evaluate(out2 / "ref_egemaps_lr_clean", same / "all", tmp_path / "o")
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_report_shows_cross_corpus_beside_within(tmp_path):
    from pyxv.report import ReportBuilder

    emo, out, summary, _ = train_system(tmp_path)
    tgt = gen_corpus(tmp_path, "tgt", scale=0.3, offset=-20.0, seed=5)
    m = crosscorpus.evaluate(out / "ref_egemaps_lr_clean", tgt / "all", out / "cross" / "tgt" / "ref_egemaps_lr_clean",
                             standardise=True, target="tgt")
    md = ReportBuilder(tmp_path / "exp", tmp_path / "exp" / "RESULTS.md", corpus="src", plots=False).build()
    text = md.read_text()
    assert "### Cross-corpus: trained on src, tested on another corpus" in text
    row = next(l for l in text.splitlines() if "src → tgt" in l)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["`ref_egemaps_lr`", "clean", "src → tgt"]
    assert cells[3].startswith(f"{100 * summary['mean_weighted_f1']:.2f}")   # within: the folds' mean
    assert cells[4] == f"{100 * m['weighted_f1']:.2f}" and cells[5] == f"{100 * m['standardised']['weighted_f1']:.2f}"
    csv = (tmp_path / "exp" / "results.csv").read_text()
    assert "cross_corpus,src->tgt,ref_egemaps_lr,clean" in csv


# ------------------------------------------------------------- the scripts
def _step(*args, timeout=300):
    import subprocess

    from conftest import REPO

    return subprocess.run([str(a) for a in args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_train_emotion_sh_final_after_folds_and_skip_when_fresh(tmp_path):
    emo = gen_corpus(tmp_path, "src")
    out = tmp_path / "exp"
    args = ["steps/train_emotion.sh", "--nj", "1", "--system", "ref_egemaps_lr", emo, out]
    p = _step(*args)
    assert p.returncode == 0, p.stdout + p.stderr
    sdir = out / "ref_egemaps_lr_clean"
    assert (sdir / "summary.json").is_file() and (sdir / "final" / "final.json").is_file()
    assert "final model of ref_egemaps_lr" in p.stdout and (sdir / "log" / "final.log").is_file()
    p = _step(*args)
    assert p.returncode == 0 and "summary.json and final/ are complete" in p.stdout
    # a lost final model is made again without redoing the folds
    (sdir / "final" / "final.json").unlink()
    before = (sdir / "summary.json").stat().st_mtime_ns
    p = _step(*args)
    assert p.returncode == 0 and "final model of" in p.stdout and "fold(s) of" not in p.stdout
    assert (sdir / "final" / "final.json").is_file() and (sdir / "summary.json").stat().st_mtime_ns == before


def test_eval_emotion_sh_writes_and_skips(tmp_path):
    _, out, _, _ = train_system(tmp_path)
    tgt = gen_corpus(tmp_path, "tgt", labels={"angry": "ang"}, scale=0.3, offset=-20.0, seed=5)
    (tmp_path / "map.txt").write_text("ang angry\n")
    res = out / "cross" / "tgt" / "ref_egemaps_lr_clean"
    args = ["steps/eval_emotion.sh", "--label-map", tmp_path / "map.txt", "--standardise", "true",
            out / "ref_egemaps_lr_clean", tgt / "all", res]
    p = _step(*args)
    assert p.returncode == 0, p.stdout + p.stderr
    m = json.loads((res / "metrics.json").read_text())
    assert m["target_corpus"] == "tgt" and m["standardised"]["weighted_f1"] > 0.95
    assert "weighted F1" in p.stdout.splitlines()[-1]
    p = _step(*args)
    assert p.returncode == 0 and "newer than its inputs; skipping" in p.stdout
    p = _step("steps/eval_emotion.sh", out / "ref_egemaps_lr_clean", tgt / "all", tmp_path / "o")
    assert p.returncode == 1 and "labels ['ang'] are not classes of the model" in (tmp_path / "o/log/eval.log").read_text()
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_run_sh_cross_corpus_option(sandbox):
    """Stage 5 calls steps/eval_emotion.sh per target, system and training data (fake
    step scripts record their arguments, in run.sh's sandbox of tests/run_sh_sandbox.py); bad specs stop first."""
    import subprocess

    sb = sandbox
    fake_steps(sb, "train_emotion.sh", "eval_emotion.sh")
    (sb / "tgt").mkdir()
    (sb / "tgt" / "utt2emo").write_text("u1 ang\n")
    (sb / "map.txt").write_text("ang angry\n")

    def run(*a):
        return subprocess.run(["bash", "run.sh", *a], cwd=sb, capture_output=True, text=True, timeout=60)

    p = run("--stage", "5", "--stop-stage", "5", "--cross-corpus", "other:tgt:map.txt",
            "--cross-systems", "frozen_lr_clean ref_egemaps_lr")
    assert p.returncode == 0, p.stdout + p.stderr
    calls = recorded_calls(sb, "eval_emotion.sh")
    assert len(calls) == 4
    outs = sorted(c[-1] for c in calls)
    assert outs == [f"exp/emotion/demo/cross/other/{s}_{t}" for s in ("frozen_lr_clean", "ref_egemaps_lr")
                    for t in ("clean", "clean_aug")]
    for c in calls:
        assert c[c.index("--label-map") + 1] == "map.txt" and c[c.index("--standardise") + 1] == "true"
        assert c[c.index("--target") + 1] == "other" and c[-2] == "tgt"
    for bad, msg in (("other", "expected NAME:DATA-DIR[:LABEL-MAP]"), ("o:nowhere", "nowhere has no utt2emo"),
                     ("o:tgt:nomap.txt", "label map nomap.txt does not exist")):
        p = run("--stage", "5", "--stop-stage", "5", "--cross-corpus", bad)
        assert p.returncode == 1 and msg in p.stderr, p.stderr


@pytest.mark.parametrize("flag,want", [([], False), (["--use-gpu", "yes"], True)])
def test_final_network_goes_to_a_gpu_only_when_asked(monkeypatch, tmp_path, flag, want):
    """train_emotion --final --use-gpu yes reaches the network's training (CPU-only check:
    the GPU is faked and the training recorded, not run)."""
    import pyxv.device
    import pyxv.features.archive
    import torch

    from conftest import REPO
    from pyxv.bin import train_emotion

    emo = gen_corpus(tmp_path, "g")
    out = tmp_path / "out"
    for sp in discover_protocol(emo):
        (out / "finetune_clean_clean" / sp.name / "log").mkdir(parents=True)
        (out / "finetune_clean_clean" / sp.name / "log" / "history.json").write_text('[{"epoch": 1}]')
    got = []
    monkeypatch.setattr(pyxv.device, "no_gpu_reason", lambda: None)
    monkeypatch.setattr(pyxv.features.archive, "exit_cleanly_on_signals", lambda: None)
    monkeypatch.setattr(systems, "run_nnet", lambda *a, **k: got.append((a[3], a[4], a[-1])) or (None, None))
    threads = torch.get_num_threads()
    try:
        rc = train_emotion.main([*flag, "--config", str(REPO / "conf" / "emotion.yaml"), "--system",
                                 "finetune_clean", "--final", str(emo), str(out)])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0 and got == [(None, None, want)]   # no dev, no test: nothing held out
    assert json.loads((out / "finetune_clean_clean" / "final" / "final.json").read_text())["n_train"] == 96


def test_gemaps_training_chunks_are_standardised(tmp_path):
    """The random-init GeMAPS network trains on standardised LLDs: the chunks the
    training loader reads (in place, from the archive) are (x - mean) / std, as the
    whole utterances scored at test time are (they were raw while scoring saw
    standardised ones, and the network said one class for everything)."""
    from pyxv.emotion.nnet import gemaps_stats, standardise, standardised_source
    from pyxv.features.network_input import FeatureSource

    rng = np.random.default_rng(0)
    mats = {f"u{i}": (rng.normal(size=(int(rng.integers(60, 90)), 25)) * 50 + 100).astype(np.float32)
            for i in range(6)}
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/lld.ark,{tmp_path}/lld.scp") as w:
        for u in sorted(mats):
            w(u, mats[u])
    raw = FeatureSource(tmp_path / "lld.scp")
    mean, std = gemaps_stats(raw, sorted(mats))
    tr = standardised_source(raw, sorted(mats), mean, std, tmp_path / "work", "train")
    out = np.zeros((3, 40, 25), np.float32)
    tr.read_chunks(["u0", "u3", "u5"], [0, 10, 20], 40, out)
    for k, (u, s) in enumerate((("u0", 0), ("u3", 10), ("u5", 20))):
        assert np.allclose(out[k], (mats[u][s:s + 40] - mean) / std, atol=1e-5)
    ev = FeatureSource(tmp_path / "lld.scp")
    standardise(ev, mean, std)
    assert np.allclose(ev["u3"], tr["u3"], atol=1e-5)   # scoring sees what training saw
    assert abs(float(np.concatenate([tr[u] for u in mats]).mean())) < 0.05


@pytest.mark.parametrize("use_gpu,cmd", [("false", "TRAIN_CMD"), ("true", "CUDA_CMD")])
def test_run_sh_cross_corpus_follows_use_gpu(sandbox, use_gpu, cmd):
    """With --use-gpu true the cross-corpus jobs (they extract x-vectors and run networks)
    go to the GPU runner with --use-gpu true, as stages 4 and 5 do; otherwise to train_cmd."""
    import subprocess

    sb = sandbox
    fake_steps(sb, "train_emotion.sh", "eval_emotion.sh")
    (sb / "tgt").mkdir()
    (sb / "tgt" / "utt2emo").write_text("u1 angry\n")
    p = subprocess.run(["bash", "run.sh", "--stage", "5", "--stop-stage", "5", "--use-gpu", use_gpu,
                        "--cross-corpus", "other:tgt", "--cross-systems", "finetune_clean"],
                       cwd=sb, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    calls = recorded_calls(sb, "eval_emotion.sh")
    assert len(calls) == 2
    for c in calls:
        assert c[c.index("--cmd") + 1] == cmd and c[c.index("--use-gpu") + 1] == use_gpu


@pytest.mark.parametrize("flag,gpu,want", [([], True, "cpu"), (["--use-gpu", "yes"], True, "cuda"),
                                           (["--use-gpu", "auto"], False, "cpu"), (["--use-gpu", "yes"], False, None)])
def test_eval_emotion_device(monkeypatch, tmp_path, capsys, flag, gpu, want):
    """eval_emotion --use-gpu yes hands the GPU to the evaluation (faked GPU: CPU-only
    check of the plumbing); asking for one where there is none is one line, exit 1."""
    import pyxv.device
    from pyxv.bin import eval_emotion

    got = []
    monkeypatch.setattr(pyxv.device, "no_gpu_reason", lambda: None if gpu else "no CUDA device is visible")
    monkeypatch.setattr(crosscorpus, "evaluate", lambda *a, **k: got.append(k["device"]))
    rc = eval_emotion.main([*flag, "sys", "data", str(tmp_path / "o")])
    if want is None:
        err = capsys.readouterr().err.strip()
        assert rc == 1 and got == [] and err == "eval_emotion: --use-gpu yes but no CUDA device is visible"
    else:
        assert rc == 0 and got == [want]


def test_cross_corpus_networks_load_on_the_asked_device(monkeypatch, tmp_path):
    """crosscorpus.evaluate's device reaches the model loader of an LR system's
    x-vectors (the inputs then follow the model, pyxv.device.input_device)."""
    import pyxv.train.checkpoint

    _, out, _, _ = train_system(tmp_path, system="ref_egemaps_lr")
    seen = []

    def fake_xvectors(model_dir, data_dir, utts, device="cpu"):
        seen.append(device)
        raise crosscorpus.CrossCorpusError("stop here")

    monkeypatch.setattr(crosscorpus, "xvectors", fake_xvectors)
    fdir = crosscorpus.final_dir(out / "ref_egemaps_lr_clean")
    with pytest.raises(crosscorpus.CrossCorpusError, match="stop here"):
        crosscorpus.backend_inputs("frozen_lr_clean", {"xvector_model": str(tmp_path)}, fdir, tmp_path, ["u"],
                                   "meta")
    assert seen == ["meta"]
    loads = []
    monkeypatch.setattr(pyxv.train.checkpoint, "load_model",
                        lambda path, device="cpu": loads.append(device) or (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        crosscorpus.network_posteriors(tmp_path, tmp_path, ["u"], "meta")
    assert loads == ["meta"]


@pytest.mark.parametrize("extra", [["--nj", "2"], ["--fold", "1"]])
def test_final_takes_no_fold_or_nj(tmp_path, capsys, extra):
    """--final with --nj (or --fold) is a usage error in one line, not a TypeError."""
    from pyxv.bin import train_emotion

    with pytest.raises(SystemExit) as e:
        train_emotion.main(["--system", "ref_egemaps_lr", "--final", *extra, str(tmp_path), str(tmp_path / "o")])
    assert e.value.code == 2 and "--final trains the one final model: it takes no --fold or --nj" in capsys.readouterr().err
