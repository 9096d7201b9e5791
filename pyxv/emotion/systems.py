"""The fold loop and the final model of the emotion systems (the six of Table 2
and the two references; what each is: :mod:`pyxv.emotion.spec`).

:func:`train_system` is the one dispatch by method: frozen x-vectors + LR
(:func:`run_frozen_lr`), the references (:mod:`pyxv.emotion.reference`), the
random-init and fine-tuned networks (:mod:`pyxv.emotion.nnet`). Each runs on
'clean' or 'clean+aug' training data (the fold's training utterances, plus their
augmented copies). One fold is :func:`run_fold`; :func:`summarize` pools the
folds. Outputs per fold (``<out>/<system>_<data>/<fold>/``): ``model.json`` +
``model.npz`` (LR) or ``final.pt`` (networks), ``predictions.txt`` (utt true
pred), ``posteriors`` (utt followed by one probability per class, classes in
``classes.txt`` order), ``metrics.json``. :func:`run_final` then trains the
system once on all labelled data into ``<out>/<system>_<data>/final/`` (the
model people use; the folds evaluate it).
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..io import atomic_open, write_lines
from ..metrics.classification import classification_metrics, summarize_folds
from .data import (LabeledSet, Split, assert_speaker_independent, check_classes, check_test_labels,
                   corpus_classes, discover_protocol, final_training_set, labeled_set, training_set)
from .nnet import run_nnet_system
from .reference import reference_inputs, run_reference
from .spec import FINETUNE, FROZEN_LR, GEMAPS, MFCC, RANDINIT, REFERENCE, SystemSpec, system_dir_name, system_spec

log = logging.getLogger("pyxv.emotion")


def xvector_dir(model_dir: str | Path, emo_dir: str | Path, subset: str) -> Path:
    """Where stage 4 put a subset's x-vectors: ``<model>/xvectors_<emo minus data/>/<subset>``."""
    emo = Path(emo_dir)
    parts = emo.parts
    rel = Path(*parts[parts.index("data") + 1:]) if "data" in parts[:-1] else Path(emo.name)
    return Path(model_dir) / f"xvectors_{rel.as_posix()}" / subset


def load_embeddings(scps: list[Path], utts: list[str], what: str) -> tuple[np.ndarray, list[int]]:
    """Rows of the x-vector scps for ``utts``; utterances without one are reported and
    skipped. Returns (N', D) array and the kept indices."""
    import kaldiio

    table: dict = {}
    for scp in scps:
        if not Path(scp).is_file():
            raise FileNotFoundError(f"x-vector file {scp} does not exist (run stage 4: x-vector extraction)")
        table.update(kaldiio.load_scp(str(scp)))
    keep, rows, missing = [], [], []
    for i, u in enumerate(utts):
        if u in table:
            keep.append(i)
            rows.append(np.asarray(table[u], dtype=np.float64).reshape(-1))
        else:
            missing.append(u)
    if missing:
        log.warning("%s: %d utterance(s) have no x-vector and are skipped, e.g. %s", what, len(missing), missing[:3])
    if not rows:
        raise ValueError(f"{what}: no utterance has an x-vector in {', '.join(map(str, scps))}")
    return np.stack(rows), keep


# ----------------------------------------------------------------------- systems
def run_frozen_lr(model_key: str, split: Split, train: LabeledSet, dev: LabeledSet | None, test: LabeledSet,
                  classes: list[str], emo_dir: Path, cfg: dict, fold_dir: Path):
    """Frozen x-vectors + LR. Returns (test LabeledSet actually scored, posteriors (N, C))."""
    from .lr import EmotionLR, save_lr_model

    model_dir = Path(cfg["xvector_models"][model_key])
    scps = [xvector_dir(model_dir, emo_dir, "all") / "xvector.scp"]
    if any(train.aug):
        scps.append(xvector_dir(model_dir, emo_dir, "all_aug") / "xvector.scp")
    Xtr, ktr = load_embeddings(scps, train.utts, f"{split.name} train")
    train = train.subset(ktr)
    Xte = None
    if test is not None:   # None: a final model, nothing to score
        Xte, kte = load_embeddings(scps[:1], test.utts, f"{split.name} test")
        test = test.subset(kte)
    Xdev = ydev = None
    if dev is not None:
        Xdev, kdev = load_embeddings(scps[:1], dev.utts, f"{split.name} dev")
        ydev = [dev.labels[i] for i in kdev]
    o = cfg["lr"]
    pre = {"center": o["center"], "projection": o["transform"], "lda_dim": o["lda_dim"], "length_norm": o["length_norm"]}
    lr = EmotionLR(classes, pre=pre, C_grid=o["C_grid"], cv_folds=o["cv_folds"], max_iter=o["max_iter"], seed=cfg["seed"])
    log.info("%s: LR on %d x-vectors (%d dims, %d augmented) from %s", split.name, len(train), Xtr.shape[1],
             sum(train.aug), model_dir)
    lr.fit(Xtr, train.labels, groups=train.spks, X_dev=Xdev, y_dev=ydev)
    save_lr_model(fold_dir, lr, {"type": "frozen_lr", "classes": classes, "xvector_model": str(model_dir)})
    return test, (lr.predict_proba(Xte) if Xte is not None else None)


