"""The scoring runs of stage 6 (``steps/score_sv.sh`` -> ``pyxv.bin.score_sv``).

``run(job)`` reads the x-vectors and the data dir's trial set, then either fits
one back-end (or loads ``--backend-in``) and scores all same-gender pairs or a
trials file, or, with ``job.folds``, hands over to ``run_folds``: a back-end per
fold of the corpus's protocol (``pyxv.sv.folds``). Both write the same outputs
(``pyxv.sv.results``) into ``job.out_dir``.

Messages go to the ``score_sv`` logger: the step's log, whose summary lines
``steps/score_sv.sh`` prints.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..backend import Backend
from ..emotion.data import discover_protocol
from ..io import atomic_open, read_table
from .cells import CellTable
from .config import load_sv_config
from .folds import PerFoldNotPossible, plan_sv_folds, score_folds
from .posteriors import posterior_matrix, read_all_fold_posteriors
from .results import json_number, write_results
from .scoring import score_all_pairs, score_trials_file
from .trials import TrialSet, load_trial_set

log = logging.getLogger("score_sv")

__all__ = ["ScoringJob", "run", "run_folds", "read_xvectors", "derive_data_dir", "NOT_POSSIBLE", "RESULT_FILES"]

NOT_POSSIBLE = "not_possible.txt"   # per-fold mode: one line, why this corpus cannot give per-fold back-ends
RESULT_FILES = ("eer_by_emotion.csv", "eer_by_emotion.md", "summary.json", "det.png", "scores")


@dataclass
class ScoringJob:
    """One scoring run: what ``pyxv.bin.score_sv``'s options say (empty strings: not given)."""
    xvector_dir: str
    data: str
    out_dir: str
    backend: str = "cosine"
    config: str = "conf/sv.yaml"
    backend_train: str = ""
    backend_train_data: str = ""
    backend_in: str = ""
    trials: str = ""
    skip_unknown: bool = False
    symmetric: bool = True
    write_scores: bool = False
    folds: str = ""
    emotion_posteriors: str = ""
    model: str = ""
    corpus: str = ""


def derive_data_dir(xvector_dir: str) -> Path | None:
    """exp/xvector_<m>/xvectors_<x>/<y> -> data/<x>/<y> (the recipe's naming rule)."""
    parts = Path(xvector_dir).parts
    for k, p in enumerate(parts):
        if p.startswith("xvectors_") and len(p) > len("xvectors_"):
            return Path("data", p[len("xvectors_"):], *parts[k + 1:])
    return None


def read_xvectors(xdir: str | Path) -> tuple[list[str], np.ndarray, int]:
    """(utts, X (N, D) float32, number of bad vectors skipped) from <xdir>/xvector.scp."""
    import kaldiio

    scp = Path(xdir) / "xvector.scp"
    if not scp.is_file():
        raise FileNotFoundError(f"{scp} does not exist (extract x-vectors first, stage 4)")
    utts, vecs, bad, dim = [], [], 0, None
    for utt, v in kaldiio.load_scp_sequential(str(scp)):
        v = np.asarray(v, dtype=np.float32).ravel()
        if dim is None:
            dim = v.size
        if v.size != dim or not np.all(np.isfinite(v)):
            log.warning("%s: x-vector of %s skipped (%s)", scp, utt,
                        f"dim {v.size} != {dim}" if v.size != dim else "NaN/inf values")
            bad += 1
            continue
        utts.append(utt)
        vecs.append(v)
    if not vecs:
        raise ValueError(f"{scp}: no usable x-vectors")
    return utts, np.stack(vecs), bad


