"""Speaker verification by emotion: fit a back-end, score all same-gender trials, write the tables.

  python -m pyxv.bin.score_sv --backend plda --config conf/sv.yaml \
      --backend-train exp/xvector_clean/xvectors_pretrain/train \
      exp/xvector_clean/xvectors_demo/all data/demo/all exp/sv/demo/xvector_clean/plda

  # per-fold protocol: a back-end per fold on its training speakers, trials of its test speakers, pooled
  python -m pyxv.bin.score_sv --backend cosine --config conf/sv.yaml --folds data/ravdess \
      [--emotion-posteriors exp/emotion/ravdess/frozen_lr_clean_clean] \
      exp/xvector_clean/xvectors_ravdess/all data/ravdess/all exp/sv/ravdess/xvector_clean/cosine_folds

Usually run through steps/score_sv.sh. See pyxv.sv for the trial rule, pyxv.sv_folds for the folds.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("score_sv")


def str2bool(v: str) -> bool:
    if v.lower() in ("true", "1", "yes"):
        return True
    if v.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not '{v}'")


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["cosine", "plda"], default="cosine")
    p.add_argument("--config", default="conf/sv.yaml")
    p.add_argument("--backend-train", default="",
                   help="x-vector dir to fit the back-end on; empty: the evaluation set itself (not held out)")
    p.add_argument("--backend-train-data", default="",
                   help="data dir with the back-end training set's utt2spk [derived: "
                        "exp/xvector_M/xvectors_X/Y -> data/X/Y, else <backend-train>/utt2spk]")
    p.add_argument("--backend-in", default="", help="use this fitted back-end (backend.json; an older pyxv's "
                   "pickled backend.pkl only with PYXV_TRUST_PICKLE=1) instead of fitting one")
    p.add_argument("--trials", default="", help="Kaldi trials file to score instead of all same-gender pairs")
    p.add_argument("--skip-unknown", type=str2bool, default=False,
                   help="with --trials: skip trials naming utterances not in the set (default: error)")
    p.add_argument("--symmetric", type=str2bool, default=True,
                   help="with --trials: a trial (a, b) also counts in cell (b, a) [true]")
    p.add_argument("--write-scores", type=str2bool, default=False, help="write <out-dir>/scores")
    p.add_argument("--folds", default="",
                   help="corpus dir with fold<k>/{train,test}: per-fold protocol (back-end per fold on its "
                        "training speakers, trials of its test speakers, tables pooled)")
    p.add_argument("--emotion-posteriors", default="",
                   help="stage-5 emotion system dir (<dir>/<fold>/posteriors): trial-side emotions for the "
                        "emotion-aware pieces from the recogniser instead of utt2emo")
    p.add_argument("--model", default="", help="model name for the tables [from the x-vector dir]")
    p.add_argument("--corpus", default="", help="corpus name for the tables [from the data dir]")
    p.add_argument("xvector_dir")
    p.add_argument("data")
    p.add_argument("out_dir")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    try:
        return run(a)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        log.error("%s", e)
        print(f"score_sv.py: error: {e}", file=sys.stderr)
        return 1


def run(a) -> int:
    import yaml

    from ..backend import Backend
    from ..io import atomic_open, read_table
    from ..sv import load_trial_set, score_all_pairs, score_trials_file, write_results

    t0 = time.time()
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {}
    if a.config:
        if not Path(a.config).is_file():
            raise FileNotFoundError(f"config {a.config} does not exist")
        cfg = yaml.safe_load(open(a.config)) or {}
    notes = []

    utts, X, bad = read_xvectors(a.xvector_dir)
    log.info("read %d x-vectors of dim %d from %s (%d bad skipped)", len(utts), X.shape[1], a.xvector_dir, bad)
    ts = load_trial_set(a.data, available=set(utts))
    for m in ts.messages:
        log.info("%s", m)
        notes.append(m)
    data_utts = set(read_table(Path(a.data) / "utt2spk"))
    extra = len(set(utts) - data_utts)
    if extra:
        log.info("%d x-vector(s) have no utterance in %s (ignored)", extra, a.data)
    pos = {u: i for i, u in enumerate(utts)}
    Xe = X[[pos[u] for u in ts.utts]] if len(ts) else np.zeros((0, X.shape[1]), np.float32)
    n_all, n_tar = ts.count_trials()
    log.info("trial set: %d utterances, %d speakers, genders %s, emotions %s; %d trials (%d target)",
             len(ts), len(ts.speakers), ts.genders, ts.emotions, n_all, n_tar)

    if a.folds:
        return run_folds(a, cfg, utts, X, ts, notes, t0)
    post = None
    if a.emotion_posteriors:
        post = _all_fold_posteriors(a.emotion_posteriors)

    # ---- back-end
    if a.backend_in:
        be = Backend.load(a.backend_in)   # an old pickled backend.pkl only with PYXV_TRUST_PICKLE=1
        log.info("loaded back-end %s", be)
        train_desc = a.backend_in
    else:
        if a.backend_train:
            tutts, TX, tbad = read_xvectors(a.backend_train)
            tdata = Path(a.backend_train_data) if a.backend_train_data else derive_data_dir(a.backend_train)
            if tdata is not None and (tdata / "utt2spk").is_file():
                u2s = read_table(tdata / "utt2spk")
            elif (Path(a.backend_train) / "utt2spk").is_file():
                tdata = Path(a.backend_train)
                u2s = read_table(tdata / "utt2spk")
            else:
                raise FileNotFoundError(f"no utt2spk for the back-end training set {a.backend_train}: looked in "
                                        f"{tdata} and {a.backend_train}; give --backend-train-data")
            keep = [i for i, u in enumerate(tutts) if u in u2s and not u2s[u].startswith("unknown_")]
            if len(keep) < len(tutts):
                log.info("back-end training: %d x-vectors without a known speaker in %s skipped",
                         len(tutts) - len(keep), tdata)
            TX = TX[keep]
            tspk = np.array([u2s[tutts[i]] for i in keep])
            temo, tgen = _train_labels(tdata, [tutts[i] for i in keep], tspk, cfg, a.backend)
            train_desc = a.backend_train
        else:
            TX, tspk = Xe, np.array([ts.speakers[s] for s in ts.spk])
            temo = np.array([ts.emotions[e] for e in ts.emo])
            tgen = np.array([ts.genders[g] for g in ts.gender])
            train_desc = "the evaluation set itself"
            notes.append("back-end fitted on the evaluation set itself (no --backend-train): optimistic")
            log.warning("no --backend-train: fitting the back-end on the evaluation set itself")
        if TX.shape[1] != X.shape[1]:
            raise ValueError(f"back-end training x-vectors have dim {TX.shape[1]}, evaluation ones {X.shape[1]}")
        be = Backend.from_config(cfg, a.backend).fit(TX, tspk, temo, tgen)
        log.info("fitted %s on %d x-vectors of %d speakers (%s); threshold %.4g (EER %.2f%% on training pairs)",
                 be, TX.shape[0], np.unique(tspk).size, train_desc, be.threshold, be.train_eer)
        be.save(out / "backend.json")   # + backend.npz
        (out / "backend.pkl").unlink(missing_ok=True)   # an older pyxv's pickled one: superseded

    # ---- scoring
    emo = None
    if be.needs_trial_emotions and len(ts):
        if post is not None:
            from ..sv_folds import posterior_matrix

            classes, pdict = post
            emo = posterior_matrix(ts.utts, classes, pdict, be.emotions, a.emotion_posteriors)
        else:
            emo = [ts.emotions[k] for k in ts.emo]
    P = be.prepare(Xe, emo) if len(ts) else None
    scores_f = atomic_open(out / "scores") if a.write_scores else None
    try:
        f = scores_f.__enter__() if scores_f else None
        if a.trials:
            table = score_trials_file(a.trials, ts, P, be.score_prepared_pairs, skip_unknown=a.skip_unknown,
                                      symmetric=a.symmetric, scores_out=f)
            if table.info["n_skipped_trials"]:
                msg = (f"{table.info['n_skipped_trials']} trial(s) of {a.trials} skipped: "
                       f"{table.info['n_unknown_utts']} utterance(s) not in the scored set")
                log.info("%s", msg)
                notes.append(msg)
        else:
            if n_all > 20_000_000 and a.write_scores:
                log.warning("writing %d scores as text: this file will be about %.1f GB", n_all, n_all * 45 / 1e9)
            if len(ts) and P is not None:
                table = score_all_pairs(ts, P, be.score_block, block_size=int(cfg.get("block_size", 4096)),
                                        scores_out=f,
                                        max_exact_trials=int(cfg.get("max_exact_trials", 600_000_000)),
                                        hist_bins=int(cfg.get("hist_bins", 1 << 20)))
            else:
                from ..sv import CellTable
                table = CellTable(list(ts.emotions), {}, symmetric=True, info={"n_trials": 0})
        if scores_f:
            scores_f.__exit__(None, None, None)
    except BaseException:
        if scores_f:
            scores_f.__exit__(*sys.exc_info())
        raise
    model = a.model or next((p[len("xvector_"):] for p in Path(a.xvector_dir).parts
                             if p.startswith("xvector_")), Path(a.xvector_dir).name)
    corpus = a.corpus or (Path(a.data).parts[1] if len(Path(a.data).parts) > 2 and Path(a.data).parts[0] == "data"
                          else Path(a.data).name)
    meta = {"backend": a.backend if not a.backend_in else be.kind, "model": model, "corpus": corpus,
            "xvector_dir": str(a.xvector_dir), "data": str(a.data), "backend_train": train_desc,
            "backend_threshold": _num(be.threshold), "backend_train_eer": _num(be.train_eer),
            "n_utts": len(ts), "n_speakers": len(ts.speakers), "genders": ts.genders,
            "skipped_utts": ts.skipped, "trials_file": a.trials or None,
            "score_seconds": round(table.info.get("score_seconds", 0.0), 2),
            "score_mode": table.info.get("mode", "trials file"), "notes": notes}
    summ = write_results(out, table, meta, calibration=be.calibration is not None)
    _log_summary(summ, out, t0)
    return 0


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


def _train_labels(tdata, tutts, tspk, cfg, kind):
    """Emotion and gender labels of the back-end training utterances (None where the data dir has none).

    A back-end that learns from emotions and has no utt2emo for its training data is an error naming the file.
    """
    from ..backend import Backend
    from ..io import read_table

    need = Backend.from_config(cfg, kind).needs_training_emotions
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


def _all_fold_posteriors(sysdir):
    """Union of an emotion system's per-fold posteriors: each utterance from the fold that tested it."""
    from ..sv_folds import read_posteriors

    d = Path(sysdir)
    folds = sorted(p for p in d.iterdir() if p.is_dir() and (p / "posteriors").is_file()) if d.is_dir() else []
    if not folds:
        raise FileNotFoundError(f"{d}: no <fold>/posteriors (run stage 5 for this emotion system)")
    classes, out = None, {}
    for f in folds:
        c, p = read_posteriors(f)
        if classes is not None and c != classes:
            raise ValueError(f"{f}/classes.txt: classes {c} differ from the other folds' {classes}")
        classes = c
        out.update(p)
    return classes, out


