"""TMP: text mapping prompts.

A frozen open_clip text encoder turns one prompt per class ("a photo with a {class}", or a user's
own description) into an embedding, once; the embeddings are cached in the model (and so in every
checkpoint) and never recomputed per step.  A learnable mapping plus a set of learnable context
embeddings turn the K class embeddings into the N text queries of the decoder.  The N - K queries
beyond the classes start from context alone (the "blank" text information CFF learns to suppress).
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Sequence

import torch
from torch import nn

from segclip.errors import SegclipError, one_line
from segclip.modeling.layers import MLP


@contextlib.contextmanager
def _quiet_random_init(active: bool):
    """Drop open_clip's "No pretrained weights loaded" warning (root logger) while ``active``."""
    def keep(record) -> bool:
        return not str(record.getMessage()).startswith("No pretrained weights loaded")

    root = logging.getLogger()
    if active:
        root.addFilter(keep)
    try:
        yield
    finally:
        if active:
            root.removeFilter(keep)


def load_clip(model_name: str, pretrained: str | None):
    """Create an open_clip model and tokenizer; weights by tag (online), local file, or none (explicit)."""
    import open_clip  # only training and model building need CLIP; export/runtimes never import it

    if model_name not in open_clip.list_models():
        raise SegclipError(f"CLIP: unknown open_clip model {model_name!r} (e.g. ViT-B-16, ViT-B-32, RN50)")
    tag = None if pretrained in (None, "", "none") else pretrained
    if tag is not None and (os.sep in tag or tag.endswith((".pt", ".pth", ".bin", ".safetensors"))) and not os.path.isfile(tag):
        raise SegclipError(f"CLIP: checkpoint file {tag} not found; pass --clip-checkpoint PATH to an open_clip {model_name} checkpoint")
    try:
        with _quiet_random_init(tag is None):  # random init was asked for: no "no pretrained weights" notice
            model = open_clip.create_model(model_name, pretrained=tag, device="cpu")
    except SegclipError:
        raise
    except Exception as e:
        first = one_line(e, 200)
        if tag is not None and os.path.isfile(tag):
            raise SegclipError(f"CLIP: cannot load checkpoint {tag} into {model_name} ({first}); give an open_clip "
                               f"{model_name} checkpoint file, or --clip-checkpoint none for random init") from None
        raise SegclipError(
            f"CLIP: could not get weights {model_name}/{tag} ({first}); offline, pass --clip-checkpoint PATH "
            f"(a saved open_clip {model_name} state dict) or --clip-checkpoint none for random init"
        ) from None
    model.eval().requires_grad_(False)
    return model, open_clip.get_tokenizer(model_name)


@torch.no_grad()
def encode_prompts(prompts: Sequence[str], model_name: str, pretrained: str | None) -> torch.Tensor:
    """K x D L2-normalised CLIP text embeddings (float32, CPU)."""
    model, tokenizer = load_clip(model_name, pretrained)
    emb = model.encode_text(tokenizer(list(prompts)))
    return torch.nn.functional.normalize(emb.float(), dim=-1)


class TextMappingPrompts(nn.Module):
    """Cached CLIP embeddings (K x D) -> N text queries (N x C) with learnable context."""

    def __init__(self, text_dim: int, dim: int, num_queries: int, num_classes: int):
        super().__init__()
        if num_queries < num_classes:
            raise SegclipError(f"config: num_queries ({num_queries}) must be >= the number of classes ({num_classes})")
        self.num_queries = num_queries
        self.text_proj = MLP(text_dim, dim, dim, 2)
        self.context = nn.Parameter(torch.randn(num_queries, dim) * 0.02)

    def forward(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        t = self.text_proj(text_embeddings)
        pad = t.new_zeros(self.num_queries - t.shape[0], t.shape[1])
        return torch.cat([t, pad], 0) + self.context

    def ground_truth_queries(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """GTG: queries from the texts of the classes present in the ground truth (no context)."""
        return self.text_proj(text_embeddings)
