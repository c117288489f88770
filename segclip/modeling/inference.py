"""The deployable image path: uint8 NHWC in, class map (and optional scores) out.

The text side is baked: TMP (CLIP embeddings -> queries) and CFF's self-attention depend on no
image, so they are evaluated once here and stored as a constant.  Nothing of CLIP, TMP or GTG is
left in this module, so neither the ONNX graph nor any runtime imports open_clip.  The PyTorch
runner uses this same module, so PyTorch and every exported artifact compute the same function.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from segclip.modeling.segclip import SegCLIP, fuse, preprocess, semantic_scores


class SegCLIPInference(nn.Module):
    def __init__(self, model: SegCLIP, scores: bool = False, scores_dtype: torch.dtype = torch.float32):
        super().__init__()
        model = copy.deepcopy(model).eval()
        with torch.no_grad():
            baked = model.text_queries().detach().clone()
        self.register_buffer("text_queries", baked)
        self.register_buffer("pixel_mean", model.pixel_mean.clone())
        self.register_buffer("pixel_std", model.pixel_std.clone())
        self.query_pos = nn.Parameter(model.query_pos.detach().clone(), requires_grad=False)
        self.backbone = model.backbone
        self.pixel_decoder = model.pixel_decoder
        self.cff = model.cff
        self.decoder = model.decoder
        self.cff.self_attn = None  # baked into text_queries
        # Metadata: the scene prompts become a constant S x T x C token table indexed by scene_id.
        self.metadata = model.metadata
        self.scene_names = tuple(model.scenes.names) if model.scenes is not None else ()
        if self.metadata is not None:
            with torch.no_grad():
                self.register_buffer("scene_tokens", model.metadata.tokens(model.scene_embeddings).detach().clone())
            self.metadata.proj = None  # baked into scene_tokens
        self.classes = model.classes
        self.with_scores = scores
        self.scores_dtype = scores_dtype
        self.mask_dtype = torch.uint8 if len(self.classes) <= 255 else torch.int32
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: torch.Tensor, scene_id: torch.Tensor | None = None):
        """image: uint8 N x H x W x 3; scene_id: N ints (int32/int64) into the scene table, only for a
        model trained with metadata (None = the generic scene 0)."""
        x = preprocess(image, self.pixel_mean, self.pixel_std)
        mask_features, feats = self.pixel_decoder(self.backbone(x))
        if self.metadata is not None:
            if scene_id is None:
                scene_id = torch.zeros(image.shape[0], dtype=torch.int64, device=image.device)
            feats = self.metadata(feats, torch.index_select(self.scene_tokens, 0, scene_id.reshape(-1)))
        q = fuse(self.cff, self.text_queries, self.query_pos, feats[0])
        pos = self.query_pos[None].expand(q.shape[0], -1, -1)
        logits, masks = self.decoder(q, pos, feats, mask_features)[-1]
        scores = semantic_scores(logits, masks, image.shape[1:3])
        mask = scores.argmax(1).to(self.mask_dtype)
        if self.with_scores:
            return mask, scores.to(self.scores_dtype)
        return mask
