"""Offline patching of huge scenes (``segclip prepare isaid|uavid SRC DST``) and the reader of the
patch folder it writes.

Output layout (read back by ``build_dataset(name, DST, split)``, which notices the manifest)::

    DST/prepare_manifest.json              dataset, tile, stride, classes (index order), splits
    DST/<split>/images/<stem>_<y0>_<x0>.png
    DST/<split>/masks/<stem>_<y0>_<x0>.png  mode L, class index per pixel, 255 = ignore/padding

Patches are cut by :func:`segclip.data.tiling.iter_patches` (the same rule as on-the-fly tiling);
the whole DST is written to a temporary sibling and renamed at the end, so it is never half there.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from segclip.errors import SegclipError
from segclip.atomic import atomic_dir, holds_own
from segclip.data.base import IGNORE_INDEX, SegDataset, list_images, pair_masks
from segclip.data.imageio import read_index_mask
from segclip.data.tiling import iter_patches

MANIFEST = "prepare_manifest.json"


def _split_present(name: str, src: Path, split: str) -> bool:
    folder = f"uavid_{split}" if name == "uavid" else split
    return src.is_dir() and any(p.name.lower() == folder for p in src.iterdir())


def prepare_patches(name, src, dst, tile=None, stride=None, splits=None, force=False, progress=True,
                    **options) -> dict:
    """Cut every image (and mask) of ``splits`` of dataset ``name`` at ``src`` into patches in ``dst``.

    ``tile``/``stride`` default to the dataset's standard (iSAID 896/512, UAVid 1024/1024).
    ``splits=None`` takes every split present in ``src``.  Returns the manifest.
    """
    from segclip.data import PATCH_DEFAULTS, build_dataset  # the registry imports this module

    src, dst = Path(src), Path(dst)
    if name not in PATCH_DEFAULTS:
        raise SegclipError(f"prepare: cannot patch {name!r}; supported: {', '.join(PATCH_DEFAULTS)}")
    for flag, v in (("--tile", tile), ("--stride", stride)):
        if v is not None and (not isinstance(v, int) or v < 1):  # 0 must not silently mean "the default"
            raise SegclipError(f"prepare: {flag} {v}: must be a positive number of pixels; leave it out for the default "
                               f"({name}: tile {PATCH_DEFAULTS[name][0]}, stride {PATCH_DEFAULTS[name][1]})")
    tile = tile if tile is not None else PATCH_DEFAULTS[name][0]
    stride = stride if stride is not None else (PATCH_DEFAULTS[name][1] if tile == PATCH_DEFAULTS[name][0] else tile)
    if not src.is_dir():
        raise SegclipError(f"prepare: source folder {src} does not exist; give the folder the dataset was extracted to")
    if dst.exists() and not dst.is_dir():
        raise SegclipError(f"prepare: destination {dst} exists and is a file; give a new or empty folder for the patches")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise SegclipError(f"prepare: destination {dst} is inside the source {src}; choose a folder outside it")
    # --force replaces earlier patches only: a folder without prepare's manifest is someone else's
    if holds_own(dst, lambda d: (d / MANIFEST).is_file(), "patches segclip prepare wrote", f"no {MANIFEST}") and not force:
        raise SegclipError(f"prepare: {dst} already holds prepared patches ({MANIFEST}); pass --force to replace them "
                           f"or choose another --out")
    if splits is None:
        splits = [s for s in ("train", "val", "test") if _split_present(name, src, s)]
        if not splits:
            build_dataset(name, src, "train", patched=False, **options)  # raises, naming what is missing
    datasets = {s: build_dataset(name, src, s, patched=False, **options) for s in splits}
    first = next(iter(datasets.values()))
    manifest = {"dataset": name, "tile": int(tile), "stride": int(stride), "classes": list(first.classes),
                "source": str(src), "splits": {}}
    with atomic_dir(dst, replace=force) as tmp:
        for split, ds in datasets.items():
            img_dir, mask_dir = tmp / split / "images", tmp / split / "masks"
            img_dir.mkdir(parents=True)
            if ds.has_labels:
                mask_dir.mkdir()
            seen, n = set(), 0
            for i in tqdm(range(len(ds)), desc=f"prepare {name} {split}", unit="img", disable=not progress):
                image, mask, meta = ds.read(i)
                stem = "_".join(x for x in (meta.get("sequence"), Path(meta["path"]).stem) if x)
                if stem in seen:
                    raise SegclipError(f"prepare: two source images are both named {stem!r} ({meta['path']}); rename one")
                seen.add(stem)
                for y0, x0, img, m in iter_patches(image, mask, tile, stride):
                    out = f"{stem}_{y0}_{x0}.png"
                    Image.fromarray(img).save(img_dir / out)
                    if m is not None:
                        Image.fromarray(m.astype(np.uint8), "L").save(mask_dir / out)
                    n += 1
            manifest["splits"][split] = {"images": len(ds), "patches": n, "labels": ds.has_labels}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def read_manifest(root) -> dict | None:
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SegclipError(f"{path}: unreadable prepare manifest ({e}); re-run segclip prepare with --force") from None


class PatchedDataset(SegDataset):
    """The patch folder written by :func:`prepare_patches`; indices are remapped by class name,
    so e.g. UAVid patches prepared in one ``label_order`` can be read in the other."""

    def __init__(self, root, split, name, classes, palette, prompts=None, prompt_template=None):
        self.name = name
        root = Path(root)
        m = read_manifest(root)
        if m is None:
            raise SegclipError(f"{name}: {root} has no {MANIFEST}; create patches with 'segclip prepare {name} SRC {root}' "
                               f"or pass patched=False for the original layout")
        if m.get("dataset") != name:
            raise SegclipError(f"{name}: {root} holds patches of {m.get('dataset')!r}, not {name!r}")
        if split not in m.get("splits", {}):
            raise SegclipError(f"{name}: no split {split!r} in {root} (found: {', '.join(m.get('splits', {})) or 'none'})")
        self.tile, self.stride = m["tile"], m["stride"]
        missing = [c for c in m["classes"] if c not in classes]
        if missing:
            raise SegclipError(f"{name}: {root} was prepared with class {missing[0]!r} unknown here; re-run segclip prepare")
        self._lut = np.full(256, IGNORE_INDEX, np.uint8)
        self._lut[:len(m["classes"])] = [classes.index(c) for c in m["classes"]]
        has_labels = bool(m["splits"][split].get("labels", True))
        img_dir = root / split / "images"
        records = []
        for p in list_images(img_dir) if img_dir.is_dir() else []:
            try:
                source, y0, x0 = p.stem.rsplit("_", 2)
                y0, x0 = int(y0), int(x0)
            except ValueError:
                raise SegclipError(f"{p}: not a patch written by segclip prepare (<stem>_<y0>_<x0>.png); "
                                   f"remove it or re-run prepare with --force") from None
            records.append((p, root / split / "masks" / p.name if has_labels else None,
                            {"source": source, "origin": (y0, x0)}))
        if not records:
            raise SegclipError(f"{name}: no patches in {img_dir}; re-run segclip prepare with --force")
        pair_masks(records, name)
        super().__init__(classes, palette, records, has_labels, prompts, prompt_template)

    def decode_mask(self, path: Path) -> np.ndarray:
        return self._lut[read_index_mask(path)]


class FramesDataset:
    """The whole frames of a patch folder, each reassembled from its patches (every pixel once).

    Evaluation reads these: metrics over the patches themselves would count the pixels where
    patches overlap (the last patch of a row or column is shifted back to the border) twice.
    Padding that ``prepare`` added to frames smaller than a patch stays, labelled ignore (255)."""

    def __init__(self, patches: PatchedDataset):
        self.patches = patches
        for k in ("classes", "palette", "prompts", "ignore_index", "has_labels", "name"):
            setattr(self, k, getattr(patches, k))
        frames = {}
        for i, (_, _, meta) in enumerate(patches.records):
            frames.setdefault(meta["source"], []).append((i, meta["origin"]))
        self.frames = sorted(frames.items())

    def __len__(self) -> int:
        return len(self.frames)

    def meta(self, i: int) -> dict:
        """The frame's metadata: its first patch's, without the patch origin (no decoding)."""
        source, parts = self.frames[i]
        m = self.patches.meta(parts[0][0])
        m.pop("origin", None)
        return m

    def __getitem__(self, i: int) -> dict:
        source, parts = self.frames[i]
        read = [(y0, x0, *self.patches.read(j)[:2]) for j, (y0, x0) in parts]
        h = max(y0 + img.shape[0] for y0, _, img, _ in read)
        w = max(x0 + img.shape[1] for _, x0, img, _ in read)
        image = np.zeros((h, w, 3), np.uint8)
        mask = np.full((h, w), IGNORE_INDEX, np.int64) if self.has_labels else None
        for y0, x0, img, m in read:
            image[y0:y0 + img.shape[0], x0:x0 + img.shape[1]] = img
            if mask is not None:
                mask[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
        item = {"image": image, "meta": {"source": source, "patches": len(parts)}}
        if mask is not None:
            item["mask"] = mask
        return item


def whole_images(dataset):
    """The dataset whose items are whole images: a patch folder's frames, a tiled dataset's source
    images, else the dataset itself (what ``segclip eval`` scores, so no pixel counts twice)."""
    from segclip.data.tiling import TiledDataset

    if isinstance(dataset, PatchedDataset):
        return FramesDataset(dataset)
    if isinstance(dataset, TiledDataset):
        return dataset.dataset
    return dataset
