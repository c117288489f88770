"""CFF: cross-modal feature fusion of the text queries with the highest-level image features.

Self-attention among the text queries first (image independent, so it is baked at export), then
cross-attention from the queries to the stride-32 image features and an FFN (image dependent).
"""
from __future__ import annotations

from torch import nn

from segclip.modeling.layers import FFN, Attention


class CrossModalFusion(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.dim = dim
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, ffn)

    def text_part(self, queries, query_pos):
        """N x C -> N x C; depends on no image."""
        q = (queries + query_pos)[None]
        return self.norm1(queries[None] + self.self_attn(q, q, queries[None]))[0]

    def image_part(self, queries, query_pos, feats, feats_pos):
        """queries: B x N x C; feats: B x S x C; feats_pos: S x C."""
        q = self.norm2(queries + self.cross_attn(queries + query_pos, feats + feats_pos, feats))
        return self.ffn(q)
