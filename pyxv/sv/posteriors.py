"""Trial-side emotions from the recipe's emotion recogniser (stage 5).

An emotion system's dir holds ``<fold>/posteriors`` (one line per utterance:
the id and one probability per class) and ``<fold>/classes.txt``, each fold
from a model trained on that fold's training speakers only. The emotion-aware
back-end pieces take those rows, columns matched to the back-end's emotions.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["read_posteriors", "read_all_fold_posteriors", "posterior_matrix"]


def read_posteriors(fold_dir) -> tuple[list[str], dict[str, np.ndarray]]:
    """(classes, {utt: (C,) probabilities}) from an emotion system's fold dir (posteriors + classes.txt)."""
    d = Path(fold_dir)
    for f in ("posteriors", "classes.txt"):
        if not (d / f).is_file():
            raise FileNotFoundError(f"{d / f} does not exist (run stage 5 for this emotion system)")
    classes = [ln.split()[0] for ln in open(d / "classes.txt", encoding="utf-8") if ln.strip()]
    out = {}
    with open(d / "posteriors", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            p = line.split()
            if not p:
                continue
            if len(p) != len(classes) + 1:
                raise ValueError(f"{d / 'posteriors'}:{n}: expected the utterance and {len(classes)} "
                                 f"probabilities ({' '.join(classes)}), got {len(p) - 1} numbers")
            try:
                out[p[0]] = np.array([float(x) for x in p[1:]])
            except ValueError:
                raise ValueError(f"{d / 'posteriors'}:{n}: not a number in '{line.strip()}'") from None
    return classes, out


def posterior_matrix(utts, classes: list[str], post: dict, emotions: list[str], where: str) -> np.ndarray:
    """(N, E) posteriors of ``utts`` over the back-end's ``emotions`` (columns matched by name).

    Errors name the utterances without posteriors and the classes the back-end does not know.
    """
    missing = [u for u in utts if u not in post]
    if missing:
        raise ValueError(f"{where}: {len(missing)} trial utterance(s) have no emotion posteriors, e.g. "
                         f"{', '.join(missing[:5])}")
    extra = [c for c in classes if c not in emotions]
    if extra:
        raise ValueError(f"{where}: the emotion model's classes {extra} are not among the back-end training "
                         f"data's emotions {emotions}")
    P = np.zeros((len(utts), len(emotions)))
    cols = [emotions.index(c) for c in classes]
    for i, u in enumerate(utts):
        P[i, cols] = post[u]
    return P


def read_all_fold_posteriors(sysdir):
    """Union of an emotion system's per-fold posteriors: each utterance from the fold that tested it."""
    d = Path(sysdir)
    folds = sorted(p for p in d.iterdir() if p.is_dir() and (p / "posteriors").is_file()) if d.is_dir() else []
    if not folds:
        raise FileNotFoundError(f"{d}: no <fold>/posteriors (run stage 5 for this emotion system)")
    classes, out = None, {}
    for f in folds:
        c, p = read_posteriors(f)
        if classes is not None and c != classes:
            raise ValueError(f"{f}/classes.txt: classes {c} differ from the other folds' {classes}")
        classes = c
        out.update(p)
    return classes, out