NOT_POSSIBLE = "not_possible.txt"   # per-fold mode: one line, why this corpus cannot give per-fold back-ends
RESULT_FILES = ("eer_by_emotion.csv", "eer_by_emotion.md", "summary.json", "det.png", "scores")


def run_folds(a, cfg, utts, X, ts, notes, t0) -> int:
    """Per-fold protocol (pyxv.sv_folds); outputs like the whole-corpus mode, back-ends in backends/.

    Where the corpus cannot give per-fold back-ends with both kinds of trial (PerFoldNotPossible), the
    results of an earlier run are removed, <out-dir>/not_possible.txt says why, and the exit status is 0
    (stage 6 goes on with the plain back-ends).
    """
    from ..backend import Backend
    from ..emotion.data import discover_protocol
    from ..io import read_table
    from ..sv import write_results
    from ..sv_folds import PerFoldNotPossible, plan_sv_folds, score_folds

    if a.backend_in or a.trials or a.backend_train:
        raise ValueError("--folds fits a back-end per fold on the fold's training speakers: it does not combine "
                         "with --backend-in, --trials or --backend-train")
    out = Path(a.out_dir)
    splits = discover_protocol(a.folds)
    corpus = a.corpus or Path(a.folds).name
    labels = {k: read_table(Path(a.data) / k) for k in ("utt2spk", "utt2emo")}
    g = Path(a.data) / "spk2gender"
    labels["spk2gender"] = read_table(g) if g.is_file() else {}
    saved = []

    def make():
        be = Backend.from_config(cfg, a.backend)
        saved.append(be)
        return be
    try:
        folds, merge_notes = plan_sv_folds(splits, set(utts))
        table, infos = score_folds(X, utts, folds, make, labels, posteriors_dir=a.emotion_posteriors or None,
                                   block_size=int(cfg.get("block_size", 4096)))
    except PerFoldNotPossible as e:
        return _not_possible(out, corpus, a, str(e))
    (out / NOT_POSSIBLE).unlink(missing_ok=True)
    (out / "backends").mkdir(exist_ok=True)
    names = {f"{i['fold']}{ext}" for i in infos for ext in (".json", ".npz")}
    for p in [*(out / "backends").glob("*.json"), *(out / "backends").glob("*.npz"), *(out / "backends").glob("*.pkl")]:
        if p.name not in names:   # an earlier run's folds (merged differently), or an older pyxv's pickles
            p.unlink()
    for info, be in zip(infos, saved):
        be.save(out / "backends" / f"{info['fold']}.json")
    calibrated = all(be.calibration is not None for be in saved)
    notes.append(f"per-fold protocol over {len(splits)} folds of {a.folds}: each fold's back-end fitted on its "
                 "training speakers only, trials are all same-gender pairs of its test speakers, cells pooled")
    protocol_notes = list(merge_notes)
    if a.emotion_posteriors and saved[0].needs_trial_emotions:
        notes.append(f"trial-side emotions from the emotion recogniser {a.emotion_posteriors} (per fold)")
        if any(f.merged for f in folds):
            protocol_notes.append("In a merged SV fold each utterance's emotion posteriors come from its own emotion "
                                  "fold's model, which never saw that speaker but may have been trained on the "
                                  "speaker on the other side of the trial")
    for n in protocol_notes:
        log.info("%s", n)
    notes += protocol_notes
    model = a.model or next((p[len("xvector_"):] for p in Path(a.xvector_dir).parts
                             if p.startswith("xvector_")), Path(a.xvector_dir).name)
    meta = {"backend": a.backend, "model": model, "corpus": corpus, "xvector_dir": str(a.xvector_dir),
            "data": str(a.data), "backend_train": "each fold's training speakers", "folds": infos,
            "n_utts": int(sum(i["n_test_utts"] for i in infos)),
            "n_speakers": int(sum(i["n_test_spk"] for i in infos)),
            "score_seconds": round(table.info.get("score_seconds", 0.0), 2), "score_mode": "per fold, exact",
            "protocol_notes": protocol_notes, "notes": notes}
    summ = write_results(out, table, meta, calibration=calibrated)
    _log_summary(summ, out, t0)
    return 0


def _not_possible(out: Path, corpus: str, a, reason: str) -> int:
    """No per-fold results: earlier ones removed (the report must not show them), the reason in the marker."""
    import shutil

    from ..io import atomic_open

    reason = " ".join(reason.split())
    for name in RESULT_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "backends", ignore_errors=True)
    with atomic_open(out / NOT_POSSIBLE) as f:
        f.write(reason + "\n")
    log.warning("%s: per-fold back-ends not possible (%s, %s): %s; only the plain back-ends are scored",
                corpus, a.config, a.folds, reason)
    return 0


def _num(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _f(x, nd=2):
    return "n/a" if x is None else f"{x:.{nd}f}"


if __name__ == "__main__":
    sys.exit(main())
