"""Hungarian matching of predicted masks to ground-truth segments (Mask2Former's matcher).

Cost = class weight * -p(class) + mask weight * BCE + dice weight * Dice, on the same random points
for prediction and target; solved with scipy's ``linear_sum_assignment``.
"""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from segclip.modeling.point_sampling import point_sample


def pairwise_sigmoid_ce(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """inputs: Q x P logits, targets: T x P in {0,1} -> Q x T mean BCE."""
    p = inputs.shape[1]
    pos = nn.functional.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = nn.functional.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / p


def pairwise_dice(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    inputs = inputs.sigmoid()
    num = 2 * inputs @ targets.T
    den = inputs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


class HungarianMatcher(nn.Module):
    def __init__(self, cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=12544):
        super().__init__()
        self.cost_class, self.cost_mask, self.cost_dice, self.num_points = cost_class, cost_mask, cost_dice, num_points

    def cost_matrix(self, logits, masks, labels, tgt_masks) -> torch.Tensor:
        """One image: logits Q x (K+1), masks Q x h x w, labels T, tgt_masks T x H x W -> Q x T."""
        cost_class = -logits.float().softmax(-1)[:, labels]
        coords = torch.rand(1, self.num_points, 2, device=masks.device)
        tgt = point_sample(tgt_masks[:, None].float(), coords.expand(tgt_masks.shape[0], -1, -1))[:, 0]
        out = point_sample(masks[:, None].float(), coords.expand(masks.shape[0], -1, -1))[:, 0]
        return self.cost_mask * pairwise_sigmoid_ce(out, tgt) + self.cost_class * cost_class + self.cost_dice * pairwise_dice(out, tgt)

    @torch.no_grad()
    def forward(self, logits, masks, targets):
        """Batched: returns [(query indices, target indices)] per image, int64 tensors."""
        out = []
        for b, t in enumerate(targets):
            if len(t["labels"]) == 0:
                empty = torch.empty(0, dtype=torch.int64)
                out.append((empty, empty))
                continue
            c = self.cost_matrix(logits[b], masks[b], t["labels"], t["masks"]).cpu()
            rows, cols = linear_sum_assignment(c.numpy())
            out.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return out
