"""Embedding pre-processing, scikit-learn style: the one vocabulary of the SV back-ends
(``pyxv.backend.Backend``) and the emotion logistic regression (``pyxv.emotion.lr``).

Each class has ``fit(X, y=None)``, ``transform(X)`` and ``fit_transform``; X is
(N, D) float, y (N,) class labels (speakers for SV, emotions for the emotion LR;
only LDA needs them). Fitted state is plain numpy arrays, written as parameters
(``to_params``/``from_params``, :mod:`pyxv.params`) that load without our training data. ``EmbeddingPreprocessor`` is the
centre -> (whiten | LDA | none) -> length-norm chain as one scikit-learn
transformer (what the emotion LR's Pipeline uses).
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import eigh

from ..params import StoredState, from_table

__all__ = ["Center", "LDA", "Whiten", "LengthNorm", "EmbeddingPreprocessor", "class_stats", "class_sums"]


class _Step(StoredState):
    def fit_transform(self, X, y=None):
        return self.fit(X, y).transform(X)

    def __repr__(self) -> str:
        keys = [k for k in vars(self) if not k.endswith("_")]
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in keys)})"


def class_sums(X: np.ndarray, inv: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, D) sums of the rows of X per class index ``inv`` (a sparse product: fast for 1M rows)."""
    from scipy.sparse import csr_matrix

    A = csr_matrix((np.ones(inv.size), (inv, np.arange(inv.size))), shape=(n_classes, inv.size))
    return np.asarray(A @ X)


