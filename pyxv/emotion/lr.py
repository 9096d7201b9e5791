"""Logistic regression on frozen embeddings (the paper's "Frozen" rows, section 2.2).

Pre-processing (options, fitted on training data only): centring, whitening or LDA,
length normalisation -- the usual x-vector back-end steps, from ``pyxv.backend.preprocess``. Then scikit-learn's
multinomial LogisticRegression with balanced class weights. The inverse
regularisation C is chosen by weighted F1 on a dev set when the protocol has one,
else by inner speaker-independent cross-validation (GroupKFold by speaker) on the
training data; the test set is never looked at. :class:`StandardizedLR` is the same
LR behind a per-dimension standardisation, for the reference systems' hand-crafted vectors.

A fold's model is stored as parameters (:func:`save_lr_model`: ``model.json`` +
``model.npz``, see :mod:`pyxv.params`), re-created exactly on reading
(:func:`load_lr_model`): the same scikit-learn pipeline state, bit-identical
posteriors. The old pickled ``model.pkl`` is read only with trust.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline

from ..backend.preprocess import EmbeddingPreprocessor  # the pre-processing vocabulary shared with SV
from ..metrics.classification import weighted_f1
from ..params import ParamsError, from_table, load_trusted_pickle, read_params, write_params

log = logging.getLogger("pyxv.emotion")

__all__ = ["EmbeddingPreprocessor", "EmotionLR", "StandardizedLR", "make_pipeline", "DEFAULT_C_GRID", "save_lr_model", "load_lr_model",
           "lr_model_file"]

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

    # ------------------------------------------------------------ parameters
    def to_params(self) -> dict:
        """Settings, C selection and the fitted pipeline's state (pre-processing steps, LR coefficients)."""
        lr = self.pipe_.named_steps["lr"]
        fitted = {k: v for k, v in vars(lr).items() if k.endswith("_") and k != "classes_"}
        return {"type": "emotion_lr", "classes": self.classes, "pre": self.pre, "C_grid": self.C_grid,
                "cv_folds": self.cv_folds, "max_iter": self.max_iter, "seed": self.seed, "C": self.C,
                "selection": self.selection, "preprocessor": self.pipe_.named_steps["pre"].to_params(),
                "lr_params": lr.get_params(), "lr_fitted": fitted,
                "lr_classes": [str(c) for c in lr.classes_.tolist()], "lr_classes_dtype": lr.classes_.dtype.str}

    @classmethod
    def from_params(cls, p: dict) -> "EmotionLR":
        obj = cls(p["classes"], pre=p["pre"], C_grid=p["C_grid"], cv_folds=p["cv_folds"], max_iter=p["max_iter"],
                  seed=p["seed"], C=p["C"])
        obj.selection = p["selection"]
        known = LogisticRegression().get_params()
        lr = LogisticRegression(**{k: v for k, v in p["lr_params"].items() if k in known})
        vars(lr).update(p["lr_fitted"])
        # sklearn keeps string classes as an object array (labels as given to fit)
        lr.classes_ = np.array(p["lr_classes"], dtype=object if p["lr_classes_dtype"] == "|O" else None)
        obj.pipe_ = Pipeline([("pre", EmbeddingPreprocessor.from_params(p["preprocessor"])), ("lr", lr)])
        return obj


