"""Parity gate: the PyTorch runner and every exported artifact on the same images.

``compare(reference, candidates, images, labels)`` loops over runners with no special cases: each
runner is asked for its outputs on the same batches; score differences are measured where both
sides return scores, class maps always (pixel agreement), and mIoU against the ground truth when
labels exist (with its delta to the reference).  ``gate`` fails rows under their threshold.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from segclip.data.base import IGNORE_INDEX
from segclip.engine.metrics import ConfusionMatrix
from segclip.signature import MASK_NAME, SCORES_NAME


def run_all(runner, images: np.ndarray, batch_size: int = 4, scene_ids=None) -> dict:
    """All images (with their ``scene_ids``, if any) through one runner in batches (respecting its
    max batch); concatenated outputs."""
    bs = max(1, min(batch_size, runner.max_batch or batch_size))
    masks, scores, seconds = [], [], 0.0
    with runner:
        for i in range(0, len(images), bs):
            out = runner.infer(images[i:i + bs], None if scene_ids is None else scene_ids[i:i + bs])
            seconds += runner.last_inference_time or 0.0
            masks.append(np.asarray(out[MASK_NAME]))
            if SCORES_NAME in out:
                scores.append(np.asarray(out[SCORES_NAME], dtype=np.float32))
    return {"mask": np.concatenate(masks), "scores": np.concatenate(scores) if scores else None, "seconds": seconds}


def miou(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> float:
    """mIoU exactly as ``segclip eval`` computes it (classes present in the ground truth)."""
    return class_iou(pred, gt, num_classes)[0]


def class_iou(pred: np.ndarray, gt: np.ndarray, num_classes: int, names=None) -> tuple:
    """(mIoU, {class: IoU or None when absent from the ground truth}), as ``segclip eval``."""
    cm = ConfusionMatrix(num_classes, IGNORE_INDEX)
    cm.update(pred, gt)
    res = cm.compute(names)
    return res["miou"], res["per_class_iou"]


def _r(x, nd=6):
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else round(float(x), nd)


def every_scene(images: np.ndarray, labels: Optional[np.ndarray], scenes: Sequence) -> tuple:
    """For a model with metadata prompts: every image under every scene (the gate then covers the
    whole scene table) -> (images, labels, scene_ids int32); unchanged and None without scenes."""
    if not scenes:
        return images, labels, None
    s = len(scenes)
    ids = np.repeat(np.arange(s, dtype=np.int32), len(images))
    return (np.concatenate([images] * s), None if labels is None else np.concatenate([labels] * s), ids)


def compare(reference, candidates: Sequence, images: np.ndarray, labels: Optional[np.ndarray] = None,
            thresholds: Optional[dict] = None, batch_size: int = 4, num_classes: Optional[int] = None,
            scene_ids: Optional[np.ndarray] = None) -> dict:
    """-> {"reference": {...}, "rows": [one dict per candidate]}; ``thresholds``: name -> min agreement;
    ``scene_ids``: one per image for a model with metadata prompts (see ``every_scene``)."""
    thresholds = thresholds or {}
    k = num_classes or reference.signature.num_classes
    t0 = time.perf_counter()
    ref = run_all(reference, images, batch_size, scene_ids)
    names = list(reference.signature.classes)[:k] if len(reference.signature.classes) >= k else None
    ref_miou, ref_cls = class_iou(ref["mask"], labels, k, names) if labels is not None else (None, None)
    result = {
        "reference": {"name": reference.name, "backend": reference.backend, "precision": reference.precision,
                      "miou": _r(ref_miou), "seconds": _r(ref["seconds"], 3)},
        "images": int(len(images)),
        "image_size": list(images.shape[1:3]),
        "labels": labels is not None,
        "scenes": None if scene_ids is None else int(len(np.unique(scene_ids))),
        "rows": [],
    }
    for cand in candidates:
        out = run_all(cand, images, batch_size, scene_ids)
        same = out["mask"].astype(np.int64) == ref["mask"].astype(np.int64)
        agree = float(same.mean())
        # per scene: the gate holds for every scene, not only on average
        per_scene = None if scene_ids is None else {
            int(sc): _r(float(same[scene_ids == sc].mean())) for sc in np.unique(scene_ids)}
        max_d = mean_d = None
        if out["scores"] is not None and ref["scores"] is not None:
            d = np.abs(out["scores"] - ref["scores"])
            max_d, mean_d = float(d.max()), float(d.mean())
        m, cls = class_iou(out["mask"], labels, k, names) if labels is not None else (None, None)
        cls_delta = None if cls is None else {c: _r(None if v is None or ref_cls[c] is None else v - ref_cls[c])
                                              for c, v in cls.items()}
        thr = thresholds.get(cand.name)
        worst = agree if per_scene is None else min(agree, *per_scene.values())
        status = "ok" if thr is None or worst >= thr else "failed"
        result["rows"].append({
            "name": cand.name, "backend": cand.backend, "precision": cand.precision,
            "pixel_agreement": _r(agree), "max_abs_diff": _r(max_d, 8), "mean_abs_diff": _r(mean_d, 8),
            "miou": _r(m), "miou_delta": _r(None if m is None or ref_miou is None else m - ref_miou),
            "threshold": thr, "status": status, "seconds": _r(out["seconds"], 3), "per_class_iou_delta": cls_delta,
            **({} if per_scene is None else {"pixel_agreement_per_scene": per_scene}),
        })
    result["seconds"] = _r(time.perf_counter() - t0, 3)
    return result


def failed_rows(result: dict) -> list:
    return [r for r in result["rows"] if r["status"] != "ok"]


def format_table(result: dict) -> str:
    """Plain aligned text (also stored in the manifest)."""
    def pct(x):
        return "-" if x is None else f"{100 * x:.3f}%"

    def sci(x):
        return "n/a" if x is None else f"{x:.2e}"

    def num(x, signed=False):
        return "n/a" if x is None else (f"{x:+.4f}" if signed else f"{x:.4f}")

    ref = result["reference"]
    head = ["artifact", "backend", "precision", "pixel agree", "max|dscore|", "mean|dscore|", "mIoU", "dmIoU", "gate", "status"]
    rows = [[ref["name"], ref["backend"], ref["precision"], "reference", "-", "-", num(ref["miou"]), "-", "-", "ref"]]
    for r in result["rows"]:
        rows.append([r["name"], r["backend"], r["precision"], pct(r["pixel_agreement"]), sci(r["max_abs_diff"]),
                     sci(r["mean_abs_diff"]), num(r["miou"]), num(r["miou_delta"], True),
                     ">= " + pct(r["threshold"]) if r["threshold"] is not None else "-", r["status"].upper()])
    widths = [max(len(str(x[i])) for x in [head] + rows) for i in range(len(head))]
    fmt = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
    lines = [f"parity on {result['images']} image(s) of {result['image_size'][0]}x{result['image_size'][1]}"
             + (f" over {result['scenes']} scenes" if result.get("scenes") else "")
             + (" with labels" if result["labels"] else " (no labels: mIoU n/a)"),
             fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    for r in result["rows"]:  # quantized artifacts: where the mIoU delta comes from
        if r["precision"] == "int8" and r.get("per_class_iou_delta"):
            d = ", ".join(f"{c} {100 * v:+.2f}" for c, v in r["per_class_iou_delta"].items() if v is not None)
            lines.append(f"{r['name']} per-class dIoU (points): {d}")
    return "\n".join(lines)
