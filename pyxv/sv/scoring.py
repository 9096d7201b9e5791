"""Scoring the trials: all same-gender pairs block by block, or the trials of a Kaldi trials file.

``score_all_pairs`` scores the trials of a ``TrialSet`` from the embedding
matrix without materialising a trial list: utterances are grouped by
(gender, emotion) and sorted by speaker, so every (emotion a, emotion b) cell
of a gender is one rectangle of the score matrix (the upper triangle for
a == b), and the target trials of a row block are contiguous column ranges.
Each cell keeps its float32 scores; one in-place sort per cell then gives the
exact EER/minDCF (``pyxv.metrics.sv``). A pair with emotions (a, b) counts in
cell (a, b) and in cell (b, a): the table is symmetric.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, TextIO

import numpy as np

from ..metrics.sv import ScoreHistogram
from .cells import CellTable, table_summary
from .trials import TrialSet, read_trials, trial_set_from_labels

log = logging.getLogger(__name__)

__all__ = ["score_all_pairs", "score_trials_file", "eer_by_emotion", "BLOCK_SIZE", "MAX_EXACT_TRIALS",
           "HIST_BINS"]

# The scorer's defaults (conf/sv.yaml's block_size, max_exact_trials, hist_bins take theirs from here).
BLOCK_SIZE = 4096               # rows per score block
MAX_EXACT_TRIALS = 600_000_000  # above this, nontarget scores go into histograms
HIST_BINS = 1 << 20             # bins per cell in histogram mode


def _ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the column ranges [lo_i, hi_i) of each row i."""
    cnt = np.maximum(hi - lo, 0)
    tot = int(cnt.sum())
    rows = np.repeat(np.arange(lo.size), cnt)
    if tot == 0:
        return rows, rows
    first = np.repeat(np.cumsum(cnt) - cnt, cnt)
    cols = np.repeat(lo, cnt) + (np.arange(tot) - first)
    return rows, cols


def _score_range(ts: TrialSet, prepared, score_block: Callable, seed: int = 0) -> tuple[float, float]:
    """Histogram range from a pilot of up to 2000 x 2000 scores, widened by half the span each side."""
    rng = np.random.default_rng(seed)
    n = len(ts)
    r = np.sort(rng.choice(n, min(n, 2000), replace=False))
    c = np.sort(rng.choice(n, min(n, 2000), replace=False))
    S = np.asarray(score_block(prepared[r], prepared[c]), dtype=np.float64)
    lo, hi = float(S.min()), float(S.max())
    span = max(hi - lo, 1e-6)
    return lo - 0.5 * span, hi + 0.5 * span


class _CellScores:
    """Scores of one table being collected block by block: per (a, b) cell with a <= b, the target scores
    (exact) and the nontarget scores (exact, or counted into a histogram over ``hist_range``)."""

    def __init__(self, emotions: list[str], hist_range: tuple[float, float] | None, hist_bins: int):
        self.emotions = emotions
        self.hist_range, self.hist_bins = hist_range, hist_bins
        self.tar: dict[tuple[int, int], list[np.ndarray]] = {}
        self.non: dict[tuple[int, int], list[np.ndarray]] = {}
        self.n_low: dict[tuple[int, int], int] = {}   # -inf sentinels per cell (pairs j <= i), cut off at the end
        self.hists: dict[tuple[int, int], ScoreHistogram] | None = {} if hist_range is not None else None
        self._tril: dict[int, np.ndarray] = {}

    def open(self, key: tuple[int, int]) -> None:
        """A cell of the table, even if no gender gives it a trial."""
        self.tar.setdefault(key, [])
        self.non.setdefault(key, [])
        self.n_low.setdefault(key, 0)

    def add(self, key: tuple[int, int], S: np.ndarray, ri: np.ndarray, ci: np.ndarray, diagonal: bool) -> None:
        """One block of scores S (m, n) (consumed): targets at (ri, ci); with ``diagonal`` the block's rows
        are its first m columns, and only pairs j > i are trials."""
        m = S.shape[0]
        self.tar[key].append(S[ri, ci].copy())
        tri = None
        if diagonal:
            tri = self._tril.get(m)
            if tri is None:
                tri = self._tril[m] = np.tril(np.ones((m, m), dtype=bool))
        if self.hists is not None:
            h = self.hists.get(key)
            if h is None:
                h = self.hists[key] = ScoreHistogram(*self.hist_range, self.hist_bins)
            idx = h.bin_index(S)
            idx[ri, ci] = h.bins  # the discard slot: targets, and pairs j <= i
            if tri is not None:
                idx[:, :m][tri] = h.bins
            h.add_index(idx)
            return
        S[ri, ci] = np.inf  # sentinels: sorted to the end, cut off there
        if tri is not None:
            S[:, :m][tri] = -np.inf  # pairs j <= i are not trials (or counted elsewhere)
            self.n_low[key] += m * (m + 1) // 2
        self.non[key].append(S.reshape(-1))

    def cells(self) -> dict:
        """(sorted targets, sorted nontargets or their histogram) per cell; the chunks are released."""
        cells = {}
        for key in self.non:
            tar = np.concatenate(self.tar[key]) if self.tar[key] else np.zeros(0, np.float32)
            self.tar[key].clear()
            tar.sort()
            if self.hists is not None:
                if np.isnan(tar).any():
                    raise ValueError("NaN scores: check the x-vectors for NaN or all-zero vectors with PLDA")
                cells[key] = (tar, self.hists.get(key) or ScoreHistogram(0.0, 1.0, 1))
                continue
            non = np.concatenate(self.non[key]) if self.non[key] else np.zeros(0, np.float32)
            self.non[key].clear()
            non.sort()
            if non.size and np.isnan(non[-1]):
                raise ValueError(f"NaN scores in cell {self.emotions[key[0]]}/{self.emotions[key[1]]}: "
                                 "check the x-vectors for NaN or all-zero vectors with PLDA")
            cells[key] = (tar, non[self.n_low[key]:non.size - tar.size])
        return cells


