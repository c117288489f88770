"""The parity fixture can fail a parity test: several classes per image, boundaries that are regions."""
from __future__ import annotations

import numpy as np

from conftest import PARITY_MAX, PARITY_SIZE, parity_images, parity_problems


def test_trained_checkpoint_is_not_degenerate_through_the_runner(trained_checkpoint):
    from segclip.runtime import load_runner

    x = parity_images(PARITY_MAX)
    assert x.shape == (PARITY_MAX, PARITY_SIZE, PARITY_SIZE, 3) and x.dtype == np.uint8
    with load_runner(trained_checkpoint) as r:
        masks = r.infer(x)["mask"]
    assert parity_problems(masks) == []
    assert all(len(np.unique(m)) >= 3 for m in masks)


def test_parity_problems_rejects_one_class_and_noise():
    one = np.full((1, 64, 64), 2, np.uint8)
    assert "1 classes" in parity_problems(one)[0]
    noise = np.random.default_rng(0).integers(0, 7, (1, 64, 64)).astype(np.uint8)
    assert "not region boundaries" in parity_problems(noise)[0]
    halves = np.zeros((1, 64, 64), np.uint8)
    halves[:, :, 20:40], halves[:, :, 40:] = 1, 2
    assert parity_problems(halves) == []
