"""Two-covariance PLDA trained by EM (the model of Kaldi's ``ivector-compute-plda``).

Model: a speaker variable ``y ~ N(mu, B)`` and each embedding of that speaker
``x = y + e``, ``e ~ N(0, W)``. The log-likelihood ratio of one enrolment
``x`` and one test ``z`` embedding (same speaker vs different speakers) is,
after the transform ``u = T (x - mu)`` with ``T W T' = I`` and
``T B T' = diag(psi)``, a sum over dimensions of

    a_k (u_k^2 + v_k^2) + b_k u_k v_k + c_k,
    a_k = -(s_k / (2 psi_k + 1) - 1 / s_k) / 2,  b_k = psi_k / (2 psi_k + 1),
    c_k = log s_k - log(2 psi_k + 1) / 2,         s_k = psi_k + 1,

so a whole score matrix is one matrix product plus per-row terms
(``prepare``/``score_prepared``), which the block scorer in ``pyxv.sv`` uses.
"""
from __future__ import annotations

import logging

import numpy as np
from scipy.linalg import eigh

from ..params import StoredState
from .preprocess import class_stats

log = logging.getLogger(__name__)

__all__ = ["PLDA"]


class PLDA(StoredState):
    """Two-covariance PLDA.

    >>> plda = PLDA(n_iter=10).fit(X, spk)      # X (N, D), spk (N,)
    >>> S = plda.score_matrix(E, T)             # (n_e, n_t) log-likelihood ratios
    """

    TYPE = "plda"

    def __init__(self, n_iter: int = 10, reg: float = 1e-6):
        self.n_iter = n_iter
        self.reg = reg

    # ------------------------------------------------------------------ fit
    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float64)
        counts, means, Sw = class_stats(X, y)
        S, N, D = counts.size, X.shape[0], X.shape[1]
        if S < 2:
            raise ValueError("PLDA needs at least 2 speakers in the back-end training data")
        if N == S:
            raise ValueError("PLDA needs some speaker with 2 or more utterances (no within-speaker data)")
        eye = np.eye(D)
        mu = X.mean(0)
        W = Sw / (N - S) + self.reg * eye
        Mc = means - means.mean(0)
        B = Mc.T @ Mc / S + self.reg * eye
        self.llh_ = []
        for it in range(self.n_iter):
            Winv = np.linalg.inv(W)
            Binv = np.linalg.inv(B)
            # E-step: posterior of each speaker variable; the covariance depends only on the count.
            m = np.empty_like(means)
            Csum_B = np.zeros((D, D))
            Csum_W = np.zeros((D, D))
            bmu = Binv @ mu
            for n in np.unique(counts):
                sel = counts == n
                C = np.linalg.inv(Binv + n * Winv)
                C = (C + C.T) / 2
                m[sel] = (bmu[None, :] + n * means[sel] @ Winv) @ C
                Csum_B += sel.sum() * C
                Csum_W += n * sel.sum() * C
            # M-step
            mu = m.mean(0)
            R = m - mu
            B = (Csum_B + R.T @ R) / S
            Dm = means - m
            W = (Sw + (Dm * counts[:, None]).T @ Dm + Csum_W) / N
            B = (B + B.T) / 2 + self.reg * eye
            W = (W + W.T) / 2 + self.reg * eye
            log.debug("PLDA EM iteration %d: trace(B)=%.4g trace(W)=%.4g", it + 1, np.trace(B), np.trace(W))
        self.mean_, self.B_, self.W_ = mu, B, W
        self._diagonalise()
        return self

    def _diagonalise(self):
        psi, V = eigh(self.B_, self.W_)  # V' W V = I, V' B V = diag(psi)
        psi = np.maximum(psi, 0.0)
        self.T_ = V.T
        self.psi_ = psi
        s = psi + 1.0
        self.a_ = -0.5 * (s / (2 * psi + 1) - 1 / s)
        self.b_ = psi / (2 * psi + 1)
        self.c_ = float(np.sum(np.log(s) - 0.5 * np.log(2 * psi + 1)))

    # -------------------------------------------------------------- scoring
    def prepare(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(Z (N, D), q (N,)) such that ``score(i, j) = Z_i . Z_j + q_i + q_j``."""
        U = (np.asarray(X, dtype=np.float64) - self.mean_) @ self.T_.T
        Z = U * np.sqrt(self.b_)
        q = (U * U) @ self.a_ + 0.5 * self.c_
        return Z, q

    def score_matrix(self, X, Y) -> np.ndarray:
        """LLR of every row of X (n, D) against every row of Y (m, D): (n, m)."""
        Zx, qx = self.prepare(X)
        Zy, qy = self.prepare(Y)
        return Zx @ Zy.T + qx[:, None] + qy[None, :]

    def score_pairs(self, X, Y) -> np.ndarray:
        """LLR of row i of X against row i of Y: (n,)."""
        Zx, qx = self.prepare(X)
        Zy, qy = self.prepare(Y)
        return np.einsum("ij,ij->i", Zx, Zy) + qx + qy
