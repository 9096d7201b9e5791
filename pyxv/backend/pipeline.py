"""A speaker-verification back-end: a pre-processing chain plus a scorer, saved to one file.

>>> be = Backend.from_config(cfg, "plda").fit(X_train, spk_train, emo_train, gender_train)   # X (N, D)
>>> be.score_pairs(E, T)        # (n,) score of E[i] against T[i]
>>> be.score_matrix(E, T)       # (n, m)
>>> be.threshold                # EER threshold on the back-end training data
>>> be.save("backend.json"); Backend.load("backend.json")    # backend.json + backend.npz

Emotion-aware pieces (conf/sv.yaml): ``nap`` (project out within-speaker emotion
directions, ``pyxv.backend.nap``), ``asnorm.emotion_aware`` (per-emotion cohort
statistics, ``EmotionASNorm``) and ``calibration`` (score -> LLR, optionally per
emotion pair, trained on held-out training speakers). They learn from the
training data's emotion labels; the emotion-aware scoring steps also need each
trial side's emotion: ``prepare(X, emo)`` with labels or (N, E) posteriors over
``be.emotions``.

Both scorers reduce to ``S = Z_a Z_b' + q_a + q_b`` on "prepared" embeddings
(``prepare``): cosine has unit-length Z and q = 0, PLDA has the diagonalised
form of ``pyxv.backend.plda``. So the all-pairs scorer of ``pyxv.sv`` needs one
float32 matrix product per block whatever the back-end; AS-norm adds
per-utterance cohort statistics.

Saved as parameters (:mod:`pyxv.params`): ``backend.json`` (configuration, type
names, scalars) + ``backend.npz`` (arrays), so loading one runs no code. The old
pickled ``backend.pkl`` loads only with trust (``Backend.load(path, trust=True)``,
``--trust``, ``PYXV_TRUST_PICKLE=1``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, Schema
from ..labels import order_emotions
from ..params import ParamsError, from_table, load_trusted_pickle, params_paths, read_params, write_params
from .asnorm import ASNorm, EmotionASNorm
from .calibration import LinearCalibration
from .nap import EmotionNAP, check_emotion_labels, select_nap_dim
from .plda import PLDA
from .preprocess import LDA, STEP_TYPES, Center, LengthNorm, Whiten, class_sums

log = logging.getLogger(__name__)

__all__ = ["Backend", "CalibrationError", "Prepared", "DEFAULT_CONFIG", "calibration_groups"]

FORMAT = "pyxv-sv-backend"   # the old pickled files
VERSION = 2
PARAMS_TYPE = "sv_backend"
# Stored pieces: type name -> class (the names stay when a class is renamed).
BACKEND_STEP_TYPES = {**STEP_TYPES, EmotionNAP.TYPE: EmotionNAP}

DEFAULT_CONFIG = {
    "cosine": {"center": True, "lda_dim": 0, "whiten": False, "length_norm": True},
    "plda": {"center": True, "lda_dim": 200, "whiten": False, "length_norm": True, "n_iter": 10},
    "nap": {"enabled": False, "dim": "auto", "dim_candidates": [0, 2, 4, 6, 8, 10, 12, 16],
            "dim_criterion": "cross", "n_splits": 4, "n_repeats": 3},
    "asnorm": {"enabled": False, "cohort_size": 1000, "top_k": 200, "emotion_aware": False},
    "calibration": {"enabled": False, "by_emotion": False, "prior": 0.5, "n_splits": 4, "max_utts": 2000},
    "threshold": {"max_utts": 3000},
    "seed": 777,
}


class BackendSchema(Schema):
    """The back-end's settings (:data:`DEFAULT_CONFIG`, conf/sv.yaml's sections). nap.dim is 'auto'
    or a number of dimensions: two types, which a default alone cannot say."""

    def check(self, path: str, value: Any, *, where: str = "", key: str | None = None) -> Any:
        if path != "nap.dim":
            return super().check(path, value, where=where, key=key)
        if value != "auto" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise ConfigError(f"{where}{key or path}: expected 'auto' or a number of dimensions, got {value!r}")
        return value


BACKEND_CHOICES = {"nap.dim_criterion": ("cross", "all", "mean")}
BACKEND_SCHEMA = BackendSchema(DEFAULT_CONFIG, choices=BACKEND_CHOICES)


class CalibrationError(ValueError):
    """The back-end training speakers cannot give held-out calibration trials of both kinds."""


def calibration_groups(spk, gender, n_splits: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Held-out speaker groups for calibration, each with a same-gender pair of distinct speakers.

    Trials are same-gender pairs, so a group needs two speakers of one gender to give nontarget trials.
    Each gender's speakers are permuted with ``rng`` and cut into units of 2 (the last unit of an odd
    count takes 3); k = min(n_splits, units) groups get the units round-robin, then the speakers alone in
    their gender (target trials only). spk, gender: (N,) per-utterance labels (gender None: one gender).
    Raises CalibrationError when fewer than 2 groups can be made.
    """
    spk = np.asarray(spk)
    gender = np.zeros(spk.size, dtype=int) if gender is None else np.asarray(gender)
    speakers, first = np.unique(spk, return_index=True)
    spk_gender = gender[first]
    units, alone, counts = [], [], {}
    for g in sorted(set(spk_gender.tolist()), key=str):
        members = speakers[spk_gender == g]
        members = members[rng.permutation(members.size)]
        counts[str(g)] = int(members.size)
        n = members.size // 2
        if n == 0:
            alone.extend(members.tolist())
            continue
        units += [members[2 * i:2 * i + 2] for i in range(n - 1)] + [members[2 * (n - 1):]]
    k = min(int(n_splits), len(units))
    if k < 2:
        raise CalibrationError(
            f"calibration needs 2 held-out groups each with 2 speakers of one gender (nontarget trials are "
            f"same-gender pairs); the {speakers.size} back-end training speakers (by gender: "
            f"{', '.join(f'{g} {n}' for g, n in counts.items())}) make {len(units)} such group(s)")
    groups: list[list] = [[] for _ in range(k)]
    for i, u in enumerate(units):
        groups[i % k].extend(u.tolist())
    for i, s in enumerate(alone, len(units)):
        groups[i % k].append(s)
    return [np.array(g) for g in groups]


