"""What every dataset shares: the item format, class/prompt bookkeeping and folder lookup.

Datasets only differ in where files live and how a mask file becomes class indices, so each
loader builds a list of ``(image_path, mask_path, meta)`` records and implements
``decode_mask``; reading, size checks and the item dict are here, once.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from segclip.errors import SegclipError
from segclip.prompts import make_prompts
from segclip.data.imageio import image_size, read_rgb

IGNORE_INDEX = 255
def find_child(parent: Path, name: str, what: str, hint: str) -> Path:
    """``parent/name`` matched case-insensitively (LoveDA ships ``Train``, users type ``train``)."""
    parent = Path(parent)
    if not parent.is_dir():
        raise SegclipError(f"{what}: folder {parent} does not exist; {hint}")
    hits = [p for p in parent.iterdir() if p.name.lower() == name.lower()]
    if not hits:
        found = sorted(p.name for p in parent.iterdir() if not p.name.startswith("."))
        raise SegclipError(f"{what}: no {name!r} in {parent} (found: {', '.join(found) or 'nothing'}); {hint}")
    return hits[0]


def check_split(split: str, valid: Sequence[str], what: str) -> str:
    s = str(split).lower()
    if s not in valid:
        raise SegclipError(f"{what}: unknown split {split!r}; valid splits: {', '.join(valid)}")
    return s


def natural_key(p: Path):
    """Sort 2.png before 10.png (LoveDA and UAVid number their files)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def list_images(folder: Path, exts=(".png",)) -> list:
    return sorted((p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in exts), key=natural_key)


def pair_masks(records: list, what: str) -> None:
    """Fail early, naming a file, when an image has no mask (instead of crashing mid-epoch)."""
    missing = [(img, m) for img, m, _ in records if m is not None and not m.is_file()]
    if missing:
        img, m = missing[0]
        raise SegclipError(f"{what}: {len(missing)} image(s) have no mask, e.g. {img} (expected {m}); "
                           f"restore the mask or remove the image")


class SegDataset:
    """Indexable dataset of ``{"image", "mask", "meta"}`` dicts (see package docstring)."""

    name = "dataset"
    ignore_index = IGNORE_INDEX
    metadata_keys: tuple = ()  # scene metadata the layout provides (segclip.metadata); a sidecar adds more
    value_range = None  # (low, high) for 16-bit/float images (train --range); None: each image's p2-p98

    def __init__(self, classes, palette, records, has_labels, prompts=None, prompt_template=None,
                 prompt_defaults=None):
        self.classes = tuple(classes)
        self.palette = tuple(tuple(int(v) for v in c) for c in palette)
        self.prompts = make_prompts(self.classes, prompts, prompt_template, prompt_defaults, self.name)
        self.records = list(records)
        self.has_labels = bool(has_labels)

    def __len__(self) -> int:
        return len(self.records)

    def _record(self, i: int):
        n = len(self.records)
        if not -n <= i < n:
            raise IndexError(f"{self.name}: index {i} out of range for {n} items")
        return self.records[i]

    def meta(self, i: int) -> dict:
        """The item's metadata without decoding anything (scene lookup for a whole split is cheap)."""
        return dict(self._record(i)[2])

    def image_size(self, i: int) -> tuple:
        """(h, w) from the file header only: tiling plans tiles without decoding huge images."""
        return image_size(self._record(i)[0])

    def decode_mask(self, path: Path) -> np.ndarray:  # pragma: no cover - every loader overrides
        raise NotImplementedError

    def read(self, i: int) -> tuple:
        """``(image uint8 HxWx3, mask uint8 HxW or None, meta)``: the compact form, for patching."""
        img_path, mask_path, meta = self._record(i)
        image, valid = read_rgb(img_path, value_range=self.value_range, with_valid=True)
        meta = {"path": str(img_path), **meta}
        mask = None
        if self.has_labels:
            mask = self.decode_mask(mask_path)
            if mask.shape != image.shape[:2]:
                raise SegclipError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {img_path.name} "
                                   f"is {image.shape[1]}x{image.shape[0]}; masks must match their image size")
            if valid is not None:  # nodata pixels (NaN, GDAL nodata): ignored in the loss and the metrics, as predict does
                mask = np.where(valid, mask, IGNORE_INDEX).astype(mask.dtype)
            meta["mask_path"] = str(mask_path)
        return image, mask, meta

    def __getitem__(self, i: int) -> dict:
        image, mask, meta = self.read(i)
        item = {"image": image, "meta": meta}
        if mask is not None:
            item["mask"] = mask.astype(np.int64)
        return item

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {len(self)} items, {len(self.classes)} classes>"
