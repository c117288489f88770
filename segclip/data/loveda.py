"""LoveDA (Wang et al., 2021): 1024 x 1024 urban and rural scenes, 7 land-cover classes.

On disk: ``{Train,Val,Test}/{Urban,Rural}/{images_png,masks_png}/N.png`` (Test has no masks).
Mask value 0 means "no data" and becomes the ignore index 255; values 1..7 are the classes below
and become 0..6.  Split and domain folder names are matched case-insensitively.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from segclip.errors import SegclipError
from segclip.data.base import IGNORE_INDEX, SegDataset, check_split, find_child, list_images, pair_masks
from segclip.data.imageio import read_index_mask

CLASSES = ("background", "building", "road", "water", "barren", "forest", "agriculture")
# the official LoveDA colour map
PALETTE = ((255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183), (0, 255, 0), (255, 195, 128))
SPLITS = ("train", "val", "test")
DOMAINS = ("urban", "rural")
LAYOUT = "expected {Train,Val,Test}/{Urban,Rural}/images_png/*.png (+ masks_png)"

# raw mask value -> class index (0 = no data -> ignore); values above 7 are not LoveDA masks
_LUT = np.full(256, -1, np.int16)
_LUT[0] = IGNORE_INDEX
_LUT[1:8] = np.arange(7)


def to_file_ids(mask: np.ndarray) -> np.ndarray:
    """Model class map (0..6, 255 = no-data) -> LoveDA mask-file ids (1..7, 0 = no-data), the
    inverse of the reader's mapping (what LoveDA submissions and ground truth use)."""
    mask = np.asarray(mask)
    out = (mask.astype(np.int16) + 1).clip(0, 255).astype(np.uint8)
    out[mask == IGNORE_INDEX] = 0
    return out


# mask-file id -> (name, colour) after to_file_ids
FILE_IDS = {0: ("no-data", (0, 0, 0)), **{i + 1: (c, PALETTE[i]) for i, c in enumerate(CLASSES)}}


class LoveDADataset(SegDataset):
    name = "loveda"
    metadata_keys = ("domain",)  # Urban/Rural from the folders: the scene prompt's built-in source

    def __init__(self, root, split, domains=None, prompts=None, prompt_template=None):
        root = Path(root)
        split = check_split(split, SPLITS, self.name)
        split_dir = find_child(root, split, self.name, LAYOUT)
        if domains is None:  # every domain that is present
            present = {p.name.lower(): p for p in split_dir.iterdir() if p.is_dir()}
            dom_dirs = [(d, present[d]) for d in DOMAINS if d in present]
            if not dom_dirs:
                find_child(split_dir, "Urban", self.name, LAYOUT)  # raises, listing what is there
        else:
            doms = [domains] if isinstance(domains, str) else list(domains)
            bad = [d for d in doms if str(d).lower() not in DOMAINS]
            if bad or not doms:
                raise SegclipError(f"{self.name}: unknown domain {bad[0] if bad else '(none)'!r}; valid domains: urban, rural")
            dom_dirs = [(d.lower(), find_child(split_dir, d, self.name, LAYOUT)) for d in dict.fromkeys(x.lower() for x in doms)]
        has_labels = split != "test"
        records = []
        for dom, ddir in dom_dirs:
            img_dir = find_child(ddir, "images_png", self.name, LAYOUT)
            mask_dir = ddir / "masks_png" if has_labels else None
            if has_labels and not mask_dir.is_dir():
                raise SegclipError(f"{self.name}: {ddir} has no masks_png folder; the {split} split needs masks "
                                   f"(only Test comes without)")
            for img in list_images(img_dir):
                records.append((img, mask_dir / img.name if has_labels else None, {"domain": dom}))
        if not records:
            raise SegclipError(f"{self.name}: no .png images under {split_dir}; {LAYOUT}")
        pair_masks(records, self.name)
        super().__init__(CLASSES, PALETTE, records, has_labels, prompts, prompt_template)

    def decode_mask(self, path: Path) -> np.ndarray:
        raw = read_index_mask(path)
        if raw.max(initial=0) > 255:
            raise SegclipError(f"{path}: mask values up to {raw.max()} but LoveDA masks hold 0..7")
        out = _LUT[raw]
        if (out < 0).any():
            raise SegclipError(f"{path}: mask value {int(raw[out < 0][0])} outside LoveDA's 0 (no data)..7; "
                               f"is this a LoveDA masks_png file?")
        return out.astype(np.uint8)