def _cell_blocks(ts: TrialSet, prepared, score_block: Callable, Ia: np.ndarray, Ib: np.ndarray, same: bool,
                 block_size: int):
    """(rows, cols, S float32, target rows, target cols) per row block of the cell Ia x Ib of one gender
    (both sorted by speaker); a same-emotion cell (``same``, Ia is Ib) is its upper triangle."""
    Pb = prepared[Ib] if not same else None
    spk_b = ts.spk[Ib]
    # Same-emotion cells: smaller row blocks, so little of the unused lower triangle is computed.
    bs = block_size if not same else max(1, min(block_size, 1024))
    for r0 in range(0, Ia.size, bs):
        rows = Ia[r0:r0 + bs]
        if same:
            cols = Ia[r0:]
            S = score_block(prepared[rows], prepared[cols])
            spk_c = ts.spk[cols]
        else:
            cols = Ib
            S = score_block(prepared[rows], Pb)
            spk_c = spk_b
        S = np.asarray(S, dtype=np.float32)
        spk_r = ts.spk[rows]
        lo = np.searchsorted(spk_c, spk_r, "left")
        hi = np.searchsorted(spk_c, spk_r, "right")
        if same:
            lo = np.maximum(lo, np.arange(rows.size) + 1)  # strict upper triangle: col > row
        yield rows, cols, S, *_ranges(lo, hi)


