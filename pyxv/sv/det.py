"""The DET figure of a scored table (probit axes): all trials, the same- and cross-emotion pools, each
same-emotion cell. matplotlib is imported when a figure is drawn, so scoring alone does not need it.

It sits beside the writer that draws it with each system's tables (stage 6's det.png), not with the
report's figures: pyxv.report is a layer above pyxv.sv (bench/house.py) and only copies det.png.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..metrics.sv import det_curve_sorted
from .cells import CellTable

__all__ = ["write_det"]


def write_det(path, table: CellTable, title: str = "") -> None:
    """DET curves (probit axes): all trials, same-emotion and cross-emotion pools, each same-emotion cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    def probit(p):
        return norm.ppf(np.clip(p, 1e-5, 1 - 1e-5))

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    curves = []
    if "overall" in table.info:
        curves.append(("all trials", table.info["overall"], dict(color="k", lw=2)))
    else:
        curves.append(("all trials", table.pooled("all"), dict(color="k", lw=2)))
        curves.append(("same emotion", table.pooled("same"), dict(color="tab:blue", lw=1.5)))
        curves.append(("cross emotion", table.pooled("cross"), dict(color="tab:red", lw=1.5)))
    for a, e in enumerate(table.emotions):
        curves.append((f"{e}/{e}", table.cell(a, a), dict(lw=0.8, ls="--")))
    for name, (t, n), kw in curves:
        pfa, pmiss = det_curve_sorted(t, n, max_points=1000)
        if pfa.size:
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
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0, 0, "no curve: every cell lacks targets or nontargets", ha="center", fontsize=8)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