def run(job: ScoringJob) -> int:
    """Score ``job`` and write its tables; 0 on success (errors are raised)."""
    t0 = time.time()
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_sv_config(job.config or None)
    notes = []

    utts, X, bad = read_xvectors(job.xvector_dir)
    log.info("read %d x-vectors of dim %d from %s (%d bad skipped)", len(utts), X.shape[1], job.xvector_dir, bad)
    ts = load_trial_set(job.data, available=set(utts))
    for m in ts.messages:
        log.info("%s", m)
        notes.append(m)
    data_utts = set(read_table(Path(job.data) / "utt2spk"))
    extra = len(set(utts) - data_utts)
    if extra:
        log.info("%d x-vector(s) have no utterance in %s (ignored)", extra, job.data)
    pos = {u: i for i, u in enumerate(utts)}
    Xe = X[[pos[u] for u in ts.utts]] if len(ts) else np.zeros((0, X.shape[1]), np.float32)
    n_all, n_tar = ts.count_trials()
    log.info("trial set: %d utterances, %d speakers, genders %s, emotions %s; %d trials (%d target)",
             len(ts), len(ts.speakers), ts.genders, ts.emotions, n_all, n_tar)

    if job.folds:
        return run_folds(job, cfg, utts, X, notes, t0)
    post = read_all_fold_posteriors(job.emotion_posteriors) if job.emotion_posteriors else None
    be, train_desc = _backend(job, cfg, ts, Xe, X.shape[1], notes, out)
    table = _score(job, cfg, ts, be, Xe, post, n_all, notes, out)
    meta = {"backend": job.backend if not job.backend_in else be.kind, "model": _model_name(job),
            "corpus": job.corpus or _corpus_name(job.data),
            "xvector_dir": str(job.xvector_dir), "data": str(job.data), "backend_train": train_desc,
            "backend_threshold": json_number(be.threshold), "backend_train_eer": json_number(be.train_eer),
            "n_utts": len(ts), "n_speakers": len(ts.speakers), "genders": ts.genders,
            "skipped_utts": ts.skipped, "trials_file": job.trials or None,
            "score_seconds": round(table.info.get("score_seconds", 0.0), 2),
            "score_mode": table.info.get("mode", "trials file"), "notes": notes}
    summ = write_results(out, table, meta, calibration=be.calibration is not None)
    _log_summary(summ, out, t0)
    return 0


def _backend(job: ScoringJob, cfg: dict, ts: TrialSet, Xe: np.ndarray, dim: int, notes: list[str],
             out: Path) -> tuple[Backend, str]:
    """The back-end to score with: ``job.backend_in`` loaded, or one fitted (and saved in ``out``); and
    the words that say what it was fitted on."""
    if job.backend_in:
        be = Backend.load(job.backend_in)   # an old pickled backend.pkl only with PYXV_TRUST_PICKLE=1
        log.info("loaded back-end %s", be)
        return be, job.backend_in
    be = Backend.from_config(cfg, job.backend)
    if job.backend_train:
        tutts, TX, tbad = read_xvectors(job.backend_train)
        tdata = Path(job.backend_train_data) if job.backend_train_data else derive_data_dir(job.backend_train)
        if tdata is not None and (tdata / "utt2spk").is_file():
            u2s = read_table(tdata / "utt2spk")
        elif (Path(job.backend_train) / "utt2spk").is_file():
            tdata = Path(job.backend_train)
            u2s = read_table(tdata / "utt2spk")
        else:
            raise FileNotFoundError(f"no utt2spk for the back-end training set {job.backend_train}: looked in "
                                    f"{tdata} and {job.backend_train}; give --backend-train-data")
        keep = [i for i, u in enumerate(tutts) if u in u2s and not u2s[u].startswith("unknown_")]
        if len(keep) < len(tutts):
            log.info("back-end training: %d x-vectors without a known speaker in %s skipped",
                     len(tutts) - len(keep), tdata)
        TX = TX[keep]
        tspk = np.array([u2s[tutts[i]] for i in keep])
        temo, tgen = _train_labels(tdata, [tutts[i] for i in keep], tspk, be.needs_training_emotions)
        train_desc = job.backend_train
    else:
        TX, tspk = Xe, np.array([ts.speakers[s] for s in ts.spk])
        temo = np.array([ts.emotions[e] for e in ts.emo])
        tgen = np.array([ts.genders[g] for g in ts.gender])
        train_desc = "the evaluation set itself"
        notes.append("back-end fitted on the evaluation set itself (no --backend-train): optimistic")
        log.warning("no --backend-train: fitting the back-end on the evaluation set itself")
    if TX.shape[1] != dim:
        raise ValueError(f"back-end training x-vectors have dim {TX.shape[1]}, evaluation ones {dim}")
    be.fit(TX, tspk, temo, tgen)
    log.info("fitted %s on %d x-vectors of %d speakers (%s); threshold %.4g (EER %.2f%% on training pairs)",
             be, TX.shape[0], np.unique(tspk).size, train_desc, be.threshold, be.train_eer)
    be.save(out / "backend.json")   # + backend.npz
    (out / "backend.pkl").unlink(missing_ok=True)   # an older pyxv's pickled one: superseded
    return be, train_desc


