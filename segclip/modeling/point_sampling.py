"""Point sampling for mask losses (PointRend / Mask2Former): losses on a few thousand points
instead of full-resolution masks, with importance sampling of uncertain points."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(inputs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """inputs: R x C x H x W; coords: R x P x 2 in [0, 1] (x, y). Returns R x C x P."""
    return F.grid_sample(inputs, 2.0 * coords[:, :, None] - 1.0, align_corners=False)[..., 0]


def uncertain_point_coords(logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_ratio: float) -> torch.Tensor:
    """logits: R x 1 x H x W -> R x num_points x 2: the most uncertain (|logit| smallest) of an
    oversampled random set, plus uniformly random points."""
    r = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(r, num_sampled, 2, device=logits.device, dtype=logits.dtype)
    uncertainty = -point_sample(logits, coords).abs()[:, 0]
    num_uncertain = int(importance_ratio * num_points)
    idx = uncertainty.topk(num_uncertain, dim=1).indices
    picked = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    rest = torch.rand(r, num_points - num_uncertain, 2, device=logits.device, dtype=logits.dtype)
    return torch.cat([picked, rest], dim=1)
