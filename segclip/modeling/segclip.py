"""SegCLIP: backbone -> pixel decoder -> (TMP text queries + CFF) -> masked-attention decoder.

The model does preprocessing, calls its parts and turns outputs into semantic scores; matching and
losses live in ``matcher.py``/``criterion.py`` and are driven by the trainer.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segclip.config import ModelConfig
from segclip.signature import PIXEL_MEAN, PIXEL_STD
from segclip.modeling.backbone import ResNetBackbone
from segclip.modeling.cff import CrossModalFusion
from segclip.modeling.layers import sine_position_embedding
from segclip.modeling.metadata import MetadataFusion
from segclip.modeling.pixel_decoder import build_pixel_decoder
from segclip.modeling.text import TextMappingPrompts
from segclip.modeling.transformer_decoder import MaskedTransformerDecoder


def preprocess(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 B x H x W x 3 (RGB) -> normalised float B x 3 x H x W."""
    return (images.permute(0, 3, 1, 2).to(mean.dtype) - mean) / std


def semantic_scores(logits: torch.Tensor, masks: torch.Tensor, size) -> torch.Tensor:
    """softmax(class)[..., :-1] x sigmoid(mask) summed over queries -> B x K x H x W.

    Scores are formed at mask resolution (stride 4) and then upsampled: upsampling K class maps
    instead of N query masks keeps 1024 px inference within memory and time on edge GPUs.
    """
    probs = logits.softmax(-1)[..., :-1]
    b, _, h, w = masks.shape
    scores = (probs.transpose(1, 2) @ masks.sigmoid().flatten(2)).reshape(b, -1, h, w)
    return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)