class StandardizedLR:
    """Per-dimension standardisation (training mean and std) + :class:`EmotionLR`: the
    reference systems' model (:mod:`pyxv.emotion.reference`), for hand-crafted features.

    ``fit(X (N, D), y, groups, X_dev, y_dev)``; ``predict_proba(X) -> (N, C)`` in
    ``classes`` order. ``lr_opts``: the ``lr`` section of conf/emotion.yaml (its
    C_grid, cv_folds and max_iter are used)."""

    def __init__(self, classes, lr_opts: dict | None = None, seed: int = 0):
        o = lr_opts or {}
        kw = {k: o[k] for k in ("C_grid", "cv_folds", "max_iter") if k in o}
        self.classes = list(classes)
        self.lr = EmotionLR(self.classes, pre={"center": False, "projection": "none", "length_norm": False},
                            seed=seed, **kw)

    def _std(self, X) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_

    def fit(self, X, y, groups=None, X_dev=None, y_dev=None) -> "StandardizedLR":
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(0)
        sd = X.std(0)
        self.scale_ = np.where(sd > 1e-8, sd, 1.0)   # a constant dimension stays 0, not inf
        self.lr.fit(self._std(X), y, groups=groups, X_dev=None if X_dev is None else self._std(X_dev), y_dev=y_dev)
        return self

    @property
    def selection(self) -> dict:
        return self.lr.selection

    def predict_proba(self, X) -> np.ndarray:
        return self.lr.predict_proba(self._std(X))

    def predict(self, X) -> list[str]:
        return self.lr.predict(self._std(X))

    def to_params(self) -> dict:
        return {"type": "standardized_lr", "classes": self.classes, "mean_": self.mean_, "scale_": self.scale_,
                "lr": self.lr.to_params()}

    @classmethod
    def from_params(cls, p: dict) -> "StandardizedLR":
        obj = cls.__new__(cls)
        obj.classes, obj.mean_, obj.scale_ = list(p["classes"]), p["mean_"], p["scale_"]
        obj.lr = EmotionLR.from_params(p["lr"])
        return obj


# --------------------------------------------------------- a fold's LR model
PARAMS_TYPE = "emotion_lr_model"


def _model_types() -> dict:
    """Stored LR model type name -> class (names stay when a class is renamed)."""
    return {"emotion_lr": EmotionLR, "standardized_lr": StandardizedLR}


def lr_model_file(model_dir) -> Path | None:
    """The LR model of a fold or final dir: ``model.json``, else an older pyxv's ``model.pkl``, else None."""
    for name in ("model.json", "model.pkl"):
        if (Path(model_dir) / name).is_file():
            return Path(model_dir) / name
    return None


def save_lr_model(model_dir, model, meta: dict, *, drop_pickle: bool = True) -> Path:
    """Write a fitted LR model (:class:`EmotionLR` or the reference systems' ``StandardizedLR``) of a fold
    or final dir as ``model.json`` + ``model.npz``. ``meta``: plain values stored beside it (``type``:
    frozen_lr | reference_lr, ``classes``, ``xvector_model`` ...). Removes an older pyxv's ``model.pkl``
    there (superseded) unless ``drop_pickle`` is false (a conversion removes it after its check).
    Returns the JSON path."""
    import sklearn

    p = write_params(Path(model_dir) / "model.json", PARAMS_TYPE,
                     {"meta": {**meta, "selection": model.selection}, "model": model.to_params()},
                     versions={"scikit-learn": sklearn.__version__})
    if drop_pickle:
        (Path(model_dir) / "model.pkl").unlink(missing_ok=True)
    return p


def load_lr_model(model_dir, trust: bool | None = None) -> tuple[object, dict]:
    """(model, meta) of a fold or final dir's LR model (:func:`save_lr_model`). An older pyxv's pickled
    ``model.pkl`` is read only with trust (``--trust``, ``PYXV_TRUST_PICKLE=1``, ``trust=True``)."""
    path = lr_model_file(model_dir)
    if path is None:
        raise ParamsError(f"{model_dir}: no LR model (model.json)")
    if path.suffix == ".pkl":
        obj = load_trusted_pickle(path, "an emotion LR model", trust)
        model = obj.get("lr", obj.get("model")) if isinstance(obj, dict) else None
        if model is None or not hasattr(model, "predict_proba"):
            raise ParamsError(f"{path}: not a pyxv emotion LR model")
        return model, {k: v for k, v in obj.items() if k not in ("lr", "model")}
    _, params, written = read_params(path, {PARAMS_TYPE})
    import sklearn

    if written.get("scikit-learn") not in (None, sklearn.__version__):   # the same state, maybe other arithmetic
        log.info("%s: written with scikit-learn %s, read with %s", path, written["scikit-learn"], sklearn.__version__)
    try:
        model = from_table(params["model"], _model_types(), "LR model")
        meta = dict(params["meta"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ParamsError(f"{path}: not a usable emotion LR model ({type(e).__name__}: {e})") from None
    return model, meta
