"""ConfusionMatrix against hand-counted cases: the eval protocol of published results (mmseg's
IoUMetric): ignore pixels, classes absent from the ground truth, whole-split accumulation."""
from __future__ import annotations

import numpy as np
import pytest

from segclip.engine.metrics import ConfusionMatrix


def test_hand_case_with_ignore_and_absent_classes():
    # kept pixels (truth, pred): (0,0) x2, (0,1), (1,1), (1,3), (2,2); two ignore pixels predicted 0 and 3.
    # class 0: tp 2 fn 1 fp 0 -> IoU 2/3, F1 4/5;  class 1: tp 1 fn 1 fp 1 -> IoU 1/3, F1 1/2;
    # class 2: tp 1 -> IoU 1, F1 1;  class 3: predicted once, never true -> IoU 0, counts in the means;
    # class 4: neither true nor predicted (empty union) -> not in the means.
    truth = np.array([[0, 0, 0, 1], [1, 2, 255, 255]])
    pred = np.array([[0, 0, 1, 1], [3, 2, 0, 3]])
    cm = ConfusionMatrix(5)
    cm.update(pred, truth)
    r = cm.compute(["a", "b", "c", "d", "e"])
    assert r["pixels"] == 6
    assert r["overall_accuracy"] == pytest.approx(4 / 6)
    assert r["miou"] == pytest.approx((2 / 3 + 1 / 3 + 1 + 0) / 4)
    assert r["mf1"] == pytest.approx((4 / 5 + 1 / 2 + 1 + 0) / 4)
    assert r["per_class_iou"] == pytest.approx({"a": 2 / 3, "b": 1 / 3, "c": 1.0, "d": 0.0, "e": None})
    assert r["per_class_f1"] == pytest.approx({"a": 4 / 5, "b": 1 / 2, "c": 1.0, "d": 0.0, "e": None})


def test_accumulates_over_updates_and_merges():
    # the same pixels in two updates, and via merge, give the same numbers as one update
    truth = np.array([[0, 0, 0, 1], [1, 2, 255, 255]])
    pred = np.array([[0, 0, 1, 1], [3, 2, 0, 3]])
    a, b = ConfusionMatrix(5), ConfusionMatrix(5)
    a.update(pred[0], truth[0])
    b.update(pred[1], truth[1])
    a.merge(b)
    assert a.compute()["miou"] == pytest.approx((2 / 3 + 1 / 3 + 1 + 0) / 4)
    a.update(np.full((2, 2), 4), np.full((2, 2), 4))  # class 4 now present and perfect
    r = a.compute()
    assert r["per_class_iou"]["4"] == 1.0 and r["miou"] == pytest.approx((2 / 3 + 1 / 3 + 1 + 0 + 1) / 5)
    assert r["overall_accuracy"] == pytest.approx(8 / 10)


def test_other_ignore_index_and_nothing_kept():
    cm = ConfusionMatrix(3, ignore_index=9)
    cm.update(np.array([1, 2, 0]), np.array([9, 9, 9]))
    r = cm.compute()
    assert r["pixels"] == 0 and r["miou"] == 0.0 and r["overall_accuracy"] == 0.0
    cm.update(np.array([2, 1]), np.array([2, 255 % 3]))  # 255 % 3 == 0: a real class when ignore is 9
    r = cm.compute()
    assert r["pixels"] == 2 and r["per_class_iou"]["0"] == 0.0 and r["per_class_iou"]["1"] == 0.0  # predicted, absent
    assert r["per_class_iou"]["2"] == 1.0 and r["miou"] == pytest.approx(1 / 3)


def test_predicted_but_absent_counts_zero_and_empty_union_is_left_out():
    # 4 classes; class 2 is predicted but never present, class 3 neither present nor predicted
    truth = np.array([0, 0, 0, 1, 1, 1, 255, 255])
    pred = np.array([0, 0, 2, 1, 1, 0, 3, 3])  # the ignored pixels' predictions do not count
    cm = ConfusionMatrix(4)
    cm.update(pred, truth)
    m = cm.compute(["a", "b", "c", "d"])
    # a: TP 2, FP 1 (the last b pixel), FN 1 -> 2/4; b: TP 2, FN 1 -> 2/3; c: FP 1 -> 0; d: empty union
    assert m["per_class_iou"] == {"a": pytest.approx(0.5), "b": pytest.approx(2 / 3), "c": 0.0, "d": None}
    assert m["miou"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert m["classes_in_mean"] == ["a", "b", "c"]
    assert m["overall_accuracy"] == pytest.approx(4 / 6) and m["pixels"] == 6
    # F1 over the same classes: a 2*2/(4+1+1), b 2*2/(4+0+1), c 0
    assert m["mf1"] == pytest.approx((4 / 6 + 4 / 5 + 0.0) / 3)


def test_foreground_only_leaves_the_background_out_of_the_means():
    truth = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    cm = ConfusionMatrix(3)
    cm.update(pred, truth)
    full, fg = cm.compute(), cm.compute(exclude=(0,))
    # 0: TP1 FP1 FN1 -> 1/3; 1: TP2 FP1 -> 2/3; 2: TP1 FN1 -> 1/2
    assert full["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert fg["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert fg["per_class_iou"]["0"] == pytest.approx(1 / 3)  # still reported, only not averaged


def test_iou_is_over_the_whole_split_not_a_mean_of_images():
    """Two images: a per-image mean would differ from one matrix over both."""
    cm = ConfusionMatrix(2)
    cm.update(np.array([1, 1, 1, 1]), np.array([1, 1, 1, 1]))  # image 1: class 1 perfect
    cm.update(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]))  # image 2: one class-0 pixel called 1
    m = cm.compute()
    # class 0: TP 3, FN 1 -> 3/4; class 1: TP 4, FP 1 -> 4/5 (per image it would be 3/4 and mean(1, 0))
    assert m["per_class_iou"] == {"0": pytest.approx(0.75), "1": pytest.approx(0.8)}
    assert m["miou"] == pytest.approx((0.75 + 0.8) / 2)
