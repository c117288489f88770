"""Checkpoints: atomic writes, ``weights_only=True`` loads, and a model rebuilt without CLIP.

A checkpoint holds the weights, the model/train configs, class names, palette, prompts and the
cached CLIP text embeddings (and, with metadata prompts, the scene table and its embeddings), so loading a trained model never needs open_clip or the internet.  A
training checkpoint adds optimizer, scheduler, step and RNG state for bit-exact resume.

Run directory layout::

    RUN_DIR/config.json                 resolved configs, dataset, classes
    RUN_DIR/checkpoints/step_0000300.pt periodic, full training state
    RUN_DIR/model_final.pt              end of training, full training state
    RUN_DIR/metrics.csv, RUN_DIR/tb/    logs
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from segclip.atomic import atomic_file
from segclip.config import ModelConfig, model_config_from_dict
from segclip.errors import SegclipError, one_line

FORMAT = "segclip-checkpoint"
FORMAT_VERSION = 1
FINAL_NAME = "model_final.pt"
_STEP_RE = re.compile(r"step_(\d+)\.pt$")


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """torch.save through a temp file + rename: a crash never leaves a half-written checkpoint."""
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def step_checkpoints(run_dir: str | os.PathLike) -> list:
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _STEP_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def has_checkpoints(run_dir: str | os.PathLike) -> bool:
    return bool(step_checkpoints(run_dir)) or (Path(run_dir) / FINAL_NAME).is_file()


RUN_CONFIG_KEYS = ("classes", "model", "train")  # what Trainer writes to RUN_DIR/config.json first


def is_run_dir(run_dir: str | os.PathLike) -> bool:
    """A segclip training run: a checkpoint, or the config.json the trainer writes before its first
    step (a run killed before its first checkpoint is still one)."""
    import json

    if has_checkpoints(run_dir):
        return True
    try:
        cfg = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and all(k in cfg for k in RUN_CONFIG_KEYS)


def resolve_checkpoint(path: str | os.PathLike, latest: bool = False) -> Path:
    """RUN_DIR or checkpoint file -> checkpoint file: the final model, else the last step; with
    ``latest`` (resume) the newest training state, which after an extended run is a step file
    written after the final model."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        final = p / FINAL_NAME
        steps = step_checkpoints(p)
        candidates = ([final] if final.is_file() else []) + steps[-1:]
        if latest and len(candidates) == 2:
            return max(candidates, key=lambda c: c.stat().st_mtime)
        if candidates:
            return candidates[0]
        raise SegclipError(f"{p}: no checkpoint found (expected {FINAL_NAME} or checkpoints/step_*.pt); give the run "
                           f"directory of a finished 'segclip train' or a checkpoint .pt file")
    raise SegclipError(f"{p}: no such checkpoint file or run directory; check the path (a run directory holds "
                       f"{FINAL_NAME} or checkpoints/step_*.pt)")


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load (weights_only=True) and validate a segclip checkpoint; one-line errors for bad files."""
    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SegclipError(f"{p}: cannot read checkpoint ({type(e).__name__}: {one_line(e, 160)}); the file is truncated or "
                           f"not a segclip checkpoint: re-copy it or use an earlier one") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        what = "a plain dict, e.g. a bare state dict," if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
        raise SegclipError(f"{p}: not a segclip checkpoint ({what} without the '{FORMAT}' marker); give a checkpoint "
                           f"written by 'segclip train' (RUN_DIR/{FINAL_NAME} or RUN_DIR/checkpoints/step_*.pt)")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise SegclipError(f"{p}: checkpoint format v{ckpt['format_version']} is newer than this segclip reads (v{FORMAT_VERSION}); upgrade segclip")
    ckpt["path"] = str(p)
    return ckpt


def model_from_checkpoint(ckpt: dict | str | os.PathLike):
    """Rebuild the SegCLIP model from a checkpoint (dict or path); no CLIP, no downloads."""
    from segclip.modeling import SegCLIP

    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    cfg: ModelConfig = model_config_from_dict(dict(ckpt["model_config"]))
    cfg.backbone_weights = "none"  # the weights come from the checkpoint
    scenes, scene_emb = checkpoint_scenes(ckpt)
    model = SegCLIP(cfg, ckpt["classes"], ckpt["prompts"], ckpt["text_embeddings"], scenes, scene_emb)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise SegclipError(f"{ckpt.get('path', 'checkpoint')}: weights do not match its config ({one_line(e, 160)}); "
                           f"the file was edited or written by another segclip version: use the original checkpoint") from None
    return model.eval()


def checkpoint_scenes(ckpt: dict) -> tuple:
    """(SceneTable, S x D embeddings) of a model trained with metadata prompts, else (None, None);
    checkpoints from before metadata prompts have neither key."""
    from segclip.metadata import SceneTable

    if not ckpt.get("scenes"):
        return None, None
    return SceneTable.from_dict(ckpt["scenes"]), ckpt["scene_embeddings"]


def check_classes(ckpt: dict, classes, where: str) -> None:
    """A checkpoint trained on another class list must not be silently evaluated/fine-tuned here."""
    if tuple(ckpt["classes"]) != tuple(classes):
        raise SegclipError(
            f"{ckpt.get('path', 'checkpoint')}: trained on classes {list(ckpt['classes'])} but {where} has {list(classes)}; "
            f"use a checkpoint for this dataset or retrain"
        )


def checkpoint_dict(model, palette, dataset: str | None = None, train_config: dict | None = None, **state) -> dict:
    """Everything needed to rebuild and deploy ``model`` (plus any training ``state``), as plain
    tensors/containers so ``torch.load(weights_only=True)`` reads it."""
    from dataclasses import asdict

    from segclip import __version__

    model = model.module if hasattr(model, "module") else model  # DDP
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "segclip_version": __version__,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": asdict(model.cfg),
        "train_config": train_config,
        "classes": list(model.classes),
        "palette": [list(map(int, p)) for p in palette],
        "prompts": list(model.prompts),
        "text_embeddings": model.text_embeddings.detach().cpu().clone(),
        "scenes": model.scenes.to_dict() if model.scenes is not None else None,
        "scene_embeddings": model.scene_embeddings.detach().cpu().clone() if model.scenes is not None else None,
        "dataset": dataset,
        **state,
    }
