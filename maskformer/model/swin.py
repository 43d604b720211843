"""Swin Transformer backbone as the original MaskFormer uses it (D2SwinTransformer).

Differences from timm's classification Swin, all needed to reproduce the published checkpoints on
inputs of any size: feature maps are zero-padded up to whole windows *before* the cyclic shift and the
shift mask is built for the padded size; windows never shrink on small inputs; odd sizes are padded
before patch merging; every output stage gets its own LayerNorm. The attention and MLP blocks are
timm's, and parameter names follow timm's ``swin_*`` models so that their ImageNet weights load as-is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models.swin_transformer import WindowAttention
from torch import Tensor, nn


def window_partition(x: Tensor, window: int) -> Tensor:
    """[B, H, W, C] -> [B * H/w * W/w, w*w, C] (batch-major window order)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b * (h // window) * (w // window), window * window, c)


def window_reverse(windows: Tensor, window: int, b: int, h: int, w: int) -> Tensor:
    """[B * H/w * W/w, w*w, C] -> [B, H, W, C]. Sizes are passed, not inferred with -1, so that exported
    graphs carry no division by a shape product."""
    c = windows.shape[-1]
    x = windows.view(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def shift_attention_mask(h: int, w: int, window: int, shift: int, device: torch.device) -> Tensor:
    """Additive mask [H/w * W/w, w*w, w*w] (0 or -inf) that keeps shifted windows from mixing regions.

    The official code fills -100, whose attention weights, about exp(-100) of a row's largest, are subnormal
    floats: they made the next matrix product 60 times slower on an Intel CPU (105 ms against 1.7 ms for the
    last stage's projection at 512 x 704). -inf makes them exact zeros, which changes an output only where a
    masked logit exceeds its row's largest unmasked one by more than about 84 (exp(-16) is float32's
    precision); no row is all -inf, as every token shares its own region."""
    hs = torch.arange(h, device=device)
    ws = torch.arange(w, device=device)
    h_region = (hs >= h - window).long() + (hs >= h - shift).long()
    w_region = (ws >= w - window).long() + (ws >= w - shift).long()
    region = (h_region[:, None] * 3 + w_region[None, :]).float()[None, :, :, None]
    region = window_partition(region, window).squeeze(-1)
    diff = region[:, None, :] - region[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, float("-inf"))


class SwinBlock(nn.Module):
    """Window (or shifted-window) attention + MLP, both pre-norm residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads=num_heads, window_size=window_size, qkv_bias=qkv_bias)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor, padded: tuple[int, int]) -> Tensor:
        """x: [B, H, W, C]; mask: shift mask for the ``padded`` size (H, W rounded up to whole windows), used
        by shifted blocks. Returns [B, H, W, C]."""
        h, w = x.shape[1:3]
        win = self.window_size
        hp, wp = padded
        # The stage's padded size, not one recomputed here: each recomputation is another symbolic expression
        # for the exporter to prove equal (most of a Swin export's time).
        y = F.pad(self.norm1(x), (0, 0, 0, wp - w, 0, hp - h))
        if self.shift_size:
            y = torch.roll(y, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        y = self.attn(window_partition(y, win), mask=mask if self.shift_size else None)
        y = window_reverse(y, win, x.shape[0], hp, wp)
        if self.shift_size:
            y = torch.roll(y, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = x + self.drop_path1(y[:, :h, :w])
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat (odd sizes zero-padded) + LayerNorm + Linear(4C -> 2C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 2C]."""
        _, h, w, _ = x.shape
        x = F.pad(x, (0, 0, 0, (w + 1) // 2 * 2 - w, 0, (h + 1) // 2 * 2 - h))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        downsample: bool,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: list[float],
    ):
        super().__init__()
        self.downsample = PatchMerging(dim // 2) if downsample else nn.Identity()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                num_heads,
                window_size,
                shift_size=0 if i % 2 == 0 else self.shift_size,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=drop_path[i],
            )
            for i in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        _, h, w, _ = x.shape
        win = self.window_size
        # (h + win - 1) // win, not -(-h // win): exported integer division truncates negatives.
        hp, wp = (h + win - 1) // win * win, (w + win - 1) // win * win
        mask = shift_attention_mask(hp, wp, win, self.shift_size, x.device).to(x.dtype)
        for block in self.blocks:
            x = block(x, mask, (hp, wp))
        return x


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection; the input is zero-padded to whole patches."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, ceil(H/p), ceil(W/p), C]."""
        p = self.patch_size
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (w + p - 1) // p * p - w, 0, (h + p - 1) // p * p - h))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinBackbone(nn.Module):
    """Swin Transformer returning four normalised feature maps [B, C_i, H/2^(i+2), W/2^(i+2)]."""

    def __init__(
        self,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.3,
    ):
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        total = sum(depths)
        # Stochastic depth grows linearly over all blocks (plain floats: works on the meta device too).
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.channels = [embed_dim * 2**i for i in range(len(depths))]
        self.strides = [patch_size * 2**i for i in range(len(depths))]
        # The smallest input side at which every stage has two windows or more a side.
        self.min_two_window_side = self.strides[-1] * (window_size + 1)
        stages = []
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            stages.append(
                SwinStage(
                    self.channels[i],
                    depth,
                    num_heads[i],
                    window_size,
                    downsample=i > 0,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop_path=rates[start : start + depth],
                )
            )
        self.layers = nn.ModuleList(stages)
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in self.channels)
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> [res2, res3, res4, res5], each [B, C_i, H_i, W_i]."""
        x = self.patch_embed(x)
        features = []
        for stage, norm in zip(self.layers, self.norms):
            x = stage(x)
            features.append(norm(x).permute(0, 3, 1, 2).contiguous())
        return features


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
