"""UAVid (Lyu et al., 2020): oblique UAV video frames, 3840x2160 or 4096x2160, 8 classes.

On disk: ``uavid_{train,val,test}/seqN/{Images,Labels}/000000.png`` (test has Images only);
labels are RGB colour PNGs.

Class order.  By default (``label_order="paper"``) indices follow the order most published UAVid
results report: building, road, tree, low_vegetation, moving_car, static_car, human, clutter.
The official UAVid toolkit numbers clutter first (clutter 0, building 1, ..., human 7); pass
``label_order="official"`` for that.  Colours are the same in both orders.

Frames are large: use ``segclip prepare uavid`` (1024 px tiles, stride 1024, last tile shifted
back to the border) or the on-the-fly ``tile=1024`` option.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from segclip.errors import SegclipError
from segclip.data.base import SegDataset, check_split, find_child, list_images, natural_key, pair_masks
from segclip.data.imageio import read_color_mask

COLORS = {"building": (128, 0, 0), "road": (128, 64, 128), "tree": (0, 128, 0), "low_vegetation": (128, 128, 0),
          "moving_car": (64, 0, 128), "static_car": (192, 0, 192), "human": (64, 64, 0), "clutter": (0, 0, 0)}
ORDERS = {
    "paper": ("building", "road", "tree", "low_vegetation", "moving_car", "static_car", "human", "clutter"),
    "official": ("clutter", "building", "road", "tree", "low_vegetation", "moving_car", "static_car", "human"),
}
SPLITS = ("train", "val", "test")
PATCH = (1024, 1024)
LAYOUT = "expected uavid_{train,val,test}/seqN/{Images,Labels}/*.png"


def classes_for(label_order: str = "paper") -> tuple:
    if label_order not in ORDERS:
        raise SegclipError(f"uavid: unknown label_order {label_order!r}; use 'paper' or 'official'")
    classes = ORDERS[label_order]
    return classes, tuple(COLORS[c] for c in classes)


class UAVidDataset(SegDataset):
    name = "uavid"

    def __init__(self, root, split, label_order="paper", prompts=None, prompt_template=None):
        classes, palette = classes_for(label_order)
        self.label_order = label_order
        split = check_split(split, SPLITS, self.name)
        split_dir = find_child(Path(root), f"uavid_{split}", self.name, LAYOUT)
        seqs = sorted((p for p in split_dir.iterdir() if p.is_dir()), key=natural_key)
        has_labels = split != "test"
        records = []
        for seq in seqs:
            img_dir = find_child(seq, "Images", self.name, LAYOUT)
            lab_dir = find_child(seq, "Labels", self.name, LAYOUT) if has_labels else None
            for p in list_images(img_dir):
                records.append((p, lab_dir / p.name if has_labels else None, {"sequence": seq.name}))
        if not records:
            raise SegclipError(f"{self.name}: no frames under {split_dir}; {LAYOUT}")
        pair_masks(records, self.name)
        super().__init__(classes, palette, records, has_labels, prompts, prompt_template)

    def decode_mask(self, path: Path) -> np.ndarray:
        return read_color_mask(path, self.palette)
