"""The report's pictures (PNG, matplotlib's Agg back-end, no display needed).

Every function draws one figure and writes it atomically to ``path``:
confusion matrices (a grid per corpus), EER heat maps (a grid per corpus),
utterance-duration histograms (the paper's Fig. 1), x-vector training curves,
a 2-D projection of x-vectors coloured by emotion and by speaker, and DET curves
(stage 6 draws its det.png with :func:`det_curves`).

The functions take arrays and labels and know nothing of the recipe's files, so
any layer may draw with them (bench/house.py places this module in the lowest).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

os.environ.setdefault("MPLBACKEND", "Agg")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..io import atomic_open  # noqa: E402


def save(fig, path: str | os.PathLike, dpi: int = 90) -> Path:
    path = Path(path)
    try:
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    _readable(path)
    return path


def _readable(path: Path) -> None:
    """Temporary files are created 0600; a report is for everyone to read."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _grid(n: int, max_cols: int):
    cols = min(n, max_cols)
    rows = (n + cols - 1) // cols
    return rows, cols


def _matrix(ax, mat: np.ndarray, row_labels, col_labels, title: str, fmt: str, cmap: str,
            vmin=None, vmax=None, xlabel="", ylabel=""):
    m = np.ma.masked_invalid(np.asarray(mat, dtype=float))
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(col_labels)), labels=col_labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_labels)), labels=row_labels, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    # Text colour follows the colour scale actually used.
    hi = vmax if vmax is not None else (np.nanmax(mat) if np.isfinite(mat).any() else 0.0)
    lo = vmin if vmin is not None else (np.nanmin(mat) if np.isfinite(mat).any() else 0.0)
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            v = mat[i, j]
            text = "—" if not np.isfinite(v) else format(v, fmt)
            dark = np.isfinite(v) and hi > lo and (v - lo) / (hi - lo) > 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    return im


def confusion_grid(panels: Sequence[tuple[str, Sequence[str], np.ndarray]], path, suptitle: str = ""):
    """Row-normalised confusion matrices (recall %, counts in the text would crowd).

    panels: ``[(title, labels (L,), counts (L, L) rows true / cols predicted)]``.
    """
    rows, cols = _grid(len(panels), 4)
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 3.0 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, labels, cm) in zip(axes.flat, panels):
        cm = np.asarray(cm, dtype=float)
        tot = cm.sum(axis=1, keepdims=True)
        pct = np.divide(100 * cm, tot, out=np.full_like(cm, np.nan), where=tot > 0)
        _matrix(ax, pct, labels, labels, title, ".0f", "Blues", 0, 100, "predicted", "true")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return save(fig, path)


