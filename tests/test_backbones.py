"""Backbones: the original's Swin against timm's, any timm model, frozen BN, odd input sizes."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from maskformer.model import BackboneConfig, MaskFormer
from maskformer.model import backbone as backbone_module
from maskformer.model.backbone import TimmBackbone, build_backbone
from maskformer.model.swin import SwinBackbone

from .conftest import tiny_config


def test_swin_loads_timm_weights_and_equals_timm_on_whole_windows(monkeypatch):
    """At sizes made of whole windows there is nothing to pad, so the original's Swin and timm's agree.

    (448, not 224: at 224 the last stage is one 7 x 7 window, where timm turns the shift off and the original
    keeps it.)"""
    torch.manual_seed(0)
    reference = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=448).eval()
    requested = []

    def fake_create_model(name, pretrained=False, **kwargs):
        requested.append((name, pretrained))
        return reference

    monkeypatch.setattr(backbone_module.timm, "create_model", fake_create_model)
    config = BackboneConfig(type="swin", name="swin_tiny_patch4_window7_224.ms_in1k", pretrained=True)
    ours = build_backbone(config).eval()
    assert requested == [("swin_tiny_patch4_window7_224.ms_in1k", True)]
    x = torch.randn(1, 3, 448, 448)
    with torch.no_grad():
        expected = reference.patch_embed(x)
        y = ours.patch_embed(x)
        for ref_stage, stage in zip(reference.layers, ours.layers):
            expected, y = ref_stage(expected), stage(y)
            assert torch.allclose(expected, y, atol=1e-5)


@pytest.mark.parametrize("size", [(1, 1), (33, 45), (65, 7), (224, 97)])
def test_swin_takes_any_input_size(size):
    swin = SwinBackbone(embed_dim=32, depths=(1, 2, 1, 1), num_heads=(1, 2, 4, 8), drop_path_rate=0.1).eval()
    with torch.no_grad():
        feats = swin(torch.randn(2, 3, *size))
    h, w = size
    for i, f in enumerate(feats):
        stride = 4 * 2**i
        assert f.shape == (2, 32 * 2**i, -(-h // stride), -(-w // stride))
        assert torch.isfinite(f).all()


def test_shifted_windows_make_no_subnormal_floats():
    """The shift mask's masked weights are exact zeros, not exp(-100) of a row's largest: those were subnormal
    floats, which made the next matrix product 60 times slower on an Intel CPU."""
    torch.manual_seed(0)
    swin = SwinBackbone(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)).eval()
    subnormal = []

    def count(module, inputs, output):
        x = inputs[0]
        subnormal.append(int(((x != 0) & (x.abs() < torch.finfo(x.dtype).tiny)).sum()))

    for module in swin.modules():
        if isinstance(module, nn.Linear):
            module.register_forward_hook(count)
    with torch.no_grad():
        swin(torch.randn(1, 3, 200, 264))
    assert len(subnormal) > 8 and sum(subnormal) == 0, subnormal


def test_any_timm_backbone():
    backbone = TimmBackbone("convnext_atto", norm="bn")
    assert backbone.channels == [40, 80, 160, 320] and backbone.strides == [4, 8, 16, 32]
    config = tiny_config(backbone="convnext_atto")
    model = MaskFormer(config).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 64))
    assert out.masks.shape == (1, 10, 24, 16)


def test_dilated_timm_backbone():
    """timm's output_stride=16 keeps res5 at stride 16: a finer grid for the transformer decoder."""
    backbone = TimmBackbone("resnet18", norm="bn", output_stride=16)
    assert backbone.strides == [4, 8, 16, 16]
    config = tiny_config(backbone="resnet18")
    config.backbone.timm_kwargs = {"output_stride": 16}
    model = MaskFormer(config).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert out.masks.shape == (1, 10, 16, 24)


def test_backbone_without_stride_4_is_refused():
    with pytest.raises(ValueError, match="vit_tiny_patch16_224.*strides"):
        TimmBackbone("vit_tiny_patch16_224", img_size=64)


def test_resnet_norm_options_and_stride_in_1x1():
    frozen = TimmBackbone("resnet18")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert sum(p.numel() for p in frozen.parameters()) < sum(
        p.numel() for p in TimmBackbone("resnet18", norm="bn").parameters()
    )
    msra = TimmBackbone("resnet50", stride_in_1x1=True)
    block = msra.body.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    feats = msra(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]


def test_frozen_batch_norm_is_torchvisions_map_in_one_pass():
    """The frozen backbone's norms are the one-pass FrozenBatchNorm2d (no other norm left), with torchvision's
    buffer names and values (float64: the two orders of the same affine map agree to rounding) in both memory
    orders; a BatchNorm2d state dict loads into it."""
    from torchvision.ops import FrozenBatchNorm2d as Reference

    from maskformer.model.backbone import FrozenBatchNorm2d

    frozen = TimmBackbone("resnet18")
    norms = [m for m in frozen.modules() if "Norm" in type(m).__name__]
    assert norms and all(type(m) is FrozenBatchNorm2d for m in norms)
    FrozenBatchNorm2d(8).load_state_dict(nn.BatchNorm2d(8).state_dict())  # its step counter dropped
    reference = Reference(8).double()
    for name in ("weight", "bias", "running_mean"):
        getattr(reference, name).copy_(torch.randn(8))
    reference.running_var.copy_(torch.rand(8) + 0.1)
    fused = FrozenBatchNorm2d(8).double()
    fused.load_state_dict(reference.state_dict())
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    for layout in (torch.contiguous_format, torch.channels_last):
        y = x.contiguous(memory_format=layout)
        assert (fused(y) - reference(y)).abs().max() <= 1e-12


def test_deep_stem_r101c():
    config = BackboneConfig(type="timm", name="resnet101", timm_kwargs={"stem_type": "deep", "stem_width": 64})
    with torch.device("meta"):
        backbone = build_backbone(config)
    assert [c.out_channels for c in backbone.body.conv1 if isinstance(c, nn.Conv2d)] == [64, 64, 128]


def test_aux_outputs_and_training_mode(tiny_model):
    tiny_model.train()
    out = tiny_model(torch.randn(2, 3, 64, 64))
    assert len(out.aux) == 2  # 3 decoder layers
    for aux in out.aux:
        assert aux.logits.shape == (2, 10, 6) and aux.masks.shape == (2, 10, 16, 16)
    tiny_model.eval()
    assert tiny_model(torch.randn(1, 3, 64, 64)).aux == []
    assert len(tiny_model(torch.randn(1, 3, 64, 64), with_aux=True).aux) == 2
