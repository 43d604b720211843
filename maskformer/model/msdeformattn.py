"""Mask2Former's pixel decoder: a multi-scale deformable-attention encoder over res3..res5 (Zhu et al.,
Deformable DETR), then res2 fused FPN-style into stride-4 mask features.

Deformable sampling is plain PyTorch (bilinear, zeros outside the map, as the official CUDA op samples; one
weighted gather for all levels and points, with the official pure-PyTorch formulation's gradient), so the model
runs on any device and exports; there is no compiled op.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .pixel_decoder import ConvNorm, PixelDecoderOutput
from .position_encoding import sine_position_encoding


def deformable_sample(value: Tensor, shapes: list[tuple[int, int]], locations: Tensor, weights: Tensor) -> Tensor:
    """Multi-scale deformable attention's core.

    value [B, S, M, D] (M heads of D channels; S = sum H_l W_l tokens, levels in ``shapes`` order, row-major);
    locations [B, Q, M, L, P, 2]: (x, y) in [0, 1] of each point (0 and 1 the outer edges of a map); weights
    [B, Q, M, L, P] -> [B, Q, M*D]: per query and head, the weighted sum over levels and points of the values
    sampled bilinearly, zero outside a map (grid_sample's align_corners=False with zero padding, as the
    official op samples).

    The forward is one weighted gather (:func:`_gather_sample`) with or without autograd, so training and
    inference compute the same numbers. Its gradient is the official pure-PyTorch formulation's (one
    ``grid_sample`` per level, recomputed in the backward, as the official CUDA op recomputes its samples):
    ``embedding_bag``'s own backward sorts its 4 L P indices per query and head, 0.6 s a layer for a batch of
    two 512 x 512 images on two CPU cores, against 0.4 s for the gather's forward with this backward.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (value, locations, weights)):
        return _DeformableSample.apply(value, locations, weights, shapes)
    return _gather_sample(value, shapes, locations, weights)


def _gather_sample(value: Tensor, shapes: list[tuple[int, int]], locations: Tensor, weights: Tensor) -> Tensor:
    """:func:`deformable_sample`'s forward: each point's four neighbours gathered with their bilinear weight
    times its attention weight by one ``embedding_bag`` (a sum of weighted rows, no [.., P, D] intermediate),
    several times faster on a CPU than one ``grid_sample`` per level.

    Row indices are int32 wherever the rows fit (short of 2**31): the index arithmetic and the gather move half
    the bytes of int64's, a third less time for the whole sampling (R50 Mask2Former at 512 x 512, AMD EPYC); the
    rows gathered and their weights are the same. An exported graph keeps int64, the type ONNX's gather and the
    sizes it is computed from have (int32 indices there mix types in one ONNX node)."""
    b, s, m, d = value.shape
    q = locations.shape[1]
    rows = value.permute(0, 2, 1, 3).reshape(b * m * s, d)  # row (b * M + m) * S + token
    fits = not torch.compiler.is_exporting() and b * m * s <= torch.iinfo(torch.int32).max
    index_type = torch.int32 if fits else torch.int64
    first = (torch.arange(b, device=value.device)[:, None] * m + torch.arange(m, device=value.device)) * s
    first = first.to(index_type)
    indices, scales = [], []
    start = 0
    for level, (h, w) in enumerate(shapes):
        x = locations[:, :, :, level, :, 0] * w - 0.5  # pixel coordinates, [B, Q, M, P]
        y = locations[:, :, :, level, :, 1] * h - 0.5
        x0, y0 = x.floor(), y.floor()
        fx, fy = x - x0, y - y0
        x0, y0 = x0.to(index_type), y0.to(index_type)
        attn = weights[:, :, :, level]
        base = first[:, None, :, None] + start
        for dx, dy, bilinear in (
            (0, 0, (1 - fx) * (1 - fy)),
            (1, 0, fx * (1 - fy)),
            (0, 1, (1 - fx) * fy),
            (1, 1, fx * fy),
        ):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            indices.append(base + yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1))
            scales.append(attn * bilinear * inside)
        start = start + h * w
    # [B, Q, M, P] pieces -> one bag of L * P * 4 rows per (image, head, query)
    index = torch.stack(indices, -1).permute(0, 2, 1, 3, 4).reshape(b * m * q, -1)
    scale = torch.stack(scales, -1).permute(0, 2, 1, 3, 4).reshape(b * m * q, -1).to(value.dtype)
    out = F.embedding_bag(index, rows, per_sample_weights=scale, mode="sum")
    return out.view(b, m, q, d).transpose(1, 2).reshape(b, q, m * d)