def class_stats(X: np.ndarray, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class counts (C,), means (C, D) and the pooled within-class scatter (D, D).

    Labels may be any hashable values; classes are in ``np.unique`` order.
    """
    X = np.asarray(X, dtype=np.float64)
    _, inv, counts = np.unique(np.asarray(y), return_inverse=True, return_counts=True)
    means = class_sums(X, inv.ravel(), counts.size) / counts[:, None]
    R = X - means[inv]
    return counts, means, R.T @ R


class Center(_Step):
    """Subtract the training mean."""

    TYPE = "center"

    def fit(self, X, y=None):
        self.mean_ = np.asarray(X, dtype=np.float64).mean(0)
        return self

    def transform(self, X):
        return np.asarray(X, dtype=np.float64) - self.mean_


class LDA(_Step):
    """Linear discriminant analysis (Kaldi ``ivector-compute-lda`` style).

    Solves ``S_b v = lambda S_w v`` with S_w the within-speaker covariance and
    S_b the covariance of speaker means (each speaker weighted by its count);
    keeps the ``dim`` leading directions, scaled so the within-speaker
    covariance of the output is the identity. ``dim`` is capped at
    ``min(D, n_speakers - 1)``.

    ``shrinkage`` (e.g. 'auto'): scikit-learn's eigen-solver LDA with Ledoit-Wolf
    shrinkage of the within-class covariance instead (for few examples per
    class, as in the emotion LR); a projection only, centre with ``Center``.
    """

    TYPE = "lda"

    def __init__(self, dim: int = 200, reg: float = 1e-6, shrinkage=None):
        self.dim = dim
        self.reg = reg
        self.shrinkage = shrinkage

    def __repr__(self) -> str:
        out = f", out_dim={self.out_dim_}" if hasattr(self, "out_dim_") else ""
        return f"LDA(dim={self.dim}{out})"

    def fit(self, X, y=None):
        if y is None:
            raise ValueError("LDA needs class labels (speakers, or emotions for the emotion LR)")
        X = np.asarray(X, dtype=np.float64)
        if self.shrinkage is not None:
            from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

            n_cls = len(set(np.asarray(y).tolist()))
            k = int(min(self.dim or n_cls - 1, n_cls - 1, X.shape[1]))
            lda = LinearDiscriminantAnalysis(n_components=k, solver="eigen", shrinkage=self.shrinkage).fit(X, y)
            self.out_dim_, self.mean_, self.W_ = k, np.zeros(X.shape[1]), lda.scalings_[:, :k]
            return self
        counts, means, Sw = class_stats(X, y)
        if counts.size < 2:
            raise ValueError("LDA needs at least 2 speakers in the back-end training data")
        n = X.shape[0]
        mu = X.mean(0)
        Sw = Sw / n
        M = means - mu
        Sb = (M * counts[:, None]).T @ M / n
        Sw = Sw + self.reg * np.trace(Sw) / Sw.shape[0] * np.eye(Sw.shape[0])
        w, V = eigh(Sb, Sw)  # V^T Sw V = I
        k = int(min(self.dim, X.shape[1], counts.size - 1))
        self.out_dim_ = k
        self.mean_ = mu
        self.W_ = V[:, ::-1][:, :k]
        self.eigvals_ = w[::-1][:k]
        return self

    def transform(self, X):
        return (np.asarray(X, dtype=np.float64) - self.mean_) @ self.W_


class Whiten(_Step):
    """PCA whitening with the training covariance (eigenvalues floored at ``eps`` x the largest).

    ``center=False``: the transform does not subtract the training mean (a preceding ``Center`` does).
    """

    TYPE = "whiten"

    def __init__(self, eps: float = 1e-10, center: bool = True):
        self.eps = eps
        self.center = center

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(0) if self.center else np.zeros(X.shape[1])
        C = np.cov(X, rowvar=False, bias=True)
        w, V = np.linalg.eigh(np.atleast_2d(C))
        w = np.maximum(w, self.eps * max(w.max(), 1e-30))
        self.W_ = V / np.sqrt(w)
        return self

    def transform(self, X):
        return (np.asarray(X, dtype=np.float64) - self.mean_) @ self.W_


class LengthNorm(_Step):
    """Scale every vector to length ``sqrt(D)`` (Kaldi's PLDA convention) or 1 (``unit=True``).

    Zero vectors stay zero (no division by zero).
    """

    TYPE = "length_norm"

    def __init__(self, unit: bool = False):
        self.unit = unit

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=np.float64)
        norm = np.linalg.norm(X, axis=1, keepdims=True)
        scale = 1.0 if self.unit else np.sqrt(X.shape[1])
        return X * (scale / np.where(norm > 0, norm, 1.0))


try:  # scikit-learn's estimator API, so the chain drops into a sklearn Pipeline
    from sklearn.base import BaseEstimator, TransformerMixin
except ImportError:  # pragma: no cover - scikit-learn is a dependency
    BaseEstimator, TransformerMixin = object, object


class EmbeddingPreprocessor(TransformerMixin, BaseEstimator):
    """Centre -> (whiten | LDA | none) -> length-normalise, fitted on training embeddings.

    X: (N, D) float. Whitening uses the training covariance with a floor of
    ``eps`` times the largest eigenvalue, so that N < D does not blow up; LDA
    (shrinkage 'auto') keeps ``lda_dim`` (default: classes - 1) directions.
    Length normalisation scales each vector to norm sqrt(dim).
    """

    def __init__(self, center: bool = True, projection: str = "none", lda_dim: int | None = None,
                 length_norm: bool = True, eps: float = 1e-3):
        self.center = center
        self.projection = projection
        self.lda_dim = lda_dim
        self.length_norm = length_norm
        self.eps = eps

    def fit(self, X, y=None):
        if self.projection not in ("none", "whiten", "lda"):
            raise ValueError(f"lr projection must be none|whiten|lda, not '{self.projection}'")
        if self.projection == "lda" and y is None:
            raise ValueError("LDA pre-processing needs labels")
        steps = [Center()] if self.center else []
        if self.projection == "whiten":
            steps.append(Whiten(eps=self.eps, center=False))
        elif self.projection == "lda":
            steps.append(LDA(self.lda_dim or 0, shrinkage="auto"))
        if self.length_norm:
            steps.append(LengthNorm())
        Y = np.asarray(X, dtype=np.float64)
        for st in steps:
            Y = st.fit_transform(Y, y)
        self.steps_ = steps
        return self

    def transform(self, X):  # noqa: D401 - sklearn API
        Y = np.asarray(X, dtype=np.float64)
        if "steps_" not in vars(self) and "mean_" in vars(self):
            # Unpickled from pyxv before the chain moved here (mean_, proj_): the same computation.
            Y = Y - self.mean_
            Y = Y @ self.proj_ if self.proj_ is not None else Y
            if self.length_norm:
                Y = Y / np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-12) * np.sqrt(Y.shape[1])
            return Y
        for st in self.steps_:
            Y = st.transform(Y)
        return Y

    def to_params(self) -> dict:
        if "steps_" not in vars(self):
            raise ValueError("this pre-processing chain is of an old pyxv (mean_, proj_) or not fitted; fit it again "
                             "to store it as parameters")
        return {"type": "embedding_preprocessor", **self.get_params(), "steps": [s.to_params() for s in self.steps_]}

    @classmethod
    def from_params(cls, p: dict) -> "EmbeddingPreprocessor":
        obj = cls(**{k: p[k] for k in ("center", "projection", "lda_dim", "length_norm", "eps")})
        obj.steps_ = [from_table(s, STEP_TYPES, "pre-processing step") for s in p["steps"]]
        return obj


# Type names of stored pre-processing steps -> their classes (names stay when classes are renamed).
STEP_TYPES = {c.TYPE: c for c in (Center, LDA, Whiten, LengthNorm)}
