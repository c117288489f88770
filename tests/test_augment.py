"""Training augmentation: small images are padded with ignore, and crops that would be all ignore are
avoided.  Real tiny files, no mocks.
"""
from __future__ import annotations

import numpy as np

from data_files import isaid_scene
from segclip.data import build_dataset
from segclip.data.transforms import TrainAugment


def test_augment_pads_small_images_and_avoids_all_ignore_crops(tmp_path):
    img, _ = isaid_scene(tmp_path)
    ds = build_dataset("isaid", tmp_path, "train")
    aug = TrainAugment(ds, (24, 40), seed=0, scale_range=(1.0, 1.0), color_jitter=0.0)
    for e in range(3):
        aug.set_epoch(e)
        out = aug[0]
        assert out["image"].shape == (24, 40, 3) and out["mask"].shape == (24, 40)
        assert out["image"].dtype == np.uint8 and out["mask"].dtype == np.int64
        valid = out["mask"] != 255
        assert valid.sum() == 13 * 21 and (out["image"][~valid] == 0).all()
