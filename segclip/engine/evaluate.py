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
    """uint8 N x h x w x 3 numpy (+ N scene ids) -> float32 N x K x h x w numpy, model in eval mode."""
    model.eval()

    @torch.no_grad()
    def fn(batch: np.ndarray, scene_ids=None) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
        ids = None if scene_ids is None else torch.as_tensor(np.asarray(scene_ids), device=device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=device.startswith("cuda")):
            scores = model.predict_scores(x, ids)
        return scores.float().cpu().numpy()

    return fn


def scene_ids_for(dataset, scenes, metadata: bool = True):
    """Per-image scene ids of ``dataset`` under a model's scene table (``segclip.metadata``), or None
    when the model has none.  ``metadata=False`` withholds it: every image gets the generic scene 0
    (the ablation ``segclip eval --metadata off``)."""
    if scenes is None:
        return None
    return [scenes.scene_id(dataset.meta(i)) if metadata else 0 for i in range(len(dataset))]


def runner_predict_fn(runner) -> tuple:
    """``(predict_fn, mode)`` for ``evaluate`` over any ``Runner``: its scores when it outputs them,
    else its class maps (blended by the sliding window's class-map rule)."""
    key = "scores" if runner.signature.scores else "mask"

    def fn(batch: np.ndarray, scene_ids=None) -> np.ndarray:
        return runner.infer(np.ascontiguousarray(batch, dtype=np.uint8), scene_ids)[key]

    return fn, key


def evaluate(scores_fn: Callable, dataset, num_classes: int, window: int, batch_size: int = 4,
             progress: bool = True, class_names=None, limit: int | None = None, scene_ids=None,
             mode: str = "scores") -> dict:
    """mIoU, per-class IoU, F1 and overall accuracy of ``scores_fn`` on ``dataset`` (ignore 255).
    With ``scene_ids`` (one per image) ``scores_fn`` is called as ``scores_fn(batch, ids)``;
    ``mode="mask"``: ``scores_fn`` returns class maps (artifacts without a scores output)."""
    from segclip.data.sliding import sliding_window_predict

    cm = ConfusionMatrix(num_classes, getattr(dataset, "ignore_index", 255))
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in tqdm(range(n), desc="eval", unit="img", disable=not progress, dynamic_ncols=True):
        item = dataset[i]
        if "mask" not in item:
            raise ValueError("evaluate: this split has no labels")
        fn = scores_fn
        if scene_ids is not None:  # every window of an image shares its scene
            fn = (lambda b, s=int(scene_ids[i]): scores_fn(b, np.full(len(b), s, np.int64)))
        pred = sliding_window_predict(fn, item["image"], window, batch_size=batch_size, num_classes=num_classes,
                                      mode=mode)
        cm.update(pred, item["mask"])
    out = cm.compute(class_names or getattr(dataset, "classes", None))
    out["images"] = n
    return out
