"""Training-time augmentation, wrapped around any dataset.

Every sample's randomness comes from an RNG seeded by ``(seed, epoch, index)`` only, so a resumed
run, another worker count or another rank order reproduces exactly the same crops.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from segclip.errors import SegclipError
from segclip.data.base import IGNORE_INDEX
from segclip.data.tiling import _pair, pad_to


class TrainAugment:
    def __init__(self, dataset, crop_size, seed: int = 0, scale_range=(0.75, 1.5), hflip: bool = True,
                 vflip: bool = True, rot90: bool = True, color_jitter: float = 0.1, tries: int = 10):
        self.dataset = dataset
        self.crop = _pair(crop_size, "crop_size")
        self.seed = int(seed)
        self.scale_range = scale_range
        self.hflip, self.vflip, self.rot90 = hflip, vflip, rot90
        self.color_jitter = color_jitter
        self.tries = tries
        self.epoch = 0
        for k in ("classes", "palette", "prompts", "ignore_index"):
            setattr(self, k, getattr(dataset, k))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def _rescale(self, rng, image, mask):
        lo, hi = self.scale_range
        s = rng.uniform(lo, hi) if hi > lo else lo
        if s == 1.0:
            return image, mask
        h, w = mask.shape
        size = (max(1, round(w * s)), max(1, round(h * s)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(size, Image.NEAREST))
        return image, mask

    def _crop(self, rng, image, mask):
        ch, cw = self.crop
        image, mask = pad_to(image, ch, cw, 0), pad_to(mask, ch, cw, IGNORE_INDEX)
        h, w = mask.shape
        for _ in range(self.tries):  # prefer a crop with some labelled pixels
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            m = mask[y : y + ch, x : x + cw]
            if (m != IGNORE_INDEX).any():
                break
        return image[y : y + ch, x : x + cw], m

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        item = self.dataset[i]
        if "mask" not in item:
            raise SegclipError(f"{item.get('meta', {}).get('path', f'item {i}')}: training needs masks, but this "
                               f"split has none; train on a labelled split")
        image, mask = item["image"], item["mask"].astype(np.uint8)  # class ids < 255 fit in uint8 for PIL
        image, mask = self._rescale(rng, image, mask)
        image, mask = self._crop(rng, image, mask)
        if self.hflip and rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self.vflip and rng.random() < 0.5:
            image, mask = image[::-1], mask[::-1]
        if self.rot90 and self.crop[0] == self.crop[1]:
            k = int(rng.integers(0, 4))
            image, mask = np.rot90(image, k), np.rot90(mask, k)
        if self.color_jitter:
            b = 1 + rng.uniform(-self.color_jitter, self.color_jitter)
            c = 1 + rng.uniform(-self.color_jitter, self.color_jitter)
            f = image.astype(np.float32)
            mean = f.mean()
            image = np.clip((f - mean) * c + mean * b, 0, 255).astype(np.uint8)
        return {"image": np.ascontiguousarray(image), "mask": np.ascontiguousarray(mask).astype(np.int64)}


def collate(batch: list) -> dict:
    """``{"image": uint8 N x H x W x 3, "mask": int64 N x H x W}`` tensors (mask only if every item has one)."""
    out = {"image": torch.from_numpy(np.stack([b["image"] for b in batch]))}
    if all("mask" in b for b in batch):
        out["mask"] = torch.from_numpy(np.stack([b["mask"] for b in batch]).astype(np.int64, copy=False))
    return out
