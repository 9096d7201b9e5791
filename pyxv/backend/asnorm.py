"""Adaptive symmetric score normalisation (AS-norm, Matejka et al. 2017).

Each side of a trial is compared with a cohort of other speakers; the mean and
standard deviation of its ``top_k`` highest cohort scores normalise the trial
score:

    s' = ((s - mu_e) / sd_e + (s - mu_t) / sd_t) / 2

Per-utterance statistics are computed once (``utt_stats``), so normalising a
block of a score matrix is elementwise work.
"""
from __future__ import annotations

import numpy as np

from ..params import StoredState

__all__ = ["ASNorm", "EmotionASNorm"]


class ASNorm(StoredState):
    """AS-norm with a cohort; ``score_fn(A, B) -> (len(A), len(B))`` scores prepared embeddings."""

    TYPE = "asnorm"

    def __init__(self, top_k: int = 200):
        self.top_k = top_k

    def fit(self, cohort):
        """cohort: (C, D) embeddings in the scorer's input space."""
        self.cohort_ = np.asarray(cohort)
        if self.cohort_.shape[0] < 2:
            raise ValueError("AS-norm needs a cohort of at least 2 embeddings")
        return self

    def utt_stats(self, X, score_fn, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Top-k cohort score mean (N,) and std (N,) of each row of X (floored at 1e-6)."""
        k = int(min(self.top_k, self.cohort_.shape[0]))
        mu = np.empty(len(X))
        sd = np.empty(len(X))
        for i in range(0, len(X), batch):
            S = score_fn(X[i:i + batch], self.cohort_)
            top = -np.partition(-S, k - 1, axis=1)[:, :k] if k < S.shape[1] else S
            mu[i:i + batch] = top.mean(1)
            sd[i:i + batch] = top.std(1)
        return mu, np.maximum(sd, 1e-6)

    @staticmethod
    def normalize(S, mu_e, sd_e, mu_t, sd_t):
        """Normalise a block S (n, m) given enrolment stats (n,) and test stats (m,)."""
        return 0.5 * ((S - mu_e[:, None]) / sd_e[:, None] + (S - mu_t[None, :]) / sd_t[None, :])


class EmotionASNorm:
    """AS-norm whose cohort statistics are taken per emotion.

    Each side of a trial is normalised with its top-k scores against the cohort
    of the *other* side's emotion: for enrolment x (emotion a) and test y
    (emotion b),

        s' = ((s - mu_x[b]) / sd_x[b] + (s - mu_y[a]) / sd_y[a]) / 2,

    so the impostor statistics match the trial's emotion pair (an angry test
    clip is compared with angry impostors). With emotion posteriors P (N, E)
    instead of labels the statistics are mixed by the posterior:
    ``mu_x[y] = sum_e P_y[e] mu_x[e]`` -- one (n, E) x (E, m) product per block.
    """

    def __init__(self, top_k: int = 200):
        self.top_k = top_k

    def fit(self, cohorts: list):
        """cohorts: one prepared cohort per emotion (each scored by ``score_fn`` in ``utt_stats``)."""
        self.cohorts_ = list(cohorts)
        for e, c in enumerate(self.cohorts_):
            if len(c) < 2:
                raise ValueError(f"emotion-aware AS-norm: the cohort of emotion #{e} has {len(c)} embedding(s); "
                                 "at least 2 are needed")
        return self

    def utt_stats(self, X, score_fn, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """(N, E) top-k means and (N, E) stds (floored at 1e-6) of each row of X against each emotion's cohort."""
        E = len(self.cohorts_)
        mu = np.empty((len(X), E))
        sd = np.empty((len(X), E))
        for e, C in enumerate(self.cohorts_):
            k = int(min(self.top_k, len(C)))
            for i in range(0, len(X), batch):
                S = score_fn(X[i:i + batch], C)
                top = -np.partition(-S, k - 1, axis=1)[:, :k] if k < S.shape[1] else S
                mu[i:i + batch, e] = top.mean(1)
                sd[i:i + batch, e] = top.std(1)
        return mu, np.maximum(sd, 1e-6)

    @staticmethod
    def normalize(S, mu_e, sd_e, post_e, mu_t, sd_t, post_t):
        """Normalise a block S (n, m): stats (n, E)/(m, E), emotion posteriors (or one-hot labels) (n, E)/(m, E)."""
        me = mu_e @ post_t.T          # (n, m): enrolment side against the test side's emotion
        se = sd_e @ post_t.T
        mt = post_e @ mu_t.T          # (n, m): test side against the enrolment side's emotion
        st = post_e @ sd_t.T
        return 0.5 * ((S - me) / se + (S - mt) / st)

    @staticmethod
    def normalize_pairs(s, mu_e, sd_e, post_e, mu_t, sd_t, post_t):
        """Trial-by-trial version of ``normalize``: all inputs row-aligned, s (n,)."""
        me = np.einsum("ie,ie->i", mu_e, post_t)
        se = np.einsum("ie,ie->i", sd_e, post_t)
        mt = np.einsum("ie,ie->i", post_e, mu_t)
        st = np.einsum("ie,ie->i", post_e, sd_t)
        return 0.5 * ((s - me) / se + (s - mt) / st)
