"""Accuracy of every backend on the same images: mIoU, pixel agreement and mIoU delta vs PyTorch.

Images come whole, in their own size, and go through the comparator of the export parity gate
(``segclip.inference.compare``): an image of the benchmark size in one call, any other by blended
sliding windows of that size (``segclip.inference.evaluate.predict_image``), the same path as ``segclip
eval`` and ``segclip predict``.  Every backend sees exactly the same windows, so differences are the
backend's alone.  Without ``--data`` the images are random (no labels): pixel agreement only.  mIoU
is a fraction (0..1) in the JSON; tables show percent.
"""
from __future__ import annotations

import numpy as np

from segclip.data.sliding import OVERLAP
from segclip.errors import SegclipError
from segclip.inference.compare import run_all
from segclip.parsers import parse_data

METHOD = (f"whole images through segclip.inference.compare (sliding windows of the benchmark size, overlap {OVERLAP:.2f}, "
          f"tent-blended scores or centre-region class maps; mirror-padded where smaller)")


def load_items(data, limit: int, classes, value_range=None) -> tuple:
    """(list of {"image", "mask"}, description) for the first ``limit`` items of the split
    (``value_range``: the model's train --range for 16-bit images, as ``Signature.value_range``)."""
    try:
        from segclip.data import build_dataset
    except ImportError as e:
        raise SegclipError(f"--data: segclip.data.build_dataset is not available in this install ({e})") from None

    name, root, split = parse_data(data)
    ds = build_dataset(name, root, split, value_range=value_range)
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


def predict(runner, items: list, height: int, width: int, batch: int = 4) -> list:
    """The runner's class maps of the items' images through height x width windows (the comparator's
    path); a model with metadata prompts sees each image's own scene (LoveDA: its domain)."""
    sig = runner.signature
    ids = [sig.scene_of(it.get("meta")) for it in items] if sig.scenes else None
    return run_all(runner, [it["image"] for it in items], batch, ids, scores=False, window=(height, width))["mask"]


def labels_of(items: list):
    """The items' label maps, or None when any has none (random images)."""
    return [it["mask"] for it in items] if items and all("mask" in it for it in items) else None