def _score(job: ScoringJob, cfg: dict, ts: TrialSet, be: Backend, Xe: np.ndarray, post, n_all: int,
           notes: list[str], out: Path) -> CellTable:
    """The trial set's table: a trials file's trials, or all same-gender pairs (``<out>/scores`` if asked)."""
    emo = None
    if be.needs_trial_emotions and len(ts):
        if post is not None:
            classes, pdict = post
            emo = posterior_matrix(ts.utts, classes, pdict, be.emotions, job.emotion_posteriors)
        else:
            emo = [ts.emotions[k] for k in ts.emo]
    P = be.prepare(Xe, emo) if len(ts) else None
    with atomic_open(out / "scores") if job.write_scores else contextlib.nullcontext() as f:
        if job.trials:
            table = score_trials_file(job.trials, ts, P, be.score_prepared_pairs, skip_unknown=job.skip_unknown,
                                      symmetric=job.symmetric, scores_out=f)
            if table.info["n_skipped_trials"]:
                msg = (f"{table.info['n_skipped_trials']} trial(s) of {job.trials} skipped: "
                       f"{table.info['n_unknown_utts']} utterance(s) not in the scored set")
                log.info("%s", msg)
                notes.append(msg)
            return table
        if n_all > 20_000_000 and job.write_scores:
            log.warning("writing %d scores as text: this file will be about %.1f GB", n_all, n_all * 45 / 1e9)
        if not len(ts) or P is None:
            return CellTable(list(ts.emotions), {}, symmetric=True, info={"n_trials": 0})
        return score_all_pairs(ts, P, be.score_block, block_size=cfg["block_size"], scores_out=f,
                               max_exact_trials=cfg["max_exact_trials"], hist_bins=cfg["hist_bins"])


def _model_name(job: ScoringJob) -> str:
    """--model, else <m> of an exp/xvector_<m>/... x-vector dir, else the dir's name."""
    return job.model or next((p[len("xvector_"):] for p in Path(job.xvector_dir).parts
                              if p.startswith("xvector_")), Path(job.xvector_dir).name)


def _corpus_name(data: str) -> str:
    """<x> of a data/<x>/<y> data dir, else the dir's name."""
    parts = Path(data).parts
    return parts[1] if len(parts) > 2 and parts[0] == "data" else Path(data).name


def _log_summary(summ, out, t0):
    log.info("EER %s%%, minDCF(0.01) %s, minDCF(0.001) %s over %d target / %d nontarget trials",
             _f(summ["eer"]), _f(summ["min_dcf_0.01"], 3), _f(summ["min_dcf_0.001"], 3),
             summ["n_target"], summ["n_nontarget"])
    log.info("same-emotion mean EER %s%%, cross-emotion mean EER %s%%", _f(summ["same_emotion_mean_eer"]),
             _f(summ["cross_emotion_mean_eer"]))
    if summ.get("cllr") is not None:
        log.info("calibration: Cllr %.3f, min Cllr %.3f, actual DCF(0.01) %.3f", summ["cllr"], summ["min_cllr"],
                 summ["act_dcf_0.01"])
    print((out / "eer_by_emotion.md").read_text().split("**minDCF")[0])
    log.info("wrote %s in %.1fs", out, time.time() - t0)


def _train_labels(tdata, tutts, tspk, need: bool):
    """Emotion and gender labels of the back-end training utterances (None where the data dir has none).

    ``need``: the back-end learns from emotions; then no utt2emo for its training data is an error naming the file.
    """
    emo = None
    f = Path(tdata) / "utt2emo"
    if f.is_file():
        u2e = read_table(f)
        lab = [u2e.get(u, "").split()[0] if u2e.get(u) else "" for u in tutts]
        missing = [u for u, e in zip(tutts, lab) if not e]
        if missing and need:
            raise ValueError(f"{f}: {len(missing)} back-end training utterance(s) have no emotion label, e.g. "
                             f"{', '.join(missing[:5])} (the emotion projection, emotion-aware AS-norm and "
                             "emotion-conditioned calibration learn from them)")
        emo = np.array(lab) if not missing else None
    elif need:
        raise ValueError(f"{f} does not exist: the back-end's emotion-aware pieces (conf nap / asnorm.emotion_aware"
                         " / calibration.by_emotion) need emotion labels of the back-end training data")
    gen = None
    g = Path(tdata) / "spk2gender"
    if g.is_file():
        s2g = read_table(g)
        gen = np.array([s2g.get(s, "unknown") for s in tspk])
    return emo, gen


