"""Mask2Former's transformer decoder: masked cross-attention to one of the pixel decoder's stride-32/16/8
maps at a time (round robin), then query self-attention, then FFN; a prediction before the first layer and
after every layer, each layer attending only inside the masks the previous prediction found."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .heads import MLP, input_projection
from .position_encoding import sine_position_tokens
from .prediction import Prediction
from .transformer import DecoderLayer, attention_mask


class MaskedDecoderLayer(DecoderLayer):
    """Post-norm: masked cross-attention (query + query_pos against memory + pos), self-attention, FFN. The
    layers of the DETR decoder layer in another order: norm1 follows cross-attention, norm2 self-attention."""

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor, mask: Tensor) -> Tensor:
        """tgt, query_pos [B, N, D]; memory, pos [B, L, D]; mask bool [B, N, L] (True: may attend) -> [B, N, D]."""
        attended = self.cross_attn(tgt + query_pos, memory + pos, memory, mask)
        tgt = self.norm1(tgt + self.dropout(attended))
        q = tgt + query_pos
        tgt = self.norm2(tgt + self.dropout(self.self_attn(q, q, tgt)))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout(ffn))


class MaskedAttentionDecoder(nn.Module):
    """Learnable query features and query positions; ``num_layers`` layers, layer i attending to level
    i % L of the multi-scale maps (low resolution first); the class head and 3-layer mask MLP after a shared
    LayerNorm give a prediction from the raw queries and after every layer. Sizes come from
    :class:`~maskformer.model.config.TransformerConfig`."""

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
        num_levels: int = 3,
    ):
        super().__init__()
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_levels, hidden_dim)
        self.input_proj = nn.ModuleList(
            input_projection(in_channels, hidden_dim, enforce_input_proj) for _ in range(num_levels)
        )
        self.layers = nn.ModuleList(
            MaskedDecoderLayer(hidden_dim, num_heads, ffn_dim, dropout) for _ in range(num_layers)
        )
        for p in self.layers.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward(self, features: list[Tensor], mask_features: Tensor, with_aux: bool) -> list[Prediction]:
        """features: the multi-scale maps [B, C, h_l, w_l], low resolution first; mask_features [B, C_E, H/4,
        W/4] -> 1 + num_layers predictions (logits [B, N, K+1], masks [B, N, H/4, W/4]), the
        last one final; without ``with_aux`` only the final one (the earlier ones steer attention at the
        levels' resolutions only)."""
        memories, positions, sizes = [], [], []
        for i, (x, proj) in enumerate(zip(features, self.input_proj)):
            src = proj(x)
            b, c, h, w = src.shape
            sizes.append((h, w))
            positions.append(sine_position_tokens(b, h, w, c, device=src.device, dtype=src.dtype))
            memories.append(src.flatten(2).transpose(1, 2) + self.level_embed.weight[i])
        b = features[0].shape[0]
        query_pos = self.query_embed.weight.unsqueeze(0).expand(b, -1, -1)
        tgt = self.query_feat.weight.unsqueeze(0).expand(b, -1, -1)
        # Attention masks are read off mask features resized to each level: bilinear resizing is linear, so
        # this equals resizing the full-size mask logits (as the official code does) without computing them
        # for predictions nobody asks for.
        small = [F.interpolate(mask_features, size=size, mode="bilinear", align_corners=False) for size in sizes]
        predictions = []
        for i in range(len(self.layers) + 1):
            out = self.decoder_norm(tgt)
            embed = self.mask_embed(out)
            if with_aux or i == len(self.layers):
                masks = torch.einsum("bqc,bchw->bqhw", embed, mask_features)
                predictions.append(Prediction(self.class_embed(out), masks))
            if i < len(self.layers):
                level = i % len(memories)
                mask = attention_mask(torch.einsum("bqc,bchw->bqhw", embed, small[level]), sizes[level])
                tgt = self.layers[i](tgt, memories[level], positions[level], query_pos, mask)
        return predictions
