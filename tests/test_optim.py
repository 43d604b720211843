"""The recipe's optimiser settings: parameter groups and learning-rate schedules."""

from __future__ import annotations

import pytest
import torch

from maskformer.model import MaskFormer
from maskformer.training.config import TrainConfig, recipe
from maskformer.training.optim import build_optimizer, lr_lambda

from .conftest import tiny_config


def test_parameter_groups():
    model = MaskFormer(tiny_config())
    cfg = TrainConfig(lr=1e-4, weight_decay=0.05, backbone_lr_multiplier=0.1)
    optimizer, _ = build_optimizer(model, cfg)
    setting = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    assert len(setting) == sum(1 for p in model.parameters() if p.requires_grad)
    backbone = model.backbone
    assert setting[id(backbone.layers[0].blocks[0].attn.qkv.weight)] == pytest.approx((1e-5, 0.05))
    assert setting[id(backbone.layers[0].blocks[0].attn.relative_position_bias_table)] == pytest.approx((1e-5, 0.0))
    assert setting[id(backbone.norms[0].weight)] == pytest.approx((1e-5, 0.0))
    assert setting[id(model.predictor.query_embed.weight)] == pytest.approx((1e-4, 0.0))
    assert setting[id(model.pixel_decoder.output_convs[0].norm.weight)] == pytest.approx((1e-4, 0.0))
    assert setting[id(model.predictor.class_embed.weight)] == pytest.approx((1e-4, 0.05))


def test_schedules():
    poly = lr_lambda(TrainConfig(max_steps=100, poly_power=0.9))
    assert poly(0) == 1.0 and poly(50) == pytest.approx(0.5**0.9) and poly(100) == 0.0
    warm = lr_lambda(TrainConfig(max_steps=100, warmup_steps=10, warmup_factor=1e-6))
    assert warm(0) == pytest.approx(1e-6) and warm(5) == pytest.approx((0.5 + 0.5e-6) * 0.95**0.9)
    step = lr_lambda(recipe("r50+6enc").train)
    assert step(369_599) == 1.0 and step(369_600) == pytest.approx(0.1)
    swin = recipe("swin_t").train
    assert (swin.lr, swin.weight_decay, swin.backbone_lr_multiplier, swin.warmup_steps) == (6e-5, 0.01, 1.0, 1500)


def test_scheduler_steps_the_optimizer_learning_rates():
    model = MaskFormer(tiny_config())
    optimizer, scheduler = build_optimizer(model, TrainConfig(max_steps=4, lr=1.0, backbone_lr_multiplier=0.5))
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    lrs = sorted({g["lr"] for g in optimizer.param_groups})
    assert lrs == pytest.approx([0.5 * 0.5**0.9, 0.5**0.9])
    assert isinstance(optimizer, torch.optim.AdamW)


def test_mask2former_recipes_are_the_papers():
    """mask2former-facts.md: AdamW 1e-4, weight decay 0.05, backbone x0.1, poly 0.9, batch 16; ADE20K 160k
    iterations of 512 crops, COCO 50 epochs of large-scale jitter (0.1-2.0, 1024), Cityscapes 90k of 512 x 1024."""
    for name in ("m2f_r50_ade", "m2f_swin_t_coco", "m2f_r50_coco_instance", "m2f_swin_l_cityscapes"):
        t = recipe(name).train
        assert (t.lr, t.weight_decay, t.backbone_lr_multiplier, t.schedule, t.poly_power, t.batch_size) == (
            1e-4,
            0.05,
            0.1,
            "poly",
            0.9,
            16,
        ), name
    ade, city = recipe("m2f_r50_ade"), recipe("m2f_swin_l_cityscapes")
    assert (ade.train.max_steps, ade.data.crop_size, ade.data.format) == (160_000, (512, 512), "ade20k")
    assert (city.train.max_steps, city.data.crop_size) == (90_000, (512, 1024))
    for name, data_format in (("m2f_r50_coco", "coco_panoptic"), ("m2f_swin_b_coco_instance", "coco_instance")):
        coco = recipe(name)
        # 50 epochs of COCO train2017 (118k images) at batch 16: 368,750 iterations.
        assert coco.train.max_steps == 368_750 and coco.data.format == data_format
        d = coco.data
        assert (d.augmentation, d.crop_size, d.min_scale, d.max_scale) == ("lsj", (1024, 1024), 0.1, 2.0)
    with pytest.raises(KeyError, match="vistas"):
        recipe("m2f_r50_vistas")