def score_all_pairs(ts: TrialSet, prepared, score_block: Callable, *, block_size: int = BLOCK_SIZE,
                    scores_out: TextIO | None = None, progress_every: float = 10.0,
                    max_exact_trials: int = MAX_EXACT_TRIALS, hist_bins: int = HIST_BINS) -> CellTable:
    """Score every unordered same-gender pair of ``ts`` and collect per-cell sorted scores.

    prepared: rows aligned with ``ts.utts``, sliceable by index arrays (``Prepared``
    or an ndarray). score_block(A, B) -> (len(A), len(B)) float32 scores.
    scores_out: if given, a Kaldi ``enroll test score`` line per trial is written.
    Memory: about 4 bytes per trial (plus block_size x n_cell scratch). Above
    ``max_exact_trials`` trials, nontarget scores go into per-cell histograms of
    ``hist_bins`` bins instead (``ScoreHistogram``; targets stay exact), so
    memory no longer grows with the number of trials.
    """
    E = len(ts.emotions)
    t0 = time.time()
    last = t0
    n_trials_done = 0
    n_expected, _ = ts.count_trials()
    utts = np.asarray(ts.utts)
    hist_range = None
    if n_expected > max_exact_trials:
        hist_range = _score_range(ts, prepared, score_block)
        log.info("%d trials > %d: nontarget scores go into histograms of %d bins over [%.4g, %.4g]",
                 n_expected, max_exact_trials, hist_bins, *hist_range)
    collected = _CellScores(list(ts.emotions), hist_range, hist_bins)
    for g in range(len(ts.genders)):
        groups = []
        for e in range(E):
            idx = np.flatnonzero((ts.gender == g) & (ts.emo == e))
            groups.append(idx[np.argsort(ts.spk[idx], kind="stable")])
        for a in range(E):
            for b in range(a, E):
                collected.open((a, b))
                if groups[a].size == 0 or groups[b].size == 0:
                    continue
                for rows, cols, S, ri, ci in _cell_blocks(ts, prepared, score_block, groups[a], groups[b],
                                                          a == b, block_size):
                    m = rows.size
                    if scores_out is not None:
                        _write_block(scores_out, utts[rows], utts[cols], S, diag=(a == b))
                    n_trials_done += S.size - (m * (m + 1) // 2 if a == b else 0)
                    collected.add((a, b), S, ri, ci, diagonal=(a == b))
                    now = time.time()
                    if now - last > progress_every:
                        last = now
                        log.info("scored %d of %d trials (%.0f%%) in %.0fs", n_trials_done, n_expected,
                                 100 * n_trials_done / max(n_expected, 1), now - t0)
    t_score = time.time() - t0
    cells = collected.cells()
    info = {"score_seconds": t_score, "sort_seconds": time.time() - t0 - t_score,
            "n_trials": int(sum(t.size + n.size for t, n in cells.values())),
            "mode": "exact" if hist_range is None else f"histogram ({hist_bins} bins)"}
    if collected.hists is not None:
        info["n_clamped"] = int(sum(h.n_clamped for h in collected.hists.values()))
        if info["n_clamped"]:
            log.warning("%d scores fell outside the histogram range and were clamped", info["n_clamped"])
    return CellTable(list(ts.emotions), cells, symmetric=True, info=info)


def _write_block(f: TextIO, ru: np.ndarray, cu: np.ndarray, S: np.ndarray, diag: bool) -> None:
    for i in range(S.shape[0]):
        j0 = i + 1 if diag else 0
        row = S[i, j0:]
        if row.size:
            u = ru[i]
            f.write("".join(f"{u} {v} {s:.6f}\n" for v, s in zip(cu[j0:].tolist(), row.tolist())))


def score_trials_file(path, ts: TrialSet, prepared, score_pairs: Callable, *, skip_unknown: bool = False,
                      symmetric: bool = True, scores_out: TextIO | None = None,
                      batch: int = 100000) -> CellTable:
    """Score a user trials file; cells by (enrolment emotion, test emotion).

    Utterances not in ``ts`` (no x-vector, no emotion, unknown speaker...) are an
    error naming them, or with ``skip_unknown`` their trials are skipped and counted.
    ``symmetric``: a trial with emotions (a, b) also counts in cell (b, a).
    """
    enr, tst, lab = read_trials(path)
    pos = {u: i for i, u in enumerate(ts.utts)}
    missing = sorted({u for u in enr + tst if u not in pos})
    keep = np.array([e in pos and t in pos for e, t in zip(enr, tst)], dtype=bool)
    info = {"n_trials_file": len(lab), "n_skipped_trials": int((~keep).sum()), "n_unknown_utts": len(missing)}
    if missing and not skip_unknown:
        raise ValueError(f"{path}: {len(missing)} utterance(s) not in the scored set (no x-vector, no emotion, "
                         f"no gender or unknown speaker), e.g. {', '.join(missing[:10])}; "
                         "use --skip-unknown true to skip their trials")
    ei = np.array([pos[e] for e, k in zip(enr, keep) if k], dtype=np.int64)
    ti = np.array([pos[t] for t, k in zip(tst, keep) if k], dtype=np.int64)
    lab = lab[keep]
    scores = np.empty(ei.size, dtype=np.float64)
    for i in range(0, ei.size, batch):
        scores[i:i + batch] = score_pairs(prepared[ei[i:i + batch]], prepared[ti[i:i + batch]])
    if scores_out is not None:
        for e, t, s in zip(ei.tolist(), ti.tolist(), scores.tolist()):
            scores_out.write(f"{ts.utts[e]} {ts.utts[t]} {s:.6f}\n")
    a, b = ts.emo[ei], ts.emo[ti]
    E = len(ts.emotions)
    cells = {}
    for x in range(E):
        for y in range(E):
            sel = (a == x) & (b == y)
            if symmetric and x != y:
                sel |= (a == y) & (b == x)
            if sel.any():
                cells[(x, y)] = (np.sort(scores[sel & lab]), np.sort(scores[sel & ~lab]))
    table = CellTable(list(ts.emotions), cells, symmetric=False, info=info)
    # Overall pooling must see each trial once: keep all scores as one extra entry.
    table.info["overall"] = (np.sort(scores[lab]), np.sort(scores[~lab]))
    table.info["n_trials"] = int(ei.size)
    return table


def eer_by_emotion(X, spk, gender, emo, *, score_block: Callable | None = None, block_size: int = BLOCK_SIZE,
                   **kw) -> dict:
    """EER/minDCF per (enrolment emotion, test emotion) cell of all same-gender pairs of X.

    X: (N, D) embeddings (or a ``Prepared`` with ``score_block`` from a Backend);
    spk, gender, emo: (N,) labels. score_block defaults to cosine on X.
    Returns ``table_summary`` of the CellTable plus ``table`` and ``emotions``.
    """
    ts = trial_set_from_labels(spk, gender, emo)
    if score_block is None:
        X = np.asarray(X, dtype=np.float32)
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)

        def score_block(A, B):
            return A @ B.T
    table = score_all_pairs(ts, X, score_block, block_size=block_size, **kw)
    return {**table_summary(table), "table": table, "emotions": list(ts.emotions)}
