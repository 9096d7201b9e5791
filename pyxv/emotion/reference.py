"""Two reference systems of Table 2, so every report shows whether an x-vector
system beats a trivial baseline on the same folds:

    ref_egemaps_lr    the 88 eGeMAPSv02 functionals of each utterance (openSMILE,
                      stage 2's ``gemaps.scp``) + logistic regression
    ref_mfccstats_lr  mean and standard deviation over the VAD-voiced frames of the
                      plain 23-dim MFCC (stage 2's ``feats.scp`` and ``vad.scp``; no
                      CMN, so the mean keeps the channel and timbre) + logistic regression

Each vector dimension is standardised with the fold's training mean and std (the
features mix Hz, dB and ratios), then an LR is fitted (:class:`pyxv.emotion.lr.StandardizedLR`)
exactly as for the frozen x-vector systems: same C grid, C chosen by weighted F1 on
the dev set when the protocol has one, else by speaker-grouped CV on the training
data; balanced class weights. The x-vector pre-processing (centring, whitening/LDA,
length normalisation) is not applied: it is for embeddings, not for standardised
hand-crafted features. Training on 'clean+aug' data reads the augmented copies'
vectors from ``<emo>/all_aug``, like the other systems.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

# StandardizedLR lives in .lr; imported here too, an older pyxv's pickled model.pkl names it
# pyxv.emotion.reference.StandardizedLR (read with trust, e.g. by pyxv.bin.convert_models).
from .lr import StandardizedLR, save_lr_model
from .spec import EGEMAPS, MFCC_STATS, REFERENCE_SYSTEMS, system_spec

log = logging.getLogger("pyxv.emotion")

# Fewer voiced frames than this: the statistics are taken over every frame instead.
MIN_VOICED_FRAMES = 10


def mfcc_stats(feats: np.ndarray, vad: np.ndarray, min_voiced: int = MIN_VOICED_FRAMES,
               what: str = "utterance") -> np.ndarray:
    """(T, D) MFCC and (T,) VAD decisions -> (2D,) [mean, std] over the voiced frames
    (over all frames when fewer than ``min_voiced`` are voiced)."""
    feats = np.asarray(feats, dtype=np.float64)
    vad = np.asarray(vad).reshape(-1)
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise ValueError(f"{what}: MFCC must be a non-empty (frames, dims) matrix, got shape {feats.shape}")
    if len(vad) != len(feats):
        raise ValueError(f"{what}: {len(feats)} MFCC frames but {len(vad)} VAD decisions")
    voiced = vad > 0.5
    f = feats[voiced] if voiced.sum() >= min_voiced else feats
    return np.concatenate([f.mean(0), f.std(0)])


def _scp(path: Path, stage: str) -> dict:
    import kaldiio

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (run {stage})")
    return kaldiio.load_scp(str(path))


def feature_files(system: str, data_dir: str | Path) -> list[Path]:
    """The scp files a reference system reads from one data dir (all/ or all_aug/)."""
    d = Path(data_dir)
    features = system_spec(system).features if system in REFERENCE_SYSTEMS else None
    if features == EGEMAPS:
        return [d / "gemaps.scp"]
    if features == MFCC_STATS:
        return [d / "feats.scp", d / "vad.scp"]
    raise ValueError(f"unknown reference system '{system}' (one of {', '.join(REFERENCE_SYSTEMS)})")


def reference_inputs(system: str, emo_dir: str | Path, aug: bool) -> list[tuple[Path, str]]:
    """Files the system reads, each with the stage that makes it (for steps/train_emotion.sh)."""
    subs = ("all", "all_aug") if aug else ("all",)
    return [(f, "stage 2, features") for s in subs for f in feature_files(system, Path(emo_dir) / s)]


def load_vectors(system: str, data_dirs: list[Path], utts: list[str], what: str) -> tuple[np.ndarray, list[int]]:
    """One reference vector per utterance of ``utts``, looked up in the data dirs in
    order; utterances without features are reported and skipped. Returns the (N', D)
    array and the kept indices."""
    tables = [[_scp(f, "stage 2, features") for f in feature_files(system, d)] for d in data_dirs]
    functionals = system_spec(system).features == EGEMAPS   # else MFCC frames + VAD, made into statistics here
    keep, rows, missing = [], [], []
    for i, u in enumerate(utts):
        t = next((t for t in tables if all(u in x for x in t)), None)
        if t is None:
            missing.append(u)
            continue
        where = f"{what}: utterance {u}"
        if functionals:
            v = np.asarray(t[0][u], dtype=np.float64).reshape(-1)
        else:
            v = mfcc_stats(t[0][u], t[1][u], what=where)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{where}: {system} vector has non-finite values")
        if rows and len(v) != len(rows[0]):
            raise ValueError(f"{where}: {len(v)}-dim {system} vector, earlier ones have {len(rows[0])}")
        keep.append(i)
        rows.append(v)
    if missing:
        log.warning("%s: %d utterance(s) have no %s features and are skipped, e.g. %s", what, len(missing),
                    system, missing[:3])
    if not rows:
        raise ValueError(f"{what}: no utterance has {system} features in "
                         + ", ".join(str(f) for d in data_dirs for f in feature_files(system, d)))
    return np.stack(rows), keep


def run_reference(system: str, split, train, dev, test, classes: list[str], emo_dir: Path, cfg: dict,
                  fold_dir: Path):
    """One fold of a reference system (the frozen systems' signature, see
    :func:`pyxv.emotion.systems.run_fold`). Returns (test set scored, posteriors (N, C))."""
    emo_dir = Path(emo_dir)
    dirs = [emo_dir / "all"] + ([emo_dir / "all_aug"] if any(train.aug) else [])
    Xtr, ktr = load_vectors(system, dirs, train.utts, f"{split.name} train")
    train = train.subset(ktr)
    Xte = None
    if test is not None:   # None: a final model, nothing to score
        Xte, kte = load_vectors(system, dirs[:1], test.utts, f"{split.name} test")
        test = test.subset(kte)
    Xdev = ydev = None
    if dev is not None:
        Xdev, kdev = load_vectors(system, dirs[:1], dev.utts, f"{split.name} dev")
        ydev = [dev.labels[i] for i in kdev]
    model = StandardizedLR(classes, cfg["lr"], seed=cfg["seed"])
    log.info("%s: %s LR on %d %d-dim vectors (%d augmented)", split.name, system, len(train), Xtr.shape[1],
             sum(train.aug))
    model.fit(Xtr, train.labels, groups=train.spks, X_dev=Xdev, y_dev=ydev)
    save_lr_model(fold_dir, model, {"type": "reference_lr", "system": system, "classes": classes})
    return test, (model.predict_proba(Xte) if Xte is not None else None)
