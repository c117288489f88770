"""Datasets in their native on-disk formats, one factory: ``build_dataset(name, root, split, **options)``.

Every dataset yields ``{"image": uint8 HxWx3 RGB, "mask": int64 HxW (0..K-1, 255 = ignore; absent
without labels), "meta": {"path", ["domain"], ...}}`` and exposes ``classes``, ``palette``,
``prompts``, ``ignore_index`` and ``has_labels``.  Augmentation wraps datasets
(``transforms.TrainAugment``); large images are tiled (``tile=``/``stride=`` here, or
``segclip prepare``) or predicted with ``sliding.sliding_window_predict``.

Options: ``prompts={class: text}``, ``prompt_template="... {} ..."`` for all; ``domains=`` (loveda,
sample); ``label_order="paper"|"official"`` (uavid); ``patched=True|False`` (isaid, uavid: read a
``segclip prepare`` output folder; detected automatically); ``tile=``, ``stride=`` (any: each item
is one tile).
"""
from __future__ import annotations

from segclip.data.registry import DATASETS, PATCH_DEFAULTS, build_dataset, dataset_info

def dataset_label_ids(classes):
    """For a model trained on a dataset whose mask files use other ids than the model's 0..K-1:
    ``(name, encode, {file id: (class name, colour)})``, found by the model's class list; None when
    the mask files already hold the class indices (folder index masks) or hold colours (iSAID, UAVid)."""
    from segclip.data import loveda

    if tuple(classes) == tuple(loveda.CLASSES):  # LoveDA and the sample set (LoveDA format)
        return "loveda", loveda.to_file_ids, loveda.FILE_IDS
    return None


__all__ = ["DATASETS", "PATCH_DEFAULTS", "build_dataset", "dataset_info", "dataset_label_ids"]
