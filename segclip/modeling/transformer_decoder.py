"""Mask2Former's masked-attention transformer decoder, round-robin over three scales.

Each layer: masked cross-attention (a query sees only where its previous mask prediction is > 0.5),
self-attention, FFN; class and mask heads run before the first layer and after every layer (deep
supervision).

GTG (training only): extra ground-truth text queries are appended after the N text queries.  In
cross-attention they use their class's ground-truth mask instead of a predicted one, and the
self-attention mask stops the N reconstruction queries from reading them, so nothing learnt through
them is missing at inference, where they are absent.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segclip.modeling.layers import FFN, MLP, Attention, sine_position_embedding


class DecoderLayer(nn.Module):
    def __init__(self, dim, heads, ffn):
        super().__init__()
        self.cross_attn = Attention(dim, heads)
        self.cross_norm = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.self_norm = nn.LayerNorm(dim)
        self.ffn = FFN(dim, ffn)

    def forward(self, q, qpos, mem, mem_pos, cross_mask, self_mask):
        q = self.cross_norm(q + self.cross_attn(q + qpos, mem + mem_pos, mem, cross_mask))
        qp = q + qpos
        q = self.self_norm(q + self.self_attn(qp, qp, q, self_mask))
        return self.ffn(q)


def _unblock_full_rows(mask: torch.Tensor) -> torch.Tensor:
    """A query whose mask is empty at this scale attends everywhere (Mask2Former's rule), as tensor ops."""
    return mask & ~mask.all(dim=-1, keepdim=True)


class MaskedTransformerDecoder(nn.Module):
    def __init__(self, dim, mask_dim, num_classes, layers=9, heads=8, ffn=2048, levels=3):
        super().__init__()
        self.dim, self.levels = dim, levels
        self.level_embed = nn.Parameter(torch.randn(levels, dim) * 0.02)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn) for _ in range(layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.class_embed = nn.Linear(dim, num_classes + 1)
        self.mask_embed = MLP(dim, dim, mask_dim, 3)

    def predict(self, q, mask_features, attn_hw):
        """Class logits B x Q x (K+1), mask logits B x Q x h x w, and the blocked-attention mask at attn_hw."""
        q = self.decoder_norm(q)
        logits = self.class_embed(q)
        # (B x Q x C) @ (B x C x HW): a plain MatMul, which ONNX Runtime/TensorRT run faster than Einsum
        b, _, h, w = mask_features.shape
        masks = (self.mask_embed(q) @ mask_features.flatten(2)).reshape(b, -1, h, w)
        if attn_hw is None:
            return logits, masks, None
        small = F.interpolate(masks, size=attn_hw, mode="bilinear", align_corners=False)
        blocked = (small.sigmoid() < 0.5).flatten(2).detach()
        return logits, masks, blocked

    def forward(self, queries, query_pos, feats, mask_features, gtg_masks=None, self_mask=None):
        """queries/query_pos: B x Q x C (the last G queries are GTG queries when gtg_masks is given);
        feats: [B x C x h x w] at strides 32, 16, 8; mask_features: B x Cm x H4 x W4;
        gtg_masks: B x G x H' x W' ground-truth binary masks (0 for padding slots);
        self_mask: B x 1 x Q x Q bool, True = blocked.
        Returns the list of (class logits, mask logits) for every stage (1 + layers)."""
        shapes = [(f.shape[-2], f.shape[-1]) for f in feats]  # traced sizes stay symbolic on export
        mems = [f.flatten(2).transpose(1, 2) for f in feats]
        mem_pos = [sine_position_embedding(h, w, self.dim, f.device, f.dtype) + self.level_embed[i] for i, ((h, w), f) in enumerate(zip(shapes, feats))]
        gt_blocked = None
        if gtg_masks is not None:
            g = gtg_masks.shape[1]
            gt_blocked = [
                (F.interpolate(gtg_masks.float(), size=hw, mode="bilinear", align_corners=False) < 0.5).flatten(2)
                for hw in shapes
            ]

        stages = []
        logits, masks, blocked = self.predict(queries, mask_features, shapes[0])
        stages.append((logits, masks))
        q = queries
        for i, layer in enumerate(self.layers):
            lvl = i % self.levels
            if gt_blocked is not None:
                blocked = torch.cat([blocked[:, : blocked.shape[1] - g], gt_blocked[lvl]], dim=1)
            cross_mask = _unblock_full_rows(blocked)[:, None]
            q = layer(q, query_pos, mems[lvl], mem_pos[lvl], cross_mask, self_mask)
            nxt = shapes[(i + 1) % self.levels]
            logits, masks, blocked = self.predict(q, mask_features, nxt if i + 1 < len(self.layers) else None)
            stages.append((logits, masks))
        return stages
