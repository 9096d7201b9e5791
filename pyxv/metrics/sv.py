"""Speaker-verification metrics: EER, minDCF and DET points.

Convention: a trial is accepted when ``score >= threshold``. For a threshold t,
``P_miss(t) = #{target < t} / N_tar`` and ``P_fa(t) = #{nontarget >= t} / N_non``.
The ROC is the polyline through the operating points at every distinct score
(plus -inf and +inf); tied target and nontarget scores give one diagonal
segment, as in ``sklearn.metrics.roc_curve(drop_intermediate=False)``.

- EER: where that polyline crosses P_miss = P_fa, linearly interpolated.
  Perfect separation gives 0, identical score sets give 50 (%, see ``eer``).
- minDCF: ``min_t [C_miss P_miss(t) p + C_fa P_fa(t) (1-p)] / min(C_miss p, C_fa (1-p))``
  (NIST SRE / Kaldi ``compute_min_dcf.py`` normalisation), over thresholds that
  a real system can use (ties are never split).

Calibration (BOSARIS / NIST SRE conventions, for scores that are log-likelihood ratios):

- Cllr: ``(mean_tar log2(1 + e^-llr) + mean_non log2(1 + e^llr)) / 2`` bits; 1 for
  a system that always says llr = 0, 0 for perfect and well-calibrated LLRs.
- min Cllr: the Cllr after the optimal monotone recalibration (PAV), computed
  from the convex hull of the ROC (the PAV solution's blocks are its segments).
- actual DCF at p_target: the normalised cost of the Bayes decision
  ``llr >= log((1 - p) / p)``; minus minDCF, it is the calibration loss.

Everything works on *sorted* float arrays: ``eer_sorted``/``min_dcf_sorted``
cost O(N_tar log N_non) after the sort, so a table of many cells with
millions of nontarget trials each is computed by one ``np.sort`` per cell
(the fast path used by ``pyxv.sv.scoring.eer_by_emotion``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ScoreHistogram", "eer", "eer_sorted", "min_dcf", "min_dcf_sorted", "det_curve", "det_curve_sorted",
           "SVMetrics", "sv_metrics", "sv_metrics_sorted", "P_TARGETS", "cllr", "cllr_sorted", "min_cllr",
           "min_cllr_sorted", "act_dcf", "act_dcf_sorted"]

P_TARGETS = (0.01, 0.001)


def _prep(tar, non) -> tuple[np.ndarray, np.ndarray]:
    t = np.sort(np.asarray(tar).ravel())
    n = np.sort(np.asarray(non).ravel())
    return t, n


class ScoreHistogram:
    """Nontarget scores kept as counts in ``B`` equal bins over [lo, hi] (memory-bounded mode).

    Scores are taken as spread uniformly inside their bin, so counts below a
    threshold are linearly interpolated: the EER error is below the mass of
    one bin around the crossing (with 2^20 bins, far below 0.01 % absolute).
    Values outside [lo, hi] are clamped into the edge bins (``n_clamped``).
    """

    def __init__(self, lo: float, hi: float, bins: int = 1 << 20):
        self.lo, self.hi, self.bins = float(lo), float(hi), int(bins)
        self.width = (self.hi - self.lo) / self.bins
        self.counts = np.zeros(self.bins + 1, dtype=np.int64)  # last slot: discarded entries
        self.n_clamped = 0
        self._cum = None

    def bin_index(self, S: np.ndarray) -> np.ndarray:
        idx = np.floor((S - self.lo) / self.width)
        out = (idx < 0) | (idx >= self.bins)
        if out.any():
            if np.isnan(idx).any():
                raise ValueError("NaN scores: check the x-vectors for NaN or all-zero vectors with PLDA")
            self.n_clamped += int(out.sum())
            idx = np.clip(idx, 0, self.bins - 1)
        return idx.astype(np.int64)

    def add_index(self, idx: np.ndarray) -> None:
        """Count bin indices (index ``bins`` = discard)."""
        self.counts += np.bincount(idx.ravel(), minlength=self.bins + 1)
        self._cum = None

    @property
    def size(self) -> int:
        return int(self.counts[:-1].sum())

    def _cumsum(self):
        if self._cum is None:
            self._cum = np.concatenate(([0], np.cumsum(self.counts[:-1])))
        return self._cum

    def count_lt(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        p = np.clip((x - self.lo) / self.width, 0, self.bins)
        k = np.minimum(np.floor(p).astype(np.int64), self.bins - 1)
        cum = self._cumsum()
        return cum[k] + (p - k) * self.counts[k]

    def values_between(self, lo: float, hi: float) -> np.ndarray:
        """Bin edges strictly between lo and hi (the breakpoints of the interpolated CDF)."""
        a = max(0, int(np.floor((lo - self.lo) / self.width)) + 1) if np.isfinite(lo) else 0
        b = min(self.bins, int(np.ceil((hi - self.lo) / self.width)) - 1) if np.isfinite(hi) else self.bins
        e = self.lo + self.width * np.arange(a, b + 1)
        return e[(e > lo) & (e < hi)]

    def sample(self, k: int) -> np.ndarray:
        """About k values at evenly spaced quantiles (for DET pictures)."""
        cum = self._cumsum()
        q = np.linspace(0, cum[-1], k)
        return np.interp(q, cum, self.lo + self.width * np.arange(self.bins + 1))


def _parts(n) -> list:
    return list(n) if isinstance(n, (list, tuple)) else [n]


def _check(t: np.ndarray, n) -> bool:
    """True when both classes are present (metrics defined); NaN/inf scores are an error."""
    for name, arrs in (("target", [t]), ("nontarget", _parts(n))):
        for a in arrs:
            if isinstance(a, ScoreHistogram):
                continue
            if a.size and not (np.isfinite(a[0]) and np.isfinite(a[-1])):
                raise ValueError(f"{name} scores contain NaN or inf")
    return t.size > 0 and _size(n) > 0


# ``n`` (nontarget scores) may be one sorted array, a ScoreHistogram, or a list
# of those (the cells of a table pooled without re-sorting 100 million scores).
def _size(n) -> int:
    return sum(a.size for a in _parts(n))


def _ss(n, x, side: str = "left"):
    """Number of nontarget scores < x (side 'left')."""
    assert side == "left"
    return sum(a.count_lt(x) if isinstance(a, ScoreHistogram) else np.searchsorted(a, x, "left")
               for a in _parts(n))


def _window(n, lo: float, hi: float) -> np.ndarray:
    """Values v of n with lo < v < hi (bin edges for histograms)."""
    parts = []
    for a in _parts(n):
        if isinstance(a, ScoreHistogram):
            parts.append(a.values_between(lo, hi))
        else:
            parts.append(a[np.searchsorted(a, lo, "right"):np.searchsorted(a, hi, "left")])
    return np.concatenate(parts) if parts else np.zeros(0)


def _crossing(thr: np.ndarray, pmiss: np.ndarray, pfa: np.ndarray) -> tuple[float, float]:
    """Crossing of the polyline (pfa_k, pmiss_k) with the diagonal.

    The points must be ordered by increasing threshold, so ``pmiss - pfa`` is
    non-decreasing; the first value must be < 0 and the last >= 0.
    Returns (eer as a fraction, threshold at the crossing).
    """
    d = pmiss - pfa
    k = int(np.argmax(d >= 0))
    if d[k] == 0 or k == 0:
        return float(pmiss[k]), float(thr[k])
    a = -d[k - 1] / (d[k] - d[k - 1])  # fraction of the way from point k-1 to point k
    e = pmiss[k - 1] + a * (pmiss[k] - pmiss[k - 1])
    t0, t1 = thr[k - 1], thr[k]
    if not np.isfinite(t0):
        t = t1
    elif not np.isfinite(t1):
        t = t0
    else:
        t = t0 + a * (t1 - t0)
    return float(e), float(t)


def eer_sorted(t: np.ndarray, n, *, return_threshold: bool = False):
    """EER (fraction, 0..1) of ascending-sorted target ``t`` (N_t,) and nontarget ``n`` (N_n,) scores.

    ``n`` may also be a list of sorted arrays (pooled without merging).
    Exact: the crossing is located among the distinct target scores with
    ``searchsorted``, then the polyline is rebuilt only between the two target
    scores that bracket it (nontarget scores in that window included).
    Returns NaN (and NaN threshold) when either class is empty.
    """
    if not _check(t, n):
        return (math.nan, math.nan) if return_threshold else math.nan
    nt, nn = t.size, _size(n)
    u = np.unique(t)  # distinct target scores, ascending
    pmiss_u = np.searchsorted(t, u, "left") / nt
    pfa_u = (nn - _ss(n, u, "left")) / nn
    d = pmiss_u - pfa_u
    j = int(np.searchsorted(d, 0.0, "left"))  # first distinct target score with d >= 0 (d is non-decreasing)
    lo = u[j - 1] if j > 0 else -np.inf
    hi = u[j] if j < u.size else np.inf
    # Distinct nontarget scores strictly between lo and hi: only nontarget steps there.
    mids = np.unique(_window(n, lo, hi))
    thr = np.concatenate(([lo], mids, [hi]))
    pmiss = np.searchsorted(t, thr, "left") / nt
    pfa = (nn - _ss(n, thr, "left")) / nn
    if j == 0:  # -inf: accept everything
        pmiss[0], pfa[0] = 0.0, 1.0
    if j == u.size:  # +inf: reject everything
        pmiss[-1], pfa[-1] = 1.0, 0.0
    e, th = _crossing(thr, pmiss, pfa)
    return (e, th) if return_threshold else e


def eer(tar, non, *, return_threshold: bool = False):
    """EER as a fraction (0..1) from unsorted target/nontarget score arrays; see ``eer_sorted``."""
    t, n = _prep(tar, non)
    return eer_sorted(t, n, return_threshold=return_threshold)


def min_dcf_sorted(t: np.ndarray, n: np.ndarray, p_target: float, c_miss: float = 1.0,
                   c_fa: float = 1.0, *, return_threshold: bool = False):
    """Normalised minimum detection cost of ascending-sorted scores.

    The minimum of a cost that grows with P_miss and falls with P_fa is reached
    at a threshold equal to a target score (raising t up to the next target
    score leaves P_miss unchanged and can only lower P_fa) or at +inf, so only
    the distinct target scores and +inf are examined. NaN if a class is empty.
    """
    if not _check(t, n):
        return (math.nan, math.nan) if return_threshold else math.nan
    nt, nn = t.size, _size(n)
    u = np.unique(t)
    pmiss = np.append(np.searchsorted(t, u, "left") / nt, 1.0)
    pfa = np.append((nn - _ss(n, u, "left")) / nn, 0.0)
    cost = c_miss * p_target * pmiss + c_fa * (1 - p_target) * pfa
    k = int(np.argmin(cost))
    c_def = min(c_miss * p_target, c_fa * (1 - p_target))
    val = float(cost[k] / c_def)
    if return_threshold:
        return val, float(u[k]) if k < u.size else math.inf
    return val


def min_dcf(tar, non, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0):
    """Normalised minDCF from unsorted scores; see ``min_dcf_sorted``."""
    t, n = _prep(tar, non)
    return min_dcf_sorted(t, n, p_target, c_miss, c_fa)


def det_curve_sorted(t: np.ndarray, n: np.ndarray, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """DET operating points (P_fa, P_miss), each (K,), K <= ~max_points, of sorted scores.

    Thresholds are taken at evenly spaced quantiles of the pooled scores (all
    of them when there are fewer than ``max_points``), so the curve of 100
    million trials stays a few thousand points.
    """
    if not _check(t, n):
        return np.zeros(0), np.zeros(0)
    nt, nn = t.size, _size(n)
    arrs = [a.sample(max_points) if isinstance(a, ScoreHistogram) else a for a in _parts(n)]
    if nt + nn <= max_points:
        thr = np.unique(np.concatenate([t, *arrs]))
    else:
        q = np.linspace(0, 1, max_points // 2)
        step = max(1, nn // 200000)  # quantiles of a strided subsample are plenty for a picture
        sub = np.sort(np.concatenate([a[::step] for a in arrs]))
        thr = np.unique(np.concatenate([np.quantile(t, q), np.quantile(sub, q)]))
    pmiss = np.searchsorted(t, thr, "left") / nt
    pfa = (nn - _ss(n, thr, "left")) / nn
    return np.concatenate(([1.0], pfa, [0.0])), np.concatenate(([0.0], pmiss, [1.0]))


def det_curve(tar, non, max_points: int = 2000):
    t, n = _prep(tar, non)
    return det_curve_sorted(t, n, max_points)


def _softplus_bits_sum(x, sign: float) -> float:
    """sum log2(1 + exp(sign * x)) over an array, a ScoreHistogram (bin centres) or a list of them."""
    tot = 0.0
    for a in _parts(x):
        if isinstance(a, ScoreHistogram):
            centres = a.lo + a.width * (np.arange(a.bins) + 0.5)
            tot += float(np.dot(a.counts[:-1], np.logaddexp(0.0, sign * centres)))
        elif a.size:
            tot += float(np.logaddexp(0.0, sign * np.asarray(a, dtype=np.float64)).sum())
    return tot / math.log(2.0)


def cllr_sorted(t: np.ndarray, n) -> float:
    """Cllr (bits) of target ``t`` and nontarget ``n`` scores read as natural-log LLRs; NaN if a class is empty."""
    if not _check(t, n):
        return math.nan
    return 0.5 * (_softplus_bits_sum(t, -1.0) / t.size + _softplus_bits_sum(n, 1.0) / _size(n))


def cllr(tar, non) -> float:
    t, n = _prep(tar, non)
    return cllr_sorted(t, n)


def _rocch(t: np.ndarray, n) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (P_miss, P_fa), P_miss ascending, of the ROC convex hull of sorted scores.

    A hull vertex minimises some linear cost ``P_miss + c P_fa``, and (as for
    minDCF) such minima sit at thresholds equal to a target score, at +inf, or at
    -inf (accept everything): only those points are candidates.
    """
    nt, nn = t.size, _size(n)
    u = np.unique(t)
    pmiss = np.concatenate(([0.0], np.searchsorted(t, u, "left") / nt, [1.0]))
    pfa = np.concatenate(([1.0], (nn - _ss(n, u, "left")) / nn, [0.0]))
    # Lower-left hull (Andrew's monotone chain): P_miss rising, P_fa falling.
    hull: list[int] = []
    for i in range(pmiss.size):
        while len(hull) >= 2:
            j, k = hull[-2], hull[-1]
            cross = (pmiss[k] - pmiss[j]) * (pfa[i] - pfa[j]) - (pfa[k] - pfa[j]) * (pmiss[i] - pmiss[j])
            if cross <= 0:   # k is not strictly below the chord j-i
                hull.pop()
            else:
                break
        hull.append(i)
    h = np.array(hull)
    return pmiss[h], pfa[h]


