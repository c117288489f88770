"""ConfusionMatrix against hand-counted cases: ignore pixels, classes absent from the ground truth."""
from __future__ import annotations

import numpy as np
import pytest

from segclip.engine.metrics import ConfusionMatrix


def test_hand_case_with_ignore_and_absent_classes():
    # kept pixels (truth, pred): (0,0) x2, (0,1), (1,1), (1,3), (2,2); two ignore pixels predicted 0 and 3.
    # class 0: tp 2 fn 1 fp 0 -> IoU 2/3, F1 4/5;  class 1: tp 1 fn 1 fp 1 -> IoU 1/3, F1 1/2;
    # class 2: tp 1 -> IoU 1, F1 1;  class 3: predicted once, never true -> not in the means;
    # class 4: neither true nor predicted -> not in the means.
    truth = np.array([[0, 0, 0, 1], [1, 2, 255, 255]])
    pred = np.array([[0, 0, 1, 1], [3, 2, 0, 3]])
    cm = ConfusionMatrix(5)
    cm.update(pred, truth)
    r = cm.compute(["a", "b", "c", "d", "e"])
    assert r["pixels"] == 6
    assert r["overall_accuracy"] == pytest.approx(4 / 6)
    assert r["miou"] == pytest.approx((2 / 3 + 1 / 3 + 1) / 3)
    assert r["mf1"] == pytest.approx((4 / 5 + 1 / 2 + 1) / 3)
    assert r["per_class_iou"] == pytest.approx({"a": 2 / 3, "b": 1 / 3, "c": 1.0, "d": None, "e": None})
    assert r["per_class_f1"] == pytest.approx({"a": 4 / 5, "b": 1 / 2, "c": 1.0, "d": None, "e": None})


def test_accumulates_over_updates_and_merges():
    # the same pixels in two updates, and via merge, give the same numbers as one update
    truth = np.array([[0, 0, 0, 1], [1, 2, 255, 255]])
    pred = np.array([[0, 0, 1, 1], [3, 2, 0, 3]])
    a, b = ConfusionMatrix(5), ConfusionMatrix(5)
    a.update(pred[0], truth[0])
    b.update(pred[1], truth[1])
    a.merge(b)
    assert a.compute()["miou"] == pytest.approx(2 / 3)
    a.update(np.full((2, 2), 4), np.full((2, 2), 4))  # class 4 now present and perfect
    r = a.compute()
    assert r["per_class_iou"]["4"] == 1.0 and r["miou"] == pytest.approx((2 / 3 + 1 / 3 + 1 + 1) / 4)
    assert r["overall_accuracy"] == pytest.approx(8 / 10)


def test_other_ignore_index_and_nothing_kept():
    cm = ConfusionMatrix(3, ignore_index=9)
    cm.update(np.array([1, 2, 0]), np.array([9, 9, 9]))
    r = cm.compute()
    assert r["pixels"] == 0 and r["miou"] == 0.0 and r["overall_accuracy"] == 0.0
    cm.update(np.array([2, 1]), np.array([2, 255 % 3]))  # 255 % 3 == 0: a real class when ignore is 9
    r = cm.compute()
    assert r["pixels"] == 2 and r["per_class_iou"]["0"] == 0.0 and r["per_class_iou"]["1"] is None
    assert r["per_class_iou"]["2"] == 1.0 and r["miou"] == pytest.approx(0.5)
