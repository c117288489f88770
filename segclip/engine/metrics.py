"""Segmentation metrics from a confusion matrix: per-class IoU and F1, mIoU, overall accuracy.

The protocol published results use (mmseg's ``IoUMetric``): the matrix accumulates every pixel of
the whole split (ignore index left out), then per class ``IoU = TP / (TP + FP + FN)``.  A class
that is predicted but absent from the ground truth has IoU 0 and counts in the mean; a class with
an empty union (neither present nor predicted) is left out.  ``exclude`` leaves classes out of the
means as well, e.g. iSAID's foreground-only mIoU (``exclude=(0,)``: the background class).
All values are fractions in 0..1 (tables show percent).
"""
from __future__ import annotations

import numpy as np


class ConfusionMatrix:
    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.k = num_classes
        self.ignore_index = ignore_index
        self.mat = np.zeros((num_classes, num_classes), dtype=np.int64)  # rows: truth, cols: prediction

    def update(self, pred: np.ndarray, truth: np.ndarray) -> None:
        pred = np.asarray(pred).reshape(-1).astype(np.int64)
        truth = np.asarray(truth).reshape(-1).astype(np.int64)
        keep = truth != self.ignore_index
        pred, truth = pred[keep], truth[keep]
        self.mat += np.bincount(truth * self.k + pred, minlength=self.k * self.k).reshape(self.k, self.k)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.mat += other.mat

    def compute(self, class_names=None, exclude=()) -> dict:
        tp = np.diag(self.mat).astype(np.float64)
        fp = self.mat.sum(0) - tp
        fn = self.mat.sum(1) - tp
        union = tp + fp + fn
        counted = union > 0  # present or predicted; an empty union says nothing about the class
        for i in exclude:
            counted[int(i)] = False
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = tp / union
            f1 = 2 * tp / (2 * tp + fp + fn)
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.k)]
        total = self.mat.sum()
        return {
            "miou": float(iou[counted].mean()) if counted.any() else 0.0,
            "mf1": float(f1[counted].mean()) if counted.any() else 0.0,
            "overall_accuracy": float(tp.sum() / total) if total else 0.0,
            "per_class_iou": {n: (float(v) if u > 0 else None) for n, v, u in zip(names, iou, union)},
            "per_class_f1": {n: (float(v) if u > 0 else None) for n, v, u in zip(names, f1, union)},
            "classes_in_mean": [n for n, c in zip(names, counted) if c],
            "pixels": int(total),
        }