@dataclass
class Prepared:
    """Embeddings ready for block scoring: z (N, K) float32, optional q (N,), AS-norm stats
    (mu, sd: (N,) or, emotion-aware, (N, E)), emotion posteriors or one-hot labels post (N, E)."""
    z: np.ndarray
    q: np.ndarray | None = None
    mu: np.ndarray | None = None
    sd: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    post: np.ndarray | None = None

    def __len__(self) -> int:
        return self.z.shape[0]

    def __getitem__(self, idx) -> "Prepared":
        return self.take(idx)

    def take(self, idx) -> "Prepared":
        f = (lambda a: None if a is None else a[idx])
        return Prepared(self.z[idx], f(self.q), f(self.mu), f(self.sd), post=f(self.post))

    def to_params(self) -> dict:
        return {"z": self.z, "q": self.q, "mu": self.mu, "sd": self.sd, "post": self.post, "extra": dict(self.extra)}

    @classmethod
    def from_params(cls, p: dict) -> "Prepared":
        return cls(p["z"], p["q"], p["mu"], p["sd"], dict(p.get("extra") or {}), p["post"])


class Backend:
    """Pre-processing (centre, emotion NAP, LDA, whiten, length-norm) + cosine or PLDA scoring
    (+ AS-norm, plain or emotion-aware) (+ calibration to LLRs)."""

    def __init__(self, kind: str = "cosine", *, center: bool = True, lda_dim: int = 0,
                 whiten: bool = False, length_norm: bool = True, n_iter: int = 10,
                 asnorm: dict | None = None, threshold_max_utts: int = 3000, seed: int = 777,
                 nap: dict | None = None, calibration: dict | None = None):
        if kind not in ("cosine", "plda"):
            raise ValueError(f"unknown back-end '{kind}' (cosine|plda)")
        self.kind = kind
        self.center, self.lda_dim, self.whiten, self.length_norm = center, lda_dim, whiten, length_norm
        self.n_iter = n_iter
        self.asnorm_cfg = {**DEFAULT_CONFIG["asnorm"], **(asnorm or {})}
        self.nap_cfg = {**DEFAULT_CONFIG["nap"], **(nap or {})}
        self.calibration_cfg = {**DEFAULT_CONFIG["calibration"], **(calibration or {})}
        self.threshold_max_utts = threshold_max_utts
        self.seed = seed
        self.steps: list = []
        self.plda: PLDA | None = None
        self.asnorm: ASNorm | EmotionASNorm | None = None
        self.cohort_: Prepared | list | None = None
        self.calibration: LinearCalibration | None = None
        self.emotions: list[str] = []
        self.train_speakers: list[str] = []
        self.threshold = float("nan")
        self.train_eer = float("nan")
        self.info: dict = {}

    @classmethod
    def from_config(cls, cfg: dict | None, kind: str) -> "Backend":
        """Build from a conf/sv.yaml-style dict (missing keys take DEFAULT_CONFIG values)."""
        if kind not in ("cosine", "plda"):
            raise ValueError(f"unknown back-end '{kind}' (cosine|plda)")
        # The back-end's part of the settings (conf/sv.yaml also holds the scorer's keys), checked:
        # pyxv.sv.config has checked a file already; this checks a mapping a caller built itself.
        c = BACKEND_SCHEMA.complete({k: v for k, v in (cfg or {}).items() if k in DEFAULT_CONFIG},
                                    where="sv config: ")
        sec = c[kind]
        return cls(kind, center=sec["center"], lda_dim=sec["lda_dim"], whiten=sec["whiten"],
                   length_norm=sec["length_norm"], n_iter=sec.get("n_iter", 10), asnorm=c["asnorm"],
                   threshold_max_utts=c["threshold"]["max_utts"], seed=c["seed"], nap=c["nap"],
                   calibration=c["calibration"])

    @property
    def needs_trial_emotions(self) -> bool:
        """True when scoring needs each trial side's emotion (labels or posteriors)."""
        return bool((self.asnorm_cfg.get("enabled") and self.asnorm_cfg.get("emotion_aware"))
                    or (self.calibration_cfg.get("enabled") and self.calibration_cfg.get("by_emotion")))

    @property
    def needs_training_emotions(self) -> bool:
        return self.needs_trial_emotions or bool(self.nap_cfg.get("enabled"))

    def emotion_matrix(self, emo, what: str = "trial utterances") -> np.ndarray:
        """(N, E) float32 over ``self.emotions``: one-hot from labels, or posteriors checked and renormalised."""
        E = len(self.emotions)
        if emo is None:
            raise ValueError(f"this back-end scores with emotions (emotion-aware AS-norm or calibration) but the "
                             f"{what} have no emotion labels and no emotion posteriors were given")
        arr = np.asarray(emo)
        if arr.ndim == 2 and arr.dtype.kind == "f":
            if arr.shape[1] != E:
                raise ValueError(f"emotion posteriors of the {what} have {arr.shape[1]} columns; the back-end's "
                                 f"emotions are {self.emotions}")
            if not np.all(np.isfinite(arr)) or (arr < 0).any():
                raise ValueError(f"emotion posteriors of the {what} contain negative, NaN or inf values")
            tot = arr.sum(1, keepdims=True)
            if (tot <= 0).any():
                raise ValueError(f"emotion posteriors of the {what}: {int((tot <= 0).sum())} row(s) sum to 0")
            return (arr / tot).astype(np.float32)
        labels = [str(e) for e in arr.tolist()]
        unlabelled = [i for i, e in enumerate(labels) if e in ("", "None")]
        if unlabelled:
            raise ValueError(f"{len(unlabelled)} of the {what} have no emotion label (rows "
                             f"{', '.join(map(str, unlabelled[:5]))}) and no emotion posteriors were given")
        pos = {e: i for i, e in enumerate(self.emotions)}
        bad = sorted({e for e in labels if e not in pos})
        if bad:
            raise ValueError(f"{what}: emotion(s) {bad} were not in the back-end training data {self.emotions}; "
                             "give posteriors over the back-end's emotions instead")
        M = np.zeros((len(labels), E), np.float32)
        M[np.arange(len(labels)), [pos[e] for e in labels]] = 1
        return M

    # ------------------------------------------------------------------ fit
    def fit(self, X, spk, emo=None, gender=None, *, calibrate: bool = True) -> "Backend":
        """X: (N, D) training embeddings; spk: (N,) speaker labels; emo: (N,) emotion labels (needed by
        the emotion-aware pieces); gender: (N,) (calibration trials are same-gender pairs when given)."""
        X = np.asarray(X, dtype=np.float64)
        spk = np.asarray(spk)
        if X.ndim != 2 or X.shape[0] != spk.shape[0]:
            raise ValueError(f"back-end training: {X.shape[0]} embeddings but {spk.shape[0]} labels")
        n_spk = np.unique(spk).size
        if n_spk < 2:
            raise ValueError(f"back-end training data has {n_spk} speaker(s); at least 2 are needed")
        if self.needs_training_emotions:
            what = " and ".join(w for w, on in (
                ("the emotion projection (nap)", self.nap_cfg.get("enabled")),
                ("emotion-aware AS-norm", self.asnorm_cfg.get("enabled") and self.asnorm_cfg.get("emotion_aware")),
                ("emotion-conditioned calibration",
                 self.calibration_cfg.get("enabled") and self.calibration_cfg.get("by_emotion"))) if on)
            spk, emo = check_emotion_labels(spk, emo, what)
        if emo is not None:
            emo = np.asarray([str(e) for e in np.asarray(emo).tolist()])
            self.emotions = order_emotions(set(emo.tolist()))
        self.info = {}
        self.train_speakers = sorted({str(x) for x in spk.tolist()})  # for protocol checks: who it has seen
        self.steps = []
        if self.center:
            self.steps.append(Center())
        if self.nap_cfg.get("enabled"):
            dim = self.nap_cfg.get("dim", "auto")
            if dim == "auto":
                Xc = X - X.mean(0) if self.center else X
                dim, table = select_nap_dim(Xc, spk, emo, gender, tuple(int(k) for k in self.nap_cfg["dim_candidates"]),
                                            n_splits=int(self.nap_cfg["n_splits"]),
                                            criterion=str(self.nap_cfg["dim_criterion"]), seed=self.seed,
                                            n_repeats=int(self.nap_cfg.get("n_repeats", 1)))
                self.info["nap_dim_selection"] = {str(k): v for k, v in table.items()}
            if int(dim) > 0:
                self.steps.append(EmotionNAP(int(dim)))
            self.info["nap_dim"] = int(dim)
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
            Y = s.fit_transform(Y, spk, emo) if isinstance(s, EmotionNAP) else s.fit_transform(Y, spk)
        if self.kind == "plda":
            self.plda = PLDA(n_iter=self.n_iter).fit(Y, spk)
        self.info.update({"n_train_utts": int(X.shape[0]), "n_train_spk": int(n_spk), "in_dim": int(X.shape[1]),
                          "out_dim": int(Y.shape[1])})
        self.asnorm, self.cohort_, self.calibration = None, None, None
        rng = np.random.default_rng(self.seed)
        if self.asnorm_cfg.get("enabled") and self.asnorm_cfg.get("emotion_aware"):
            # One cohort per emotion: that emotion's training utterances (a seeded subset of cohort_size).
            size = int(self.asnorm_cfg.get("cohort_size", 1000))
            cohorts = []
            for e in self.emotions:
                idx = np.flatnonzero(emo == e)
                if idx.size > size:
                    idx = np.sort(rng.choice(idx, size, replace=False))
                cohorts.append(self._prepare_transformed(Y[idx]))
            self.cohort_ = cohorts
            self.asnorm = EmotionASNorm(int(self.asnorm_cfg.get("top_k", 200))).fit(cohorts)
            self.info["cohort_size"] = {e: len(c) for e, c in zip(self.emotions, cohorts)}
        elif self.asnorm_cfg.get("enabled"):
            # Cohort: speaker means of the training set (a seeded subset of speakers).
            labels, inv = np.unique(spk, return_inverse=True)
            means = class_sums(Y, inv.ravel(), labels.size) / np.bincount(inv.ravel())[:, None]
            size = int(self.asnorm_cfg.get("cohort_size", 1000))
            if size < labels.size:
                means = means[np.sort(rng.choice(labels.size, size, replace=False))]
            self.cohort_ = self._prepare_transformed(means)
            self.asnorm = ASNorm(int(self.asnorm_cfg.get("top_k", 200))).fit(means)
            self.info["cohort_size"] = int(means.shape[0])
        if self.calibration_cfg.get("enabled") and calibrate:
            self._fit_calibration(X, spk, emo, gender)
        self._set_threshold(X, spk, rng, emo)
        return self

    def _fit_calibration(self, X, spk, emo, gender):
        """Calibration on held-out speakers: the training speakers in up to ``n_splits`` disjoint groups
        (``calibration_groups``: each has a same-gender pair, so nontarget trials); each group's same-gender
        pairs are scored by this back-end fitted on the other groups."""
        cfg = self.calibration_cfg
        rng = np.random.default_rng(self.seed + 1)
        gender = np.zeros(spk.size, dtype=int) if gender is None else np.asarray(gender)
        groups = calibration_groups(spk, gender, int(cfg["n_splits"]), rng)
        k = len(groups)
        max_utts = int(cfg["max_utts"])
        S_all, T_all, EA, EB = [], [], [], []
        for held in groups:
            ho = np.isin(spk, held)
            sub = Backend(self.kind, center=self.center, lda_dim=self.lda_dim, whiten=self.whiten,
                          length_norm=self.length_norm, n_iter=self.n_iter, asnorm=self.asnorm_cfg,
                          threshold_max_utts=2, seed=self.seed, nap=self.nap_cfg,
                          calibration={**self.calibration_cfg, "enabled": False})
            sub.fit(X[~ho], spk[~ho], None if emo is None else emo[~ho], gender[~ho], calibrate=False)
            idx = np.flatnonzero(ho)
            if idx.size > max_utts // k:
                idx = np.sort(rng.choice(idx, max_utts // k, replace=False))
            P = sub.prepare(X[idx], None if emo is None else emo[idx])
            S = sub.score_block(P, P)
            iu = np.triu_indices(idx.size, 1)
            keep = (gender[idx][:, None] == gender[idx][None, :])[iu]
            S_all.append(S[iu][keep])
            T_all.append((spk[idx][:, None] == spk[idx][None, :])[iu][keep])
            if emo is not None:
                codes = np.array([self.emotions.index(e) for e in emo[idx]])
                EA.append(codes[iu[0]][keep])
                EB.append(codes[iu[1]][keep])
        s, t = np.concatenate(S_all), np.concatenate(T_all)
        if not t.any() or t.all():
            # Groups always hold a same-gender pair; only a sample of max_utts or one-utterance speakers ends here.
            raise CalibrationError(f"calibration: the held-out groups gave {int(t.sum())} target and "
                                   f"{int((~t).sum())} nontarget trials (calibration.max_utts {max_utts} over "
                                   f"{k} groups of {np.unique(spk).size} speakers)")
        cal = LinearCalibration(by_emotion=bool(cfg["by_emotion"]), prior=float(cfg["prior"]))
        if cfg["by_emotion"]:
            cal.fit(s, t, np.concatenate(EA), np.concatenate(EB), n_emotions=len(self.emotions))
        else:
            cal.fit(s, t)
        self.calibration = cal
        self.info["calibration"] = {"a": cal.a_, "b": cal.b_, "n_target": cal.n_trials_[0],
                                    "n_nontarget": cal.n_trials_[1], "splits": k}
        log.info("calibration on %d held-out target / %d nontarget trials of %d splits: %s",
                 cal.n_trials_[0], cal.n_trials_[1], k, cal)

    def _set_threshold(self, X, spk, rng, emo=None):
        """EER threshold over all pairs of (a seeded subset of) the training utterances."""
        from ..metrics.sv import eer

        idx = np.arange(X.shape[0])
        if idx.size > self.threshold_max_utts:
            idx = np.sort(rng.choice(idx.size, self.threshold_max_utts, replace=False))
        P = self.prepare(X[idx], None if emo is None or not self.needs_trial_emotions else emo[idx])
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

    def prepare(self, X, emo=None) -> Prepared:
        """Embeddings (N, D) -> Prepared (with AS-norm statistics when enabled).

        emo: the utterances' emotion labels (N,) or posteriors (N, E) over ``self.emotions``;
        required when ``needs_trial_emotions``.
        """
        P = self._prepare_transformed(self.transform(X))
        if self.needs_trial_emotions:
            P.post = self.emotion_matrix(emo)
            if P.post.shape[0] != len(P):
                raise ValueError(f"{P.post.shape[0]} emotion rows for {len(P)} embeddings")
        if isinstance(self.asnorm, EmotionASNorm):
            mu, sd = self.asnorm.utt_stats(P, self._raw)
            P.mu, P.sd = mu.astype(np.float32), sd.astype(np.float32)  # float32 blocks: half the memory traffic
        elif self.asnorm is not None:
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
        if isinstance(self.asnorm, EmotionASNorm):
            S = EmotionASNorm.normalize(S, A.mu, A.sd, A.post, B.mu, B.sd, B.post)
        elif self.asnorm is not None:
            S = ASNorm.normalize(S, A.mu, A.sd, B.mu, B.sd)
        if self.calibration is not None:
            S = self.calibration.apply_block(S, A.post, B.post)
        return S.astype(np.float32, copy=False)

    def score_matrix(self, E, T, emo_e=None, emo_t=None) -> np.ndarray:
        return self.score_block(self.prepare(E, emo_e), self.prepare(T, emo_t))

    def score_pairs(self, E, T, emo_e=None, emo_t=None) -> np.ndarray:
        """Score of E[i] against T[i]: (n,) for (n, D) inputs (1-D inputs: one trial)."""
        return self.score_prepared_pairs(self.prepare(E, emo_e), self.prepare(T, emo_t))

    def score_prepared_pairs(self, A: Prepared, B: Prepared) -> np.ndarray:
        """Score of A[i] against B[i] for prepared embeddings: (n,) float64."""
        s = np.einsum("ij,ij->i", A.z.astype(np.float64), B.z.astype(np.float64))
        if A.q is not None:
            s = s + A.q + B.q
        if isinstance(self.asnorm, EmotionASNorm):
            s = EmotionASNorm.normalize_pairs(s, A.mu, A.sd, A.post, B.mu, B.sd, B.post)
        elif self.asnorm is not None:
            s = 0.5 * ((s - A.mu) / A.sd + (s - B.mu) / B.sd)
        if self.calibration is not None:
            s = self.calibration.apply(s, A.post, B.post)
        return s

    # ----------------------------------------------------------- save/load
    _CONFIG = ("kind", "center", "lda_dim", "whiten", "length_norm", "n_iter", "asnorm_cfg", "nap_cfg",
               "calibration_cfg", "threshold_max_utts", "seed", "emotions", "train_speakers", "threshold",
               "train_eer", "info")

    def to_params(self) -> dict:
        """Configuration, fitted pieces (by type name) and arrays: what :func:`pyxv.params.write_params` stores."""
        p = {k: getattr(self, k) for k in self._CONFIG}
        p["steps"] = [s.to_params() for s in self.steps]
        p["plda"] = None if self.plda is None else self.plda.to_params()
        p["calibration"] = None if self.calibration is None else self.calibration.to_params()
        if isinstance(self.asnorm, EmotionASNorm):   # its cohorts are the back-end's (cohort_)
            p["asnorm"] = {"type": "emotion_asnorm", "top_k": self.asnorm.top_k}
        else:
            p["asnorm"] = None if self.asnorm is None else self.asnorm.to_params()
        c = self.cohort_
        p["cohort"] = (None if c is None else [x.to_params() for x in c] if isinstance(c, list) else c.to_params())
        return p

    @classmethod
    def from_params(cls, p: dict) -> "Backend":
        be = cls(p["kind"])
        for k in cls._CONFIG:
            setattr(be, k, p[k])
        be.steps = [from_table(s, BACKEND_STEP_TYPES, "back-end step") for s in p["steps"]]
        be.plda = None if p["plda"] is None else PLDA.from_params(p["plda"])
        be.calibration = None if p["calibration"] is None else LinearCalibration.from_params(p["calibration"])
        c = p["cohort"]
        be.cohort_ = None if c is None else [Prepared.from_params(x) for x in c] if isinstance(c, list) \
            else Prepared.from_params(c)
        a = p["asnorm"]
        if a is None:
            be.asnorm = None
        elif a.get("type") == "emotion_asnorm":
            be.asnorm = EmotionASNorm(int(a["top_k"]))
            be.asnorm.cohorts_ = list(be.cohort_)
        else:
            be.asnorm = ASNorm.from_params(a)
        return be

    def save(self, path) -> Path:
        """Write ``<stem>.json`` + ``<stem>.npz`` (``path``: either of them or the stem); returns the JSON path."""
        return write_params(path, PARAMS_TYPE, self.to_params())

    @classmethod
    def load(cls, path, trust: bool | None = None) -> "Backend":
        """A saved back-end: ``backend.json`` (or its ``.npz``); an old pickled ``backend.pkl`` only with trust."""
        p = Path(path)
        if p.suffix not in (".json", ".npz") and not p.is_file() and not params_paths(p)[0].is_file():
            raise ParamsError(f"{p}: no such back-end file")
        if p.suffix not in (".json", ".npz") and p.is_file():
            with open(p, "rb") as f:
                pickled = f.read(1) == b"\x80"   # every pickle protocol pyxv wrote starts so
            if not pickled:
                raise ParamsError(f"{p}: not a pyxv SV back-end file (neither backend.json/.npz nor a pickle)")
            return cls._load_pickled(p, trust)
        _, params, _ = read_params(p, {PARAMS_TYPE})
        try:
            return cls.from_params(params)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ParamsError(f"{p}: not a usable SV back-end ({type(e).__name__}: {e})") from None

    @staticmethod
    def _load_pickled(path, trust) -> "Backend":
        obj = load_trusted_pickle(path, "an SV back-end", trust)
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ParamsError(f"{path}: not a pyxv SV back-end file")
        if obj.get("version") not in (1, VERSION):
            raise ParamsError(f"{path}: back-end format version {obj.get('version')}, this pyxv reads 1-{VERSION}")
        be = obj["backend"]
        # Version 1 (before the emotion-aware pieces): the same back-end with those pieces off.
        for name, default in (("nap_cfg", DEFAULT_CONFIG["nap"]), ("calibration_cfg", DEFAULT_CONFIG["calibration"]),
                              ("calibration", None), ("emotions", []), ("train_speakers", [])):
            if not hasattr(be, name):
                setattr(be, name, dict(default) if isinstance(default, dict) else default)
        be.asnorm_cfg = {**DEFAULT_CONFIG["asnorm"], **be.asnorm_cfg}
        return be

    def __repr__(self) -> str:
        asn = "emotion-aware" if isinstance(self.asnorm, EmotionASNorm) else self.asnorm is not None
        return (f"Backend(kind={self.kind!r}, steps={self.steps}, threshold={self.threshold:.4g}, "
                f"asnorm={asn}, calibration={self.calibration})")
