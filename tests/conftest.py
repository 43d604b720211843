"""Shared fixtures: randomly initialised transformers MaskFormer checkpoints saved locally (no downloads)."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from maskformer.model import (
    BackboneConfig,
    Mask2FormerConfig,
    MaskFormer,
    MaskFormerConfig,
    PixelDecoderConfig,
    TransformerConfig,
)

NUM_CLASSES = 150


def randomize_norms(model: nn.Module, generator: torch.Generator) -> None:
    """Give every norm layer non-trivial affine parameters and statistics, so a weight mapped to the wrong
    place changes the outputs."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(0.2 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(1 + 0.5 * torch.rand(module.running_var.shape, generator=generator))
            if isinstance(module, nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))


def build_hf_model(backbone: str, seed: int = 0):
    """A randomly initialised transformers MaskFormerForInstanceSegmentation (Swin-T or ResNet-50)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    if backbone == "swin":
        bb = transformers.SwinConfig(
            embed_dim=96,
            depths=[2, 2, 6, 2],
            num_heads=[3, 6, 12, 24],
            window_size=7,
            drop_path_rate=0.3,
            out_features=["stage1", "stage2", "stage3", "stage4"],
        )
    else:
        bb = transformers.ResNetConfig(
            depths=[3, 4, 6, 3],
            hidden_sizes=[256, 512, 1024, 2048],
            layer_type="bottleneck",
            out_features=["stage1", "stage2", "stage3", "stage4"],
        )
    id2label = {i: f"class_{i}" for i in range(NUM_CLASSES)}
    config = transformers.MaskFormerConfig(
        backbone_config=bb, num_labels=NUM_CLASSES, id2label=id2label, label2id={v: k for k, v in id2label.items()}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.MaskFormerForInstanceSegmentation(config)
    randomize_norms(model, torch.Generator().manual_seed(seed + 1))
    return model.eval()


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory) -> dict[str, tuple[Path, nn.Module]]:
    """{"swin": (folder, model), "r50": (folder, model)} saved with transformers' save_pretrained."""
    out = {}
    for name in ("swin", "r50"):
        model = build_hf_model(name)
        folder = tmp_path_factory.mktemp(f"hf_{name}")
        model.save_pretrained(folder)
        out[name] = (folder, model)
    return out


def tiny_config(num_classes: int = 5, backbone: str = "swin", queries: int = 10) -> MaskFormerConfig:
    """A small but complete MaskFormer for fast tests."""
    if backbone == "swin":
        bb = BackboneConfig(
            type="swin",
            name="",
            embed_dim=32,
            depths=(1, 1, 2, 1),
            num_heads=(1, 2, 4, 8),
            window_size=7,
            drop_path_rate=0.0,
        )
    else:
        bb = BackboneConfig(type="timm", name=backbone)
    return MaskFormerConfig(
        num_classes=num_classes,
        backbone=bb,
        pixel_decoder=PixelDecoderConfig(conv_dim=64, mask_dim=64),
        transformer=TransformerConfig(hidden_dim=64, num_queries=queries, num_heads=4, ffn_dim=128, num_layers=3),
    )


def tiny_m2f_config(num_classes: int = 5, queries: int = 10) -> Mask2FormerConfig:
    """A small but complete Mask2Former (MSDeformAttn pixel decoder, masked-attention decoder) for fast tests."""
    base = Mask2FormerConfig()
    return Mask2FormerConfig(
        num_classes=num_classes,
        backbone=tiny_config().backbone,
        pixel_decoder=dataclasses.replace(
            base.pixel_decoder, conv_dim=64, mask_dim=64, encoder_layers=2, encoder_heads=4, encoder_ffn_dim=128
        ),
        transformer=dataclasses.replace(
            base.transformer, hidden_dim=64, num_queries=queries, num_heads=4, ffn_dim=128, num_layers=3
        ),
        loss=dataclasses.replace(base.loss, num_points=256),
    )


@pytest.fixture
def tiny_model() -> MaskFormer:
    torch.manual_seed(0)
    return MaskFormer(tiny_config()).eval()
