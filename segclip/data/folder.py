"""Your own data: an ``images/`` and a ``masks/`` folder plus a ``classes.yaml``.

Layout::

    root/classes.yaml          classes: [road, building, ...]            # names, or mappings:
                               classes: [{name: road, color: [128, 64, 128], prompt: "a paved road"}, ...]
                               ignore_index: 255                          # optional, the "don't care" mask value
    root/images/<stem>.png     any PIL-readable png/jpg/tif/bmp
    root/masks/<stem>.png      same stem as its image

Masks are either index images (mode L/P: pixel value = class index, ``ignore_index`` = ignore)
or, when every class has a ``color``, RGB images decoded by exact colour (unknown colours become
ignore with a warning).  Without a ``masks/`` folder the dataset is unlabelled (prediction only).

Splits, first rule that applies:
1. ``images/<split>/`` (and ``masks/<split>/``) subfolders;
2. ``splits/<split>.txt`` files listing one stem per line (``#`` comments allowed);
3. neither: every image belongs to every split name (handy for a quick look, not for evaluation).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from segclip.errors import SegclipError, one_line
from segclip.signature import default_palette
from segclip.data.base import IGNORE_INDEX, SegDataset, list_images, pair_masks
from segclip.data.imageio import read_mask

EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def load_classes_yaml(root) -> dict:
    """``{"classes", "palette", "colors" (None unless every class has one), "prompts", "ignore_index"}``."""
    path = Path(root) / "classes.yaml"
    if not path.is_file():
        raise SegclipError(f"folder: no classes.yaml in {root}; write one with a 'classes:' list of class names")
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SegclipError(f"{path}: not valid YAML ({one_line(e)})") from None
    entries = doc.get("classes") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SegclipError(f"{path}: needs a non-empty 'classes:' list (names or {{name:, color:, prompt:}} mappings)")
    names, colors, prompts = [], [], {}
    for i, e in enumerate(entries):
        if isinstance(e, dict):
            name, color = e.get("name"), e.get("color")
            if e.get("prompt"):
                prompts[str(name)] = str(e["prompt"])
        else:
            name, color = e, None
        if not isinstance(name, str) or not name:
            raise SegclipError(f"{path}: class entry {i} has no name; give a string or a mapping with 'name:'")
        if color is not None and not (isinstance(color, (list, tuple)) and len(color) == 3
                                      and all(isinstance(c, int) and 0 <= c <= 255 for c in color)):
            raise SegclipError(f"{path}: class {name!r} color {color!r} is not [r, g, b] with values 0..255")
        names.append(name)
        colors.append(tuple(color) if color is not None else None)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise SegclipError(f"{path}: class {dup!r} is listed twice; class names must be unique")
    if len(names) > 255:
        raise SegclipError(f"{path}: {len(names)} classes; at most 255 are supported (255 is the ignore index)")
    ignore = doc.get("ignore_index", IGNORE_INDEX)
    if not isinstance(ignore, int) or ignore < len(names):
        raise SegclipError(f"{path}: ignore_index {ignore!r} must be an integer >= the number of classes ({len(names)})")
    fill = default_palette(len(names))
    return {"classes": tuple(names), "palette": tuple(c or tuple(fill[i]) for i, c in enumerate(colors)),
            "colors": tuple(colors) if all(c is not None for c in colors) else None,
            "prompts": prompts, "ignore_index": ignore}


def _by_stem(files: list, folder: Path) -> dict:
    out = {}
    for p in files:
        if p.stem in out:
            raise SegclipError(f"folder: {out[p.stem].name} and {p.name} in {folder} share the stem {p.stem!r}; "
                               f"keep one file per stem")
        out[p.stem] = p
    return out


class FolderDataset(SegDataset):
    name = "folder"

    def __init__(self, root, split, prompts=None, prompt_template=None):
        root = Path(root)
        if not root.is_dir():
            raise SegclipError(f"folder: dataset root {root} does not exist")
        info = load_classes_yaml(root)
        self.colors, self.raw_ignore = info["colors"], info["ignore_index"]
        img_dir, mask_dir = root / "images", root / "masks"
        if not img_dir.is_dir():
            raise SegclipError(f"folder: no images/ folder in {root}; put images in {img_dir}")
        subdirs = sorted(p.name for p in img_dir.iterdir() if p.is_dir())
        split_files = root / "splits"
        stems = None
        if subdirs:  # rule 1: images/<split>/
            if split not in subdirs:
                raise SegclipError(f"folder: no split {split!r} in {img_dir} (found: {', '.join(subdirs)})")
            img_dir, mask_dir = img_dir / split, mask_dir / split
        elif split_files.is_dir():  # rule 2: splits/<split>.txt
            listing = split_files / f"{split}.txt"
            if not listing.is_file():
                found = sorted(p.stem for p in split_files.glob("*.txt"))
                raise SegclipError(f"folder: no {listing.name} in {split_files} (found splits: {', '.join(found) or 'none'})")
            stems = [s.split("#")[0].strip() for s in listing.read_text().splitlines()]
            stems = [s for s in stems if s]
        images = _by_stem(list_images(img_dir, EXTS), img_dir)
        if stems is not None:
            missing = [s for s in stems if s not in images]
            if missing:
                raise SegclipError(f"folder: {listing} lists {missing[0]!r} but {img_dir} has no image with that stem")
            images = {s: images[s] for s in stems}
        if not images:
            raise SegclipError(f"folder: no images ({'/'.join(EXTS)}) in {img_dir}")
        has_labels = (root / "masks").is_dir()
        masks = _by_stem(list_images(mask_dir, EXTS), mask_dir) if has_labels and mask_dir.is_dir() else {}
        records = [(p, masks.get(s, mask_dir / f"{s}.png") if has_labels else None, {"stem": s})
                   for s, p in images.items()]
        pair_masks(records, self.name)
        super().__init__(info["classes"], info["palette"], records, has_labels, prompts, prompt_template,
                         prompt_defaults=info["prompts"])

    def ground_resolution(self):
        """GSD in metres from the images' georeferencing when every image has one and they agree
        (``segclip.data.gsd.agreed_gsd``), else None: train --gsd then gives it."""
        from segclip.data.gsd import agreed_gsd

        return agreed_gsd(r[0] for r in self.records)

    def decode_mask(self, path: Path) -> np.ndarray:
        m, decoded = read_mask(path, self.colors)
        if decoded:
            return m
        k = len(self.classes)
        ign = m == self.raw_ignore
        bad = (m >= k) & ~ign
        if bad.any():
            raise SegclipError(f"{path}: mask value {int(m[bad][0])} is not a class index (0..{k - 1}) nor the "
                               f"ignore_index {self.raw_ignore} of classes.yaml")
        out = m.astype(np.uint8)
        out[ign] = IGNORE_INDEX
        return out
