"""SegCLIP modelling: one role per module, built from a ``ModelConfig`` by ``build_model``."""
from __future__ import annotations

from typing import Sequence

import torch

from segclip.config import ModelConfig
from segclip.metadata import SceneTable
from segclip.modeling.inference import SegCLIPInference
from segclip.modeling.segclip import SegCLIP, semantic_scores, semantic_targets
from segclip.prompts import make_prompts
from segclip.modeling.text import encode_prompts

__all__ = ["SegCLIP", "SegCLIPInference", "build_model", "semantic_scores", "semantic_targets"]


def build_model(cfg: ModelConfig, classes: Sequence[str], prompts: Sequence[str] | None = None,
                text_embeddings: torch.Tensor | None = None, scenes: SceneTable | None = None,
                scene_embeddings: torch.Tensor | None = None) -> SegCLIP:
    """Build SegCLIP for ``classes`` (and the metadata ``scenes``, if any).  Missing embeddings are
    encoded once, class and scene prompts in one pass, with the configured frozen open_clip text
    encoder (this is the only place CLIP runs)."""
    cfg.validate()
    from segclip.modeling.weights import check_pretrained_available

    # every named weight at once, before torchvision/open_clip start their own retries
    check_pretrained_available(cfg.backbone, cfg.backbone_weights,
                               cfg.clip_model if text_embeddings is None else None, cfg.clip_pretrained)
    prompts = list(prompts) if prompts is not None else list(make_prompts(classes, template=cfg.prompt_template))
    scene_prompts = list(scenes.prompts) if scenes is not None and scene_embeddings is None else []
    if text_embeddings is None or scene_prompts:
        todo = (prompts if text_embeddings is None else []) + scene_prompts
        emb = encode_prompts(todo, cfg.clip_model, cfg.clip_pretrained)
        if text_embeddings is None:
            text_embeddings, emb = emb[: len(prompts)], emb[len(prompts):]
        if scene_prompts:
            scene_embeddings = emb
    return SegCLIP(cfg, classes, prompts, text_embeddings, scenes, scene_embeddings)
