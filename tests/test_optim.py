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
