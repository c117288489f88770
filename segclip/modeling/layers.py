"""Small building blocks shared by the pixel decoder, CFF and the transformer decoder.

Attention is written out (projections, matmul, softmax) instead of ``nn.MultiheadAttention`` so that
it exports to plain ONNX MatMul/Softmax nodes with stable names (the FP16 converter keeps softmax in
FP32 by node type) and is batch-first everywhere.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention, batch first. ``mask``: bool, True = blocked, broadcastable to B x H x Lq x Lk."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, q, k, v, mask=None):
        q = self._split(self.q_proj(q) * self.scale)
        k = self._split(self.k_proj(k))
        v = self._split(self.v_proj(v))
        attn = q @ k.transpose(-2, -1)
        if mask is not None:
            attn = attn.masked_fill(mask, float("-inf"))
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], -1))


class FFN(nn.Module):
    """Post-norm feed-forward block: x + MLP(x), then LayerNorm."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(x + self.linear2(F.relu(self.linear1(x))))


class MLP(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def sine_position_embedding(h: int, w: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """DETR's normalised sine embedding for an h x w grid, as (h*w) x dim.

    It depends only on the grid size: for a fixed export size it folds into a constant; ``h``/``w``
    may be traced sizes, for a graph that takes any input size.
    """
    npf = dim // 2
    y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * (2 * math.pi)
    x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * (2 * math.pi)
    dim_t = torch.arange(npf, device=device, dtype=torch.float32)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / npf)
    py = y[:, None] / dim_t  # h x npf
    px = x[:, None] / dim_t  # w x npf
    py = torch.stack((py[:, 0::2].sin(), py[:, 1::2].cos()), dim=2).flatten(1)
    px = torch.stack((px[:, 0::2].sin(), px[:, 1::2].cos()), dim=2).flatten(1)
    pos = torch.cat((py[:, None, :].expand(h, w, npf), px[None, :, :].expand(h, w, npf)), dim=2)
    return pos.reshape(h * w, dim).to(dtype)


def split_tokens(x: torch.Tensor, shapes) -> list:
    """Split flattened multi-level tokens (dim 1) into one chunk per (h, w) level.

    Slicing by running offsets instead of ``Tensor.split(list)`` keeps the sizes symbolic when the
    model is traced, so the ONNX graph accepts any input size (``--dynamic-size``).
    """
    out, start = [], 0
    for h, w in shapes:
        end = start + h * w
        out.append(x[:, start:end])
        start = end
    return out


def conv_gn(cin: int, cout: int, k: int, relu: bool = True) -> nn.Sequential:
    groups = 32 if cout % 32 == 0 else 8
    mods = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.GroupNorm(groups, cout)]
    if relu:
        mods.append(nn.ReLU(inplace=True))
    seq = nn.Sequential(*mods)
    nn.init.kaiming_uniform_(seq[0].weight, a=1)
    return seq
