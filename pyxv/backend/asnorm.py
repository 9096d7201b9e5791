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

__all__ = ["ASNorm"]


class ASNorm:
    """AS-norm with a cohort; ``score_fn(A, B) -> (len(A), len(B))`` scores prepared embeddings."""

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
