"""The recipe's optimiser settings: parameter groups and learning-rate schedules."""

from __future__ import annotations

import pytest
import torch

from maskformer.model import MaskFormer, Segmenter
from maskformer.training import DataConfig, RunConfig
from maskformer.training.config import TrainConfig, recipe
from maskformer.training.module import MaskFormerModule
from maskformer.training.optim import build_optimizer, lr_lambda
from tests.helpers import small_config

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
    """mask2former-facts.md and the official configs: AdamW 1e-4, weight decay 0.05, backbone x0.1, batch 16;
    ADE20K 160k poly iterations of 512 crops, Cityscapes 90k of 512 x 1024; COCO 50 epochs of large-scale jitter
    (0.1-2.0, 1024) with detectron2's default step schedule (configs/coco/*/Base-COCO-*.yaml: STEPS (327778,
    355092), MAX_ITER 368750; the Swin-L configs 100 epochs, (655556, 710184), 737500)."""
    for name in ("m2f_r50_ade", "m2f_swin_t_coco", "m2f_r50_coco_instance", "m2f_swin_l_cityscapes"):
        t = recipe(name).train
        optimiser = (t.lr, t.weight_decay, t.backbone_lr_multiplier, t.batch_size, t.clip_grad_norm)
        assert optimiser == (1e-4, 0.05, 0.1, 16, 0.01), name
        assert t.schedule == ("step" if "coco" in name else "poly"), name
    ade, city = recipe("m2f_r50_ade"), recipe("m2f_swin_l_cityscapes")
    assert (ade.train.max_steps, ade.data.crop_size, ade.data.format) == (160_000, (512, 512), "ade20k")
    assert (city.train.max_steps, city.data.crop_size, city.data.base_size) == (90_000, (512, 1024), 1024)
    for name, data_format in (("m2f_r50_coco", "coco_panoptic"), ("m2f_swin_b_coco_instance", "coco_instance")):
        coco = recipe(name)
        assert coco.train.max_steps == 368_750 and coco.data.format == data_format
        assert coco.train.step_milestones == (327_778, 355_092)
        d = coco.data
        assert (d.augmentation, d.crop_size, d.min_scale, d.max_scale) == ("lsj", (1024, 1024), 0.1, 2.0)
    swin_l = recipe("m2f_swin_l_coco").train
    assert (swin_l.max_steps, swin_l.step_milestones) == (737_500, (655_556, 710_184))
    step = lr_lambda(swin_l)
    assert step(655_555) == 1.0 and step(655_556) == pytest.approx(0.1) and step(710_184) == pytest.approx(0.01)


