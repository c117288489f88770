"""iSAID semantic segmentation (Waqas Zamir et al., 2019): 15 object classes + background on
DOTA aerial images of 800 to ~13000 px.

On disk: ``{train,val}/images/P0000.png`` and
``{train,val}/Semantic_masks/images/P0000_instance_color_RGB.png`` (a ``test/images`` split, if
present, has no masks).  Masks are RGB; colours map to classes by exact match, and any other
colour (anti-aliasing, corrupt pixels) becomes 255 with a warning that counts them.

Full images are too large to train on: use ``segclip prepare isaid`` (896 px patches, stride 512)
and ``build_dataset('isaid', DST, split)``, or the on-the-fly ``tile=896, stride=512`` option.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from segclip.errors import SegclipError
from segclip.data.base import SegDataset, check_split, find_child, list_images, pair_masks
from segclip.data.imageio import read_color_mask

CLASSES = ("background", "ship", "storage_tank", "baseball_diamond", "tennis_court", "basketball_court",
           "ground_track_field", "bridge", "large_vehicle", "small_vehicle", "helicopter", "swimming_pool",
           "roundabout", "soccer_ball_field", "plane", "harbor")
PALETTE = ((0, 0, 0), (0, 0, 63), (0, 63, 63), (0, 63, 0), (0, 63, 127), (0, 63, 191), (0, 63, 255),
           (0, 127, 63), (0, 127, 127), (0, 0, 127), (0, 0, 191), (0, 0, 255), (0, 191, 127), (0, 127, 191),
           (0, 127, 255), (0, 100, 155))
SPLITS = ("train", "val", "test")
PATCH = (896, 512)  # standard patch size and stride
LAYOUT = "expected {train,val}/images/P0000.png and {train,val}/Semantic_masks/images/P0000_instance_color_RGB.png"
MASK_SUFFIX = "_instance_color_RGB.png"


class ISAIDDataset(SegDataset):
    name = "isaid"

    def __init__(self, root, split, prompts=None, prompt_template=None):
        split = check_split(split, SPLITS, self.name)
        split_dir = find_child(Path(root), split, self.name, LAYOUT)
        img_dir = find_child(split_dir, "images", self.name, LAYOUT)
        has_labels = split != "test"
        if has_labels:
            mask_dir = find_child(split_dir, "Semantic_masks", self.name, LAYOUT)
            mask_dir = find_child(mask_dir, "images", self.name, LAYOUT)
        # images/ of the official release holds only P*.png; skip stray instance/label files
        imgs = [p for p in list_images(img_dir) if "_instance" not in p.stem]
        if not imgs:
            raise SegclipError(f"{self.name}: no .png images in {img_dir}; {LAYOUT}")
        records = [(p, mask_dir / (p.stem + MASK_SUFFIX) if has_labels else None, {}) for p in imgs]
        pair_masks(records, self.name)
        super().__init__(CLASSES, PALETTE, records, has_labels, prompts, prompt_template)

    def decode_mask(self, path: Path) -> np.ndarray:
        return read_color_mask(path, self.palette)
