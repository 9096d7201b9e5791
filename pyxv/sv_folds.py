"""Speaker verification by emotion on a corpus's speaker-disjoint folds.

For each fold of the protocol (``<emo>/fold<k>/{train,test}``, see
``pyxv.emotion.data.discover_protocol``) a back-end is fitted on the fold's
training speakers only (pre-processing, emotion projection, PLDA, AS-norm
cohorts, calibration), and all same-gender pairs of the fold's test speakers
are scored. The per-cell scores of the folds are pooled into one table.

Trial-side emotions for the emotion-aware pieces come from labels (utt2emo) or
from the recipe's emotion recogniser: ``exp/emotion/<corpus>/<system>/<fold>/``
holds ``posteriors`` and ``classes.txt`` for that fold's test utterances, from
a model trained on the fold's training speakers only.

Every fold checks that no test speaker is among the speakers any trained piece
saw (the back-end's ``train_speakers``, and the emotion model's test list).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np

from .io import read_table
from .sv import CellTable, load_trial_set, order_emotions, score_all_pairs

log = logging.getLogger(__name__)

__all__ = ["ProtocolLeak", "assert_no_test_speaker", "merge_tables", "read_posteriors", "posterior_matrix",
           "score_folds"]


class ProtocolLeak(RuntimeError):
    """A test speaker reached a trained piece."""


def assert_no_test_speaker(fold: str, piece: str, trained_speakers, test_speakers) -> None:
    """Raise ProtocolLeak naming the speakers when ``piece`` was trained on any test speaker."""
    shared = sorted(set(trained_speakers) & set(test_speakers))
    if shared:
        raise ProtocolLeak(f"{fold}: test speaker(s) {', '.join(shared[:5])} reached the {piece}: the protocol "
                           "would not be speaker-independent")


def merge_tables(tables: list[CellTable]) -> CellTable:
    """Pool symmetric exact-mode tables (cells matched by emotion name) into one."""
    emotions = order_emotions({e for t in tables for e in t.emotions})
    pos = {e: i for i, e in enumerate(emotions)}
    parts: dict = {}
    for t in tables:
        if not t.symmetric:
            raise ValueError("merge_tables pools all-pairs tables only (not trials-file tables)")
        for (a, b), (tar, non) in t.cells.items():
            if not isinstance(non, np.ndarray):
                raise ValueError("merge_tables needs exact scores (a fold's trials went to histograms)")
            i, j = sorted((pos[t.emotions[a]], pos[t.emotions[b]]))
            parts.setdefault((i, j), ([], []))
            parts[(i, j)][0].append(tar)
            parts[(i, j)][1].append(non)
    cells = {k: (np.sort(np.concatenate(v[0])), np.sort(np.concatenate(v[1]))) for k, v in parts.items()}
    info = {"n_trials": int(sum(t.info.get("n_trials", 0) for t in tables)),
            "score_seconds": float(sum(t.info.get("score_seconds", 0.0) for t in tables)), "mode": "exact"}
    return CellTable(emotions, cells, symmetric=True, info=info)


def read_posteriors(fold_dir) -> tuple[list[str], dict[str, np.ndarray]]:
    """(classes, {utt: (C,) probabilities}) from an emotion system's fold dir (posteriors + classes.txt)."""
    d = Path(fold_dir)
    for f in ("posteriors", "classes.txt"):
        if not (d / f).is_file():
            raise FileNotFoundError(f"{d / f} does not exist (run stage 5 for this emotion system)")
    classes = [ln.split()[0] for ln in open(d / "classes.txt", encoding="utf-8") if ln.strip()]
    out = {}
    with open(d / "posteriors", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            p = line.split()
            if not p:
                continue
            if len(p) != len(classes) + 1:
                raise ValueError(f"{d / 'posteriors'}:{n}: expected the utterance and {len(classes)} "
                                 f"probabilities ({' '.join(classes)}), got {len(p) - 1} numbers")
            try:
                out[p[0]] = np.array([float(x) for x in p[1:]])
            except ValueError:
                raise ValueError(f"{d / 'posteriors'}:{n}: not a number in '{line.strip()}'") from None
    return classes, out


def posterior_matrix(utts, classes: list[str], post: dict, emotions: list[str], where: str) -> np.ndarray:
    """(N, E) posteriors of ``utts`` over the back-end's ``emotions`` (columns matched by name).

    Errors name the utterances without posteriors and the classes the back-end does not know.
    """
    missing = [u for u in utts if u not in post]
    if missing:
        raise ValueError(f"{where}: {len(missing)} trial utterance(s) have no emotion posteriors, e.g. "
                         f"{', '.join(missing[:5])}")
    extra = [c for c in classes if c not in emotions]
    if extra:
        raise ValueError(f"{where}: the emotion model's classes {extra} are not among the back-end training "
                         f"data's emotions {emotions}")
    P = np.zeros((len(utts), len(emotions)))
    cols = [emotions.index(c) for c in classes]
    for i, u in enumerate(utts):
        P[i, cols] = post[u]
    return P


def score_folds(X, utts, splits, make_backend: Callable, labels: dict, *, posteriors_dir=None,
                block_size: int = 4096) -> tuple[CellTable, list[dict]]:
    """Fit a back-end per fold on its training speakers, score all same-gender pairs of its test speakers.

    X (N, D) embeddings of ``utts``; splits: ``discover_protocol`` splits; make_backend() -> an unfitted
    Backend; labels: {"utt2spk", "utt2emo", "spk2gender"} dicts of the whole corpus;
    posteriors_dir: an emotion system's dir (``<dir>/<fold>/posteriors``) for the trial sides' emotions,
    else the trial utterances' emotion labels are used.
    Returns (pooled table, per-fold info dicts).
    """
    pos = {u: i for i, u in enumerate(utts)}
    u2s, u2e, s2g = labels["utt2spk"], labels["utt2emo"], labels.get("spk2gender") or {}
    tables, infos = [], []
    for sp in splits:
        train_utts = [u for u in read_table(sp.train / "utt2spk") if u in pos]
        tr_spk = np.array([u2s[u] for u in train_utts])
        ts = load_trial_set(sp.test, available=set(pos))
        test_speakers = set(ts.speakers)
        assert_no_test_speaker(sp.name, "back-end training data", tr_spk.tolist(), test_speakers)
        if sp.dev is not None:
            log.info("%s: dev set %s not used by the SV back-end", sp.name, sp.dev)
        tr_emo = np.array([u2e.get(u, "") for u in train_utts])
        tr_gen = np.array([s2g.get(s, "all") for s in tr_spk])
        be = make_backend()
        # Missing labels go in as "" when the back-end learns from emotions: its error then counts them.
        be.fit(X[[pos[u] for u in train_utts]], tr_spk,
               tr_emo if all(tr_emo) or be.needs_training_emotions else None, tr_gen)
        assert_no_test_speaker(sp.name, "fitted back-end", be.train_speakers, test_speakers)
        emo = None
        if be.needs_trial_emotions:
            if posteriors_dir is not None:
                classes, post = read_posteriors(Path(posteriors_dir) / sp.name)
                # The emotion model of this fold must have had these utterances as its test set.
                not_test = sorted(set(post) - set(read_table(sp.test / "utt2spk")))
                if not_test:
                    raise ProtocolLeak(f"{sp.name}: {Path(posteriors_dir) / sp.name / 'posteriors'} has utterances "
                                       f"outside the fold's test set ({', '.join(not_test[:3])}): not this "
                                       "fold's emotion model")
                emo = posterior_matrix(ts.utts, classes, post, be.emotions, f"{posteriors_dir}/{sp.name}")
            else:
                emo = [ts.emotions[k] for k in ts.emo]
        P = be.prepare(X[[pos[u] for u in ts.utts]], emo)
        table = score_all_pairs(ts, P, be.score_block, block_size=block_size, max_exact_trials=1 << 62)
        tables.append(table)
        infos.append({"fold": sp.name, "n_train_utts": len(train_utts), "n_train_spk": int(np.unique(tr_spk).size),
                      "n_test_utts": len(ts), "n_test_spk": len(ts.speakers), "n_trials": table.info["n_trials"],
                      "backend": dict(be.info)})
        log.info("%s: back-end fitted on %d utts of %d speakers; %d trials of %d test speakers", sp.name,
                 len(train_utts), np.unique(tr_spk).size, table.info["n_trials"], len(ts.speakers))
    if not tables:
        raise ValueError("no folds to score")
    return merge_tables(tables), infos
