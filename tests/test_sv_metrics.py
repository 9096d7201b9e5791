"""EER / minDCF / DET against slow, obvious computations and constructed score sets."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pyxv.metrics import sv


# ----------------------------------------------------------- slow references
def slow_points(tar, non):
    """ROC operating points at -inf, every distinct score, +inf; plain Python counting."""
    thrs = [-math.inf] + sorted(set(map(float, tar)) | set(map(float, non))) + [math.inf]
    pts = []
    for th in thrs:
        pmiss = sum(1 for s in tar if s < th) / len(tar)
        pfa = sum(1 for s in non if s >= th) / len(non)
        pts.append((pfa, pmiss))
    return pts


def slow_eer(tar, non):
    """Intersect every polyline segment with the line P_miss = P_fa."""
    pts = slow_points(tar, non)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        d0, d1 = y0 - x0, y1 - x1
        if d0 == 0:
            return y0
        if d0 < 0 <= d1:
            a = -d0 / (d1 - d0)
            return y0 + a * (y1 - y0)
    raise AssertionError("no crossing")


def slow_min_dcf(tar, non, p):
    best = min(p * pm + (1 - p) * pf for pf, pm in slow_points(tar, non))
    return best / min(p, 1 - p)


# ---------------------------------------------------------------- known sets
def test_perfect_separation_gives_zero():
    tar = np.array([1.0, 2.0, 3.0])
    non = np.array([-3.0, -2.0, 0.5])
    assert sv.eer(tar, non) == 0.0
    assert sv.min_dcf(tar, non, 0.01) == 0.0
    assert sv.min_dcf(tar, non, 0.001) == 0.0


def test_total_overlap_gives_fifty():
    # All scores tied: the ROC is one diagonal segment from (1,0) to (0,1).
    assert sv.eer(np.zeros(7), np.zeros(13)) == pytest.approx(0.5)
    # Identical distributions (same multiset of values): also 50 %.
    x = np.arange(10.0)
    assert sv.eer(x, x) == pytest.approx(0.5)
    # Everything tied: the best a system can do is accept all or reject all -> minDCF 1.
    assert sv.min_dcf(np.zeros(5), np.zeros(5), 0.01) == pytest.approx(1.0)


def test_reversed_scores_give_hundred():
    assert sv.eer([0.0, 1.0], [2.0, 3.0]) == pytest.approx(1.0)


def test_ties_hand_computed():
    # tar {0, 1}, non {0, -1}: at t=0 P_miss=0 P_fa=1/2; at t=1 (0 removed: one
    # target and one nontarget leave together) P_miss=1/2 P_fa=0. The diagonal
    # segment between them crosses at 1/4.
    assert sv.eer([0.0, 1.0], [0.0, -1.0]) == pytest.approx(0.25)
    # tar {1}, non {0, 1}: at t=1 (P_fa, P_miss) = (1/2, 0); at +inf (0, 1): the
    # tie segment (1/2 - a/2, a) meets the diagonal at a = 1/3.
    assert sv.eer([1.0], [0.0, 1.0]) == pytest.approx(1 / 3)
    # tar {1}, non {0, 1, 2}: points at t=1 (2/3, 0) and t=2 (1/3, 1) -> a = 1/2.
    assert sv.eer([1.0], [0.0, 1.0, 2.0]) == pytest.approx(0.5)


def test_single_class_is_nan_not_error():
    assert math.isnan(sv.eer([], [1.0, 2.0]))
    assert math.isnan(sv.eer([1.0], []))
    assert math.isnan(sv.min_dcf([], [1.0], 0.01))
    m = sv.sv_metrics([], [1.0])
    assert math.isnan(m.eer) and m.n_target == 0 and m.as_dict()["eer"] is None


def test_nan_scores_rejected():
    with pytest.raises(ValueError):
        sv.eer([np.nan, 1.0], [0.0])


# ------------------------------------------------------------ random vs slow
@pytest.mark.parametrize("seed", range(6))
def test_random_against_slow(seed):
    rng = np.random.default_rng(seed)
    nt, nn = rng.integers(1, 40), rng.integers(1, 300)
    tar = rng.normal(1.0, 1.0, nt)
    non = rng.normal(0.0, 1.0, nn)
    if seed % 2:  # coarse scores: many ties within and across classes
        tar, non = np.round(tar), np.round(non)
    assert sv.eer(tar, non) == pytest.approx(slow_eer(tar, non), abs=1e-12)
    for p in (0.01, 0.001, 0.3):
        assert sv.min_dcf(tar, non, p) == pytest.approx(slow_min_dcf(tar, non, p), abs=1e-12)


def test_large_random_against_sklearn_roc():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(7)
    tar = np.round(rng.normal(2.0, 1.0, 3000), 2)
    non = np.round(rng.normal(0.0, 1.0, 200000), 2)
    y = np.r_[np.ones(tar.size), np.zeros(non.size)]
    fpr, tpr, _ = roc_curve(y, np.r_[tar, non], drop_intermediate=False)
    fnr = 1 - tpr
    # sklearn's points come in decreasing-threshold order: reverse them
    fpr, fnr = fpr[::-1], fnr[::-1]
    d = fnr - fpr
    k = np.argmax(d >= 0)
    a = -d[k - 1] / (d[k] - d[k - 1])
    ref = fnr[k - 1] + a * (fnr[k] - fnr[k - 1])
    assert sv.eer(tar, non) == pytest.approx(ref, abs=1e-9)
    assert 0.1 < sv.eer(tar, non) < 0.2  # two unit Gaussians 2 apart: ~15.9 %


def test_eer_threshold_is_on_the_crossing():
    rng = np.random.default_rng(3)
    tar, non = rng.normal(2, 1, 5000), rng.normal(0, 1, 5000)
    e, th = sv.eer(tar, non, return_threshold=True)
    assert abs(th - 1.0) < 0.1
    assert abs(np.mean(tar < th) - e) < 0.01 and abs(np.mean(non >= th) - e) < 0.01


def test_det_points_monotone():
    rng = np.random.default_rng(0)
    pfa, pmiss = sv.det_curve(rng.normal(1, 1, 5000), rng.normal(0, 1, 50000), max_points=500)
    assert pfa.size <= 600
    assert np.all(np.diff(pfa) <= 0) and np.all(np.diff(pmiss) >= 0)
    assert pfa[0] == 1 and pmiss[-1] == 1


def test_pooled_sorted_parts_equal_merged():
    rng = np.random.default_rng(11)
    tar = np.round(rng.normal(1, 1, 500), 1)
    parts = [np.sort(np.round(rng.normal(0, 1, k), 1)) for k in (1000, 1, 3000)]
    merged = np.concatenate(parts)
    t = np.sort(tar)
    assert sv.eer_sorted(t, parts) == pytest.approx(sv.eer(tar, merged), abs=1e-12)
    for p in sv.P_TARGETS:
        assert sv.min_dcf_sorted(t, parts, p) == pytest.approx(sv.min_dcf(tar, merged, p), abs=1e-12)
    m = sv.sv_metrics_sorted(t, parts)
    assert m.n_nontarget == merged.size
