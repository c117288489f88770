"""The comparator: a reference runner and candidate runners on the same images (Polygraphy style).

The export's parity gate and ``segclip benchmark``'s accuracy columns both use it:

* ``run_all(runner, images)``: every image through the one path from an image to a class map -- an
  image of the runner's size in one call (batched with the others of that size), any other by
  blended sliding windows (``segclip.inference.evaluate.predict_image``, as ``predict`` and ``eval``);
* ``score(preds, ref_preds, labels)``: pixel agreement with the reference and mIoU against the
  labels (``segclip eval``'s protocol, a fraction in 0..1) with its delta to the reference;
* ``compare(reference, candidates, images, labels)``: the loop over runners behind the gate, with
  score differences where both sides return scores; ``gate`` thresholds fail rows.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from segclip.data.base import IGNORE_INDEX
from segclip.inference.evaluate import predict_image
from segclip.engine.metrics import ConfusionMatrix
from segclip.signature import MASK_NAME, SCORES_NAME, Scorer


def run_all(runner: Scorer, images, batch_size: int = 4, scene_ids=None, *, scores: bool = True, window=None) -> dict:
    """-> {"mask": [H x W per image], "scores": [K x H x W per image] or None, "seconds": inference time}.

    ``images``: an N x H x W x 3 array or a list of H x W x 3 images of any sizes.  ``window``: the
    sliding-window size (default: the runner's fixed size; a dynamic-size runner takes images whole),
    so runners of different kinds see the same windows.  ``scene_ids``: one per image for a model
    with metadata prompts (every window of an image gets its scene).  Batches respect the runner's
    max batch; the runner is activated for the call when it is not already."""
    sig = runner.signature
    fixed = tuple(window) if window is not None else None if sig.dynamic_size else (sig.height, sig.width)
    bs = max(1, min(batch_size, runner.max_batch or batch_size))
    want = scores and bool(sig.scores)
    ids = None if scene_ids is None else np.asarray(scene_ids)
    n = len(images)
    masks, outs, seconds = [None] * n, [None] * n, 0.0
    direct = {}  # images of the window's size (any size without a window): batched, one call each
    for i in range(n):
        shape = tuple(images[i].shape[:2])
        if fixed is None or shape == fixed:
            direct.setdefault(shape, []).append(i)
    was_active = runner.is_active
    runner.activate()
    try:
        for idx in direct.values():
            for b in range(0, len(idx), bs):
                part = idx[b:b + bs]
                x = np.ascontiguousarray(np.stack([images[i] for i in part]), dtype=np.uint8)
                out = runner.infer(x, None if ids is None else ids[part])
                seconds += runner.last_inference_time or 0.0
                for j, i in enumerate(part):
                    masks[i] = np.asarray(out[MASK_NAME][j])
                    if want and SCORES_NAME in out:
                        outs[i] = np.asarray(out[SCORES_NAME][j], dtype=np.float32)
        done = {i for idx in direct.values() for i in idx}
        for i in (i for i in range(n) if i not in done):
            t0 = time.perf_counter()
            res = predict_image(runner, images[i], window=fixed, batch_size=bs, return_scores=want,
                                scene=None if ids is None else int(ids[i]))
            masks[i], outs[i] = res[0], (res[1] if want else None)
            seconds += time.perf_counter() - t0
    finally:
        if not was_active:
            runner.deactivate()
    return {"mask": masks, "scores": outs if want and all(s is not None for s in outs) else None, "seconds": seconds}


def class_iou(preds, labels, num_classes: int, names=None) -> tuple:
    """(mIoU, {class: IoU or None}) of class maps against labels over all images together, as
    ``segclip eval`` computes it (one confusion matrix); (None, None) without labels."""
    if labels is None:
        return None, None
    cm = ConfusionMatrix(num_classes, IGNORE_INDEX)
    for p, t in zip(preds, labels):
        cm.update(np.asarray(p), np.asarray(t))
    res = cm.compute(names)
    return res["miou"], res["per_class_iou"]


# mIoU and IoU are fractions (0..1) in every file segclip writes; on screen they are percent with one
# decimal, and a difference of two of them is in points (percent minus percent).  Every command prints
# through these two.
def pct(x, digits: int = 1) -> str:
    """A fraction as percent: 0.17823 -> "17.8%"; None -> "n/a"."""
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def pts(d, digits: int = 2) -> str:
    """A difference of two fractions in points: 0.00766 -> "+0.77 pts"; None -> "n/a"."""
    return "n/a" if d is None else f"{100 * d:+.{digits}f} pts"


def miou(preds, labels, num_classes: int, names=None) -> Optional[float]:
    """mIoU (a fraction) of a list of class maps against their labels; None without labels."""
    return class_iou(preds, labels, num_classes, names)[0]


def agreement(preds, ref) -> Optional[float]:
    """Fraction (0..1) of pixels where two lists of class maps agree; None without a matching reference."""
    if ref is None or len(ref) != len(preds):
        return None
    same = sum(int((np.asarray(p, np.int64) == np.asarray(r, np.int64)).sum()) for p, r in zip(preds, ref))
    total = sum(int(np.asarray(r).size) for r in ref)
    return same / total if total else None


def score_diffs(scores, ref_scores) -> tuple:
    """(max, mean) absolute difference of two lists of score maps; (None, None) without scores."""
    if scores is None or ref_scores is None:
        return None, None
    d = [np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)) for a, b in zip(scores, ref_scores)]
    return float(max(x.max() for x in d)), float(sum(x.sum(dtype=np.float64) for x in d) / sum(x.size for x in d))


def _r(x, nd=6):
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else round(float(x), nd)


def score(preds, ref_preds, labels, num_classes: int, ref_miou: Optional[float] = None, names=None, *,
          raw: bool = False) -> dict:
    """{"pixel_agreement", "miou", "miou_delta"} of one runner's class maps (fractions, rounded);
    ``raw``: also the unrounded "agreement" and the "per_class_iou" (one confusion matrix for both)."""
    m, cls = class_iou(preds, labels, num_classes, names)
    agree = agreement(preds, ref_preds)
    out = {"pixel_agreement": _r(agree), "miou": _r(m),
           "miou_delta": _r(None if m is None or ref_miou is None else m - ref_miou)}
    return {**out, "agreement": agree, "per_class_iou": cls} if raw else out


def every_scene(images, labels, scenes: Sequence) -> tuple:
    """For a model with metadata prompts: every image under every scene (the gate then covers the
    whole scene table) -> (images, labels, scene_ids int32); unchanged and None without scenes."""
    if not scenes:
        return images, labels, None
    s = len(scenes)
    ids = np.repeat(np.arange(s, dtype=np.int32), len(images))
    return list(images) * s, None if labels is None else list(labels) * s, ids


def compare(reference, candidates: Sequence, images, labels=None, thresholds: Optional[dict] = None,
            batch_size: int = 4, num_classes: Optional[int] = None, scene_ids=None, window=None,
            reference_out: Optional[dict] = None) -> dict:
    """-> {"reference": {...}, "rows": [one dict per candidate]}; ``thresholds``: name -> min agreement
    (overall and, with ``scene_ids`` -- one per image, see ``every_scene`` -- in every scene).
    ``window``: the sliding window every runner sees (default: the first fixed input size among the
    runners, so PyTorch, which takes any size, slides the same windows as a fixed-size artifact).
    ``reference_out``: the reference's ``run_all`` output on these images and window, when the caller
    already has it (a gate re-run on other candidates need not run PyTorch again)."""
    thresholds = thresholds or {}
    if window is None:
        window = next(((r.signature.height, r.signature.width) for r in (*candidates, reference)
                       if not r.signature.dynamic_size), None)
    k = num_classes or reference.signature.num_classes
    t0 = time.perf_counter()
    ids = None if scene_ids is None else np.asarray(scene_ids)
    ref = reference_out if reference_out is not None else run_all(reference, images, batch_size, ids, window=window)
    names = list(reference.signature.classes)[:k] if len(reference.signature.classes) >= k else None
    ref_miou, ref_cls = class_iou(ref["mask"], labels, k, names)
    sizes = sorted({tuple(im.shape[:2]) for im in images})
    result = {
        "reference": {"name": reference.name, "backend": reference.backend, "precision": reference.precision,
                      "miou": _r(ref_miou), "seconds": _r(ref["seconds"], 3)},
        "images": int(len(images)),
        "image_size": list(sizes[0]) if len(sizes) == 1 else None,
        "labels": labels is not None,
        "scenes": None if ids is None else int(len(np.unique(ids))),
        "window": None if window is None else [int(window[0]), int(window[1])],
        "rows": [],
    }
    for cand in candidates:
        out = run_all(cand, images, batch_size, ids, window=window)
        s = score(out["mask"], ref["mask"], labels, k, ref_miou, names, raw=True)
        agree = s["agreement"]  # unrounded: the gate decides on it
        # per scene: the gate holds for every scene, not only on average
        per_scene = None if ids is None else {
            int(sc): _r(agreement([out["mask"][i] for i in np.flatnonzero(ids == sc)],
                                  [ref["mask"][i] for i in np.flatnonzero(ids == sc)])) for sc in np.unique(ids)}
        max_d, mean_d = score_diffs(out["scores"], ref["scores"])
        cls = s["per_class_iou"]
        cls_delta = None if cls is None else {c: _r(None if v is None or ref_cls[c] is None else v - ref_cls[c])
                                              for c, v in cls.items()}
        thr = thresholds.get(cand.name)
        worst = agree if per_scene is None else min(agree, *per_scene.values())
        status = "ok" if thr is None or worst >= thr else "failed"
        result["rows"].append({
            "name": cand.name, "backend": cand.backend, "precision": cand.precision,
            "pixel_agreement": s["pixel_agreement"], "max_abs_diff": _r(max_d, 8), "mean_abs_diff": _r(mean_d, 8),
            "miou": s["miou"], "miou_delta": s["miou_delta"],
            "threshold": thr, "status": status, "seconds": _r(out["seconds"], 3), "per_class_iou_delta": cls_delta,
            **({} if per_scene is None else {"pixel_agreement_per_scene": per_scene}),
        })
    result["seconds"] = _r(time.perf_counter() - t0, 3)
    result["computed_on"] = describe_set(result)  # what every mIoU of this result is over
    return result


def describe_set(result: dict) -> str:
    """What a comparison's mIoU was computed on, in words: "8 image(s) over 3 scenes (every image under
    each) of 64x64, window 64x64" (``every_scene`` repeats each image once per scene, so ``images``
    counts image-scene pairs)."""
    n, scenes, size, window = result["images"], result.get("scenes"), result.get("image_size"), result.get("window")
    what = (f"{n // scenes} image(s) over {scenes} scenes (every image under each)" if scenes and n % scenes == 0
            else f"{n} image(s)")
    what += f" of {size[0]}x{size[1]}" if size else " of mixed sizes"
    return what + (f", window {window[0]}x{window[1]}" if window else "")


def failed_rows(result: dict) -> list:
    return [r for r in result["rows"] if r["status"] != "ok"]


def format_table(result: dict) -> str:
    """Plain aligned text (also stored in the manifest)."""
    def pct(x):
        return "-" if x is None else f"{100 * x:.3f}%"

    def sci(x):
        return "n/a" if x is None else f"{x:.2e}"

    def num(x, signed=False):  # mIoU: a fraction in the JSON, percent (one decimal) in the table, deltas in points
        return "n/a" if x is None else (f"{100 * x:+.2f}" if signed else f"{100 * x:.1f}")

    ref = result["reference"]
    head = ["artifact", "backend", "precision", "pixel agree", "max|dscore|", "mean|dscore|", "mIoU %", "dmIoU pts", "gate",
            "status"]
    rows = [[ref["name"], ref["backend"], ref["precision"], "reference", "-", "-", num(ref["miou"]), "-", "-", "ref"]]
    for r in result["rows"]:
        rows.append([r["name"], r["backend"], r["precision"], pct(r["pixel_agreement"]), sci(r["max_abs_diff"]),
                     sci(r["mean_abs_diff"]), num(r["miou"]), num(r["miou_delta"], True),
                     ">= " + pct(r["threshold"]) if r["threshold"] is not None else "-", r["status"].upper()])
    widths = [max(len(str(x[i])) for x in [head] + rows) for i in range(len(head))]
    fmt = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
    lines = [f"parity on {describe_set(result)}" + ("" if result["labels"] else " (no labels: mIoU n/a)"),
             fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    for r in result["rows"]:  # quantized artifacts: where the mIoU delta comes from
        if r["precision"] == "int8" and r.get("per_class_iou_delta"):
            d = ", ".join(f"{c} {100 * v:+.2f}" for c, v in r["per_class_iou_delta"].items() if v is not None)
            lines.append(f"{r['name']} per-class dIoU (points): {d}")
    return "\n".join(lines)
