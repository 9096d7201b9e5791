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

Trials are same-gender pairs, so an emotion fold whose test speakers hold no two
of one gender (a small corpus: 2 test speakers, one of each gender) has no
nontarget trial. ``plan_sv_folds`` then gives the SV protocol folds of its own:
whole emotion folds merged, in fold order, until each SV fold's test speakers
hold such a pair; a merged fold's back-end is fitted on the utterances in every
member's training list (the speakers outside all of them). Each trial side's
emotion posteriors still come from its own emotion fold's model. Where no
merging can give both kinds of trial, ``PerFoldNotPossible`` says why.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..backend.pipeline import CalibrationError
from ..io import read_table
from .cells import CellTable, merge_tables
from .posteriors import posterior_matrix, read_posteriors
from .scoring import BLOCK_SIZE, score_all_pairs
from .trials import TrialSet, load_trial_set, trial_set_from_labels

log = logging.getLogger(__name__)

__all__ = ["PerFoldNotPossible", "ProtocolLeak", "SVFold", "assert_no_test_speaker", "plan_sv_folds",
           "score_folds"]


class ProtocolLeak(RuntimeError):
    """A test speaker reached a trained piece."""


class PerFoldNotPossible(ValueError):
    """The corpus cannot give per-fold back-ends with target and nontarget trials; the message says why."""


@dataclass
class SVFold:
    """Test speakers scored by one back-end: one emotion fold, or whole emotion folds merged (``splits``)."""
    name: str
    splits: list            # the emotion folds (emotion.data.Split) whose test sets it pools
    trials: TrialSet        # their test utterances that take part in trials
    train_utts: list[str]   # utterances (with an x-vector) in every member's training list

    @property
    def merged(self) -> bool:
        return len(self.splits) > 1


def _speakers_by_gender(tsets) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for ts in tsets:
        for s, g in zip(ts.spk.tolist(), ts.gender.tolist()):
            out.setdefault(ts.genders[g], set()).add(ts.speakers[s])
    return out


def _has_same_gender_pair(tsets) -> bool:
    return any(len(v) >= 2 for v in _speakers_by_gender(tsets).values())


def _describe(by_gender: dict[str, set[str]]) -> str:
    return ", ".join(f"{s} ({g})" for g in sorted(by_gender) for s in sorted(by_gender[g])) or "none"


def _merge_trial_sets(tsets: list[TrialSet]) -> TrialSet:
    """One TrialSet of several folds' test sets (their utterances are disjoint)."""
    utts, spk, gen, emo = [], [], [], []
    for ts in tsets:
        utts += ts.utts
        spk += [ts.speakers[i] for i in ts.spk.tolist()]
        gen += [ts.genders[i] for i in ts.gender.tolist()]
        emo += [ts.emotions[i] for i in ts.emo.tolist()]
    order = sorted(range(len(utts)), key=lambda i: utts[i].encode())  # load_trial_set's utterance order
    merged = trial_set_from_labels(np.array([spk[i] for i in order]), np.array([gen[i] for i in order]),
                                   np.array([emo[i] for i in order]), [utts[i] for i in order])
    for ts in tsets:
        for k, v in ts.skipped.items():
            merged.skipped[k] = merged.skipped.get(k, 0) + v
        merged.messages += ts.messages
    return merged


def _train_utts(members, available) -> tuple[list[str], int]:
    """Utterances in every member fold's training list (with an x-vector), and their number of speakers."""
    u2s = read_table(members[0].train / "utt2spk")
    train = [u for u in u2s if available is None or u in available]
    for sp in members[1:]:
        other = set(read_table(sp.train / "utt2spk"))
        train = [u for u in train if u in other]
    return train, len({u2s[u] for u in train})


def plan_sv_folds(splits, available=None) -> tuple[list[SVFold], list[str]]:
    """SV folds from the emotion folds ``splits``, and notes on what was merged or left out.

    Folds are taken in order; one whose test speakers (those in trials: ``load_trial_set`` with
    ``available`` utterances) have no two of the same gender is pooled with the next ones until the
    pool has such a pair. A pool left over at the end joins the last SV fold, unless that would leave
    it fewer than 2 training speakers: then its folds are not scored (their speakers still train the
    other folds' back-ends). Raises PerFoldNotPossible when all folds together have no such pair, or
    an SV fold has fewer than 2 training speakers.
    """
    tsets = [load_trial_set(sp.test, available=available) for sp in splits]
    pools, cur = [], []
    for sp, ts in zip(splits, tsets):
        cur.append((sp, ts))
        if _has_same_gender_pair([t for _, t in cur]):
            pools.append(cur)
            cur = []
    notes = []
    if cur:
        if not pools:
            raise PerFoldNotPossible(
                f"the test speakers of all {len(splits)} fold(s) together have no two speakers of one gender "
                f"({_describe(_speakers_by_gender(tsets))}), so there is no same-gender nontarget trial")
        joined = pools[-1] + cur
        n_spk = _train_utts([sp for sp, _ in joined], available)[1]
        if n_spk >= 2:
            pools[-1] = joined
        else:
            notes.append(f"Emotion fold(s) {', '.join(sp.name for sp, _ in cur)} not scored: their test speakers "
                         f"({_describe(_speakers_by_gender([t for _, t in cur]))}) have no other of their gender "
                         f"there, and joining them to the last SV fold would leave it {n_spk} training speaker(s); "
                         "they still train the other folds' back-ends")
    folds, merges = [], []
    for pool in pools:
        members = [sp for sp, _ in pool]
        name = "+".join(sp.name for sp in members)
        train, n_spk = _train_utts(members, available)
        if n_spk < 2:
            raise PerFoldNotPossible(f"SV fold {name} leaves {n_spk} training speaker(s) outside its test speakers; "
                                     "a back-end needs at least 2")
        f = SVFold(name, members, pool[0][1] if len(pool) == 1 else _merge_trial_sets([t for _, t in pool]), train)
        folds.append(f)
        if f.merged:
            lone = "; ".join(f"{sp.name}: {_describe(_speakers_by_gender([ts]))}" for sp, ts in pool
                             if not _has_same_gender_pair([ts]))
            merges.append(f"SV fold {name} merges emotion folds {', '.join(sp.name for sp in members)}: test "
                          f"speakers with no other of their gender in their own fold ({lone}) give no nontarget "
                          f"trial there; its back-end is fitted on the {n_spk} speakers outside all of them")
    return folds, merges + notes


