"""Sliding-window prediction for images larger (or smaller) than the model's input.

Windows follow the tiling rule of ``tiling.tile_coords`` (last window shifted back to the border),
are run in batches, and overlapping scores are blended with a separable tent weight that is
highest at a window's centre and never zero, so seams vanish and every pixel is covered.

Memory stays bounded: windows are processed one row of windows at a time, and only the rows of
pixels that later windows can still touch are kept (K x (window_h + stride) x W floats); finished
rows are reduced to the class map at once.  ``return_scores=True`` keeps the full K x H x W map.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .tiling import _pair, tile_coords


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
    H, W = image.shape[:2]
    wh, ww = _pair(window, "window")
    if stride is None:
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        stride = (max(1, int(round(wh * (1 - overlap)))), max(1, int(round(ww * (1 - overlap)))))
    sh, sw = _pair(stride, "stride")
    padded = _pad(image, wh, ww)
    Hp, Wp = padded.shape[:2]
    coords = tile_coords(Hp, Wp, (wh, ww), (sh, sw))
    rows = sorted({c[0] for c in coords})
    weight = _tent(wh)[:, None] * _tent(ww)[None, :]

    out_mask = None
    full = None  # K x Hp x Wp when return_scores
    band = wsum = None  # rolling accumulators for rows [base, base + band height)
    base = 0
    k = num_classes

    def emit(y_end: int):
        """Reduce finished pixel rows [base, y_end) of the band to classes and drop them from the band."""
        nonlocal band, wsum, base
        n = y_end - base
        if n <= 0:
            return
        out_mask[base:y_end] = band[:, :n].argmax(0)
        band = np.concatenate([band[:, n:], np.zeros_like(band[:, :n])], axis=1)
        wsum = np.concatenate([wsum[n:], np.zeros_like(wsum[:n])], axis=0)
        base = y_end

    for r, y0 in enumerate(rows):
        row = [c for c in coords if c[0] == y0]
        for b in range(0, len(row), batch_size):
            chunk = row[b : b + batch_size]
            batch = np.stack([padded[y:y1, x:x1] for y, x, y1, x1 in chunk])
            scores = np.asarray(predict_fn(batch), dtype=np.float32)
            if out_mask is None:
                k = k or scores.shape[1]
                out_mask = np.zeros((Hp, Wp), np.uint8 if k <= 255 else np.int32)
                band = np.zeros((k, wh + sh, Wp), np.float32)
                wsum = np.zeros((wh + sh, Wp), np.float32)
                if return_scores:
                    full = np.zeros((k, Hp, Wp), np.float32)
                    full_w = np.zeros((Hp, Wp), np.float32)
            if scores.shape != (len(chunk), k, wh, ww):
                raise ValueError(f"predict_fn returned {scores.shape}, expected {(len(chunk), k, wh, ww)}")
            for (y, x, y1, x1), s in zip(chunk, scores):
                ws = s * weight
                band[:, y - base : y1 - base, x:x1] += ws
                wsum[y - base : y1 - base, x:x1] += weight
                if return_scores:
                    full[:, y:y1, x:x1] += ws
                    full_w[y:y1, x:x1] += weight
        # Pixels above the next window row are final.
        emit(rows[r + 1] if r + 1 < len(rows) else Hp)
    mask = out_mask[:H, :W]
    if return_scores:
        return mask, (full / full_w)[:, :H, :W]
    return mask