def run_folds(job: ScoringJob, cfg: dict, utts: list[str], X: np.ndarray, notes: list[str], t0: float) -> int:
    """Per-fold protocol (pyxv.sv.folds); outputs like the whole-corpus mode, back-ends in backends/.

    Where the corpus cannot give per-fold back-ends with both kinds of trial (PerFoldNotPossible), the
    results of an earlier run are removed, <out-dir>/not_possible.txt says why, and the exit status is 0
    (stage 6 goes on with the plain back-ends).
    """
    if job.backend_in or job.trials or job.backend_train:
        raise ValueError("--folds fits a back-end per fold on the fold's training speakers: it does not combine "
                         "with --backend-in, --trials or --backend-train")
    out = Path(job.out_dir)
    splits = discover_protocol(job.folds)
    corpus = job.corpus or Path(job.folds).name
    labels = {k: read_table(Path(job.data) / k) for k in ("utt2spk", "utt2emo")}
    g = Path(job.data) / "spk2gender"
    labels["spk2gender"] = read_table(g) if g.is_file() else {}
    saved = []

    def make():
        be = Backend.from_config(cfg, job.backend)
        saved.append(be)
        return be
    try:
        folds, merge_notes = plan_sv_folds(splits, set(utts))
        table, infos = score_folds(X, utts, folds, make, labels, posteriors_dir=job.emotion_posteriors or None,
                                   block_size=cfg["block_size"])
    except PerFoldNotPossible as e:
        return _not_possible(out, corpus, job, str(e))
    (out / NOT_POSSIBLE).unlink(missing_ok=True)
    (out / "backends").mkdir(exist_ok=True)
    names = {f"{i['fold']}{ext}" for i in infos for ext in (".json", ".npz")}
    for p in [*(out / "backends").glob("*.json"), *(out / "backends").glob("*.npz"), *(out / "backends").glob("*.pkl")]:
        if p.name not in names:   # an earlier run's folds (merged differently), or an older pyxv's pickles
            p.unlink()
    for info, be in zip(infos, saved):
        be.save(out / "backends" / f"{info['fold']}.json")
    calibrated = all(be.calibration is not None for be in saved)
    notes.append(f"per-fold protocol over {len(splits)} folds of {job.folds}: each fold's back-end fitted on its "
                 "training speakers only, trials are all same-gender pairs of its test speakers, cells pooled")
    protocol_notes = list(merge_notes)
    if job.emotion_posteriors and saved[0].needs_trial_emotions:
        notes.append(f"trial-side emotions from the emotion recogniser {job.emotion_posteriors} (per fold)")
        if any(f.merged for f in folds):
            protocol_notes.append("In a merged SV fold each utterance's emotion posteriors come from its own emotion "
                                  "fold's model, which never saw that speaker but may have been trained on the "
                                  "speaker on the other side of the trial")
    for n in protocol_notes:
        log.info("%s", n)
    notes += protocol_notes
    meta = {"backend": job.backend, "model": _model_name(job), "corpus": corpus, "xvector_dir": str(job.xvector_dir),
            "data": str(job.data), "backend_train": "each fold's training speakers", "folds": infos,
            "n_utts": int(sum(i["n_test_utts"] for i in infos)),
            "n_speakers": int(sum(i["n_test_spk"] for i in infos)),
            "score_seconds": round(table.info.get("score_seconds", 0.0), 2), "score_mode": "per fold, exact",
            "protocol_notes": protocol_notes, "notes": notes}
    summ = write_results(out, table, meta, calibration=calibrated)
    _log_summary(summ, out, t0)
    return 0


def _not_possible(out: Path, corpus: str, job: ScoringJob, reason: str) -> int:
    """No per-fold results: earlier ones removed (the report must not show them), the reason in the marker."""
    reason = " ".join(reason.split())
    for name in RESULT_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "backends", ignore_errors=True)
    with atomic_open(out / NOT_POSSIBLE) as f:
        f.write(reason + "\n")
    log.warning("%s: per-fold back-ends not possible (%s, %s): %s; only the plain back-ends are scored",
                corpus, job.config, job.folds, reason)
    return 0


def _f(x, nd=2):
    return "n/a" if x is None else f"{x:.{nd}f}"
