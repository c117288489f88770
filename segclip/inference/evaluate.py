"""Evaluation as published results do it (mmseg): whole images by sliding window, one confusion
matrix over the whole split, per-class IoU from it (``metrics.ConfusionMatrix``), metrics JSON.

Images are scored whole: a prepared patch folder is reassembled into its frames and a tiled
dataset gives back its source images (``data.prepare.whole_images``), so no pixel counts twice.
The PyTorch model is scored through ``SegCLIPInference`` (FP32): the module the PyTorch runner,
every exported artifact and the parity gate compute.

``predict_image(runner, image)`` is the path from a whole image to a class map for anything with the
``Runner`` surface (``signature``, ``max_batch``, ``infer``): scores-mode blending when the runner
returns scores, the class-map rule otherwise (``segclip.data.sliding``).  ``segclip predict``,
``segclip eval``, the export parity gate and the benchmark's accuracy all go through it (or, for
``eval``'s PyTorch model, through ``sliding_window_predict`` with the same defaults).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from segclip.data.sliding import OVERLAP, sliding_window_predict
from segclip.data.tiling import _pair
from segclip.engine.metrics import ConfusionMatrix
from segclip.errors import SegclipError
from segclip.signature import Scorer


def torch_scores_fn(model, device: str = "cpu") -> Callable:
    """uint8 N x h x w x 3 numpy (+ N scene ids) -> float32 N x K x h x w numpy scores of
    ``SegCLIPInference(model)``."""
    from segclip.modeling import SegCLIPInference

    module = SegCLIPInference(model, scores=True).to(device).eval()

    @torch.inference_mode()
    def fn(batch: np.ndarray, scene_ids=None) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
        ids = None if scene_ids is None else torch.as_tensor(np.asarray(scene_ids), dtype=torch.int64, device=device)
        _, scores = module(x, ids)
        return scores.float().cpu().numpy()

    return fn


def scene_ids_for(dataset, scene_of, metadata: bool = True):
    """Per-image scene ids of the whole images ``evaluate`` scores, by a model's rule ``scene_of(meta)``
    (``SceneTable.scene_id`` or ``Signature.scene_of``: ``segclip.metadata.scene_of`` both), or None
    for a model without scenes (``scene_of`` None).  ``metadata=False`` withholds the metadata: every
    image gets the generic scene 0 (the ablation ``segclip eval --metadata off``)."""
    from segclip.data.prepare import whole_images

    if scene_of is None:
        return None
    data = whole_images(dataset)
    return [scene_of(data.meta(i)) if metadata else 0 for i in range(len(data))]


def runner_predict_fn(runner: Scorer) -> tuple:
    """``(predict_fn, mode)`` for ``evaluate`` over any ``Runner``: its scores when it outputs them,
    else its class maps (blended by the sliding window's class-map rule)."""
    key = "scores" if runner.signature.scores else "mask"

    def fn(batch: np.ndarray, scene_ids=None) -> np.ndarray:
        return runner.infer(np.ascontiguousarray(batch, dtype=np.uint8), scene_ids)[key]

    return fn, key


def evaluate(scores_fn: Callable, dataset, num_classes: int, window, batch_size: int = 4, progress: bool = True,
             class_names=None, limit: int | None = None, scene_ids=None, mode: str = "scores", overlap: float = OVERLAP,
             exclude=()) -> dict:
    """mIoU, per-class IoU, F1 and overall accuracy (fractions) of ``scores_fn`` on ``dataset``.

    With ``scene_ids`` (one per whole image, ``scene_ids_for``) ``scores_fn`` is called as
    ``scores_fn(batch, ids)``; ``mode="mask"``: ``scores_fn`` returns class maps (artifacts without a
    scores output).  ``exclude``: class indices left out of the means (iSAID's
    foreground-only mIoU: ``(0,)``)."""
    from segclip.data.prepare import whole_images

    data = whole_images(dataset)
    cm = ConfusionMatrix(num_classes, getattr(data, "ignore_index", 255))
    n = len(data) if limit is None else min(limit, len(data))
    for i in tqdm(range(n), desc="eval", unit="img", disable=not progress, dynamic_ncols=True):
        item = data[i]
        if "mask" not in item:
            raise SegclipError("evaluate: this split has no labels to score against; give a labelled split (e.g. val)")
        fn = scores_fn
        if scene_ids is not None:  # every window of an image shares its scene
            fn = (lambda b, s=int(scene_ids[i]): scores_fn(b, np.full(len(b), s, np.int64)))
        pred = sliding_window_predict(fn, item["image"], window, overlap=overlap, batch_size=batch_size,
                                      num_classes=num_classes, mode=mode)
        cm.update(pred, item["mask"])
    out = cm.compute(class_names or getattr(data, "classes", None), exclude=exclude)
    out["images"] = n
    out["protocol"] = ("mmseg: one confusion matrix over whole images (sliding window, overlap "
                       f"{overlap:.2f}); IoU per class, empty-union classes left out"
                       + (f"; excluded from the means: {list(exclude)}" if exclude else ""))
    return out


def predict_image(runner: Scorer, image: np.ndarray, *, window=None, overlap: float = OVERLAP, batch_size: int = 4,
                  return_scores: bool = False, scene=None):
    """One H x W x 3 uint8 image through a ``Runner``-like scorer -> ``(class map, how)``, or
    ``(class map, scores or None, how)`` with ``return_scores``; ``how`` is "direct" (one call: the
    image has the runner's size, or the runner takes any size and no ``window`` is given) or
    "sliding-window" (windows of the runner's fixed size, or of ``window``, blended as above).

    Batches never exceed ``runner.max_batch``.  A runner without scores output is blended by the
    class-map rule (centre region wins), so ``return_scores`` then gives None.  ``scene``: the image's
    scene (name or id) for a model with metadata prompts; every window shares it."""
    sig = runner.signature
    image = np.ascontiguousarray(image, dtype=np.uint8)
    has_scores = bool(sig.scores)
    if window is None and not sig.dynamic_size:
        window = (sig.height, sig.width)
    if window is None or tuple(image.shape[:2]) == _pair(window, "window"):
        out = runner.infer(image[None], scene)
        scores = out["scores"][0].astype(np.float32) if has_scores and return_scores else None
        mask = out["mask"][0]
        return (mask, scores, "direct") if return_scores else (mask, "direct")
    bs = max(1, min(int(batch_size), runner.max_batch or int(batch_size)))
    key = "scores" if has_scores else "mask"

    def predict_fn(batch):
        return runner.infer(np.ascontiguousarray(batch), scene)[key]

    res = sliding_window_predict(predict_fn, image, window, overlap=overlap, batch_size=bs, num_classes=sig.num_classes,
                                 mode=key, return_scores=return_scores and has_scores)
    if not return_scores:
        return res, "sliding-window"
    mask, scores = res if has_scores else (res, None)
    return mask, scores, "sliding-window"
