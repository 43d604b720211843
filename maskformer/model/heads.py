"""Transformer module and segmentation module: N queries -> N (class logits, mask logits) pairs."""

from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .position_encoding import sine_position_tokens
from .transformer import TransformerDecoder


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskFormerHead(nn.Module):
    """DETR decoder over one feature map (stride 32 in the paper), then the class and mask-embedding heads.

    Query content starts at zero; the N learned embeddings are the queries' positional encodings; the
    image features get a 2-D sine encoding on the keys. ``masked_attention`` (Mask2Former's, off in the
    paper's MaskFormer) lets each query attend, from the second layer on, only where the previous layer
    predicts its mask.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_dim: int = 256,
        num_queries: int = 100,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        num_layers: int = 6,
        dropout: float = 0.1,
        mask_dim: int = 256,
        enforce_input_proj: bool = False,
        masked_attention: bool = False,
    ):
        super().__init__()
        self.masked_attention = masked_attention
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        if in_channels != hidden_dim or enforce_input_proj:
            self.input_proj = nn.Conv2d(in_channels, hidden_dim, 1)
            nn.init.kaiming_uniform_(self.input_proj.weight, a=1)
            nn.init.zeros_(self.input_proj.bias)
        else:
            self.input_proj = nn.Identity()
        self.decoder = TransformerDecoder(hidden_dim, num_heads, ffn_dim, num_layers, dropout)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward(self, features: Tensor, mask_features: Tensor) -> tuple[Tensor, Tensor]:
        """features [B, C, h, w] (stride 32 by default), mask_features E_pixel [B, C_E, H/4, W/4] ->
        class logits [L, B, N, K+1] and mask embeddings E_mask [L, B, N, C_E] for all L decoder layers."""
        src = self.input_proj(features)
        b, c, h, w = src.shape
        pos = sine_position_tokens(b, h, w, c, device=src.device, dtype=src.dtype)
        memory = src.flatten(2).transpose(1, 2)
        query_pos = self.query_embed.weight.unsqueeze(0).expand(b, -1, -1)
        memory_mask = None
        if self.masked_attention:
            # Bilinear resizing is linear, so resizing E_pixel first gives the same masks as resizing the
            # full-size mask logits (as Mask2Former does) at a fraction of the cost.
            small = F.interpolate(mask_features, size=(h, w), mode="bilinear", align_corners=False)
            memory_mask = functools.partial(self._attention_mask, small)
        hs = self.decoder(torch.zeros_like(query_pos), memory, pos, query_pos, memory_mask)
        return self.class_embed(hs), self.mask_embed(hs)

    def _attention_mask(self, mask_features: Tensor, hs: Tensor) -> Tensor:
        """mask_features [B, C_E, h, w] at the memory's size, one layer's output [B, N, D] -> bool [B, N, h*w],
        True where the predicted mask probability is at least 0.5; a query with an empty mask attends
        everywhere. No gradient flows through the mask."""
        with torch.no_grad():
            logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(hs), mask_features).flatten(2)
            attend = logits >= 0
            return attend | ~attend.any(-1, keepdim=True)
