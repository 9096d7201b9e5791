"""Classification metrics for emotion recognition (the paper's Table 2 metric and friends).

All functions take label sequences (strings or ints) of equal length N.

Which labels count ("labels present", our documented rule):
  * ``labels`` of the result = the classes that occur in ``y_true`` or ``y_pred``,
    in the order of the ``labels`` argument when one is given (classes of that list
    that occur nowhere are dropped), else sorted.
  * weighted F1 = ``sklearn.metrics.f1_score(average='weighted')`` over those labels:
    per-class F1 weighted by the class's support in ``y_true``; a class that is only
    predicted (support 0) weighs 0 (its false alarms already count as misses of the
    true classes, lowering their recall).
  * unweighted accuracy (UA) = mean over classes with support > 0 of per-class
    recall (a class never present in ``y_true`` has no recall and is left out).
  * accuracy = fraction correct.
  * confusion = counts, rows true, columns predicted, in ``labels`` order.

So a fold whose test set lacks a class is scored over the classes it has, and a
class that the model never saw in training (so never predicts) still counts with
recall 0 for its test utterances.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np


def present_labels(y_true: Sequence, y_pred: Sequence, labels: Iterable | None = None) -> list:
    """Classes occurring in ``y_true`` or ``y_pred``, in ``labels`` order if given.

    Predicted or true classes missing from a given ``labels`` are appended, sorted,
    so nothing is silently dropped.
    """
    seen = set(y_true) | set(y_pred)
    if labels is None:
        return sorted(seen)
    labels = list(labels)
    out = [c for c in labels if c in seen]
    extra = sorted(seen - set(labels))
    return out + extra


def confusion_matrix(y_true: Sequence, y_pred: Sequence, labels: Sequence) -> np.ndarray:
    """(L, L) int counts, rows true class, columns predicted class, in ``labels`` order."""
    index = {c: i for i, c in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        cm[index[t], index[p]] += 1
    return cm


def weighted_f1(y_true: Sequence, y_pred: Sequence) -> float:
    """Support-weighted mean of per-class F1 (sklearn ``average='weighted'``)."""
    # imported here: stage 5's training imports this module, also where scikit-learn is absent (bench/gpu.sh)
    from sklearn.metrics import f1_score

    if len(y_true) == 0:
        raise ValueError("weighted_f1: no utterances to score")
    return float(f1_score(list(y_true), list(y_pred), average="weighted", zero_division=0))


def unweighted_accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Mean per-class recall over the classes present in ``y_true``."""
    y_true = np.asarray(list(y_true), dtype=object)
    y_pred = np.asarray(list(y_pred), dtype=object)
    if len(y_true) == 0:
        raise ValueError("unweighted_accuracy: no utterances to score")
    recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in sorted(set(y_true.tolist()))]
    return float(np.mean(recalls))


def classification_metrics(y_true: Sequence, y_pred: Sequence, labels: Iterable | None = None,
                           fold: str | None = None) -> dict:
    """All metrics of one test set as the JSON-ready dict of the metrics.json contract.

    Returns {"weighted_f1", "unweighted_accuracy", "accuracy", "labels", "confusion",
    "n_test"} (+ "fold" when given); rates are fractions in [0, 1].
    """
    y_true = list(y_true)
    y_pred = list(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"classification_metrics: {len(y_true)} true labels but {len(y_pred)} predictions")
    if not y_true:
        raise ValueError("classification_metrics: empty test set" + (f" in {fold}" if fold else ""))
    labs = present_labels(y_true, y_pred, labels)
    cm = confusion_matrix(y_true, y_pred, labs)
    out = {
        "weighted_f1": weighted_f1(y_true, y_pred),
        "unweighted_accuracy": unweighted_accuracy(y_true, y_pred),
        "accuracy": float(np.mean([t == p for t, p in zip(y_true, y_pred)])),
        "labels": [str(c) for c in labs],
        "confusion": cm.tolist(),
        "n_test": len(y_true),
    }
    if fold is not None:
        out["fold"] = fold
    return out


def summarize_folds(fold_metrics: Mapping[str, dict], pooled_true: Sequence, pooled_pred: Sequence,
                    labels: Iterable | None = None, **info) -> dict:
    """The summary.json dict: per-fold metrics, mean/std over folds, pooled metrics.

    ``fold_metrics`` maps fold name -> classification_metrics dict; ``pooled_*`` are
    all folds' test labels and predictions concatenated. The std is the population
    std (ddof=0) over folds; 0 for one fold. ``info`` (system, train_data, corpus)
    goes into the dict first.
    """
    if not fold_metrics:
        raise ValueError("summarize_folds: no folds")
    out = dict(info)
    out["folds"] = {k: fold_metrics[k] for k in sorted(fold_metrics)}
    for key in ("weighted_f1", "unweighted_accuracy"):
        vals = np.array([m[key] for m in fold_metrics.values()], dtype=float)
        out[f"mean_{key}"] = float(vals.mean())
        out[f"std_{key}"] = float(vals.std())
    out["mean_accuracy"] = float(np.mean([m["accuracy"] for m in fold_metrics.values()]))
    out["pooled"] = classification_metrics(pooled_true, pooled_pred, labels)
    return out
