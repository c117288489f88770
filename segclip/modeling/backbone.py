"""ResNet backbone returning C2..C5 (strides 4/8/16/32).

Weights: ``"imagenet"`` loads torchvision's ImageNet weights by name (needs the internet once),
a file path loads a local torchvision-format state dict (``weights_only=True``), ``"none"`` is random
initialisation, used only when asked for explicitly.
"""
from __future__ import annotations

import os

import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from segclip.config import BACKBONES
from segclip.errors import SegclipError, one_line

_IMAGENET = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V2",
    "resnet101": "ResNet101_Weights.IMAGENET1K_V2",
}


def _load_state_dict(name: str, weights: str) -> dict:
    if weights == "imagenet":
        try:
            w = torchvision.models.get_weight(_IMAGENET[name])
            return w.get_state_dict(progress=False)
        except Exception as e:  # offline, proxy, hub down
            raise SegclipError(
                f"backbone: could not download ImageNet weights for {name} ({type(e).__name__}); on an offline "
                f"machine pass --backbone-weights PATH (a torchvision {name} state dict) or --backbone-weights none"
            ) from None
    if not os.path.isfile(weights):
        raise SegclipError(f"backbone: weights file {weights} not found; give a torchvision {name} state dict, 'imagenet' or 'none'")
    try:
        sd = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SegclipError(f"backbone: cannot read weights file {weights} ({type(e).__name__}: {one_line(e, 160)}); give a torchvision ResNet state dict file, 'imagenet' or 'none'") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return sd


class ResNetBackbone(nn.Module):
    def __init__(self, name: str = "resnet50", weights: str | None = "imagenet"):
        super().__init__()
        if name not in BACKBONES:
            raise SegclipError(f"backbone: unknown {name!r}; choose one of {', '.join(BACKBONES)}")
        weights = "none" if weights in (None, "", "none") else weights
        pretrained = weights != "none"
        # Pretrained statistics are kept frozen (small per-GPU batches would ruin them); from-scratch
        # training needs real BatchNorm to converge.
        norm = FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
        net = getattr(torchvision.models, name)(weights=None, norm_layer=norm)
        if pretrained:
            sd = _load_state_dict(name, weights)
            sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
            missing, unexpected = net.load_state_dict(sd, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise SegclipError(
                    f"backbone: weights {weights} do not match {name} (missing {len(missing)} keys e.g. "
                    f"{missing[:2]}, unexpected {len(unexpected)} e.g. {unexpected[:2]})"
                )
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.channels = BACKBONES[name]
        self.strides = (4, 8, 16, 32)

    def forward(self, x):
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]
