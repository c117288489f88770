"""Evaluation: sliding-window prediction over a dataset, confusion matrix, metrics JSON.

Works with anything that maps a uint8 batch to per-class scores, so PyTorch models and the
runners share it.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from segclip.engine.metrics import ConfusionMatrix


def torch_scores_fn(model, device: str = "cpu") -> Callable:
    """uint8 N x h x w x 3 numpy -> float32 N x K x h x w numpy, with the model in eval mode."""
    model.eval()

    @torch.no_grad()
    def fn(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=device.startswith("cuda")):
            scores = model.predict_scores(x)
        return scores.float().cpu().numpy()

    return fn


def evaluate(scores_fn: Callable, dataset, num_classes: int, window: int, batch_size: int = 4,
             progress: bool = True, class_names=None, limit: int | None = None) -> dict:
    """mIoU, per-class IoU, F1 and overall accuracy of ``scores_fn`` on ``dataset`` (ignore 255)."""
    from segclip.data.sliding import sliding_window_predict

    cm = ConfusionMatrix(num_classes, getattr(dataset, "ignore_index", 255))
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in tqdm(range(n), desc="eval", unit="img", disable=not progress, dynamic_ncols=True):
        item = dataset[i]
        if "mask" not in item:
            raise ValueError("evaluate: this split has no labels")
        pred = sliding_window_predict(scores_fn, item["image"], window, batch_size=batch_size, num_classes=num_classes)
        cm.update(pred, item["mask"])
    out = cm.compute(class_names or getattr(dataset, "classes", None))
    out["images"] = n
    return out