def run_nnet(system: str, split: Split, train: LabeledSet, dev: LabeledSet | None, test: LabeledSet,
             classes: list[str], emo_dir: Path, cfg: dict, fold_dir: Path, use_gpu: bool = False):
    """Random-init and fine-tuned networks (see :mod:`pyxv.emotion.nnet`)."""
    return run_nnet_system(system, split, train, dev, test, classes, emo_dir, cfg, fold_dir, use_gpu=use_gpu)


def train_system(spec: SystemSpec, split: Split, train: LabeledSet, dev: LabeledSet | None,
                 test: LabeledSet | None, classes: list[str], emo_dir: Path, cfg: dict, out_dir: Path,
                 use_gpu: bool = False):
    """Train one system on ``train`` into ``out_dir`` (a fold's dir, or ``final/``) and
    score ``test``. Returns (test set actually scored, posteriors (N, C)); ``test``
    None (a final model): nothing is scored."""
    if spec.method == FROZEN_LR:
        return run_frozen_lr(spec.xvector_model, split, train, dev, test, classes, emo_dir, cfg, out_dir)
    if spec.method == REFERENCE:
        return run_reference(spec.name, split, train, dev, test, classes, emo_dir, cfg, out_dir)
    return run_nnet(spec.name, split, train, dev, test, classes, emo_dir, cfg, out_dir, use_gpu)


def system_inputs(system: str, train_data: str, emo_dir: str | Path, cfg: dict) -> list[tuple[Path, str]]:
    """Files a system reads besides the protocol's data dirs, each with the stage
    that makes it (for the step script's existence and freshness checks)."""
    spec = system_spec(system)
    emo_dir = Path(emo_dir)
    aug = train_data != "clean"
    subsets = ("all", "all_aug") if aug else ("all",)
    out: list[tuple[Path, str]] = []
    if spec.method == REFERENCE:
        out += reference_inputs(system, emo_dir, aug)
    elif spec.method == FROZEN_LR:
        m = Path(cfg["xvector_models"][spec.xvector_model])
        out += [(xvector_dir(m, emo_dir, sub) / "xvector.scp", "stage 4, x-vector extraction") for sub in subsets]
    elif spec.method == FINETUNE:
        m = Path(cfg["xvector_models"][spec.xvector_model])
        out.append((m / "final.pt", "stage 3, x-vector training"))
    if spec.method in (FINETUNE, RANDINIT) and spec.features == MFCC:
        out += [(emo_dir / sub / name, "stage 2, features") for sub in subsets for name in ("feats.scp", "vad.scp")]
    if spec.features == GEMAPS:
        out += [(emo_dir / sub / "gemaps_lld.scp", "stage 2, features") for sub in subsets]
    if spec.method == RANDINIT:
        arch = cfg["nnet"].get("architecture")
        out.append((Path(arch), "the config's nnet.architecture") if arch else
                   (Path(cfg["xvector_models"]["clean"]) / "final.pt", "stage 3, x-vector training"))
    if aug:
        out.append((emo_dir / "all_aug" / "utt2orig", "stage 1, augmentation"))
    return out


# ---------------------------------------------------------------------- fold loop
def system_dir(out_root: str | Path, system: str, train_data: str) -> Path:
    return Path(out_root) / system_dir_name(system, train_data)


