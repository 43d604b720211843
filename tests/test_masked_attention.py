"""Mask2Former's masked cross-attention option: masked keys have no influence, masks come from the previous
layer's prediction, empty masks attend everywhere, and the first layer is the unmasked one."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskformer.model.heads import MaskFormerHead
from maskformer.model.transformer import Attention, attention_mask


def test_masked_keys_have_no_influence():
    torch.manual_seed(0)
    attn = Attention(16, 4).eval()
    q, k = torch.randn(2, 5, 16), torch.randn(2, 9, 16)
    mask = torch.rand(2, 5, 9) > 0.5
    mask[..., 0] = True  # every query may attend somewhere
    out = attn(q, k, k, mask)
    changed = k.clone()
    hidden = ~mask.any(1)  # keys no query may attend to
    changed[hidden] += 10 * torch.randn(int(hidden.sum()), 16)
    assert hidden.any()
    assert torch.allclose(attn(q, changed, changed, mask), out, atol=1e-6)
    assert torch.allclose(attn(q, k, k, torch.ones(2, 5, 9, dtype=torch.bool)), attn(q, k, k), atol=1e-6)


def _head(masked: bool) -> MaskFormerHead:
    torch.manual_seed(1)
    return MaskFormerHead(32, 4, hidden_dim=32, num_queries=6, num_heads=4, ffn_dim=64, num_layers=3, dropout=0.0,
                          mask_dim=16, enforce_input_proj=False, masked_attention=masked).eval()  # fmt: skip


def test_attention_mask_is_the_thresholded_resized_mask_prediction():
    head = _head(True)
    hs = torch.randn(2, 6, 32)
    mask_features = torch.randn(2, 16, 32, 32)
    small = F.interpolate(mask_features, size=(4, 4), mode="bilinear", align_corners=False)
    # The MaskFormer decoder resizes E_pixel first; Mask2Former resizes the full-size mask logits: the same
    # linear map.
    attend = attention_mask(torch.einsum("bqc,bchw->bqhw", head.mask_embed(hs), small), (4, 4))
    full = torch.einsum("bqc,bchw->bqhw", head.mask_embed(hs), mask_features)
    logits = F.interpolate(full, size=(4, 4), mode="bilinear", align_corners=False).flatten(2)
    clear = logits.abs() > 1e-4
    nonempty = (logits >= 0).any(-1)
    assert torch.equal(attend[clear & nonempty[..., None]], (logits >= 0)[clear & nonempty[..., None]])
    assert attend[~nonempty].all()  # a query with an empty mask attends everywhere
    assert not attend.requires_grad


def test_first_layer_is_unmasked_and_later_layers_differ():
    features, mask_features = torch.randn(2, 32, 4, 4), torch.randn(2, 16, 16, 16)
    with torch.no_grad():
        plain = _head(False)([features], mask_features, with_aux=True)
        masked = _head(True)([features], mask_features, with_aux=True)
    assert len(plain) == len(masked) == 3
    for key in ("logits", "masks"):
        assert torch.allclose(getattr(plain[0], key), getattr(masked[0], key), atol=1e-6)
    assert not torch.allclose(plain[-1].logits, masked[-1].logits, atol=1e-3)