def assert_no_test_speaker(fold: str, piece: str, trained_speakers, test_speakers) -> None:
    """Raise ProtocolLeak naming the speakers when ``piece`` was trained on any test speaker."""
    shared = sorted(set(trained_speakers) & set(test_speakers))
    if shared:
        raise ProtocolLeak(f"{fold}: test speaker(s) {', '.join(shared[:5])} reached the {piece}: the protocol "
                           "would not be speaker-independent")


def _fold_posteriors(fold: SVFold, utts: list[str], posteriors_dir, emotions: list[str]) -> np.ndarray:
    """(N, E) trial-side posteriors: each utterance from its own emotion fold's model (``<dir>/<fold>``)."""
    P = np.zeros((len(utts), len(emotions)))
    for sp in fold.splits:
        d = Path(posteriors_dir) / sp.name
        classes, post = read_posteriors(d)
        test_utts = set(read_table(sp.test / "utt2spk"))
        # The emotion model of this fold must have had these utterances as its test set.
        not_test = sorted(set(post) - test_utts)
        if not_test:
            raise ProtocolLeak(f"{sp.name}: {d / 'posteriors'} has utterances outside the fold's test set "
                               f"({', '.join(not_test[:3])}): not this fold's emotion model")
        rows = [i for i, u in enumerate(utts) if u in test_utts]
        P[rows] = posterior_matrix([utts[i] for i in rows], classes, post, emotions, f"{posteriors_dir}/{sp.name}")
    return P


def score_folds(X, utts, splits, make_backend: Callable, labels: dict, *, posteriors_dir=None,
                block_size: int = BLOCK_SIZE) -> tuple[CellTable, list[dict]]:
    """Fit a back-end per SV fold on its training speakers, score all same-gender pairs of its test speakers.

    X (N, D) embeddings of ``utts``; splits: ``discover_protocol`` splits (planned into SV folds by
    ``plan_sv_folds``) or the SVFold list itself; make_backend() -> an unfitted Backend; labels:
    {"utt2spk", "utt2emo", "spk2gender"} dicts of the whole corpus; posteriors_dir: an emotion system's dir
    (``<dir>/<fold>/posteriors``) for the trial sides' emotions, else the trial utterances' emotion labels.
    Returns (pooled table, per-SV-fold info dicts). A fold whose calibration cannot be fitted
    (CalibrationError) raises PerFoldNotPossible naming it.
    """
    pos = {u: i for i, u in enumerate(utts)}
    u2s, u2e, s2g = labels["utt2spk"], labels["utt2emo"], labels.get("spk2gender") or {}
    folds = splits if splits and isinstance(splits[0], SVFold) else plan_sv_folds(splits, set(pos))[0]
    tables, infos = [], []
    for fold in folds:
        train_utts = fold.train_utts
        tr_spk = np.array([u2s[u] for u in train_utts])
        ts = fold.trials
        test_speakers = set(ts.speakers)
        assert_no_test_speaker(fold.name, "back-end training data", tr_spk.tolist(), test_speakers)
        for sp in fold.splits:
            if sp.dev is not None:
                log.info("%s: dev set %s not used by the SV back-end", sp.name, sp.dev)
        tr_emo = np.array([u2e.get(u, "") for u in train_utts])
        tr_gen = np.array([s2g.get(s, "all") for s in tr_spk])
        be = make_backend()
        # Missing labels go in as "" when the back-end learns from emotions: its error then counts them.
        try:
            be.fit(X[[pos[u] for u in train_utts]], tr_spk,
                   tr_emo if all(tr_emo) or be.needs_training_emotions else None, tr_gen)
        except CalibrationError as e:
            raise PerFoldNotPossible(f"SV fold {fold.name}: {e}") from None
        assert_no_test_speaker(fold.name, "fitted back-end", be.train_speakers, test_speakers)
        emo = None
        if be.needs_trial_emotions:
            if posteriors_dir is not None:
                emo = _fold_posteriors(fold, ts.utts, posteriors_dir, be.emotions)
            else:
                emo = [ts.emotions[k] for k in ts.emo]
        P = be.prepare(X[[pos[u] for u in ts.utts]], emo)
        table = score_all_pairs(ts, P, be.score_block, block_size=block_size, max_exact_trials=1 << 62)
        tables.append(table)
        info = {"fold": fold.name, "n_train_utts": len(train_utts), "n_train_spk": int(np.unique(tr_spk).size),
                "n_test_utts": len(ts), "n_test_spk": len(ts.speakers), "n_trials": table.info["n_trials"],
                "backend": dict(be.info)}
        if fold.merged:
            info["emotion_folds"] = [sp.name for sp in fold.splits]
        infos.append(info)
        log.info("%s: back-end fitted on %d utts of %d speakers; %d trials of %d test speakers", fold.name,
                 len(train_utts), np.unique(tr_spk).size, table.info["n_trials"], len(ts.speakers))
    if not tables:
        raise ValueError("no folds to score")
    return merge_tables(tables), infos
