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


def test_one_window_overlap_default_for_every_caller():
    """predict (CLI, predict_paths, Predictor), eval, the comparator's predict_image and the sliding
    window itself default to the one ``sliding.OVERLAP`` (predict once said 0.25 and eval 1/3)."""
    import inspect

    from segclip.cli.predict_cmds import predict_cmd
    from segclip.data import sliding
    from segclip.inference import evaluate, predict

    fns = (predict.predict_paths, predict.Predictor.__init__, evaluate.evaluate, evaluate.predict_image,
           sliding.sliding_window_predict, sliding.SlidingPlan.__init__)
    defaults = {f.__qualname__: inspect.signature(f).parameters["overlap"].default for f in fns}
    defaults["segclip predict --overlap"] = next(p.default for p in predict_cmd.params if p.name == "overlap")
    assert set(defaults.values()) == {sliding.OVERLAP} == {0.25}, defaults
