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
    chunks_t: dict = {}
    chunks_n: dict = {}
    n_low: dict = {}
    n_trials_done = 0
    n_expected, _ = ts.count_trials()
    tril_cache: dict[int, np.ndarray] = {}
    utts = np.asarray(ts.utts)
    hists: dict | None = None
    if n_expected > max_exact_trials:
        lo_r, hi_r = _score_range(ts, prepared, score_block)
        hists = {}
        log.info("%d trials > %d: nontarget scores go into histograms of %d bins over [%.4g, %.4g]",
                 n_expected, max_exact_trials, hist_bins, lo_r, hi_r)
    for g in range(len(ts.genders)):
        groups = []
        for e in range(E):
            idx = np.flatnonzero((ts.gender == g) & (ts.emo == e))
            groups.append(idx[np.argsort(ts.spk[idx], kind="stable")])
        for a in range(E):
            for b in range(a, E):
                Ia, Ib = groups[a], groups[b]
                key = (a, b)
                ct, cn = chunks_t.setdefault(key, []), chunks_n.setdefault(key, [])
                n_low.setdefault(key, 0)
                if Ia.size == 0 or Ib.size == 0:
                    continue
                spk_b = ts.spk[Ib]
                Pb = prepared[Ib] if a != b else None
                # Same-emotion cells: smaller row blocks, so little of the unused lower triangle is computed.
                bs = block_size if a != b else max(1, min(block_size, 1024))
                for r0 in range(0, Ia.size, bs):
                    rows = Ia[r0:r0 + bs]
                    m = rows.size
                    if a == b:
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
                    if a == b:
                        lo = np.maximum(lo, np.arange(m) + 1)  # strict upper triangle: col > row
                    if scores_out is not None:
                        _write_block(scores_out, utts[rows], utts[cols], S, diag=(a == b))
                    ri, ci = _ranges(lo, hi)
                    ct.append(S[ri, ci].copy())
                    tri = None
                    if a == b:
                        tri = tril_cache.get(m)
                        if tri is None:
                            tri = tril_cache[m] = np.tril(np.ones((m, m), dtype=bool))
                    if hists is not None:
                        h = hists.get(key)
                        if h is None:
                            h = hists[key] = ScoreHistogram(lo_r, hi_r, hist_bins)
                        idx = h.bin_index(S)
                        idx[ri, ci] = h.bins  # the discard slot: targets, and pairs j <= i
                        if tri is not None:
                            idx[:, :m][tri] = h.bins
                        h.add_index(idx)
                    else:
                        S[ri, ci] = np.inf  # sentinels: sorted to the end, cut off there
                        if tri is not None:
                            S[:, :m][tri] = -np.inf  # pairs j <= i are not trials (or counted elsewhere)
                            n_low[key] += m * (m + 1) // 2
                        cn.append(S.reshape(-1))
                    n_trials_done += S.size - (m * (m + 1) // 2 if a == b else 0)
                    now = time.time()
                    if now - last > progress_every:
                        last = now
                        log.info("scored %d of %d trials (%.0f%%) in %.0fs", n_trials_done, n_expected,
                                 100 * n_trials_done / max(n_expected, 1), now - t0)
    t_score = time.time() - t0
    cells = {}
    for key in chunks_n:
        tar = np.concatenate(chunks_t[key]) if chunks_t[key] else np.zeros(0, np.float32)
        chunks_t[key].clear()
        tar.sort()
        if hists is not None:
            if np.isnan(tar).any():
                raise ValueError("NaN scores: check the x-vectors for NaN or all-zero vectors with PLDA")
            cells[key] = (tar, hists.get(key) or ScoreHistogram(0.0, 1.0, 1))
            continue
        non = np.concatenate(chunks_n[key]) if chunks_n[key] else np.zeros(0, np.float32)
        chunks_n[key].clear()
        non.sort()
        if non.size and np.isnan(non[-1]):
            raise ValueError(f"NaN scores in cell {ts.emotions[key[0]]}/{ts.emotions[key[1]]}: "
                             "check the x-vectors for NaN or all-zero vectors with PLDA")
        non = non[n_low[key]:non.size - tar.size]
        cells[key] = (tar, non)
    info = {"score_seconds": t_score, "sort_seconds": time.time() - t0 - t_score,
            "n_trials": int(sum(t.size + n.size for t, n in cells.values())),
            "mode": "exact" if hists is None else f"histogram ({hist_bins} bins)"}
    if hists is not None:
        info["n_clamped"] = int(sum(h.n_clamped for h in hists.values()))
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