# preset: (format, crop, base size, ignore, iterations, batch, weight decay, classes, queries, test short / long,
# object mask threshold), written out from each official config (MaskFormer's configs/<dataset>/Base-*.yaml and
# maskformer_R*.yaml; Mask2Former's configs/<dataset>/<task>-segmentation/Base-*.yaml and swin/*.yaml).
OFFICIAL = {
    "r50_ade_full": ("semantic", (512, 512), 0, 65535, 200_000, 16, 1e-4, 847, 100, 512, 2048, None),
    "r101c_coco_stuff": ("semantic", (640, 640), 0, 255, 60_000, 32, 1e-4, 171, 100, 640, 2560, None),
    "r101_cityscapes": ("cityscapes", (512, 1024), 1024, 255, 90_000, 16, 1e-4, 19, 100, 1024, 2048, None),
    "r50_vistas": ("semantic", (1280, 1280), 2048, 255, 300_000, 16, 1e-4, 65, 100, 2048, 2048, None),
    "r50_ade_panoptic": ("panoptic", (640, 640), 0, 255, 720_000, 16, 1e-4, 150, 100, 640, 2560, 0.7),
    "m2f_r50_ade_panoptic": ("panoptic", (640, 640), 0, 255, 160_000, 16, 0.05, 150, 100, 640, 2560, 0.8),
    "m2f_swin_l_ade_instance": ("coco_instance", (640, 640), 0, 255, 160_000, 16, 0.05, 100, 200, 640, 2560, 0.8),
    "m2f_r50_cityscapes_panoptic": ("panoptic", (512, 1024), 1024, 255, 90_000, 16, 0.05, 19, 100, 1024, 2048, 0.8),
    "m2f_swin_l_cityscapes_instance": (
        "coco_instance", (512, 1024), 1024, 255, 90_000, 16, 0.05, 8, 200, 1024, 2048, 0.8,
    ),
    "m2f_swin_l_cityscapes": ("cityscapes", (512, 1024), 1024, 255, 90_000, 16, 0.05, 19, 100, 1024, 2048, 0.8),
    "m2f_swin_l_vistas": ("semantic", (1024, 1024), 2048, 255, 300_000, 16, 0.05, 65, 100, 2048, 2048, 0.0),
    "m2f_swin_l_vistas_panoptic": ("panoptic", (1024, 1024), 2048, 255, 300_000, 16, 0.05, 65, 200, 2048, 2048, 0.0),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_dataset_recipes_are_the_official_configs(name):
    run = recipe(name)
    d, t, m = run.data, run.train, run.model
    got = (d.format, d.crop_size, d.base_size, d.ignore_value, t.max_steps, t.batch_size, t.weight_decay)
    got += (m.num_classes, m.transformer.num_queries, m.inference.test_shortest_edge, m.inference.test_max_size)
    expected = OFFICIAL[name]
    assert got == expected[:-1]
    if expected[-1] is not None:
        assert m.inference.object_mask_threshold == expected[-1]
    assert (t.lr, t.backbone_lr_multiplier, t.schedule, t.clip_grad_norm) == (1e-4, 0.1, "poly", 0.01)
    # ImageNet weights, as every paper config starts from; R101c's DeepLab stem has no timm weights.
    assert m.backbone.pretrained == (not name.startswith("r101c"))
    if "cityscapes" in name and m.backbone.type == "timm" and name.startswith("m2f_"):
        assert m.backbone.norm == "syncbn"


def test_coco_stuff_scales_are_the_config_list():
    """MIN_SIZE_TRAIN: [int(x * 0.1 * 640) for x in range(5, 16)], at most 2560; the paper says 0.5-2.0."""
    from maskformer.data.transforms import ResizeShortestEdge, semantic_train_transform

    d = recipe("r50_coco_stuff").data
    transform = semantic_train_transform(d.crop_size, d.base_size, d.min_scale, d.max_scale, d.num_scales)
    (resize,) = [t for t in transform.transforms if isinstance(t, ResizeShortestEdge)]
    assert resize.short_edges == [int(x * 0.1 * 640) for x in range(5, 16)] and resize.max_size == 2560
    city = recipe("r101_cityscapes").data
    transform = semantic_train_transform(city.crop_size, city.base_size, city.min_scale, city.max_scale)
    (resize,) = [t for t in transform.transforms if isinstance(t, ResizeShortestEdge)]
    assert resize.short_edges == [int(x * 0.1 * 1024) for x in range(5, 21)] and resize.max_size == 4096


def _official_two_stage(step: int, vit: bool, warmup: tuple[int, int], total: int, power: float = 0.9) -> float:
    """The official TwoStageWarmupPolySchedule.get_lr (training/two_stage_warmup_poly_schedule.py) for one
    parameter group of base rate 1, restated."""
    non_vit_warmup, vit_warmup = warmup
    if not vit:
        if non_vit_warmup > 0 and step < non_vit_warmup:
            return step / non_vit_warmup
        adjusted = max(0, step - non_vit_warmup)
        return (1 - adjusted / max(1, total - non_vit_warmup)) ** power
    if step < non_vit_warmup:
        return 0
    if step < non_vit_warmup + vit_warmup:
        return (step - non_vit_warmup) / vit_warmup
    adjusted = max(0, step - non_vit_warmup - vit_warmup)
    return (1 - adjusted / max(1, total - non_vit_warmup - vit_warmup)) ** power


def test_eomt_recipes_warm_up_in_the_official_two_stages():
    """EoMT's recipes: the new parameters warm up over 500 steps while the ViT's wait, then the ViT's over 1000;
    each decays by poly 0.9 afterwards; equal to the official schedule at every step of a recipe. The ViT's
    parameters (and only they) follow the second stage, with the family's layer-wise rates."""
    train = recipe("eomt_large_ade").train
    assert (train.schedule, train.warmup_steps, train.backbone_warmup_steps, train.max_steps) == (
        "two_stage_poly",
        500,
        1000,
        32_600,
    )
    for vit in (False, True):
        factor = lr_lambda(train, backbone=vit)
        for step in range(0, train.max_steps + 1, 7):
            assert factor(step) == pytest.approx(_official_two_stage(step, vit, (500, 1000), 32_600), abs=1e-12)
    model = Segmenter.from_config(small_config("eomt"))
    cfg = TrainConfig(lr=1e-3, max_steps=30, schedule="two_stage_poly", warmup_steps=5, backbone_warmup_steps=7)
    optimizer, scheduler = build_optimizer(model, cfg)
    vit_params = {id(p) for g in optimizer.param_groups if g["backbone"] for p in g["params"]}
    assert vit_params == {id(p) for p in model.backbone.parameters()}
    assert len({g["initial_lr"] for g in optimizer.param_groups if g["backbone"]}) > 1  # layer-wise decay
    for step in range(31):
        for g in optimizer.param_groups:
            expected = g["initial_lr"] * _official_two_stage(step, g["backbone"], (5, 7), 30)
            assert g["lr"] == pytest.approx(expected, abs=1e-15)
        optimizer.step()
        scheduler.step()


def test_eomt_recipes_augment_as_the_official_datasets_do():
    """The official datasets' transform (datasets/*.py of tue-mps/eomt): scale jitter of the image size 0.1-2.0
    (0.5-2.0 for ADE20K and Cityscapes semantic), colour jitter for ADE20K (semantic and panoptic) and
    Cityscapes only; the scale_jitter augmentation, which pads with black (tests/test_transforms.py)."""
    expected = {
        "eomt_large_ade": (512, 0.5, True), "eomt_large_ade_panoptic": (640, 0.1, True),
        "eomt_large_cityscapes": (1024, 0.5, True), "eomt_large_coco": (640, 0.1, False),
        "eomt_large_coco_instance_1280": (1280, 0.1, False), "eomt_small_coco_2x_dinov3": (640, 0.1, False),
    }  # fmt: skip
    for name, (size, low, jitter) in expected.items():
        d = recipe(name).data
        assert (d.augmentation, d.crop_size, d.min_scale, d.max_scale, d.color_jitter) == (
            "scale_jitter",
            (size, size),
            low,
            2.0,
            jitter,
        ), name


def test_the_update_is_fused_except_under_float16_loss_scaling():
    """AdamW takes its fused kernel on the CPU in float32 and bf16-mixed; not under 16-mixed, whose GradScaler
    must unscale the gradients before clipping (a fused optimizer unscales inside its step)."""
    model = MaskFormer(tiny_config())
    for precision, fused in (("32-true", True), ("bf16-mixed", True), ("16-mixed", False)):
        optimizer, _ = build_optimizer(model, TrainConfig(precision=precision))
        assert bool(optimizer.defaults["fused"]) == fused, precision


def test_the_module_clips_the_whole_gradient_norm_for_a_fused_optimizer():
    """The training module clips as Lightning's own hook would (the whole model's norm to the trainer's value),
    for the fused optimizer too, which Lightning's mixed-precision plugin refuses to clip."""
    torch.manual_seed(0)
    config = RunConfig(model=tiny_config(), data=DataConfig(root="unused"), train=TrainConfig(precision="bf16-mixed"))
    module = MaskFormerModule(config)
    optimizer, _ = build_optimizer(module.model, config.train)
    params = [p for p in module.model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    before = [p.grad.clone() for p in params]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in before]))
    module.configure_gradient_clipping(optimizer, 0.01, "norm")
    scale = 0.01 / (float(norm) + 1e-6)  # torch's clip_grad_norm_ factor
    for p, g in zip(params, before):
        torch.testing.assert_close(p.grad, g * scale)
    module.configure_gradient_clipping(optimizer, None, None)  # no clipping configured: gradients as they are
    for p, g in zip(params, before):
        torch.testing.assert_close(p.grad, g * scale)
