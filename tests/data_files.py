"""Tiny real image files for the data tests (no mocks): PNG writer, random RGB, an iSAID scene."""
from __future__ import annotations

import numpy as np
from PIL import Image


def png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)


def rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def isaid_scene(root, h=13, w=21):
    """One iSAID train image with a ship on its right half; returns (image, expected class map)."""
    mask = np.zeros((h, w, 3), np.uint8)
    mask[:, w // 2:] = (0, 0, 63)  # ship (iSAID's published colour) on the right half
    img = rgb(h, w, 3)
    png(root / "train" / "images" / "P0001.png", img)
    png(root / "train" / "Semantic_masks" / "images" / "P0001_instance_color_RGB.png", mask)
    return img, np.where(np.arange(w) >= w // 2, 1, 0)[None].repeat(h, 0)
