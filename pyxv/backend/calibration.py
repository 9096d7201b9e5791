"""Score calibration to log-likelihood ratios by logistic regression (BOSARIS / FoCal style).

``llr = a s + b`` with (a, b) minimising the prior-weighted cross-entropy

    C(a, b) = p / N_t sum_tar log(1 + e^-(llr + logit p)) + (1 - p) / N_n sum_non log(1 + e^(llr + logit p)),

p the effective target prior the calibration is trained for (Cllr's 0.5 by
default). The scores must come from speakers the scorer was not trained on
(``pyxv.backend.Backend`` scores held-out training speakers for this).

``by_emotion``: one (a, b) per unordered pair of trial emotions, for trials
whose two sides' emotions are known (labels) or estimated (posteriors, as
an expectation: ``a = p_e' A p_t``); pairs with too few trials fall back to
the global (a, b).
"""
from __future__ import annotations

import logging
import math

import numpy as np
from scipy.optimize import minimize

from ..params import StoredState

log = logging.getLogger(__name__)

__all__ = ["LinearCalibration", "fit_linear_calibration"]


def fit_linear_calibration(scores, is_target, prior: float = 0.5) -> tuple[float, float]:
    """(a, b) of the prior-weighted logistic regression of ``is_target`` on ``scores``."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(is_target, dtype=bool).ravel()
    nt, nn = int(y.sum()), int((~y).sum())
    if nt == 0 or nn == 0:
        raise ValueError(f"calibration needs target and nontarget trials; got {nt} target and {nn} nontarget")
    if not np.all(np.isfinite(s)):
        raise ValueError("calibration scores contain NaN or inf")
    off = math.log(prior / (1 - prior))
    w = np.where(y, prior / nt, (1 - prior) / nn)
    sign = np.where(y, 1.0, -1.0)
    scale = max(float(s.std()), 1e-12)   # optimise on standardised scores: well-conditioned for any range
    z = (s - s.mean()) / scale

    def f(p):
        m = sign * (p[0] * z + p[1] + off)
        loss = np.dot(w, np.logaddexp(0.0, -m))
        g = -w * sign / (1.0 + np.exp(np.clip(m, -700, 700)))
        return loss, np.array([np.dot(g, z), g.sum()])

    r = minimize(f, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    a = r.x[0] / scale
    return float(a), float(r.x[1] - a * s.mean())


class LinearCalibration(StoredState):
    """Affine score -> LLR map, global or per emotion pair.

    >>> cal = LinearCalibration().fit(s, is_target)                      # global
    >>> cal = LinearCalibration(by_emotion=True).fit(s, is_target, ea, eb, n_emotions=4)
    >>> llr = cal.apply(s)   # or cal.apply_block(S, post_e, post_t) for an (n, m) block
    """

    TYPE = "linear_calibration"

    def __init__(self, by_emotion: bool = False, prior: float = 0.5, min_trials: int = 50):
        self.by_emotion = by_emotion
        self.prior = prior
        self.min_trials = min_trials

    def fit(self, scores, is_target, emo_e=None, emo_t=None, n_emotions: int = 0):
        """scores, is_target (T,); with by_emotion, emo_e/emo_t (T,) integer emotion codes of the two sides."""
        s = np.asarray(scores, dtype=np.float64)
        y = np.asarray(is_target, dtype=bool)
        self.a_, self.b_ = fit_linear_calibration(s, y, self.prior)
        self.n_trials_ = (int(y.sum()), int((~y).sum()))
        if not self.by_emotion:
            return self
        if emo_e is None or emo_t is None:
            raise ValueError("emotion-conditioned calibration needs the emotion of both sides of its training trials")
        ea, eb = np.asarray(emo_e), np.asarray(emo_t)
        E = int(n_emotions or max(ea.max(), eb.max()) + 1)
        A = np.full((E, E), self.a_)
        B = np.full((E, E), self.b_)
        self.fallback_ = []
        for i in range(E):
            for j in range(i, E):
                sel = ((ea == i) & (eb == j)) | ((ea == j) & (eb == i))
                nt, nn = int((sel & y).sum()), int((sel & ~y).sum())
                if min(nt, nn) < self.min_trials:
                    self.fallback_.append((i, j))
                    continue
                A[i, j], B[i, j] = fit_linear_calibration(s[sel], y[sel], self.prior)
                A[j, i], B[j, i] = A[i, j], B[i, j]
        self.A_, self.B_ = A, B
        return self

    def apply(self, s, post_e=None, post_t=None):
        """Calibrated LLRs of trial-aligned scores s (n,); posteriors (n, E) with by_emotion."""
        s = np.asarray(s, dtype=np.float64)
        if not self.by_emotion:
            return self.a_ * s + self.b_
        a = np.einsum("ie,ef,if->i", post_e, self.A_, post_t)
        b = np.einsum("ie,ef,if->i", post_e, self.B_, post_t)
        return a * s + b

    def apply_block(self, S, post_e=None, post_t=None):
        """Calibrated LLRs of a block S (n, m); posteriors (n, E) and (m, E) with by_emotion."""
        if not self.by_emotion:
            return self.a_ * S + self.b_
        return (post_e @ self.A_ @ post_t.T) * S + post_e @ self.B_ @ post_t.T

    def __repr__(self) -> str:
        if not hasattr(self, "a_"):
            return f"LinearCalibration(by_emotion={self.by_emotion})"
        return f"LinearCalibration(a={self.a_:.4g}, b={self.b_:.4g}, by_emotion={self.by_emotion})"
