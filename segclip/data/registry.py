"""The dataset factory behind ``segclip.data.build_dataset`` and ``dataset_info``."""
from __future__ import annotations

from pathlib import Path

from segclip.errors import SegclipError
from segclip.parsers import check_options

DATASETS = ("loveda", "isaid", "uavid", "folder", "sample")
# standard offline patching (tile, stride): iSAID's devkit 896/512; UAVid 1024 tiles
PATCH_DEFAULTS = {"isaid": (896, 512), "uavid": (1024, 1024)}


def _classes(name: str, **options) -> tuple:
    """(classes, palette) of a named dataset, without touching the disk (folder: reads classes.yaml)."""
    if name in ("loveda", "sample"):
        from segclip.data.loveda import CLASSES, PALETTE
        return CLASSES, PALETTE
    if name == "isaid":
        from segclip.data.isaid import CLASSES, PALETTE
        return CLASSES, PALETTE
    if name == "uavid":
        from segclip.data.uavid import classes_for
        return classes_for(options.get("label_order", "paper"))
    if name == "folder":
        from segclip.data.folder import load_classes_yaml
        if options.get("root") is None:
            raise SegclipError("dataset_info('folder') needs root=<dataset folder> to read its classes.yaml")
        info = load_classes_yaml(options["root"])
        return info["classes"], info["palette"]
    raise SegclipError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


def dataset_info(name: str, root=None, **options) -> dict:
    """Class names and palette of a dataset (the trainer/exporter use it to validate checkpoints)."""
    classes, palette = _classes(str(name).lower(), root=root, **options)
    return {"name": str(name).lower(), "classes": tuple(classes), "palette": tuple(tuple(c) for c in palette), "ignore_index": 255}


def _construct(cls, *args, what: str, **options):
    check_options(cls.__init__, options, what, f"{what} dataset (tile and stride apply to all)")
    return cls(*args, **options)


def build_dataset(name: str, root, split: str, *, tile=None, stride=None, patched=None, value_range=None, **options):
    name = str(name).lower()
    if name not in DATASETS:
        raise SegclipError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    root = Path(root)
    if name == "sample":
        from segclip.data.loveda import LoveDADataset
        from segclip.data.sample import ensure_sample_dataset

        ds = _construct(LoveDADataset, ensure_sample_dataset(root), split, what=name, **options)
        ds.name = "sample"
    elif name == "loveda":
        from segclip.data.loveda import LoveDADataset

        ds = _construct(LoveDADataset, root, split, what=name, **options)
    elif name == "folder":
        from segclip.data.folder import FolderDataset

        ds = _construct(FolderDataset, root, split, what=name, **options)
    else:
        from segclip.data.prepare import PatchedDataset, read_manifest

        if patched is None:
            patched = root.is_dir() and read_manifest(root) is not None
        if patched:
            label_order = options.pop("label_order", "paper")
            classes, palette = _classes(name, label_order=label_order)
            ds = _construct(PatchedDataset, root, split, name, classes, palette, what=name, **options)
        elif name == "isaid":
            from segclip.data.isaid import ISAIDDataset

            ds = _construct(ISAIDDataset, root, split, what=name, **options)
        else:
            from segclip.data.uavid import UAVidDataset

            ds = _construct(UAVidDataset, root, split, what=name, **options)
    if value_range:  # 16-bit/float images stretched from this (low, high), as the model was trained
        ds.value_range = tuple(float(v) for v in value_range)
    if tile is not None:
        from segclip.data.tiling import TiledDataset

        ds = TiledDataset(ds, tile, stride)
    return ds

