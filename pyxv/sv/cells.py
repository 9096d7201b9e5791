"""The result of scoring: sorted target / nontarget scores per (enrolment emotion, test emotion) cell.

``CellTable`` holds the cells, ``table_summary`` turns them into EER/minDCF per
cell plus the overall, same-emotion and cross-emotion figures, ``merge_tables``
pools the tables of several folds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..labels import order_emotions
from ..metrics.sv import SVMetrics, sv_metrics_sorted

__all__ = ["CellTable", "table_summary", "merge_tables"]


@dataclass
class CellTable:
    """Sorted target / nontarget scores per (enrolment emotion, test emotion) cell.

    ``cells[(a, b)] = (tar_sorted, non_sorted)``. With ``symmetric`` only a <= b is
    stored and (b, a) is the same cell.
    """
    emotions: list[str]
    cells: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]
    symmetric: bool = True
    info: dict = field(default_factory=dict)

    def cell(self, a: int, b: int):
        if self.symmetric and a > b:
            a, b = b, a
        return self.cells.get((a, b), (np.zeros(0, np.float32), np.zeros(0, np.float32)))

    def _pool(self, keys) -> tuple[np.ndarray, list[np.ndarray]]:
        keys = [k for k in keys if k in self.cells]
        t = np.sort(np.concatenate([self.cells[k][0] for k in keys])) if keys else np.zeros(0, np.float32)
        return t, [self.cells[k][1] for k in keys if self.cells[k][1].size]

    def pooled(self, which: str = "all"):
        """Scores of every trial once: 'all', 'same' (a == b) or 'cross' (a != b)."""
        keys = list(self.cells)
        if which == "same":
            keys = [k for k in keys if k[0] == k[1]]
        elif which == "cross":
            keys = [k for k in keys if k[0] != k[1]]
        return self._pool(keys)

    def metrics(self) -> dict[tuple[int, int], SVMetrics]:
        out = {}
        for a in range(len(self.emotions)):
            for b in range(len(self.emotions)):
                if self.symmetric and a > b:
                    out[(a, b)] = out[(b, a)]
                else:
                    out[(a, b)] = sv_metrics_sorted(*self.cell(a, b))
        return out


def table_summary(table: CellTable, calibration: bool = False) -> dict:
    """Per-cell metrics plus overall / same-emotion / cross-emotion figures (cell means and pooled trials).

    ``calibration``: also Cllr, min Cllr and actual DCF(0.01) of all trials (``out["calibration"]``).
    """
    M = table.metrics()
    if "overall" in table.info:
        overall = sv_metrics_sorted(*table.info["overall"])
    else:
        overall = sv_metrics_sorted(*table.pooled("all"))
    E = len(table.emotions)
    same = [M[(a, a)].eer for a in range(E) if not math.isnan(M[(a, a)].eer)]
    cross = [M[(a, b)].eer for a in range(E) for b in range(E) if a != b and not math.isnan(M[(a, b)].eer)]
    out = {"cells": M, "overall": overall,
           "same_emotion_mean_eer": float(np.mean(same)) if same else math.nan,
           "cross_emotion_mean_eer": float(np.mean(cross)) if cross else math.nan,
           "same_emotion_pooled_eer": math.nan, "cross_emotion_pooled_eer": math.nan}
    if table.symmetric:  # pooled trials: every same- (cross-) emotion trial once, one threshold for all
        for which in ("same", "cross"):
            t, n = table.pooled(which)
            out[f"{which}_emotion_pooled_eer"] = sv_metrics_sorted(t, n).eer
    if calibration:
        if "overall" in table.info:
            t, n = table.info["overall"]
        else:
            t, n = table.pooled("all")
        out["calibration"] = sv_metrics_sorted(t, n, calibration=True)
    return out


def merge_tables(tables: list[CellTable]) -> CellTable:
    """Pool symmetric exact-mode tables (cells matched by emotion name) into one."""
    emotions = order_emotions({e for t in tables for e in t.emotions})
    pos = {e: i for i, e in enumerate(emotions)}
    parts: dict = {}
    for t in tables:
        if not t.symmetric:
            raise ValueError("merge_tables pools all-pairs tables only (not trials-file tables)")
        for (a, b), (tar, non) in t.cells.items():
            if not isinstance(non, np.ndarray):
                raise ValueError("merge_tables needs exact scores (a fold's trials went to histograms)")
            i, j = sorted((pos[t.emotions[a]], pos[t.emotions[b]]))
            parts.setdefault((i, j), ([], []))
            parts[(i, j)][0].append(tar)
            parts[(i, j)][1].append(non)
    cells = {k: (np.sort(np.concatenate(v[0])), np.sort(np.concatenate(v[1]))) for k, v in parts.items()}
    info = {"n_trials": int(sum(t.info.get("n_trials", 0) for t in tables)),
            "score_seconds": float(sum(t.info.get("score_seconds", 0.0) for t in tables)), "mode": "exact"}
    return CellTable(emotions, cells, symmetric=True, info=info)