def eer_heatmaps(panels: Sequence[tuple[str, Sequence[str], np.ndarray]], path, suptitle: str = ""):
    """EER (%) by enrolment (rows) x test (columns) emotion, one panel per
    model/back-end, on one colour scale."""
    rows, cols = _grid(len(panels), 2)
    fig, axes = plt.subplots(rows, cols, figsize=(3.9 * cols, 3.4 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    finite = [m[np.isfinite(m)] for _, _, m in panels]
    allv = np.concatenate(finite) if finite else np.array([])
    vmin, vmax = (float(allv.min()), float(allv.max())) if allv.size else (0.0, 1.0)
    im = None
    for k, (ax, (title, emos, mat)) in enumerate(zip(axes.flat, panels)):
        im = _matrix(ax, np.asarray(mat, dtype=float), emos, emos, title, ".1f", "OrRd", vmin, vmax,
                     "test", "enrolment" if k % cols == 0 else "")
    if im is not None:
        fig.colorbar(im, ax=list(axes.flat), shrink=0.7, label="EER (%)")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return save(fig, path)


def duration_histograms(series: Sequence[tuple[str, np.ndarray]], path, bins: int = 40):
    """Histograms of utterance durations (seconds), one panel per data set (Fig. 1)."""
    rows, cols = _grid(len(series), 3)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat[len(series):]:
        ax.axis("off")
    for ax, (title, durs) in zip(axes.flat, series):
        durs = np.asarray(durs, dtype=float)
        ax.hist(durs, bins=bins, color="#4477aa")
        ax.set_title(f"{title}\n{len(durs)} utts, median {np.median(durs):.1f} s", fontsize=9)
        ax.set_xlabel("duration (s)", fontsize=8)
        ax.set_ylabel("utterances", fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def training_curves(histories: Mapping[str, list[dict]], path):
    """Loss and accuracy per epoch (train and valid) for each x-vector model."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (model, hist) in enumerate(histories.items()):
        c = colors[k % len(colors)]
        ep = [h.get("epoch", i + 1) for i, h in enumerate(hist)]
        for ax, key in ((a1, "loss"), (a2, "acc")):
            for split, style in (("train", "-"), ("valid", "--")):
                ys = [h.get(f"{split}_{key}") for h in hist]
                pts = [(x, y) for x, y in zip(ep, ys) if isinstance(y, (int, float)) and np.isfinite(y)]
                if pts:
                    ax.plot(*zip(*pts), style, color=c, marker=".", label=f"ResNet-{model} {split}")
    a1.set_title("speaker loss", fontsize=9)
    a2.set_title("speaker accuracy", fontsize=9)
    for ax in (a1, a2):
        ax.set_xlabel("epoch", fontsize=8)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, path)


def project_2d(X: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) embeddings -> (N, 2): centred and length-normalised, then PCA
    (``pca``) or t-SNE on the first 50 principal components (``tsne``); seeded."""
    X = np.asarray(X, dtype=np.float64)
    X = X - X.mean(0)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    if method == "tsne" and len(X) > 5:
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE

        Xr = PCA(n_components=min(50, X.shape[1], len(X)), random_state=seed).fit_transform(X)
        return TSNE(n_components=2, init="pca", random_state=seed,
                    perplexity=min(30.0, (len(X) - 1) / 3)).fit_transform(Xr)
    from sklearn.decomposition import PCA

    if len(X) < 2:
        return np.zeros((len(X), 2))
    Y = PCA(n_components=min(2, X.shape[1], len(X)), random_state=seed).fit_transform(X)
    if Y.shape[1] < 2:
        Y = np.hstack([Y, np.zeros((len(Y), 1))])
    return Y


def projection(Y: np.ndarray, emotions: Sequence[str], speakers: Sequence[str], path, title: str = "",
               method: str = "pca"):
    """Scatter of 2-D points coloured by emotion (left) and by speaker (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.3))
    for ax, labels, what in ((axes[0], emotions, "emotion"), (axes[1], speakers, "speaker")):
        classes = sorted(set(labels))
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        lab = np.asarray(labels, dtype=object)
        for k, c in enumerate(classes):
            m = lab == c
            ax.scatter(Y[m, 0], Y[m, 1], s=7, color=cmap(k % cmap.N), label=c, alpha=0.8, linewidths=0)
        ax.set_title(f"coloured by {what} ({len(classes)})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if len(classes) <= 12:
            ax.legend(fontsize=7, markerscale=2, loc="best")
    fig.suptitle(f"{title} ({method.upper()})", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def det_curves(curves: Sequence[tuple[str, np.ndarray, np.ndarray, Mapping]], path, title: str = ""):
    """DET curves on probit axes: ``curves`` holds (label, false-alarm rates, miss rates,
    matplotlib line options); an empty list draws a note that no cell could be scored."""
    from scipy.stats import norm

    def probit(p):
        return norm.ppf(np.clip(p, 1e-5, 1 - 1e-5))

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for name, pfa, pmiss, kw in curves:
        ax.plot(probit(pfa), probit(pmiss), label=name, **kw)
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    ax.set_xticks(probit(ticks))
    ax.set_xticklabels([f"{100 * t:g}" for t in ticks])
    ax.set_yticks(probit(ticks))
    ax.set_yticklabels([f"{100 * t:g}" for t in ticks])
    ax.set_xlim(probit(0.0005), probit(0.99))
    ax.set_ylim(probit(0.0005), probit(0.99))
    ax.plot([-5, 5], [-5, 5], color="0.8", lw=0.5)
    ax.set_xlabel("false alarm probability (%)")
    ax.set_ylabel("miss probability (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7)
    else:
        ax.text(0, 0, "no curve: every cell lacks targets or nontargets", ha="center", fontsize=8)
    fig.tight_layout()
    return save(fig, path, dpi=110)
