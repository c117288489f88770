"""Parity images: what the export's parity gate runs through PyTorch and every artifact.

``--data DATASET:ROOT:SPLIT`` gives labelled images (mIoU in the gate); by default the rendered
sample set's val split, and only if that cannot be rendered, deterministic scene-like synthetic
images (regions and boundaries, not white noise).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from segclip.data import build_dataset
from segclip.data.sample import generate_sample_dataset
from segclip.errors import SegclipError, one_line
from segclip.parsers import parse_data

SAMPLE_MIN = 64  # the smallest scene the sample renderer draws


def sample_size(h: int, w: int) -> int:
    """Side of the sample scenes rendered for an export of h x w: its larger side, so they mostly
    take one window (whole images larger than the window are slid over, which costs more)."""
    return max(SAMPLE_MIN, int(h), int(w))


def windows(images, h: int, w: int) -> list:
    """One h x w window per image for what needs the export's own input size (INT8 calibration, the
    FP16 range pass): the most central of the sliding windows the comparator slides over it
    (mirror-padded where the image is smaller); an image of that size is its own window."""
    from segclip.data.sliding import SlidingPlan

    out = []
    for im in images:
        if tuple(im.shape[:2]) == (h, w):
            out.append(np.ascontiguousarray(im))
            continue
        plan = SlidingPlan(im.shape[0], im.shape[1], (h, w))
        out.append(np.ascontiguousarray(plan.crop(im, plan.coords[len(plan) // 2])))
    return out


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


def _from_dataset(ds, n: int, classes, indices=None) -> tuple:
    """(images, labels or None): ``n`` items spread over the split (or ``indices``), whole, in
    their own size (the comparator slides windows over larger ones)."""
    total = len(ds)
    if total == 0:
        raise SegclipError("the parity dataset is empty")
    idx = np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int)) if indices is None else indices
    items = [ds[int(i)] for i in idx]
    images = [np.ascontiguousarray(it["image"], dtype=np.uint8) for it in items]
    ds_classes = getattr(ds, "classes", None)
    same = ds_classes is None or tuple(ds_classes) == tuple(classes)
    labeled = same and all(it.get("mask") is not None for it in items)
    return images, [np.asarray(it["mask"], dtype=np.int64) for it in items] if labeled else None


def parity_dataset(data, ckpt: dict):
    """The ``--data`` dataset, checked before any export work: it must exist and have the
    checkpoint's classes (the same rule as ``eval``: labels of another class list would be silently
    meaningless).  Returns (dataset, description), or None without ``--data``."""
    from segclip.contract import signature_from_checkpoint
    from segclip.checkpoint import check_classes

    spec = parse_data(data)
    if spec is None:
        return None
    ds = build_dataset(*spec, value_range=signature_from_checkpoint(ckpt).value_range)  # 16-bit: as trained
    check_classes(ckpt, ds.classes, f"--data {':'.join(spec)}")
    return ds, f"data:{':'.join(spec)}"


SAMPLE_SOURCE = "sample:loveda:val"


def sample_dataset(tmp: Path, n: int, h: int, w: int):
    """The sample set's val split (LoveDA-format scenes, ``n`` of them, ``sample_size(h, w)`` px),
    rendered under ``tmp`` in a second: the default parity and calibration images."""
    root = generate_sample_dataset(Path(tmp) / "sample", num_train=1, num_val=n, size=sample_size(h, w))
    return build_dataset("loveda", root, "val")


def parity_images(data, n: int, h: int, w: int, classes, log=print) -> tuple:
    """-> (images: list of H x W x 3 uint8, labels: list of H x W int64 or None, source description).
    ``data``: what :func:`parity_dataset` returned, or None for the sample set.  Dataset images come
    whole, in their own size; the sample scenes are rendered at the export's size (``sample_size``)."""
    if data is not None:
        ds, src = data
        images, labels = _from_dataset(ds, n, classes)
        return images, labels, src
    tmp = Path(tempfile.mkdtemp(prefix="segclip-parity-"))
    try:
        images, labels = _from_dataset(sample_dataset(tmp, max(2, n), h, w), n, classes)
        return images, labels, SAMPLE_SOURCE
    except Exception as e:  # the sample generator is a convenience; never block an export on it
        log(f"parity: sample data unavailable ({type(e).__name__}: {one_line(e, 100)}); using synthetic images")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return list(synthetic_images(n, h, w)), None, "synthetic"
