"""Emotion-nuisance attribute projection (NAP): remove within-speaker emotion directions.

For every training speaker recorded in two or more emotions, the mean embedding
of each of its emotions minus the speaker's average of those means is one
sample of "how this speaker moves with emotion". The leading principal
directions U (D, k) of those samples span the emotion nuisance; the projection
``x - U U' x`` removes it, so an angry and a neutral clip of one speaker land
closer together. Only other speakers' labelled speech is used (Solomonoff et
al.'s NAP, with emotion as the nuisance attribute).

``select_nap_dim`` picks k on held-out speakers: speaker-disjoint splits of the
training data, all same-gender pairs of the held-out part scored with cosine.
"""
from __future__ import annotations

import logging

import numpy as np

from .preprocess import _Step, class_sums

log = logging.getLogger(__name__)

__all__ = ["EmotionNAP", "check_emotion_labels", "emotion_residuals", "select_nap_dim"]


def check_emotion_labels(spk, emo, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate per-utterance emotion labels for a method that learns from them.

    Errors name what is missing: no labels at all, fewer than two emotions, or an
    emotion spoken by a single speaker (no speaker-independent view of it).
    """
    if emo is None:
        raise ValueError(f"{what} needs the emotion label of every back-end training utterance (utt2emo of the "
                         "back-end training data), and none were given")
    spk, emo = np.asarray(spk), np.asarray(emo)
    if emo.shape != spk.shape:
        raise ValueError(f"{what}: {emo.shape[0]} emotion labels for {spk.shape[0]} utterances")
    missing = [i for i, e in enumerate(emo.tolist()) if e is None or str(e) == "" or str(e) == "None"]
    if missing:
        raise ValueError(f"{what}: {len(missing)} back-end training utterance(s) have no emotion label "
                         f"(e.g. row {missing[0]}); give utt2emo for all of them")
    emos = sorted(set(emo.tolist()))
    if len(emos) < 2:
        raise ValueError(f"{what} needs back-end training data in at least 2 emotions; it has only "
                         f"{emos[0] if emos else 'none'}")
    single = [e for e in emos if np.unique(spk[emo == e]).size < 2]
    if single:
        raise ValueError(f"{what} needs every emotion spoken by at least 2 back-end training speakers; "
                         f"{', '.join(f'{e} ({np.unique(spk[emo == e])[0]})' for e in single)} has only one")
    return spk, emo


def emotion_residuals(X, spk, emo) -> np.ndarray:
    """(R, D) per-(speaker, emotion) means minus the speaker's mean of them, speakers with >= 2 emotions."""
    X = np.asarray(X, dtype=np.float64)
    spk, emo = np.asarray(spk), np.asarray(emo)
    pairs, inv = np.unique(np.stack([spk.astype(str), emo.astype(str)], 1), axis=0, return_inverse=True)
    inv = inv.ravel()
    means = class_sums(X, inv, len(pairs)) / np.bincount(inv, minlength=len(pairs))[:, None]
    out = []
    for s in np.unique(pairs[:, 0]):
        rows = np.flatnonzero(pairs[:, 0] == s)
        if rows.size >= 2:
            out.append(means[rows] - means[rows].mean(0))
    return np.concatenate(out) if out else np.zeros((0, X.shape[1]))


class EmotionNAP(_Step):
    """Project out ``dim`` directions of within-speaker emotion variation.

    >>> nap = EmotionNAP(8).fit(X, spk, emo)     # X (N, D); spk, emo (N,) labels
    >>> Y = nap.transform(X)                     # (N, D), emotion directions removed
    """

    TYPE = "emotion_nap"

    def __init__(self, dim: int = 8):
        self.dim = dim

    def fit(self, X, spk=None, emo=None):
        spk, emo = check_emotion_labels(spk, emo, "the emotion projection (nap)")
        R = emotion_residuals(X, spk, emo)
        n_multi = len({s for s in spk.tolist() if np.unique(emo[spk == s]).size >= 2})
        if n_multi < 2:
            raise ValueError("the emotion projection (nap) needs at least 2 back-end training speakers recorded "
                             f"in 2 or more emotions; the data has {n_multi}")
        _, sv, Vt = np.linalg.svd(R, full_matrices=False)
        k = int(min(self.dim, Vt.shape[0], np.sum(sv > 1e-10 * max(sv.max(), 1e-30))))
        if k < self.dim:
            log.warning("emotion projection: %d directions asked, the training data spans %d", self.dim, k)
        self.U_ = Vt[:k].T
        self.energy_ = (sv[:k] ** 2).sum() / max((sv ** 2).sum(), 1e-30)  # share of emotion variation removed
        self.n_speakers_ = n_multi
        return self

    def fit_transform(self, X, spk=None, emo=None):
        return self.fit(X, spk, emo).transform(X)

    def transform(self, X):
        X = np.asarray(X, dtype=np.float64)
        return X - (X @ self.U_) @ self.U_.T


def select_nap_dim(X, spk, emo, gender=None, candidates=(0, 2, 4, 6, 8, 10, 12, 16), n_splits: int = 4,
                   criterion: str = "cross", seed: int = 0, n_repeats: int = 1,
                   max_utts: int = 3000) -> tuple[int, dict]:
    """Choose the number of NAP directions on held-out speakers of the training data.

    The speakers are split into ``n_splits`` disjoint groups; for each group the
    projection is learned on the others (after centring on them) and all
    same-gender pairs of the group are scored with cosine. ``criterion``:
    'cross' (EER of the cross-emotion trials, pooled), 'all' (EER of all
    trials) or 'mean' (mean of the same- and cross-emotion pooled EERs).
    ``n_repeats`` different random partitions pool their held-out scores (a
    steadier choice when there are few speakers). At most ``max_utts`` (a seeded
    subset) of each held-out group are scored, so memory stays bounded.
    Returns (best k, {k: {"all", "same", "cross"}} EERs in %).
    """
    from ..metrics.sv import eer

    if criterion not in ("cross", "all", "mean"):
        raise ValueError(f"nap dim criterion must be cross|all|mean, not '{criterion}'")
    X = np.asarray(X, dtype=np.float64)
    spk, emo = check_emotion_labels(spk, emo, "choosing the emotion projection's size")
    gender = np.zeros(spk.size, dtype=int) if gender is None else np.asarray(gender)
    speakers = np.unique(spk)
    if speakers.size < 2 * n_splits:
        n_splits = max(2, speakers.size // 2)
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(max(1, n_repeats)):
        order = speakers[rng.permutation(speakers.size)]
        groups += [order[i::n_splits] for i in range(n_splits)]
    scores = {k: {"tar": [[], []], "non": [[], []]} for k in candidates}  # [same, cross]
    for held in groups:
        tr = ~np.isin(spk, held)
        ho = np.flatnonzero(~tr)
        if ho.size > max_utts:
            ho = np.sort(rng.choice(ho, max_utts, replace=False))
        mu = X[tr].mean(0)
        Ytr, Yho = X[tr] - mu, X[ho] - mu
        _, sv, Vt = np.linalg.svd(emotion_residuals(Ytr, spk[tr], emo[tr]), full_matrices=False)
        iu = np.triu_indices(ho.size, 1)
        s_h, e_h, g_h = spk[ho], emo[ho], gender[ho]
        keep = (g_h[:, None] == g_h[None, :])[iu]
        tgt = (s_h[:, None] == s_h[None, :])[iu][keep]
        same_e = (e_h[:, None] == e_h[None, :])[iu][keep]
        for k in candidates:
            U = Vt[:k].T
            Z = Yho - (Yho @ U) @ U.T
            Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
            S = (Z @ Z.T)[iu][keep]
            for j, sel in enumerate((same_e, ~same_e)):
                scores[k]["tar"][j].append(S[sel & tgt])
                scores[k]["non"][j].append(S[sel & ~tgt])
    table = {}
    for k in candidates:
        t = [np.concatenate(x) for x in scores[k]["tar"]]
        n = [np.concatenate(x) for x in scores[k]["non"]]
        table[k] = {"same": 100 * eer(t[0], n[0]), "cross": 100 * eer(t[1], n[1]),
                    "all": 100 * eer(np.concatenate(t), np.concatenate(n))}
    key = {"cross": lambda k: table[k]["cross"], "all": lambda k: table[k]["all"],
           "mean": lambda k: table[k]["same"] + table[k]["cross"]}[criterion]
    best = min(candidates, key=lambda k: (round(key(k), 6), k))
    log.info("emotion projection size on held-out speakers (%s EER): %s -> %d", criterion,
             " ".join(f"{k}:{key(k) if criterion != 'mean' else key(k) / 2:.2f}" for k in candidates), best)
    return best, table