def min_cllr_sorted(t: np.ndarray, n) -> float:
    """Cllr after the optimal monotone (PAV) recalibration, in bits; NaN if a class is empty.

    Each ROC-hull segment is one PAV block with ``k_t`` targets and ``k_n``
    nontargets; its LLR is ``log(k_t / k_n) - log(N_t / N_n)``.
    """
    if not _check(t, n):
        return math.nan
    nt, nn = t.size, _size(n)
    pm, pf = _rocch(t, n)
    kt = np.diff(pm) * nt         # targets in each block
    kn = -np.diff(pf) * nn        # nontargets in each block
    with np.errstate(divide="ignore"):
        llr = np.log(kt) - np.log(kn) - math.log(nt / nn)
    st, sn = kt > 0, kn > 0   # a block without targets has llr -inf: it costs the targets nothing, and so on
    tar_cost = (kt[st] * np.logaddexp(0.0, -llr[st])).sum() / nt
    non_cost = (kn[sn] * np.logaddexp(0.0, llr[sn])).sum() / nn
    return float(0.5 * (tar_cost + non_cost) / math.log(2.0))


def min_cllr(tar, non) -> float:
    t, n = _prep(tar, non)
    return min_cllr_sorted(t, n)


def act_dcf_sorted(t: np.ndarray, n, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Normalised actual DCF of LLR scores: decisions at the Bayes threshold log(C_fa (1-p) / (C_miss p))."""
    if not _check(t, n):
        return math.nan
    th = math.log(c_fa * (1 - p_target) / (c_miss * p_target))
    pmiss = np.searchsorted(t, th, "left") / t.size
    pfa = (_size(n) - _ss(n, np.array([th]), "left")[0]) / _size(n)
    return float((c_miss * p_target * pmiss + c_fa * (1 - p_target) * pfa) / min(c_miss * p_target,
                                                                                    c_fa * (1 - p_target)))


def act_dcf(tar, non, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    t, n = _prep(tar, non)
    return act_dcf_sorted(t, n, p_target, c_miss, c_fa)


@dataclass
class SVMetrics:
    """EER in percent, minDCF at p_target 0.01 and 0.001, trial counts."""
    eer: float
    min_dcf_0_01: float
    min_dcf_0_001: float
    n_target: int
    n_nontarget: int
    eer_threshold: float = math.nan
    cllr: float = math.nan            # only meaningful when the scores are calibrated LLRs
    min_cllr: float = math.nan
    act_dcf_0_01: float = math.nan    # likewise

    def as_dict(self) -> dict:
        def f(x):
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else x
        d = {"eer": f(self.eer), "min_dcf_0.01": f(self.min_dcf_0_01),
             "min_dcf_0.001": f(self.min_dcf_0_001), "n_target": int(self.n_target),
             "n_nontarget": int(self.n_nontarget)}
        for k, v in (("cllr", self.cllr), ("min_cllr", self.min_cllr), ("act_dcf_0.01", self.act_dcf_0_01)):
            if not math.isnan(v):
                d[k] = v
        return d


def sv_metrics_sorted(t: np.ndarray, n, calibration: bool = False) -> SVMetrics:
    """All table metrics of sorted target/nontarget scores (EER in percent; NaN when undefined).

    ``calibration``: also Cllr, min Cllr and actual DCF(0.01), the scores read as LLRs.
    """
    e, th = eer_sorted(t, n, return_threshold=True)
    m = SVMetrics(eer=100.0 * e if not math.isnan(e) else math.nan,
                  min_dcf_0_01=min_dcf_sorted(t, n, 0.01),
                  min_dcf_0_001=min_dcf_sorted(t, n, 0.001),
                  n_target=int(t.size), n_nontarget=int(_size(n)), eer_threshold=th)
    if calibration:
        m.cllr, m.min_cllr, m.act_dcf_0_01 = cllr_sorted(t, n), min_cllr_sorted(t, n), act_dcf_sorted(t, n, 0.01)
    return m


def sv_metrics(tar, non, calibration: bool = False) -> SVMetrics:
    t, n = _prep(tar, non)
    return sv_metrics_sorted(t, n, calibration)
