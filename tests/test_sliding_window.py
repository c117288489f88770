"""Sliding-window prediction of a big image: memory bounded by a band of windows, not the whole score map.
(Its equality with whole-image prediction and the blending rules: test_data_core.py.)
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from segclip.data.sliding import sliding_window_predict
from segclip.errors import SegclipError


def test_sliding_window_memory_is_bounded_by_a_band():
    h, w, k, win = 1200, 900, 16, 128
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (np.arange(w) * 7 % 251)[None]

    def predict(batch):
        s = np.zeros((batch.shape[0], k) + batch.shape[1:3], np.float32)
        s[:, 3] = batch[..., 0] / 255.0
        s[:, 5] = 0.5
        return s

    tracemalloc.start()
    mask = sliding_window_predict(predict, img, win, batch_size=4, num_classes=k)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    full = k * h * w * 4
    assert peak < full / 3, (peak, full)
    np.testing.assert_array_equal(mask, np.where(img[..., 0] / 255.0 > 0.5, 3, 5))
    assert mask.dtype == np.uint8
    with pytest.raises(SegclipError, match="uint8"):
        sliding_window_predict(predict, img.astype(np.float32), win)
