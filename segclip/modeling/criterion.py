"""Losses: class cross-entropy (no-object down-weighted) + point-sampled mask BCE + Dice on the
Hungarian-matched text queries, the same on the GTG queries against their known ground truth, and
deep supervision on every decoder stage."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segclip.modeling.point_sampling import point_sample, uncertain_point_coords


def dice_loss(inputs, targets, num_masks):
    inputs = inputs.sigmoid()
    num = 2 * (inputs * targets).sum(-1)
    den = inputs.sum(-1) + targets.sum(-1)
    return (1 - (num + 1) / (den + 1)).sum() / num_masks


def sigmoid_ce_loss(inputs, targets, num_masks):
    return F.binary_cross_entropy_with_logits(inputs, targets, reduction="none").mean(1).sum() / num_masks


class SetCriterion(nn.Module):
    def __init__(self, num_classes, matcher, class_weight=2.0, mask_weight=5.0, dice_weight=5.0,
                 no_object_weight=0.1, num_points=12544, oversample_ratio=3.0, importance_sample_ratio=0.75):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {"ce": class_weight, "mask": mask_weight, "dice": dice_weight}
        self.num_points, self.oversample_ratio, self.importance_ratio = num_points, oversample_ratio, importance_sample_ratio
        empty = torch.ones(num_classes + 1)
        empty[-1] = no_object_weight
        self.register_buffer("empty_weight", empty)

    def _class_loss(self, logits, targets, indices):
        tgt = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        for b, (qi, ti) in enumerate(indices):
            tgt[b, qi.to(logits.device)] = targets[b]["labels"][ti.to(logits.device)]
        return F.cross_entropy(logits.float().transpose(1, 2), tgt, self.empty_weight)

    def _mask_losses(self, masks, targets, indices, num_masks):
        src = torch.cat([masks[b, qi] for b, (qi, _) in enumerate(indices)])
        if src.shape[0] == 0:
            zero = masks.sum() * 0.0
            return zero, zero
        tgt = torch.cat([targets[b]["masks"][ti] for b, (_, ti) in enumerate(indices)]).to(src.dtype)
        src = src[:, None].float()
        with torch.no_grad():
            coords = uncertain_point_coords(src, self.num_points, self.oversample_ratio, self.importance_ratio)
            tgt_points = point_sample(tgt[:, None].float(), coords)[:, 0]
        src_points = point_sample(src, coords)[:, 0]
        return sigmoid_ce_loss(src_points, tgt_points, num_masks), dice_loss(src_points, tgt_points, num_masks)

    def forward(self, stages, targets, num_text_queries, num_masks):
        """stages: [(logits B x Q x (K+1), masks B x Q x h x w)]; the queries after num_text_queries are
        GTG queries whose slot g corresponds to target g of the same image."""
        losses = {}
        n = num_text_queries
        gtg_indices = None
        if stages[0][0].shape[1] > n:
            gtg_indices = [(torch.arange(len(t["labels"])), torch.arange(len(t["labels"]))) for t in targets]
        for s, (logits, masks) in enumerate(stages):
            sfx = "" if s == len(stages) - 1 else f"_{s}"
            text_logits, text_masks = logits[:, :n], masks[:, :n]
            indices = self.matcher(text_logits.detach(), text_masks.detach(), targets)
            losses["loss_ce" + sfx] = self._class_loss(text_logits, targets, indices) * self.weights["ce"]
            bce, dice = self._mask_losses(text_masks, targets, indices, num_masks)
            losses["loss_mask" + sfx] = bce * self.weights["mask"]
            losses["loss_dice" + sfx] = dice * self.weights["dice"]
            if gtg_indices is not None:
                g_logits, g_masks = logits[:, n:], masks[:, n:]
                labels = torch.cat([t["labels"] for t in targets])
                picked = torch.cat([g_logits[b, qi] for b, (qi, _) in enumerate(gtg_indices)])
                losses["loss_gtg_ce" + sfx] = F.cross_entropy(picked.float(), labels) * self.weights["ce"] if len(labels) else g_logits.sum() * 0.0
                bce, dice = self._mask_losses(g_masks, targets, gtg_indices, num_masks)
                losses["loss_gtg_mask" + sfx] = bce * self.weights["mask"]
                losses["loss_gtg_dice" + sfx] = dice * self.weights["dice"]
        return losses
