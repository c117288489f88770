"""Mask2Former's multi-scale deformable-attention pixel decoder, in plain PyTorch ops.

The deformable sampling is ``F.grid_sample`` (ONNX GridSample, opset >= 16), so the model exports and
builds in TensorRT without the custom CUDA kernel or plugins.  Encoder layers run on strides 8-32; an
FPN-style lateral from stride 4 then produces the 256-d mask features.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from segclip.modeling.layers import FFN, conv_gn, sine_position_embedding, split_tokens


def ms_deform_attn(value, shapes, sampling_locations, attention_weights):
    """value: B x S x H x d; shapes: [(h, w)] per level; sampling_locations: B x Q x H x L x P x 2 in [0, 1];
    attention_weights: B x Q x H x L x P.  Returns B x Q x (H*d)."""
    b, _, heads, d = value.shape
    _, q, _, levels, points, _ = sampling_locations.shape
    values = split_tokens(value, shapes)
    # Points before queries (B*H x L x P x Q): each level's samples come out (B*H) x d x P x Q, so the
    # weighted sum over the P points adds whole contiguous Q-rows.  Summing the innermost axis of
    # d x Q x P instead (4 floats at a stride) was 15% of OpenVINO INT8's time for segclip-r50 at 512 px,
    # and slicing a level out of the middle axis of B x Q x H x L x P cost a Gather per level.
    # (heads, levels, points) move together: a rank-4/3 Transpose, not rank 6/5 (OpenVINO's generic kernel)
    grids = (2 * sampling_locations.reshape(b, q, heads * levels * points, 2) - 1).transpose(1, 2)
    grids = grids.reshape(b * heads, levels * points, 1, q, 2).unbind(1)
    weights = attention_weights.reshape(b, q, heads * levels * points).transpose(1, 2)
    weights = weights.reshape(b * heads, levels * points, 1, 1, q).unbind(1)
    out = None
    for lvl, (h, w) in enumerate(shapes):
        v = values[lvl].flatten(2).transpose(1, 2).reshape(b * heads, d, h, w)  # (B*H) x d x h x w
        for pt in range(points):
            i = lvl * points + pt
            sampled = F.grid_sample(v, grids[i], mode="bilinear", padding_mode="zeros", align_corners=False)
            contrib = sampled * weights[i]  # (B*H) x d x 1 x Q
            out = contrib if out is None else out + contrib
    return out.reshape(b, heads * d, q).transpose(1, 2)


# What MSDeformAttn computes its sampling with: the TensorRT export swaps in the plugin form (use_core)
_core = [ms_deform_attn]


@contextlib.contextmanager
def use_core(fn):
    """Within the block every MSDeformAttn samples with ``fn`` (the arguments and result of
    ``ms_deform_attn``): how ``segclip export --trt`` traces the TensorRT plugin form of the same model."""
    old, _core[0] = _core[0], fn
    try:
        yield
    finally:
        _core[0] = old


class MSDeformAttn(nn.Module):
    def __init__(self, dim: int, levels: int, heads: int, points: int):
        super().__init__()
        self.dim, self.levels, self.heads, self.points = dim, levels, heads, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self):
        # Deformable DETR's init: offsets start on a ring of directions, one per head.
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.heads, 1, 1, 2).repeat(1, self.levels, self.points, 1)
        for i in range(self.points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query, reference_points, value, shapes, normalizer):
        """query/value: B x S x C; reference_points: S x 2 (x, y in [0, 1]); normalizer: L x 2 (w, h)."""
        b, s, _ = query.shape
        v = self.value_proj(value).reshape(b, s, self.heads, self.dim // self.heads)
        hlp = self.heads * self.levels * self.points
        off = self.sampling_offsets(query).reshape(b, s, hlp, 2)
        attw = self.attention_weights(query).reshape(b, s, self.heads, self.levels * self.points)
        attw = attw.softmax(-1).reshape(b, s, self.heads, self.levels, self.points)
        # rank 4, the normalizer tiled over (heads, levels, points): the same values as broadcasting at rank 6,
        # which OpenVINO ran as a separate slow element-wise kernel per layer
        norm = normalizer[None, :, None, :].expand(self.heads, self.levels, self.points, 2).reshape(hlp, 2)
        loc = (reference_points[:, None, :] + off / norm).reshape(b, s, self.heads, self.levels, self.points, 2)
        return self.output_proj(_core[0](v, shapes, loc, attw))


class DeformEncoderLayer(nn.Module):
    def __init__(self, dim, ffn, levels, heads, points):
        super().__init__()
        self.attn = MSDeformAttn(dim, levels, heads, points)
        self.norm = nn.LayerNorm(dim)
        self.ffn = FFN(dim, ffn)

    def forward(self, src, pos, ref, shapes, normalizer):
        src = self.norm(src + self.attn(src + pos, ref, src, shapes, normalizer))
        return self.ffn(src)


class MSDeformAttnPixelDecoder(nn.Module):
    """in: backbone [C2, C3, C4, C5]; out: mask features (stride 4) and [stride 32, 16, 8] features."""

    def __init__(self, in_channels, dim=256, mask_dim=256, layers=6, heads=8, ffn=1024, points=4):
        super().__init__()
        self.dim = dim
        self.levels = 3
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1), nn.GroupNorm(32 if dim % 32 == 0 else 8, dim)) for c in in_channels[1:][::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.level_embed = nn.Parameter(torch.randn(self.levels, dim) * 0.02)
        self.layers = nn.ModuleList(DeformEncoderLayer(dim, ffn, self.levels, heads, points) for _ in range(layers))
        self.lateral = conv_gn(in_channels[0], dim, 1, relu=False)
        self.output = conv_gn(dim, dim, 3)
        self.mask_features = nn.Conv2d(dim, mask_dim, 1)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.zeros_(self.mask_features.bias)

    @staticmethod
    def _reference_points(shapes, device):
        refs = []
        for h, w in shapes:
            ys, xs = torch.meshgrid(
                (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h,
                (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w,
                indexing="ij",
            )
            refs.append(torch.stack((xs.reshape(-1), ys.reshape(-1)), -1))
        return torch.cat(refs, 0)

    def forward(self, feats):
        c2 = feats[0]
        srcs = [proj(f) for proj, f in zip(self.input_proj, feats[1:][::-1])]  # stride 32, 16, 8
        shapes = [(s.shape[2], s.shape[3]) for s in srcs]  # traced sizes stay symbolic on export
        pos = torch.cat(
            [sine_position_embedding(h, w, self.dim, s.device, s.dtype) + self.level_embed[i] for i, ((h, w), s) in enumerate(zip(shapes, srcs))]
        )[None]
        x = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], dim=1)
        ref = self._reference_points(shapes, x.device).to(x.dtype)
        normalizer = torch.stack([torch.stack([torch.as_tensor(w), torch.as_tensor(h)]) for h, w in shapes]).to(x)
        for layer in self.layers:
            x = layer(x, pos, ref, shapes, normalizer)
        b = x.shape[0]
        outs = [t.transpose(1, 2).reshape(b, self.dim, h, w) for t, (h, w) in zip(split_tokens(x, shapes), shapes)]
        y = self.lateral(c2) + F.interpolate(outs[-1], size=c2.shape[-2:], mode="bilinear", align_corners=False)
        return self.mask_features(self.output(y)), outs
