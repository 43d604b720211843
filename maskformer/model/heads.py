"""MaskFormer's transformer module and segmentation module: N queries -> N (class logits, mask logits) pairs
from every decoder layer."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .position_encoding import sine_position_tokens
from .prediction import Prediction
from .transformer import TransformerDecoder, attention_mask


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


def input_projection(in_channels: int, hidden_dim: int, enforce: bool) -> nn.Module:
    """A 1x1 conv to the decoder's width (detectron2's c2_xavier_fill), or nothing when the widths already
    agree and no projection is ``enforce``d."""
    if in_channels == hidden_dim and not enforce:
        return nn.Identity()
    proj = nn.Conv2d(in_channels, hidden_dim, 1)
    nn.init.kaiming_uniform_(proj.weight, a=1)
    nn.init.zeros_(proj.bias)
    return proj


class MaskFormerHead(nn.Module):
    """DETR decoder over one feature map (stride 32 in the paper), then the class and mask-embedding heads.

    Query content starts at zero; the N learned embeddings are the queries' positional encodings; the
    image features get a 2-D sine encoding on the keys. ``masked_attention`` (Mask2Former's, off in the
    paper's MaskFormer) lets each query attend, from the second layer on, only where the previous layer
    predicts its mask. Sizes come from :class:`~maskformer.model.config.TransformerConfig`.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        hidden_dim: int,
        num_queries: int,
        num_heads: int,
        ffn_dim: int,
        num_layers: int,
        dropout: float,
        mask_dim: int,
        enforce_input_proj: bool,
        masked_attention: bool,
    ):
        super().__init__()
        self.masked_attention = masked_attention
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj = input_projection(in_channels, hidden_dim, enforce_input_proj)
        self.decoder = TransformerDecoder(hidden_dim, num_heads, ffn_dim, num_layers, dropout)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward(self, features: list[Tensor], mask_features: Tensor, with_aux: bool) -> list[Prediction]:
        """features: one map [B, C, h, w] in a list (stride 32 by default), mask_features E_pixel
        [B, C_E, H/4, W/4] -> the prediction of every decoder layer (only the last one without ``with_aux``),
        each a :class:`~maskformer.model.prediction.Prediction` (logits [B, N, K+1], masks [B, N, H/4, W/4])."""
        (src,) = features
        src = self.input_proj(src)
        b, c, h, w = src.shape
        pos = sine_position_tokens(b, h, w, c, device=src.device, dtype=src.dtype)
        memory = src.flatten(2).transpose(1, 2)
        query_pos = self.query_embed.weight.unsqueeze(0).expand(b, -1, -1)
        memory_mask = None
        if self.masked_attention:
            # Bilinear resizing is linear, so resizing E_pixel first gives the masks of resizing the
            # full-size mask logits (as Mask2Former does) at a fraction of the cost.
            small = F.interpolate(mask_features, size=(h, w), mode="bilinear", align_corners=False)

            def memory_mask(hs: Tensor) -> Tensor:
                return attention_mask(torch.einsum("bqc,bchw->bqhw", self.mask_embed(hs), small), (h, w))

        hs = self.decoder(torch.zeros_like(query_pos), memory, pos, query_pos, memory_mask)
        if not with_aux:
            hs = hs[-1:]
        logits, mask_embed = self.class_embed(hs), self.mask_embed(hs)
        masks = torch.einsum("lbqc,bchw->lbqhw", mask_embed, mask_features)
        return [Prediction(a, m) for a, m in zip(logits, masks)]
