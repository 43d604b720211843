"""2-D sine position encoding of DETR (normalised, scale 2 pi, temperature 10000)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sine_position_encoding(
    height: int,
    width: int,
    num_feats: int = 128,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Position encoding of an un-padded H x W grid -> [2 * num_feats, H, W] (y features, then x).

    The original computes it from a mask of ones, so cumulative sums are plain 1..H and 1..W. Computed in
    float32 (float64 for a float64 model), whatever ``dtype`` the result is cast to.
    """
    eps = 1e-6
    work = torch.float64 if dtype == torch.float64 else torch.float32
    y = torch.arange(1, height + 1, device=device, dtype=work)
    x = torch.arange(1, width + 1, device=device, dtype=work)
    y = y / (y[-1] + eps) * scale
    x = x / (x[-1] + eps) * scale
    dim_t = torch.arange(num_feats, device=device, dtype=work)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos_y = y[:, None] / dim_t  # [H, F]
    pos_x = x[:, None] / dim_t  # [W, F]
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    pos = torch.cat(
        (pos_y[:, None, :].expand(height, width, num_feats), pos_x[None, :, :].expand(height, width, num_feats)),
        dim=2,
    )
    return pos.permute(2, 0, 1).to(dtype)


def sine_position_tokens(
    batch: int,
    height: int,
    width: int,
    dim: int,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The encoding of an H x W map as tokens in row-major order, [B, H*W, dim]."""
    pos = sine_position_encoding(height, width, dim // 2, device=device, dtype=dtype)
    return pos.flatten(1).transpose(0, 1).unsqueeze(0).expand(batch, -1, -1)
