"""Cutting large images into fixed-size tiles: one rule for offline patching, on-the-fly tiling
and sliding-window inference.

The rule is the iSAID devkit's: tiles start every ``stride`` pixels and the last one is shifted
back so that it ends exactly at the border (no tile hangs over the edge, every pixel is covered).
An image smaller than a tile yields a single tile; the caller pads it (image with 0, mask with 255).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from segclip.errors import SegclipError
from segclip.data.base import IGNORE_INDEX


def _pair(v, what: str) -> tuple:
    try:
        t = (v, v) if np.isscalar(v) else tuple(v)
        ok = len(t) == 2 and all(int(x) == x and int(x) > 0 for x in t)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise SegclipError(f"tiling: {what} must be a positive integer or (h, w) pair, got {v!r}")
    return int(t[0]), int(t[1])


def axis_starts(length: int, tile: int, stride: int) -> list:
    if length <= tile:
        return [0]
    return list(range(0, length - tile, stride)) + [length - tile]


def tile_coords(h: int, w: int, tile, stride=None) -> list:
    """``[(y0, x0, y1, x1), ...]`` row-major; ``stride`` defaults to ``tile`` (no overlap)."""
    th, tw = _pair(tile, "tile")
    sh, sw = _pair(stride if stride is not None else (th, tw), "stride")
    if sh > th or sw > tw:
        raise SegclipError(f"tiling: stride {stride} is larger than tile {tile}, which would skip pixels; "
                           f"use a stride <= the tile size")
    return [(y, x, min(y + th, h), min(x + tw, w))
            for y in axis_starts(h, th, sh) for x in axis_starts(w, tw, sw)]


def pad_to(a: np.ndarray, h: int, w: int, value) -> np.ndarray:
    """Pad bottom/right to at least h x w (no-op when already that large)."""
    ph, pw = max(h - a.shape[0], 0), max(w - a.shape[1], 0)
    if not ph and not pw:
        return a
    return np.pad(a, [(0, ph), (0, pw)] + [(0, 0)] * (a.ndim - 2), constant_values=value)


def iter_patches(image: np.ndarray, mask: Optional[np.ndarray], tile, stride=None):
    """Yield ``(y0, x0, image_patch, mask_patch_or_None)``, each padded to the full tile size."""
    th, tw = _pair(tile, "tile")
    for y0, x0, y1, x1 in tile_coords(image.shape[0], image.shape[1], (th, tw), stride):
        img = pad_to(image[y0:y1, x0:x1], th, tw, 0)
        m = None if mask is None else pad_to(mask[y0:y1, x0:x1], th, tw, IGNORE_INDEX)
        yield y0, x0, img, m


class TiledDataset:
    """Each item is one tile of an underlying dataset's image (the ``tile=`` option of build_dataset).

    Tiles are planned from image headers only; the last decoded image is kept so that reading
    the tiles of one image in order decodes it once.
    """

    def __init__(self, dataset, tile, stride=None):
        self.dataset = dataset
        self.tile = _pair(tile, "tile")
        self.stride = self.tile if stride is None else _pair(stride, "stride")
        for k in ("classes", "palette", "prompts", "ignore_index", "has_labels", "name"):
            setattr(self, k, getattr(dataset, k))
        self.metadata_keys = tuple(getattr(dataset, "metadata_keys", ()))
        self.index = [(i, c) for i in range(len(dataset))
                      for c in tile_coords(*dataset.image_size(i), self.tile, self.stride)]
        self._cache = (None, None)

    def __len__(self) -> int:
        return len(self.index)

    def image_size(self, i: int) -> tuple:
        return self.tile

    def meta(self, i: int) -> dict:
        return self.dataset.meta(self.index[i][0])

    def __getitem__(self, i: int) -> dict:
        src, (y0, x0, y1, x1) = self.index[i]
        if self._cache[0] != src:
            self._cache = (src, self.dataset[src])
        item = self._cache[1]
        th, tw = self.tile
        out = {"image": pad_to(item["image"][y0:y1, x0:x1], th, tw, 0).copy(),
               "meta": {**item["meta"], "tile": (y0, x0, y1, x1)}}
        if "mask" in item:
            out["mask"] = pad_to(item["mask"][y0:y1, x0:x1], th, tw, IGNORE_INDEX).copy()
        return out

    def __getstate__(self):  # do not ship a cached huge image to DataLoader workers
        return {**self.__dict__, "_cache": (None, None)}
