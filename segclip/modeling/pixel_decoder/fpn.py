"""A light FPN pixel decoder (MaskFormer's): lateral 1x1 + top-down 3x3 convs, no attention.

For edge/UAV GPUs where the deformable encoder's gathers dominate latency.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from segclip.modeling.layers import conv_gn


class FPNPixelDecoder(nn.Module):
    """in: backbone [C2, C3, C4, C5]; out: mask features (stride 4) and [stride 32, 16, 8] features."""

    def __init__(self, in_channels, dim=256, mask_dim=256, **_):
        super().__init__()
        self.top = conv_gn(in_channels[3], dim, 3)
        self.laterals = nn.ModuleList(conv_gn(c, dim, 1, relu=False) for c in in_channels[:3][::-1])
        self.outputs = nn.ModuleList(conv_gn(dim, dim, 3) for _ in range(3))
        self.mask_features = nn.Conv2d(dim, mask_dim, 3, padding=1)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.zeros_(self.mask_features.bias)

    def forward(self, feats):
        y = self.top(feats[3])
        multi_scale = [y]
        for lateral, output, f in zip(self.laterals, self.outputs, feats[:3][::-1]):
            y = output(lateral(f) + F.interpolate(y, size=f.shape[-2:], mode="nearest"))
            multi_scale.append(y)
        # multi_scale: stride 32, 16, 8, 4
        return self.mask_features(multi_scale[-1]), multi_scale[:3]
