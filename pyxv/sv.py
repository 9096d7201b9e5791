"""Speaker verification by emotion (paper section 4.2).

Trials by rule: every unordered pair of distinct utterances of the same gender
(``spk2gender``); target iff the speakers match. Utterances of unknown speakers
(data-dir file ``unknown_spk_utts``, or a speaker id starting ``unknown_``),
without an emotion label, without a gender or without an x-vector are left out
and counted.

``score_all_pairs`` scores those trials block by block from the embedding
matrix without materialising a trial list: utterances are grouped by
(gender, emotion) and sorted by speaker, so every (emotion a, emotion b) cell
of a gender is one rectangle of the score matrix (the upper triangle for
a == b), and the target trials of a row block are contiguous column ranges.
Each cell keeps its float32 scores; one in-place sort per cell then gives the
exact EER/minDCF (``pyxv.metrics.sv``). A pair with emotions (a, b) counts in
cell (a, b) and in cell (b, a): the table is symmetric.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, TextIO

import numpy as np

from .io import atomic_open, read_table
from .labels import order_emotions
from .metrics.sv import ScoreHistogram, SVMetrics, det_curve_sorted, sv_metrics_sorted

log = logging.getLogger(__name__)

__all__ = ["TrialSet", "trial_set_from_labels", "eer_by_emotion", "load_trial_set", "iter_trials", "CellTable",
           "score_all_pairs",
           "score_trials_file", "write_results"]


# ------------------------------------------------------------------ trial set
@dataclass
class TrialSet:
    """Utterances that take part in trials, with integer codes.

    utts (N,) ids in C order; spk, gender, emo (N,) int codes into
    ``speakers``, ``genders``, ``emotions``; ``skipped`` counts left-out
    utterances by reason.
    """
    utts: list[str]
    spk: np.ndarray
    gender: np.ndarray
    emo: np.ndarray
    speakers: list[str]
    genders: list[str]
    emotions: list[str]
    skipped: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.utts)

    def count_trials(self) -> tuple[int, int]:
        """(all trials, target trials) by formula: sum_g n_g (n_g - 1) / 2, sum_s n_s (n_s - 1) / 2."""
        ng = np.bincount(self.gender, minlength=len(self.genders)).astype(np.int64)
        ns = np.bincount(self.spk, minlength=len(self.speakers)).astype(np.int64)
        return int((ng * (ng - 1) // 2).sum()), int((ns * (ns - 1) // 2).sum())


def load_trial_set(data: str | os.PathLike, available=None) -> TrialSet:
    """Read utt2spk, spk2gender, utt2emo (and unknown_spk_utts) of a data dir.

    ``available``: a set of utterance ids that have an x-vector; others are
    skipped and counted as ``no_xvector``.
    """
    data = Path(data)
    for f in ("utt2spk", "utt2emo"):
        if not (data / f).is_file():
            raise FileNotFoundError(f"{data}: has no {f} (needed for SV trials by emotion)")
    utt2spk = read_table(data / "utt2spk")
    utt2emo = read_table(data / "utt2emo")
    unknown = set()
    if (data / "unknown_spk_utts").is_file():
        unknown = {ln.split()[0] for ln in open(data / "unknown_spk_utts", encoding="utf-8") if ln.strip()}
    messages = []
    if (data / "spk2gender").is_file():
        spk2gender = read_table(data / "spk2gender")
    else:
        spk2gender = None
        messages.append(f"{data}: no spk2gender; all utterances treated as one gender (cross-gender trials included)")
    skipped = {"unknown_speaker": 0, "no_emotion": 0, "no_gender": 0, "no_xvector": 0}
    keep = []
    for utt in sorted(utt2spk, key=lambda u: u.encode()):
        spk = utt2spk[utt]
        if utt in unknown or spk.startswith("unknown_"):
            skipped["unknown_speaker"] += 1
        elif not utt2emo.get(utt):
            skipped["no_emotion"] += 1
        elif spk2gender is not None and spk not in spk2gender:
            skipped["no_gender"] += 1
        elif available is not None and utt not in available:
            skipped["no_xvector"] += 1
        else:
            keep.append(utt)
    spks = [utt2spk[u] for u in keep]
    gens = [spk2gender[s].lower() if spk2gender is not None else "all" for s in spks]
    emos = [utt2emo[u].split()[0].lower() for u in keep]
    speakers = sorted(set(spks))
    genders = sorted(set(gens))
    emotions = order_emotions(emos)
    si = {s: i for i, s in enumerate(speakers)}
    gi = {g: i for i, g in enumerate(genders)}
    ei = {e: i for i, e in enumerate(emotions)}
    ts = TrialSet(keep, np.array([si[s] for s in spks], dtype=np.int64),
                  np.array([gi[g] for g in gens], dtype=np.int64),
                  np.array([ei[e] for e in emos], dtype=np.int64),
                  speakers, genders, emotions, {k: v for k, v in skipped.items() if v}, messages)
    for reason, n in ts.skipped.items():
        messages.append(f"{data}: {n} utterance(s) left out of the trials: {reason.replace('_', ' ')}")
    if len(genders) == 1 and spk2gender is not None:
        messages.append(f"{data}: only one gender ({genders[0]}) in the trial set")
    if len(speakers) < 2:
        messages.append(f"{data}: {len(speakers)} speaker(s) in the trial set: there are no nontarget trials, "
                        "EER and minDCF are undefined")
    return ts


def trial_set_from_labels(spk, gender, emo, utts=None) -> TrialSet:
    """A TrialSet from per-utterance label arrays (any hashable labels), rows in the given order."""
    spk, gender, emo = (np.asarray(x) for x in (spk, gender, emo))
    if not (spk.shape == gender.shape == emo.shape) or spk.ndim != 1:
        raise ValueError("spk, gender and emo must be 1-D arrays of the same length")
    speakers, si = np.unique(spk, return_inverse=True)
    genders, gi = np.unique(gender, return_inverse=True)
    emotions = order_emotions(str(e) for e in set(emo.tolist()))
    ei = {e: i for i, e in enumerate(emotions)}
    utts = list(utts) if utts is not None else [str(i) for i in range(spk.size)]
    return TrialSet(utts, si.astype(np.int64), gi.astype(np.int64),
                    np.array([ei[str(e)] for e in emo.tolist()], dtype=np.int64),
                    [str(s) for s in speakers], [str(g) for g in genders], emotions)


def eer_by_emotion(X, spk, gender, emo, *, score_block: Callable | None = None, block_size: int = 4096,
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


def iter_trials(ts: TrialSet) -> Iterator[tuple[int, int, bool]]:
    """(i, j, is_target) for every unordered same-gender pair, i < j in utterance order."""
    for g in range(len(ts.genders)):
        idx = np.flatnonzero(ts.gender == g)
        for k, i in enumerate(idx):
            rest = idx[k + 1:]
            same = ts.spk[rest] == ts.spk[i]
            for j, t in zip(rest.tolist(), same.tolist()):
                yield int(i), j, t


# ------------------------------------------------------------------ results
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


def score_all_pairs(ts: TrialSet, prepared, score_block: Callable, *, block_size: int = 4096,
                    scores_out: TextIO | None = None, progress_every: float = 10.0,
                    max_exact_trials: int = 600_000_000, hist_bins: int = 1 << 20) -> CellTable:
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


# ------------------------------------------------------------ trials file
def read_trials(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """Kaldi trials ``enroll test target|nontarget`` -> (enroll, test, is_target (T,) bool)."""
    enr, tst, lab = [], [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            p = line.split()
            if not p:
                continue
            if len(p) != 3 or p[2] not in ("target", "nontarget"):
                raise ValueError(f"{path}:{lineno}: expected 'enroll test target|nontarget', got {line.strip()!r}")
            enr.append(p[0])
            tst.append(p[1])
            lab.append(p[2] == "target")
    return enr, tst, np.array(lab, dtype=bool)


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


# ------------------------------------------------------------------ writing
def _fmt(x, nd=2) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


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


def write_results(out_dir: str | os.PathLike, table: CellTable, meta: dict, *, det: bool = True,
                  calibration: bool = False) -> dict:
    """eer_by_emotion.csv / .md, summary.json and det.png in out_dir; returns the summary dict.

    ``calibration``: the scores are LLRs; Cllr, min Cllr and actual DCF(0.01) are added.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summ = table_summary(table, calibration=calibration)
    M, ov = summ["cells"], summ["overall"]
    emos = table.emotions
    E = len(emos)
    with atomic_open(out / "eer_by_emotion.csv") as f:
        f.write("enroll,test,eer,min_dcf_0.01,min_dcf_0.001,n_target,n_nontarget\n")
        for a in range(E):
            for b in range(E):
                m = M[(a, b)]
                f.write(f"{emos[a]},{emos[b]},{_fmt(m.eer, 4)},{_fmt(m.min_dcf_0_01, 4)},"
                        f"{_fmt(m.min_dcf_0_001, 4)},{m.n_target},{m.n_nontarget}\n")
    undefined = [(emos[a], emos[b]) for a in range(E) for b in range(E) if math.isnan(M[(a, b)].eer)]
    cap = [e.capitalize() for e in emos]

    def grid(title, fn):
        lines = [f"**{title}**", "", "| Enroll \\ Test | " + " | ".join(cap) + " |",
                 "|---|" + "---:|" * E]
        for a in range(E):
            lines.append(f"| {cap[a]} | " + " | ".join(fn(M[(a, b)]) for b in range(E)) + " |")
        return lines + [""]

    who = f"{meta.get('corpus', '?')}, x-vector {meta.get('model', '?')}, back-end {meta.get('backend', '?')}"
    md = [f"# Speaker verification by emotion ({who})", ""]
    md += grid("EER (%)", lambda m: _fmt(m.eer))
    md += grid("minDCF (p_target = 0.01)", lambda m: _fmt(m.min_dcf_0_01, 3))
    md += grid("minDCF (p_target = 0.001)", lambda m: _fmt(m.min_dcf_0_001, 3))
    md += grid("Trials (target / nontarget)", lambda m: f"{m.n_target} / {m.n_nontarget}")
    md += ["| | EER (%) | minDCF 0.01 | minDCF 0.001 | target trials | nontarget trials |",
           "|---|---:|---:|---:|---:|---:|",
           f"| all trials | {_fmt(ov.eer)} | {_fmt(ov.min_dcf_0_01, 3)} | {_fmt(ov.min_dcf_0_001, 3)} "
           f"| {ov.n_target} | {ov.n_nontarget} |", "",
           f"Mean EER of same-emotion cells: {_fmt(summ['same_emotion_mean_eer'])} %; "
           f"of cross-emotion cells: {_fmt(summ['cross_emotion_mean_eer'])} %."
           + (f" EER of the pooled same-emotion trials: {_fmt(summ['same_emotion_pooled_eer'])} %; "
              f"of the pooled cross-emotion trials: {_fmt(summ['cross_emotion_pooled_eer'])} %."
              if table.symmetric else ""), ""]
    if calibration:
        c = summ["calibration"]
        md += ["Calibration (scores are log-likelihood ratios; all trials): "
               f"Cllr {_fmt(c.cllr, 3)} bits, min Cllr {_fmt(c.min_cllr, 3)} bits, "
               f"actual DCF(0.01) {_fmt(c.act_dcf_0_01, 3)} (minDCF {_fmt(c.min_dcf_0_01, 3)}).", ""]
    md.append("Rows are the enrolment emotion, columns the test emotion. "
              + ("Trials are unordered same-gender pairs, so a pair with emotions (a, b) counts in both "
                 "cell (a, b) and cell (b, a) and the table is symmetric. " if table.symmetric else
                 "Trials come from a trials file. ")
              + "Empty cells have no target or no nontarget trials: EER is undefined there.")
    if undefined:
        md.append("")
        md.append("Undefined cells: " + ", ".join(f"{a}/{b}" for a, b in undefined) + ".")
    if meta.get("notes"):
        md += ["", "Notes:", ""] + [f"- {line}" for line in meta["notes"]]
    with atomic_open(out / "eer_by_emotion.md") as f:
        f.write("\n".join(md) + "\n")
    d = ov.as_dict()
    summary = {**d, "emotions": list(emos), "backend": meta.get("backend"), "model": meta.get("model"),
               "corpus": meta.get("corpus"), "same_emotion_mean_eer": _nan_none(summ["same_emotion_mean_eer"]),
               "cross_emotion_mean_eer": _nan_none(summ["cross_emotion_mean_eer"]),
               "same_emotion_pooled_eer": _nan_none(summ["same_emotion_pooled_eer"]),
               "cross_emotion_pooled_eer": _nan_none(summ["cross_emotion_pooled_eer"]),
               **({"cllr": _nan_none(summ["calibration"].cllr), "min_cllr": _nan_none(summ["calibration"].min_cllr),
                   "act_dcf_0.01": _nan_none(summ["calibration"].act_dcf_0_01)} if calibration else {}),
               "eer_threshold": _nan_none(ov.eer_threshold),
               "table": {f"{emos[a]}/{emos[b]}": M[(a, b)].as_dict() for a in range(E) for b in range(E)},
               **{k: v for k, v in meta.items() if k not in ("notes",) and _jsonable(v)}}
    with atomic_open(out / "summary.json") as f:
        json.dump(summary, f, indent=1)
    if det:
        write_det(out / "det.png", table, title=who)
    return summary


def _nan_none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


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