def fuse(cff, text_queries: torch.Tensor, query_pos: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """CFF's image-dependent half: the N text queries attend to the stride-32 features (B x C x h x w)."""
    feats = top.flatten(2).transpose(1, 2)
    pos = sine_position_embedding(top.shape[2], top.shape[3], cff.dim, top.device, top.dtype)
    return cff.image_part(text_queries[None].expand(top.shape[0], -1, -1), query_pos, feats, pos)


def semantic_targets(masks: torch.Tensor, num_classes: int, ignore_index: int = 255) -> list:
    """B x H x W class maps -> per image {"labels": T, "masks": T x H x W bool} of the classes present."""
    out = []
    for m in masks:
        labels = torch.unique(m)
        labels = labels[(labels != ignore_index) & (labels < num_classes)]
        out.append({"labels": labels, "masks": m[None] == labels[:, None, None]})
    return out


def scene_tokens(model, scene_ids, batch: int, device) -> torch.Tensor | None:
    """B x T x C scene tokens of each image (``scene_ids`` None -> the generic scene 0); None
    when the model has no metadata fusion."""
    if model.metadata is None:
        return None
    table = model.metadata.tokens(model.scene_embeddings)
    if scene_ids is None:
        scene_ids = torch.zeros(batch, dtype=torch.long, device=device)
    return table[torch.as_tensor(scene_ids, device=device).long()]


class SegCLIP(nn.Module):
    def __init__(self, cfg: ModelConfig, classes: Sequence[str], prompts: Sequence[str], text_embeddings: torch.Tensor,
                 scenes=None, scene_embeddings: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.classes = tuple(classes)
        self.prompts = tuple(prompts)
        k = len(self.classes)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        # Cached CLIP text embeddings (K x D): computed once, saved with the weights, frozen.
        self.register_buffer("text_embeddings", text_embeddings.detach().float().clone())
        self.backbone = ResNetBackbone(cfg.backbone, cfg.backbone_weights)
        self.pixel_decoder = build_pixel_decoder(cfg, self.backbone.channels)
        self.tmp = TextMappingPrompts(text_embeddings.shape[1], cfg.hidden_dim, cfg.num_queries, k)
        self.query_pos = nn.Parameter(torch.randn(cfg.num_queries, cfg.hidden_dim) * 0.02)
        self.gtg_pos = nn.Parameter(torch.randn(1, cfg.hidden_dim) * 0.02)
        self.cff = CrossModalFusion(cfg.hidden_dim, cfg.cff_heads, cfg.dec_ffn)
        self.decoder = MaskedTransformerDecoder(cfg.hidden_dim, cfg.mask_dim, k, cfg.dec_layers, cfg.dec_heads, cfg.dec_ffn)
        # Metadata prompts: one cached CLIP embedding per scene (S x D), like the class embeddings.
        self.scenes = scenes
        self.metadata = None
        if scenes is not None:
            if scene_embeddings is None or scene_embeddings.shape[0] != len(scenes):
                raise ValueError("SegCLIP: scenes need one cached embedding per scene")
            self.register_buffer("scene_embeddings", scene_embeddings.detach().float().clone())
            self.metadata = MetadataFusion(scene_embeddings.shape[1], cfg.hidden_dim, cfg.cff_heads, cfg.metadata_tokens)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def text_queries(self) -> torch.Tensor:
        """N x C text queries after TMP and CFF's self-attention: image independent, baked at export."""
        return self.cff.text_part(self.tmp(self.text_embeddings), self.query_pos)

    def image_features(self, images: torch.Tensor, scene_ids=None):
        x = preprocess(images, self.pixel_mean, self.pixel_std)
        mask_features, feats = self.pixel_decoder(self.backbone(x))
        tokens = scene_tokens(self, scene_ids, images.shape[0], images.device)
        if tokens is not None:
            feats = self.metadata(feats, tokens)
        return mask_features, feats

    def _gtg_inputs(self, targets, device):
        """Pad each image's ground-truth classes to G slots: queries, positions, GT masks, self-attention mask."""
        b = len(targets)
        g = max(len(t["labels"]) for t in targets)
        n, c = self.cfg.num_queries, self.cfg.hidden_dim
        if g == 0:
            return None
        queries = torch.zeros(b, g, c, device=device)
        masks = torch.zeros((b, g) + tuple(targets[0]["masks"].shape[-2:]), device=device)
        valid = torch.zeros(b, g, dtype=torch.bool, device=device)
        for i, t in enumerate(targets):
            m = len(t["labels"])
            if m:
                queries[i, :m] = self.tmp.ground_truth_queries(self.text_embeddings[t["labels"]])
                masks[i, :m] = t["masks"].float()
                valid[i, :m] = True
        # Reconstruction queries never read GTG queries (absent at inference); padding slots are read by none.
        blocked = torch.zeros(b, 1, n + g, n + g, dtype=torch.bool, device=device)
        blocked[:, :, :n, n:] = True
        blocked[:, :, :, n:] |= ~valid[:, None, None, :]
        return queries, masks, blocked

    def forward(self, images: torch.Tensor, targets=None, scene_ids=None):
        """images: uint8 B x H x W x 3; scene_ids: B ints into the scene table (None = generic).
        Returns the decoder stages [(logits, masks)]; in training with GTG enabled and targets
        given, the last queries of every stage are the GTG queries."""
        mask_features, feats = self.image_features(images, scene_ids)
        queries = fuse(self.cff, self.text_queries(), self.query_pos, feats[0])
        pos = self.query_pos[None].expand(queries.shape[0], -1, -1)
        gtg = self._gtg_inputs(targets, images.device) if (self.training and self.cfg.gtg and targets is not None) else None
        if gtg is None:
            return self.decoder(queries, pos, feats, mask_features)
        gq, gmasks, blocked = gtg
        queries = torch.cat([queries, gq], 1)
        pos = torch.cat([pos, self.gtg_pos[None].expand(gq.shape[0], gq.shape[1], -1)], 1)
        return self.decoder(queries, pos, feats, mask_features, gtg_masks=gmasks, self_mask=blocked)

    @torch.no_grad()
    def predict_scores(self, images: torch.Tensor, scene_ids=None) -> torch.Tensor:
        """uint8 B x H x W x 3 (+ B scene ids) -> float B x K x H x W semantic scores (eval mode)."""
        logits, masks = self.forward(images, scene_ids=scene_ids)[-1]
        return semantic_scores(logits[:, : self.cfg.num_queries], masks[:, : self.cfg.num_queries], images.shape[1:3])