@contextmanager
def fold_log(path: Path):
    """Copy what is logged while a fold runs (the trainer's lines too) into the fold's
    own ``log/train.log``: a job that runs several folds keeps one log per fold."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = logging.FileHandler(path, mode="w", encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    h.setLevel(logging.INFO)
    loggers = [logging.getLogger(), logging.getLogger("pyxv.train")]
    for lg in loggers:
        lg.addHandler(h)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeHandler(h)
        h.close()


def run_fold(system: str, train_data: str, emo_dir: str | Path, fold: int, out_root: str | Path,
             cfg: dict, use_gpu: bool = False) -> dict:
    """Train and test one system on fold number ``fold`` (1-based, protocol order).
    ``use_gpu``: the network systems train and score on a GPU (the LR systems
    have nothing to put on one), else everything runs on the CPU.

    Writes the fold's model, predictions.txt, posteriors, classes.txt and metrics.json
    (atomically; metrics.json last, so it marks a finished fold) and its log/train.log.
    Returns the metrics. The result depends only on the fold, the config and the seed,
    not on which folds ran before it in the same process.
    """
    spec = system_spec(system)
    emo_dir = Path(emo_dir)
    splits = discover_protocol(emo_dir)
    if not 1 <= fold <= len(splits):
        raise ValueError(f"fold {fold} out of range: {emo_dir} has {len(splits)} split(s)")
    split = splits[fold - 1]
    fold_dir = system_dir(out_root, system, train_data) / split.name
    fold_dir.mkdir(parents=True, exist_ok=True)
    with fold_log(fold_dir / "log" / "train.log"):
        return _run_split(spec, train_data, emo_dir, splits, split, fold_dir, cfg, use_gpu)


def _run_split(spec: SystemSpec, train_data: str, emo_dir: Path, splits: list[Split], split: Split, fold_dir: Path,
               cfg: dict, use_gpu: bool = False) -> dict:
    t0 = time.time()
    system = spec.name
    classes = corpus_classes(emo_dir, splits, cfg.get("classes"))
    train = training_set(split, train_data, emo_dir / "all_aug")
    if cfg.get("classes"):
        # Only the configured classes take part (e.g. 4 of a corpus's 8).
        keep = [i for i, lab in enumerate(train.labels) if lab in classes]
        train = train.subset(keep)
    check_classes(split.name, train, classes)
    test = labeled_set(split.test)
    check_test_labels(split.name, test.labels, classes, "test")
    dev = labeled_set(split.dev) if split.dev is not None else None
    if dev is not None:
        check_test_labels(split.name, dev.labels, classes, "dev")
    assert_speaker_independent(split.name, train, test, dev)
    log.info("%s %s %s: %d training utts (%d augmented) of %d speakers, %s dev, %d test utts of %d speakers; "
             "classes %s", system, train_data, split.name, len(train), sum(train.aug), len(train.speakers),
             len(dev) if dev is not None else "no", len(test), len(test.speakers), classes)
    test, post = train_system(spec, split, train, dev, test, classes, emo_dir, cfg, fold_dir, use_gpu)
    pred = [classes[i] for i in np.asarray(post).argmax(1)]
    write_lines(fold_dir / "classes.txt", classes)
    write_lines(fold_dir / "predictions.txt", (f"{u} {t} {p}" for u, t, p in zip(test.utts, test.labels, pred)))
    write_lines(fold_dir / "posteriors",
                (u + " " + " ".join(f"{x:.6f}" for x in row) for u, row in zip(test.utts, post)))
    m = classification_metrics(test.labels, pred, labels=classes, fold=split.name)
    m["system"], m["train_data"] = system, train_data
    m["n_train"], m["n_train_aug"], m["seconds"] = len(train), int(sum(train.aug)), round(time.time() - t0, 1)
    with atomic_open(fold_dir / "metrics.json", "w") as f:
        json.dump(m, f, indent=1)
    log.info("%s %s %s: weighted F1 %.2f%%, UA %.2f%%, accuracy %.2f%% on %d test utts (%.1fs)", system,
             train_data, split.name, 100 * m["weighted_f1"], 100 * m["unweighted_accuracy"], 100 * m["accuracy"],
             m["n_test"], m["seconds"])
    return m


# ------------------------------------------------------------------ final model
FINAL = "final"   # <system>_<data>/final/: the model trained once on all labelled data
FINAL_RECORD = "final.json"   # written last: marks a finished final model


def fold_epochs(history: list[dict]) -> int:
    """Epochs a fold's network kept: the best dev epoch (the first of equal ones, as
    the trainer keeps it) when it had a dev metric, else every epoch it trained."""
    scored = [(r["dev_metric"], -int(r["epoch"])) for r in history if r.get("dev_metric") is not None]
    if scored:
        return -max(scored)[1]
    return len(history)


def final_epochs(sdir: Path, splits: list[Split]) -> tuple[int | None, dict]:
    """Epoch count of a network's final model from its folds' choices: the median
    (the lower middle value) of the epochs each fold kept. Returns (epochs or None
    when no fold had a dev metric, {fold: epochs kept})."""
    kept, had_dev = {}, False
    for sp in splits:
        h = sdir / sp.name / "log" / "history.json"
        if not h.is_file():
            raise FileNotFoundError(f"{h} is missing: the folds of {sdir.name} must finish before its final model "
                                    "(its epoch count comes from theirs)")
        with open(h) as f:
            hist = json.load(f)
        had_dev |= any(r.get("dev_metric") is not None for r in hist)
        kept[sp.name] = fold_epochs(hist)
    vals = sorted(kept.values())
    return (vals[(len(vals) - 1) // 2] if had_dev else None), kept


def _final_nnet_config(cfg: dict, epochs: int | None) -> dict:
    """``cfg`` for a final network: no dev set (nothing held out, no early stopping)
    and, when the folds stopped on dev, ``epochs`` epochs (every fine-tuning type too)."""
    import copy

    cfg = copy.deepcopy(cfg)
    for sec in [cfg["nnet"]] + [v for v in (cfg.get("finetune_by_type") or {}).values() if v]:
        sec["dev_fraction"], sec["patience"] = 0.0, 0
        if epochs is not None:
            sec["epochs"] = int(epochs)
            sec["head_only_epochs"] = min(int(sec.get("head_only_epochs", 0) or 0), int(epochs))
    return cfg


def input_stats(system: str, train: LabeledSet, emo_dir: Path, cfg: dict) -> dict | None:
    """Mean and std per dimension of an LR system's back-end inputs (x-vectors or
    reference vectors) over its clean training utterances; None for the networks.
    Cross-corpus evaluation can map a target corpus's inputs onto them."""
    spec = system_spec(system)
    clean = [u for u, a in zip(train.utts, train.aug) if not a]
    if spec.method == FROZEN_LR:
        m = Path(cfg["xvector_models"][spec.xvector_model])
        X, _ = load_embeddings([xvector_dir(m, emo_dir, "all") / "xvector.scp"], clean, "final inputs")
    elif spec.method == REFERENCE:
        from .reference import load_vectors
        X, _ = load_vectors(system, [emo_dir / "all"], clean, "final inputs")
    else:
        return None
    return {"mean": X.mean(0).tolist(), "std": X.std(0).tolist(), "n": int(len(X))}


