"""Segmentation metrics from a confusion matrix: per-class IoU and F1, mIoU, overall accuracy."""
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

    def compute(self, class_names=None) -> dict:
        tp = np.diag(self.mat).astype(np.float64)
        fp = self.mat.sum(0) - tp
        fn = self.mat.sum(1) - tp
        present = (tp + fn) > 0  # classes with ground truth; others do not count in the means
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = tp / (tp + fp + fn)
            f1 = 2 * tp / (2 * tp + fp + fn)
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.k)]
        total = self.mat.sum()
        return {
            "miou": float(np.nanmean(np.where(present, iou, np.nan))) if present.any() else 0.0,
            "mf1": float(np.nanmean(np.where(present, f1, np.nan))) if present.any() else 0.0,
            "overall_accuracy": float(tp.sum() / total) if total else 0.0,
            "per_class_iou": {n: (None if not p else float(v)) for n, v, p in zip(names, iou, present)},
            "per_class_f1": {n: (None if not p else float(v)) for n, v, p in zip(names, f1, present)},
            "pixels": int(total),
        }
