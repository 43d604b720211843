"""DETR transformer layers (post-norm): the transformer decoder and the "+6 Enc" encoder layers.

Parameter names follow DETR / the original MaskFormer (``self_attn.in_proj_weight``, ``linear1``,
``norm1``...), so official checkpoints map onto them one to one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    """Multi-head attention with nn.MultiheadAttention's parameter layout, batch-first, on fused SDPA.

    Queries, keys and values are separate inputs because DETR adds position embeddings to queries and
    keys but not to values.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        """query [B, Lq, D], key and value [B, Lk, D], mask (bool [B, Lq, Lk], True: may attend) -> [B, Lq, D]."""
        b, lq, d = query.shape
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        h = self.num_heads
        q = F.linear(query, w_q, b_q).view(b, lq, h, -1).transpose(1, 2)
        k = F.linear(key, w_k, b_k).view(b, key.shape[1], h, -1).transpose(1, 2)
        v = F.linear(value, w_v, b_v).view(b, value.shape[1], h, -1).transpose(1, 2)
        mask = mask[:, None] if mask is not None else None
        out = F.scaled_dot_product_attention(q, k, v, mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, d))


@torch.no_grad()
def attention_mask(mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Masked attention (Mask2Former): mask logits [B, N, h, w] -> bool [B, N, H*W] at ``size`` (bilinear
    resize when it differs), True where a query may attend: its mask probability is at least 0.5. A query
    whose mask is empty everywhere attends everywhere. Detached: no gradient flows through the mask.

    The one implementation of the rule, for the MaskFormer decoder's option and Mask2Former's decoder.
    """
    if tuple(mask_logits.shape[-2:]) != tuple(size):
        mask_logits = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
    attend = mask_logits.sigmoid().flatten(2) >= 0.5
    return attend | ~attend.any(-1, keepdim=True)


class EncoderLayer(nn.Module):
    """Post-norm self-attention + FFN; position embedding added to queries and keys."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = Attention(dim, num_heads, dropout)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        """src, pos: [B, L, D] -> [B, L, D]."""
        qk = src + pos
        src = self.norm1(src + self.dropout(self.self_attn(qk, qk, src)))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout(ffn))


class DecoderLayer(nn.Module):
    """Post-norm query self-attention, cross-attention to image features, FFN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = Attention(dim, num_heads, dropout)
        self.cross_attn = Attention(dim, num_heads, dropout)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor, memory_mask: Tensor | None = None
    ) -> Tensor:
        """tgt, query_pos: [B, N, D]; memory, pos: [B, L, D]; memory_mask: bool [B, N, L] or None -> [B, N, D]."""
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout(self.self_attn(q, q, tgt)))
        attended = self.cross_attn(tgt + query_pos, memory + pos, memory, memory_mask)
        tgt = self.norm2(tgt + self.dropout(attended))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout(ffn))


class TransformerEncoder(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_dim: int, num_layers: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, num_heads, ffn_dim, dropout) for _ in range(num_layers))
        _xavier_init(self)

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return src


class TransformerDecoder(nn.Module):
    """Stack of decoder layers; every layer's output goes through the shared final LayerNorm."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, num_layers: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim, num_heads, ffn_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        _xavier_init(self)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        pos: Tensor,
        query_pos: Tensor,
        memory_mask: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """Returns the normalised output of every layer, [num_layers, B, N, D]. ``memory_mask`` (masked
        attention) maps one layer's normalised output to the next layer's cross-attention mask [B, N, L];
        the first layer attends everywhere."""
        outputs = []
        mask = None
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos, mask)
            outputs.append(self.norm(tgt))
            if memory_mask is not None:
                mask = memory_mask(outputs[-1])
        return torch.stack(outputs)


def _xavier_init(module: nn.Module) -> None:
    # DETR's Transformer._reset_parameters: xavier-uniform on every matrix.
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
