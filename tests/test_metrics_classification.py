"""Emotion metrics against values computed by hand."""
import json

import numpy as np
import pytest

from pyxv.metrics.classification import classification_metrics, summarize_folds, unweighted_accuracy, weighted_f1


def test_hand_computed_three_classes():
    # a: P=1 R=2/3 F1=0.8 (support 3); b: P=R=F1=0.5 (2); c: P=0.5 R=1 F1=2/3 (1)
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "c"]
    m = classification_metrics(y_true, y_pred, fold="fold1")
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)  # 0.67778
    assert m["unweighted_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)       # 0.72222
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["labels"] == ["a", "b", "c"]
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["n_test"] == 6 and m["fold"] == "fold1"
    json.dumps(m)  # JSON-ready


def test_label_order_and_predicted_only_class():
    # c is predicted but never true: weighs 0 in F1, has no recall in UA, shows in the confusion
    y_true = ["a", "a", "b", "b"]
    y_pred = ["a", "c", "b", "b"]
    m = classification_metrics(y_true, y_pred, labels=["sad", "b", "c", "a"])
    assert m["labels"] == ["b", "c", "a"]            # given order, absent 'sad' dropped
    assert m["weighted_f1"] == pytest.approx((2 * 2 / 3 + 2 * 1.0) / 4)
    assert m["unweighted_accuracy"] == pytest.approx(0.75)
    assert m["confusion"] == [[2, 0, 0], [0, 0, 0], [0, 1, 1]]


def test_weighted_differs_from_macro_when_imbalanced():
    y_true = ["x"] * 8 + ["y"] * 2
    y_pred = ["x"] * 10
    # x: P=0.8 R=1 F1=8/9; y: F1=0 -> weighted 0.8*8/9; UA = (1 + 0)/2
    assert weighted_f1(y_true, y_pred) == pytest.approx(0.8 * 8 / 9)
    assert unweighted_accuracy(y_true, y_pred) == pytest.approx(0.5)


def test_summary_mean_std_and_pooled():
    f1 = classification_metrics(["a", "b"], ["a", "b"], fold="fold1")   # wF1 1
    f2 = classification_metrics(["a", "b"], ["b", "b"], fold="fold2")   # a F1 0, b P=.5 R=1 F1=2/3 -> 1/3
    s = summarize_folds({"fold1": f1, "fold2": f2}, ["a", "b", "a", "b"], ["a", "b", "b", "b"],
                        system="frozen_lr_clean", train_data="clean", corpus="demo")
    assert s["mean_weighted_f1"] == pytest.approx((1 + 1 / 3) / 2)
    assert s["std_weighted_f1"] == pytest.approx(np.std([1, 1 / 3]))
    assert s["pooled"]["n_test"] == 4
    # pooled: a P=1 R=.5 F1=2/3; b P=2/3 R=1 F1=.8
    assert s["pooled"]["weighted_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert list(s["folds"]) == ["fold1", "fold2"] and s["system"] == "frozen_lr_clean"


def test_bad_input():
    with pytest.raises(ValueError, match="2 true labels but 1"):
        classification_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty test set in fold3"):
        classification_metrics([], [], fold="fold3")
