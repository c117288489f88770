"""Accuracy of every backend on the same images: mIoU, pixel agreement and mIoU delta vs PyTorch.

Exported artifacts usually take one fixed size (``segclip export --size``), dataset images come in
their own size, so images are **tiled**: non-overlapping windows of the benchmark size, the last
window of a row/column shifted back to end at the image edge (its overlap is predicted twice and
the later prediction kept), and images smaller than the window reflect-padded up to it (the padding
is cropped from the prediction).  Every backend sees exactly the same windows, so differences are
the backend's alone; only the class map (``mask``) is used, so it works for artifacts exported
without scores.  Without ``--data`` the images are random (no labels): pixel agreement only.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from segclip.data.tiling import tile_coords
from segclip.errors import SegclipError
from segclip.parsers import parse_data

TILING = ("tiled: non-overlapping HxW windows of the benchmark size, last window aligned to the image edge, "
          "images smaller than the window reflect-padded")


def load_items(data, limit: int, classes) -> tuple:
    """(list of {"image", "mask"}, description) for the first ``limit`` items of the split."""
    try:
        from segclip.data import build_dataset
    except ImportError as e:
        raise SegclipError(f"--data: segclip.data.build_dataset is not available in this install ({e})") from None

    name, root, split = parse_data(data)
    ds = build_dataset(name, root, split)
    if tuple(ds.classes) != tuple(classes):
        raise SegclipError(f"--data {name}:{root}:{split} has classes {list(ds.classes)} but the model was trained on "
                           f"{list(classes)}; benchmark it on data with the model's classes")
    if not getattr(ds, "has_labels", True):
        raise SegclipError(f"--data {name}:{root}:{split}: this split has no labels; pick a labelled split (e.g. val)")
    n = min(int(limit), len(ds))
    if n < 1:
        raise SegclipError(f"--data {name}:{root}:{split} is empty")
    items = [ds[i] for i in range(n)]
    return items, f"{name}:{root}:{split} ({n} of {len(ds)} images)"


def random_items(n: int, height: int, width: int, seed: int = 1) -> list:
    rng = np.random.default_rng([seed, height, width])
    return [{"image": rng.integers(1, 256, (height, width, 3), dtype=np.uint8)} for _ in range(n)]


def predict_tiled(runner, image: np.ndarray, height: int, width: int, batch: int = 4, scene=None) -> np.ndarray:
    """Class map of one H x W x 3 image (of scene ``scene``, for models with metadata prompts) from
    ``runner`` through height x width windows."""
    ih, iw = image.shape[:2]
    ph, pw = max(0, height - ih), max(0, width - iw)
    if ph or pw:
        mode = "reflect" if ph < ih and pw < iw else "edge"
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode=mode)
    H, W = image.shape[:2]
    coords = [(y, x) for y, x, _, _ in tile_coords(H, W, (height, width))]
    out = np.zeros((H, W), dtype=np.int64)
    step = max(1, min(batch, runner.max_batch or batch))
    for i in range(0, len(coords), step):
        part = coords[i:i + step]
        tiles = np.stack([image[y:y + height, x:x + width] for y, x in part])
        mask = runner.infer(tiles, scene)["mask"]
        for (y, x), m in zip(part, mask):
            out[y:y + height, x:x + width] = m
    return out[:ih, :iw]


def predict_all(runner, items: list, height: int, width: int, batch: int = 4) -> list:
    sig = runner.signature  # a model with metadata prompts sees each image's own scene (LoveDA: its domain)
    return [predict_tiled(runner, it["image"], height, width, batch, sig.scene_of(it.get("meta")) if sig.scenes else None)
            for it in items]


def score(preds: list, items: list, num_classes: int, classes=None, ignore_index: int = 255) -> Optional[float]:
    """mIoU as a fraction (0-1, like every segclip JSON; tables show percent) of ``preds`` against the
    items' labels, None without labels."""
    if not items or "mask" not in items[0]:
        return None
    from segclip.engine.metrics import ConfusionMatrix

    cm = ConfusionMatrix(num_classes, ignore_index)
    for p, it in zip(preds, items):
        cm.update(p, it["mask"])
    return round(cm.compute(classes)["miou"], 6)


def agreement(preds: list, ref: list) -> Optional[float]:
    """Fraction (0-1) of pixels where both class maps agree."""
    if ref is None or len(ref) != len(preds):
        return None
    same = sum(int((p == r).sum()) for p, r in zip(preds, ref))
    total = sum(int(r.size) for r in ref)
    return round(same / total, 6) if total else None
