"""Parity images: what the export's parity gate runs through PyTorch and every artifact.

``--data DATASET:ROOT:SPLIT`` gives labelled images (mIoU in the gate); by default the rendered
sample set's val split, and only if that cannot be rendered, deterministic scene-like synthetic
images (regions and boundaries, not white noise).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from segclip.data import build_dataset
from segclip.data.sample import generate_sample_dataset
from segclip.errors import SegclipError, one_line
from segclip.parsers import parse_data


def _fit(image: np.ndarray, mask: Optional[np.ndarray], h: int, w: int):
    """Centre-crop to h x w when the image is large enough, else resize (bilinear / nearest)."""
    ih, iw = image.shape[:2]
    if ih >= h and iw >= w:
        y, x = (ih - h) // 2, (iw - w) // 2
        return image[y:y + h, x:x + w], None if mask is None else mask[y:y + h, x:x + w]
    from PIL import Image

    img = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    if mask is not None:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((w, h), Image.NEAREST)).astype(np.int64)
    return img, mask


def synthetic_images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Deterministic scene-like images: smooth colour fields with rectangles and discs (not white noise,
    so class maps have regions and boundaries like real imagery)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, h, w, 3), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        coarse = rng.uniform(40, 200, (4, 4, 3))
        ys = np.linspace(0, 3, h)
        xs = np.linspace(0, 3, w)
        y0, x0 = np.floor(ys).astype(int).clip(0, 2), np.floor(xs).astype(int).clip(0, 2)
        fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
        c = coarse
        img = (c[y0][:, x0] * (1 - fy) * (1 - fx) + c[y0 + 1][:, x0] * fy * (1 - fx)
               + c[y0][:, x0 + 1] * (1 - fy) * fx + c[y0 + 1][:, x0 + 1] * fy * fx)
        for _ in range(rng.integers(3, 8)):
            col = rng.uniform(0, 255, 3)
            if rng.random() < 0.5:
                a, b = sorted(rng.integers(0, h, 2)), sorted(rng.integers(0, w, 2))
                img[a[0]:a[1] + 4, b[0]:b[1] + 4] = col
            else:
                cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, max(5, min(h, w) // 4))
                img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = col
        img += rng.normal(0, 6, img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _from_dataset(ds, n: int, h: int, w: int, classes, indices=None) -> tuple:
    total = len(ds)
    if total == 0:
        raise SegclipError("the parity dataset is empty")
    idx = np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int)) if indices is None else indices
    images, labels = [], []
    for i in idx:
        item = ds[int(i)]
        img, m = _fit(np.asarray(item["image"], dtype=np.uint8), None if item.get("mask") is None else np.asarray(item["mask"]), h, w)
        images.append(img)
        labels.append(m)
    ds_classes = getattr(ds, "classes", None)
    same = ds_classes is None or tuple(ds_classes) == tuple(classes)
    lab = np.stack(labels).astype(np.int64) if same and all(m is not None for m in labels) else None
    return np.stack(images), lab


def parity_dataset(data, ckpt: dict):
    """The ``--data`` dataset, checked before any export work: it must exist and have the
    checkpoint's classes (the same rule as ``eval``: labels of another class list would be silently
    meaningless).  Returns (dataset, description), or None without ``--data``."""
    from segclip.engine.checkpoint import check_classes

    spec = parse_data(data)
    if spec is None:
        return None
    ds = build_dataset(*spec)
    check_classes(ckpt, ds.classes, f"--data {':'.join(spec)}")
    return ds, f"data:{':'.join(spec)}"


def parity_images(data, n: int, h: int, w: int, classes, log=print) -> tuple:
    """-> (images N x h x w x 3 uint8, labels N x h x w int64 or None, source description).
    ``data``: what :func:`parity_dataset` returned, or None for the sample set."""
    if data is not None:
        ds, src = data
        images, labels = _from_dataset(ds, n, h, w, classes)
        return images, labels, src
    tmp = Path(tempfile.mkdtemp(prefix="segclip-parity-"))
    try:
        # the sample set's own val split (a few 256 px LoveDA-format scenes), rendered in a second
        root = generate_sample_dataset(tmp / "sample", num_train=1, num_val=max(2, n), size=max(256, h, w))
        ds = build_dataset("loveda", root, "val")
        images, labels = _from_dataset(ds, n, h, w, classes)
        return images, labels, "sample:loveda:val"
    except Exception as e:  # the sample generator is a convenience; never block an export on it
        log(f"parity: sample data unavailable ({type(e).__name__}: {one_line(e, 100)}); using synthetic images")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return synthetic_images(n, h, w), None, "synthetic"
