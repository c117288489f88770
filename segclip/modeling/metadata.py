"""Metadata fusion (MetaSegNet): the scene prompt's CLIP embedding guides the image features.

Each scene of the table (``segclip.metadata.SceneTable``; id 0 = generic) has one cached CLIP text
embedding.  A small MLP maps it to T scene tokens (plus learnable per-token offsets, so the tokens
differ and attention over them depends on the pixel); every pixel of the pixel decoder's
multi-scale features then cross-attends to its image's tokens, pre-norm with a residual, so a
scene can only add to what the image shows.  The tokens depend on no image: export evaluates them
once per scene and keeps an S x T x C constant table that the ``scene_id`` input indexes.
"""
from __future__ import annotations

import torch
from torch import nn

from segclip.modeling.layers import MLP, Attention


class MetadataFusion(nn.Module):
    def __init__(self, text_dim: int, dim: int, heads: int, num_tokens: int):
        super().__init__()
        self.proj = MLP(text_dim, dim, dim, 2)
        self.token_embed = nn.Parameter(torch.randn(num_tokens, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)

    def tokens(self, scene_embeddings: torch.Tensor) -> torch.Tensor:
        """S x D cached scene embeddings -> S x T x C scene tokens (image independent)."""
        return self.proj(scene_embeddings)[:, None] + self.token_embed[None]

    def forward(self, feats: list, tokens: torch.Tensor) -> list:
        """feats: [B x C x h x w] per level; tokens: B x T x C (each image's scene) -> fused feats."""
        out = []
        for f in feats:
            x = f.flatten(2).transpose(1, 2)
            x = x + self.attn(self.norm(x), tokens, tokens)
            out.append(x.transpose(1, 2).reshape(f.shape))
        return out