def run_final(system: str, train_data: str, emo_dir: str | Path, out_root: str | Path, cfg: dict,
              use_gpu: bool = False) -> dict:
    """Train ``system`` once on all labelled data into ``<system>_<data>/final/``
    with the folds' settings; no data is held out and nothing is scored.

    LR systems choose C as their folds do without a dev set (speaker-grouped CV on
    the training data). Networks train without dev; where the folds stopped on a
    dev metric, for the median of the epochs the folds kept (the networks' folds
    must have finished). The model goes through the fold's own writer; ``final.json``
    (what it was trained on and how, written last) marks it finished, and
    ``README.txt`` says the same in words. Returns the record.
    """
    spec = system_spec(system)
    emo_dir = Path(emo_dir)
    splits = discover_protocol(emo_dir)
    sdir = system_dir(out_root, system, train_data)
    fdir = sdir / FINAL
    fdir.mkdir(parents=True, exist_ok=True)
    (fdir / FINAL_RECORD).unlink(missing_ok=True)
    with fold_log(fdir / "log" / "train.log"):
        t0 = time.time()
        classes = corpus_classes(emo_dir, splits, cfg.get("classes"))
        train, what = final_training_set(splits, train_data, emo_dir / "all_aug")
        if cfg.get("classes"):
            train = train.subset([i for i, lab in enumerate(train.labels) if lab in classes])
        check_classes(FINAL, train, classes)
        split = Split(FINAL, splits[0].train, splits[0].test)
        rec = {"system": system, "train_data": train_data, "corpus": emo_dir.name, "emo_dir": str(emo_dir),
               "classes": classes, "trained_on": what, "n_train": len(train), "n_train_aug": int(sum(train.aug)),
               "n_speakers": len(train.speakers)}
        if spec.logistic_regression:
            how = "C chosen by speaker-grouped cross-validation on the training data (no dev set is held out)"
            log.info("final %s %s: %d utts (%d augmented) of %d speakers, %s; %s", system, train_data, len(train),
                     sum(train.aug), len(train.speakers), what, how)
            train_system(spec, split, train, None, None, classes, emo_dir, cfg, fdir)
            stats = input_stats(system, train, emo_dir, cfg)
            with atomic_open(fdir / "input_stats.json", "w") as f:
                json.dump(stats, f)
        else:
            epochs, kept = final_epochs(sdir, splits)
            rec["fold_epochs"] = kept
            how = (f"{epochs} epoch(s), the median of the epochs the folds kept on their dev sets "
                   f"({', '.join(f'{k} {v}' for k, v in kept.items())}); no dev set, the last epoch is kept"
                   if epochs is not None else
                   "the folds' epoch count and schedule (they had no dev set); the last epoch is kept")
            if epochs is not None:
                rec["epochs"] = epochs
            log.info("final %s %s: %d utts (%d augmented) of %d speakers, %s; %s", system, train_data, len(train),
                     sum(train.aug), len(train.speakers), what, how)
            train_system(spec, split, train, None, None, classes, emo_dir, _final_nnet_config(cfg, epochs), fdir,
                         use_gpu)
        rec["how"], rec["seconds"] = how, round(time.time() - t0, 1)
        write_lines(fdir / "classes.txt", classes)
        write_lines(fdir / "README.txt", [
            f"Final model of {system} ({train_data} training data) on {emo_dir.name}.",
            f"Trained once on {what}: {len(train)} utterances ({int(sum(train.aug))} augmented copies) of "
            f"{len(train.speakers)} speakers, with the settings of the folds: {how}.",
            "No data was held out, so it has no test figure of its own: the folds beside it are the evaluation.",
            "pyxv emotion and pyxv export use this model when given the system dir."])
        with atomic_open(fdir / FINAL_RECORD, "w") as f:
            json.dump(rec, f, indent=1)
        log.info("final %s %s: done in %.1fs -> %s", system, train_data, rec["seconds"], fdir)
    return rec


