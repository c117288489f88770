"""Shared fixtures.  Models are the small preset with random init (no downloads: CLIP and the
backbone are built without pretrained weights, as a user must ask for explicitly offline)."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(2)

LOVEDA_CLASSES = ("background", "building", "road", "water", "barren", "forest", "agriculture")
LOVEDA_PALETTE = ((255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183), (0, 255, 0), (255, 195, 128))


def small_config():
    from segclip.config import get_preset

    cfg = get_preset("segclip-small").model
    cfg.backbone_weights = "none"
    cfg.clip_pretrained = "none"
    return cfg


def make_small_model(seed: int = 0, classes=LOVEDA_CLASSES):
    from segclip.modeling import build_model

    torch.manual_seed(seed)
    # Random-init text embeddings stand in for CLIP's: no weights can be downloaded here.
    emb = torch.nn.functional.normalize(torch.randn(len(classes), 512), dim=-1)
    return build_model(small_config(), classes, text_embeddings=emb)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    """Path of an (untrained) small-preset checkpoint on the LoveDA classes."""
    from segclip.engine.checkpoint import atomic_save, checkpoint_dict

    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    atomic_save(checkpoint_dict(make_small_model(), LOVEDA_PALETTE, dataset="sample"), path)
    return path