class _DeformableSample(torch.autograd.Function):
    """The gather forward with the official formulation's gradient, level by level (in float32 at least): nothing per
    point is kept between forward and backward (a level's samples, [B M, D, Q, P], exist only while its
    gradient is computed)."""

    @staticmethod
    def forward(ctx, value: Tensor, locations: Tensor, weights: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        ctx.save_for_backward(value, locations, weights)
        ctx.shapes = shapes
        return _gather_sample(value, shapes, locations, weights)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        value, locations, weights = ctx.saved_tensors
        b, _, m, d = value.shape
        q, num_levels, p = locations.shape[1], locations.shape[3], locations.shape[4]
        dtype = torch.promote_types(value.dtype, torch.float32)  # bfloat16 and half: float32
        grad = grad.to(dtype).view(b, q, m, d).permute(0, 2, 3, 1).reshape(b * m, d, q, 1)
        grad_value, grad_locations, grad_weights = [], [], []
        start = 0
        for level, (h, w) in enumerate(ctx.shapes):
            tokens = value[:, start : start + h * w].to(dtype).permute(0, 2, 3, 1).reshape(b * m, d, h, w)
            grid = (2 * locations[:, :, :, level].to(dtype) - 1).transpose(1, 2).reshape(b * m, q, p, 2)
            attn = weights[:, :, :, level].to(dtype).transpose(1, 2).reshape(b * m, 1, q, p)
            with torch.enable_grad():
                tokens.requires_grad_(True)
                grid.requires_grad_(True)
                sampled = F.grid_sample(tokens, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
                g_tokens, g_grid = torch.autograd.grad(sampled, (tokens, grid), attn * grad)
            grad_weights.append((sampled.detach() * grad).sum(1))  # [B M, Q, P]
            grad_value.append(g_tokens.view(b, m, d, h * w).permute(0, 3, 1, 2))
            grad_locations.append(2 * g_grid.view(b, m, q, p, 2).transpose(1, 2))  # grid = 2 location - 1
            start += h * w
        grad_value = torch.cat(grad_value, 1).to(value.dtype)
        grad_locations = torch.stack(grad_locations, 3).to(locations.dtype)
        grad_weights = torch.stack(grad_weights, -2).view(b, m, q, num_levels, p).transpose(1, 2).to(weights.dtype)
        return grad_value, grad_locations, grad_weights, None


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: each query attends to ``num_points`` sampled points per head and
    level around its reference point; offsets and weights are predicted from the query."""

    def __init__(self, dim: int, num_levels: int, num_heads: int, num_points: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"deformable attention width {dim} is not divisible by {num_heads} heads")
        self.num_levels, self.num_heads, self.num_points = num_levels, num_heads, num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Deformable DETR's: offsets start on a ring, one direction per head, k-th point k times farther out.
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        grid = torch.stack([theta.cos(), theta.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.num_heads, 1, 1, 2)
        grid = grid.repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, reference: Tensor, value: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        """query [B, Q, D], reference points [Q, 2] ((x, y) in [0, 1], the same on every level), value
        [B, S, D] (the levels' tokens concatenated, S = sum H_l W_l), shapes: (H_l, W_l) -> [B, Q, D]."""
        b, q, d = query.shape
        m, num_levels, p = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(value).view(b, -1, m, d // m)
        offsets = self.sampling_offsets(query).view(b, q, m, num_levels, p, 2)
        weights = self.attention_weights(query).view(b, q, m, num_levels * p).softmax(-1)
        weights = weights.view(b, q, m, num_levels, p)
        # Offsets are in pixels of each level: (x, y) divided by (W_l, H_l). Divided level by level by the
        # sizes themselves (not a tensor of them), so that export keeps the sizes symbolic.
        offsets = torch.stack(
            [
                torch.cat([offsets[:, :, :, i, :, :1] / w, offsets[:, :, :, i, :, 1:] / h], -1)
                for i, (h, w) in enumerate(shapes)
            ],
            dim=3,
        )
        locations = reference[None, :, None, None, None, :] + offsets
        return self.output_proj(deformable_sample(value, shapes, locations, weights))


class DeformableEncoderLayer(nn.Module):
    """Post-norm deformable self-attention over all levels' tokens, then FFN (ReLU)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, num_levels: int, num_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(dim, num_levels, num_heads, num_points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor, reference: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        """src, pos [B, S, D]; reference [S, 2] -> [B, S, D]."""
        src = self.norm1(src + self.dropout(self.self_attn(src + pos, reference, src, shapes)))
        # In place: the ReLU of a fresh [B, S, ffn_dim] tensor, whose allocation took most of a separate
        # ReLU's 8 ms a layer at 512 x 512 (its backward reads the output, which in place keeps).
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src), inplace=True)))
        return self.norm2(src + self.dropout(ffn))


def reference_points(shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype) -> Tensor:
    """The centre of every pixel of every level, (x, y) normalised to [0, 1], in token order -> [S, 2]."""
    points = []
    for h, w in shapes:
        y = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
        x = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
        yy, xx = torch.meshgrid(y, x, indexing="ij")
        points.append(torch.stack([xx.flatten(), yy.flatten()], -1))
    return torch.cat(points)


class MSDeformAttnPixelDecoder(nn.Module):
    """res3..res5 -> 1x1 conv + GN to ``conv_dim`` -> deformable encoder over the three levels together
    (level embeddings + sine positions) -> res2 lateral 1x1 conv + GN plus the bilinearly upsampled stride-8
    output, 3x3 conv + GN + ReLU -> 1x1 conv to ``mask_dim`` mask features at stride 4.

    Levels are kept low resolution first (res5, res4, res3), as the official code orders them.
    """

    def __init__(
        self,
        in_channels: list[int],
        *,
        conv_dim: int,
        mask_dim: int,
        num_groups: int,
        num_layers: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
        num_points: int,
    ):
        super().__init__()
        encoder_channels = in_channels[1:][::-1]  # res5, res4, res3
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, 1), nn.GroupNorm(num_groups, conv_dim)) for c in encoder_channels
        )
        num_levels = len(encoder_channels)
        self.level_embed = nn.Parameter(torch.empty(num_levels, conv_dim))
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(conv_dim, num_heads, ffn_dim, dropout, num_levels, num_points)
            for _ in range(num_layers)
        )
        self.lateral_conv = ConvNorm(in_channels[0], conv_dim, 1, num_groups, relu=False)
        self.output_conv = ConvNorm(conv_dim, conv_dim, 3, num_groups, relu=True)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 1)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # The official initialisation: xavier on the encoder's matrices, then deformable attention's own,
        # normal level embeddings, xavier input projections, c2_xavier_fill on the FPN convs.
        for p in self.layers.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for layer in self.layers:
            layer.self_attn.reset_parameters()
        nn.init.normal_(self.level_embed)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)
            nn.init.zeros_(proj[0].bias)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.zeros_(self.mask_features.bias)

    def forward(self, features: list[Tensor]) -> PixelDecoderOutput:
        """features [res2..res5] -> mask features [B, mask_dim, H/4, W/4] and the encoder's maps at strides
        32, 16, 8 [B, conv_dim, H/s, W/s]."""
        srcs = [proj(x) for proj, x in zip(self.input_proj, features[1:][::-1])]
        shapes = [(s.shape[-2], s.shape[-1]) for s in srcs]
        b, c = srcs[0].shape[:2]
        tokens = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat(
            [
                sine_position_encoding(h, w, c // 2, device=tokens.device, dtype=tokens.dtype).flatten(1).T
                + self.level_embed[i]
                for i, (h, w) in enumerate(shapes)
            ]
        )[None]
        reference = reference_points(shapes, tokens.device, tokens.dtype)
        for layer in self.layers:
            tokens = layer(tokens, pos, reference, shapes)
        levels = tokens.split([h * w for h, w in shapes], 1)
        maps = [t.transpose(1, 2).reshape(b, c, h, w) for t, (h, w) in zip(levels, shapes)]
        lateral = self.lateral_conv(features[0])
        upsampled = F.interpolate(maps[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        y = self.output_conv(lateral + upsampled)
        return PixelDecoderOutput(self.mask_features(y), maps)
