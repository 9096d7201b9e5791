"""Logistic regression on frozen embeddings (the paper's "Frozen" rows, section 2.2).

Pre-processing (options, fitted on training data only): centring, whitening or LDA,
length normalisation -- the usual x-vector back-end steps, from ``pyxv.backend.preprocess``. Then scikit-learn's
multinomial LogisticRegression with balanced class weights. The inverse
regularisation C is chosen by weighted F1 on a dev set when the protocol has one,
else by inner speaker-independent cross-validation (GroupKFold by speaker) on the
training data; the test set is never looked at.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline

from ..backend.preprocess import EmbeddingPreprocessor  # the pre-processing vocabulary shared with SV
from ..metrics.classification import weighted_f1

log = logging.getLogger("pyxv.emotion")

__all__ = ["EmbeddingPreprocessor", "EmotionLR", "make_pipeline", "DEFAULT_C_GRID"]

DEFAULT_C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def make_pipeline(C: float, pre: dict | None = None, max_iter: int = 2000, seed: int = 0) -> Pipeline:
    pre = dict(pre or {})
    return Pipeline([
        ("pre", EmbeddingPreprocessor(**pre)),
        ("lr", LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter, random_state=seed)),
    ])


def _fit_quiet(pipe, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter at tiny C on small folds
        return pipe.fit(X, y)


class EmotionLR:
    """Multinomial LR over a fixed class list, with C selection on dev or by speaker CV.

    ``classes``: the model's classes (columns of ``predict_proba``); a class absent from
    the training data gets probability 0. ``pre``: EmbeddingPreprocessor options.
    """

    def __init__(self, classes, pre: dict | None = None, C_grid=DEFAULT_C_GRID, cv_folds: int = 5,
                 max_iter: int = 2000, seed: int = 0, C: float | None = None):
        self.classes = list(classes)
        self.pre = dict(pre or {})
        self.C_grid = list(C_grid)
        self.cv_folds = cv_folds
        self.max_iter = max_iter
        self.seed = seed
        self.C = C
        self.selection: dict = {}

    def _pipe(self, C):
        return make_pipeline(C, self.pre, self.max_iter, self.seed)

    def select_C(self, X, y, groups, X_dev=None, y_dev=None) -> float:
        """Pick C from the grid by weighted F1: on (X_dev, y_dev) if given, else
        GroupKFold over ``groups`` (speakers). Records the scores in ``self.selection``."""
        y = np.asarray(y)
        scores = {}
        if X_dev is not None and len(X_dev):
            method = "dev"
            for C in self.C_grid:
                p = _fit_quiet(self._pipe(C), X, y)
                scores[C] = weighted_f1(y_dev, p.predict(X_dev))
        else:
            groups = np.asarray(groups)
            k = min(self.cv_folds, len(set(groups.tolist())))
            if k < 2:
                log.warning("only %d training speaker(s): cannot cross-validate C; using C=%g",
                            len(set(groups.tolist())), self.C_grid[len(self.C_grid) // 2])
                self.selection = {"method": "none"}
                return self.C_grid[len(self.C_grid) // 2]
            method = f"{k}-fold speaker CV"
            splits = list(GroupKFold(n_splits=k).split(X, y, groups))
            for C in self.C_grid:
                pred = np.empty(len(y), dtype=object)
                for tr, va in splits:
                    if len(set(y[tr].tolist())) < 2:
                        pred[va] = y[tr][0]
                        continue
                    pred[va] = _fit_quiet(self._pipe(C), X[tr], y[tr]).predict(X[va])
                scores[C] = weighted_f1(y, pred.tolist())
        best = max(self.C_grid, key=lambda c: (scores[c], -abs(np.log10(c))))  # ties: the milder C
        self.selection = {"method": method, "scores": {str(c): s for c, s in scores.items()}, "C": best}
        log.info("C selection by %s (weighted F1): %s -> C=%g", method,
                 " ".join(f"{c:g}:{s:.3f}" for c, s in scores.items()), best)
        return best

    def fit(self, X, y, groups=None, X_dev=None, y_dev=None) -> "EmotionLR":
        """X: (N, D), y: N labels, groups: N speaker ids (for CV)."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(list(y), dtype=object)
        unknown = sorted(set(y.tolist()) - set(self.classes))
        if unknown:
            raise ValueError(f"training labels {unknown} are not among the model's classes {self.classes}")
        if len(set(y.tolist())) < 2:
            raise ValueError(f"logistic regression needs at least 2 classes in training, got {sorted(set(y.tolist()))}")
        if self.C is None:
            self.C = self.select_C(X, y, groups if groups is not None else np.arange(len(y)), X_dev, y_dev)
        self.pipe_ = _fit_quiet(self._pipe(self.C), X, y)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(N, len(classes)) posteriors in ``self.classes`` order."""
        p = self.pipe_.predict_proba(np.asarray(X, dtype=np.float64))
        out = np.zeros((p.shape[0], len(self.classes)))
        idx = [self.classes.index(c) for c in self.pipe_.classes_]
        out[:, idx] = p
        return out

    def predict(self, X) -> list[str]:
        p = self.predict_proba(X)
        return [self.classes[i] for i in p.argmax(1)]
