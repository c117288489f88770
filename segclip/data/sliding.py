"""Sliding-window prediction for images larger (or smaller) than the model's input.

Windows follow the tiling rule of ``tiling.tile_coords`` (last window shifted back to the border),
are run in batches, and overlapping scores are blended with a separable tent weight that is
highest at a window's centre and never zero, so seams vanish and every pixel is covered.

Memory stays bounded: windows are processed one row of windows at a time into a ring buffer of
K x window_h x W floats (every window row starts where the previous one's finished pixel rows
end); finished rows are reduced to the class map at once and their buffer rows reused.  Only
``return_scores=True`` holds the full K x H x W map.  Weights are positive, so the argmax needs no
normalisation; the returned scores are the weighted mean.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from segclip.errors import SegclipError
from segclip.data.tiling import _pair, tile_coords


def _tent(n: int) -> np.ndarray:
    i = np.arange(n, dtype=np.float32)
    return np.minimum(i + 1, n - i) / ((n + 1) // 2)


def _pad(image: np.ndarray, h: int, w: int) -> np.ndarray:
    ph, pw = max(h - image.shape[0], 0), max(w - image.shape[1], 0)
    if not ph and not pw:
        return image
    return np.pad(image, [(0, ph), (0, pw), (0, 0)], mode="symmetric")  # mirror: no artificial black border


def sliding_window_predict(predict_fn: Callable, image: np.ndarray, window, overlap: float = 1 / 3, stride=None,
                           batch_size: int = 4, num_classes: int | None = None, return_scores: bool = False):
    """``predict_fn(uint8 N x h x w x 3) -> float N x K x h x w``; returns the H x W class map
    (uint8 when K <= 255, else int32), and the K x H x W float32 scores if ``return_scores``."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SegclipError(f"sliding window: expected one uint8 H x W x 3 RGB image, got {image.dtype} {image.shape}")
    H, W = image.shape[:2]
    wh, ww = _pair(window, "window")
    if stride is None:
        if not 0 <= overlap < 1:
            raise SegclipError(f"sliding window: overlap must be in [0, 1), got {overlap}")
        stride = (max(1, int(round(wh * (1 - overlap)))), max(1, int(round(ww * (1 - overlap)))))
    sh, sw = _pair(stride, "stride")
    padded = _pad(image, wh, ww)
    Hp, Wp = padded.shape[:2]
    coords = tile_coords(Hp, Wp, (wh, ww), (sh, sw))
    rows = sorted({c[0] for c in coords})
    weight = _tent(wh)[:, None] * _tent(ww)[None, :]

    k = num_classes
    out_mask = full = full_w = band = None

    for r, y0 in enumerate(rows):
        row = [c for c in coords if c[0] == y0]
        for b in range(0, len(row), batch_size):
            chunk = row[b : b + batch_size]
            batch = np.stack([padded[y:y1, x:x1] for y, x, y1, x1 in chunk])
            scores = np.asarray(predict_fn(batch), dtype=np.float32)
            if out_mask is None:
                k = k or scores.shape[1]
                out_mask = np.zeros((Hp, Wp), np.uint8 if k <= 255 else np.int32)
                if return_scores:
                    full, full_w = np.zeros((k, Hp, Wp), np.float32), np.zeros((Hp, Wp), np.float32)
                else:  # ring buffer: pixel row y lives in band row y % wh
                    band = np.zeros((k, wh, Wp), np.float32)
            if scores.shape != (len(chunk), k, wh, ww):
                raise SegclipError(f"sliding window: predict_fn returned scores of shape {scores.shape}, "
                                   f"expected {(len(chunk), k, wh, ww)} (N x K x window)")
            for (y, x, y1, x1), sc in zip(chunk, scores):
                ws = sc * weight
                if return_scores:
                    full[:, y:y1, x:x1] += ws
                    full_w[y:y1, x:x1] += weight
                else:
                    for phys, j in _ring(y, wh, wh):
                        band[:, phys, x:x1] += ws[:, j]
        if band is not None:  # pixel rows above the next window row are final: reduce and free them
            y_end = rows[r + 1] if r + 1 < len(rows) else Hp
            for phys, j in _ring(y0, y_end - y0, wh):
                out_mask[y0 + j.start : y0 + j.stop] = band[:, phys].argmax(0)
                band[:, phys] = 0
    if return_scores:
        full /= full_w
        out_mask[:] = full.argmax(0)
        return out_mask[:H, :W], full[:, :H, :W]
    return out_mask[:H, :W]


def _ring(y: int, n: int, size: int) -> list:
    """Rows y..y+n-1 of a ring buffer of ``size`` rows: [(buffer slice, slice into the n rows)], at most two."""
    o = y % size
    first = min(n, size - o)
    out = [(slice(o, o + first), slice(0, first))]
    if n > first:
        out.append((slice(0, n - first), slice(first, n)))
    return out