def read_predictions(path: str | Path) -> list[tuple[str, str, str]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise ValueError(f"{path}:{n}: expected 'utt true pred', got '{line.strip()}'")
            out.append(tuple(parts))
    return out


def summarize(system: str, train_data: str, emo_dir: str | Path, out_root: str | Path, corpus: str | None = None,
              classes: list[str] | None = None) -> dict:
    """Pool the folds of one system into ``<system>_<data>/summary.json`` (returns it)."""
    emo_dir = Path(emo_dir)
    splits = discover_protocol(emo_dir)
    sdir = system_dir(out_root, system, train_data)
    folds, t_all, p_all = {}, [], []
    for sp in splits:
        mfile = sdir / sp.name / "metrics.json"
        if not mfile.is_file():
            raise FileNotFoundError(f"{mfile} is missing: fold {sp.name} of {system} ({train_data}) did not finish")
        with open(mfile) as f:
            folds[sp.name] = json.load(f)
        for _, t, p in read_predictions(sdir / sp.name / "predictions.txt"):
            t_all.append(t)
            p_all.append(p)
    cfile = sdir / splits[0].name / "classes.txt"
    if classes is None and cfile.is_file():
        classes = [line.strip() for line in open(cfile) if line.strip()]
    labels = classes or folds[splits[0].name]["labels"]
    s = summarize_folds(folds, t_all, p_all, labels, system=system, train_data=train_data,
                        corpus=corpus or emo_dir.name)
    with atomic_open(sdir / "summary.json", "w") as f:
        json.dump(s, f, indent=1)
    return s
