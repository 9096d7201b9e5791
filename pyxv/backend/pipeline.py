"""A speaker-verification back-end: a pre-processing chain plus a scorer, saved to one file.

>>> be = Backend.from_config(cfg, "plda").fit(X_train, spk_train)   # X (N, D)
>>> be.score_pairs(E, T)        # (n,) score of E[i] against T[i]
>>> be.score_matrix(E, T)       # (n, m)
>>> be.threshold                # EER threshold on the back-end training data
>>> be.save("backend.pkl"); Backend.load("backend.pkl")

Both scorers reduce to ``S = Z_a Z_b' + q_a + q_b`` on "prepared" embeddings
(``prepare``): cosine has unit-length Z and q = 0, PLDA has the diagonalised
form of ``pyxv.backend.plda``. So the all-pairs scorer of ``pyxv.sv`` needs one
float32 matrix product per block whatever the back-end; AS-norm adds
per-utterance cohort statistics.
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field

import numpy as np

from .asnorm import ASNorm
from .plda import PLDA
from .preprocess import LDA, Center, LengthNorm, Whiten, class_sums

log = logging.getLogger(__name__)

__all__ = ["Backend", "Prepared", "DEFAULT_CONFIG"]

FORMAT = "pyxv-sv-backend"
VERSION = 1

DEFAULT_CONFIG = {
    "cosine": {"center": True, "lda_dim": 0, "whiten": False, "length_norm": True},
    "plda": {"center": True, "lda_dim": 200, "whiten": False, "length_norm": True, "n_iter": 10},
    "asnorm": {"enabled": False, "cohort_size": 1000, "top_k": 200},
    "threshold": {"max_utts": 3000},
    "seed": 777,
}


@dataclass
class Prepared:
    """Embeddings ready for block scoring: z (N, K) float32, optional q (N,), AS-norm stats."""
    z: np.ndarray
    q: np.ndarray | None = None
    mu: np.ndarray | None = None
    sd: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.z.shape[0]

    def __getitem__(self, idx) -> "Prepared":
        return self.take(idx)

    def take(self, idx) -> "Prepared":
        f = (lambda a: None if a is None else a[idx])
        return Prepared(self.z[idx], f(self.q), f(self.mu), f(self.sd))


class Backend:
    """Pre-processing (centre, LDA, whiten, length-norm) + cosine or PLDA scoring (+ AS-norm)."""

    def __init__(self, kind: str = "cosine", *, center: bool = True, lda_dim: int = 0,
                 whiten: bool = False, length_norm: bool = True, n_iter: int = 10,
                 asnorm: dict | None = None, threshold_max_utts: int = 3000, seed: int = 777):
        if kind not in ("cosine", "plda"):
            raise ValueError(f"unknown back-end '{kind}' (cosine|plda)")
        self.kind = kind
        self.center, self.lda_dim, self.whiten, self.length_norm = center, lda_dim, whiten, length_norm
        self.n_iter = n_iter
        self.asnorm_cfg = dict(asnorm or {})
        self.threshold_max_utts = threshold_max_utts
        self.seed = seed
        self.steps: list = []
        self.plda: PLDA | None = None
        self.asnorm: ASNorm | None = None
        self.cohort_: Prepared | None = None
        self.threshold = float("nan")
        self.train_eer = float("nan")
        self.info: dict = {}

    @classmethod
    def from_config(cls, cfg: dict | None, kind: str) -> "Backend":
        """Build from a conf/sv.yaml-style dict (missing keys take DEFAULT_CONFIG values)."""
        cfg = cfg or {}
        sec = {**DEFAULT_CONFIG[kind], **(cfg.get(kind) or {})}
        asn = {**DEFAULT_CONFIG["asnorm"], **(cfg.get("asnorm") or {})}
        thr = {**DEFAULT_CONFIG["threshold"], **(cfg.get("threshold") or {})}
        unknown = set(sec) - set(DEFAULT_CONFIG[kind])
        if unknown:
            raise ValueError(f"sv config: unknown keys in '{kind}': {sorted(unknown)}")
        return cls(kind, center=bool(sec["center"]), lda_dim=int(sec.get("lda_dim") or 0),
                   whiten=bool(sec["whiten"]), length_norm=bool(sec["length_norm"]),
                   n_iter=int(sec.get("n_iter", 10)), asnorm=asn,
                   threshold_max_utts=int(thr["max_utts"]), seed=int(cfg.get("seed", 777)))

    # ------------------------------------------------------------------ fit
    def fit(self, X, spk) -> "Backend":
        """X: (N, D) training embeddings; spk: (N,) speaker labels."""
        X = np.asarray(X, dtype=np.float64)
        spk = np.asarray(spk)
        if X.ndim != 2 or X.shape[0] != spk.shape[0]:
            raise ValueError(f"back-end training: {X.shape[0]} embeddings but {spk.shape[0]} labels")
        n_spk = np.unique(spk).size
        if n_spk < 2:
            raise ValueError(f"back-end training data has {n_spk} speaker(s); at least 2 are needed")
        self.steps = []
        if self.center:
            self.steps.append(Center())
        if self.lda_dim and self.lda_dim > 0:
            if self.lda_dim >= min(X.shape[1], n_spk):
                log.warning("LDA dim %d capped at min(D=%d, n_spk-1=%d)", self.lda_dim, X.shape[1], n_spk - 1)
            self.steps.append(LDA(self.lda_dim))
        if self.whiten:
            self.steps.append(Whiten())
        if self.length_norm:
            self.steps.append(LengthNorm())
        Y = X
        for s in self.steps:
            Y = s.fit_transform(Y, spk)
        if self.kind == "plda":
            self.plda = PLDA(n_iter=self.n_iter).fit(Y, spk)
        self.info = {"n_train_utts": int(X.shape[0]), "n_train_spk": int(n_spk), "in_dim": int(X.shape[1]),
                     "out_dim": int(Y.shape[1])}
        self.asnorm, self.cohort_ = None, None
        rng = np.random.default_rng(self.seed)
        if self.asnorm_cfg.get("enabled"):
            # Cohort: speaker means of the training set (a seeded subset of speakers).
            labels, inv = np.unique(spk, return_inverse=True)
            means = class_sums(Y, inv.ravel(), labels.size) / np.bincount(inv.ravel())[:, None]
            size = int(self.asnorm_cfg.get("cohort_size", 1000))
            if size < labels.size:
                means = means[np.sort(rng.choice(labels.size, size, replace=False))]
            self.cohort_ = self._prepare_transformed(means)
            self.asnorm = ASNorm(int(self.asnorm_cfg.get("top_k", 200))).fit(means)
            self.info["cohort_size"] = int(means.shape[0])
        self._set_threshold(X, spk, rng)
        return self

    def _set_threshold(self, X, spk, rng):
        """EER threshold over all pairs of (a seeded subset of) the training utterances."""
        from ..metrics.sv import eer

        idx = np.arange(X.shape[0])
        if idx.size > self.threshold_max_utts:
            idx = np.sort(rng.choice(idx.size, self.threshold_max_utts, replace=False))
        P = self.prepare(X[idx])
        S = self.score_block(P, P)
        iu = np.triu_indices(idx.size, 1)
        same = (spk[idx][:, None] == spk[idx][None, :])[iu]
        s = S[iu]
        e, th = eer(s[same], s[~same], return_threshold=True)
        self.threshold, self.train_eer = th, 100 * e
        self.info.update(threshold=th, train_eer=100 * e, threshold_utts=int(idx.size))

    # -------------------------------------------------------------- scoring
    def transform(self, X) -> np.ndarray:
        """Pre-processing chain only: (N, D) -> (N, K) float64."""
        Y = np.asarray(X, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y[None, :]
        for s in self.steps:
            Y = s.transform(Y)
        return Y

    def _prepare_transformed(self, Y) -> Prepared:
        if self.kind == "plda":
            Z, q = self.plda.prepare(Y)
            return Prepared(Z.astype(np.float32), q.astype(np.float32))
        n = np.linalg.norm(Y, axis=1, keepdims=True)
        return Prepared((Y / np.where(n > 0, n, 1.0)).astype(np.float32))

    def prepare(self, X) -> Prepared:
        """Embeddings (N, D) -> Prepared (with AS-norm statistics when enabled)."""
        P = self._prepare_transformed(self.transform(X))
        if self.asnorm is not None:
            P.mu, P.sd = self.asnorm.utt_stats(P, lambda A, C: self._raw(A, self.cohort_))
        return P

    @staticmethod
    def _raw(A: Prepared, B: Prepared) -> np.ndarray:
        S = A.z @ B.z.T
        if A.q is not None:
            S += A.q[:, None]
            S += B.q[None, :]
        return S

    def score_block(self, A: Prepared, B: Prepared) -> np.ndarray:
        """Scores (len(A), len(B)) float32 of prepared embeddings (AS-norm applied when enabled)."""
        S = self._raw(A, B)
        if self.asnorm is not None:
            S = ASNorm.normalize(S, A.mu, A.sd, B.mu, B.sd).astype(np.float32)
        return S

    def score_matrix(self, E, T) -> np.ndarray:
        return self.score_block(self.prepare(E), self.prepare(T))

    def score_pairs(self, E, T) -> np.ndarray:
        """Score of E[i] against T[i]: (n,) for (n, D) inputs (1-D inputs: one trial)."""
        return self.score_prepared_pairs(self.prepare(E), self.prepare(T))

    def score_prepared_pairs(self, A: Prepared, B: Prepared) -> np.ndarray:
        """Score of A[i] against B[i] for prepared embeddings: (n,) float64."""
        s = np.einsum("ij,ij->i", A.z.astype(np.float64), B.z.astype(np.float64))
        if A.q is not None:
            s = s + A.q + B.q
        if self.asnorm is not None:
            s = 0.5 * ((s - A.mu) / A.sd + (s - B.mu) / B.sd)
        return s

    # ----------------------------------------------------------- save/load
    def save(self, path) -> None:
        from ..io import atomic_open

        with atomic_open(path, "wb") as f:
            pickle.dump({"format": FORMAT, "version": VERSION, "backend": self}, f)

    @staticmethod
    def load(path) -> "Backend":
        with open(path, "rb") as f:
            obj = pickle.load(f)
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ValueError(f"{path}: not a pyxv SV back-end file")
        if obj.get("version") != VERSION:
            raise ValueError(f"{path}: back-end format version {obj.get('version')}, this pyxv reads {VERSION}")
        return obj["backend"]

    def __repr__(self) -> str:
        return (f"Backend(kind={self.kind!r}, steps={self.steps}, threshold={self.threshold:.4g}, "
                f"asnorm={self.asnorm is not None})")
