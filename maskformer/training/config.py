"""Run configuration: model + data + training recipe, with the paper's recipes as presets."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ..model.config import AT_LEAST_1, FRACTION, NON_NEGATIVE, Bounds, MaskFormerConfig, YamlConfig
from ..model.presets import PRESETS, check_preset, preset, preset_dataset


@dataclass
class DataConfig:
    """Where the data is and how it is augmented.

    Formats: ``semantic`` (root/images/{split}, root/{label_dir}/{split}, a class file), ``panoptic``
    (root/images/{split}, root/panoptic_{split}.json, root/panoptic/{split}), ``ade20k``
    (ADEChallengeData2016), ``cityscapes``, ``coco_panoptic`` and ``coco_instance`` (the official layouts).

    Augmentation: ``semantic`` (MaskFormer's: shortest edge ``base_size`` times one of ``num_scales`` factors
    from ``min_scale`` to ``max_scale``, longest side at most 4 x ``base_size``; category-area crop, colour
    jitter, flip, pad),
    ``detr`` (DETR's COCO multi-scale resize and crop), ``lsj`` (Mask2Former's COCO large-scale jitter: the
    crop size times ``min_scale``-``max_scale``, crop, pad) or ``none``.
    """

    BOUNDS: ClassVar[Bounds] = {
        "ignore_value": (0, 65535), "crop_size": AT_LEAST_1, "base_size": NON_NEGATIVE, "min_scale": (1e-3, None),
        "max_scale": (1e-3, None), "num_scales": AT_LEAST_1, "single_category_max_area": FRACTION,
        "num_workers": NON_NEGATIVE, "max_val_images": NON_NEGATIVE, "check_samples": AT_LEAST_1,
    }  # fmt: skip

    format: Literal["semantic", "panoptic", "ade20k", "cityscapes", "coco_panoptic", "coco_instance"] = "ade20k"
    root: str = ""
    train_split: str = ""
    val_split: str = ""
    label_dir: str = "labels"
    class_file: str = ""
    ignore_value: int = 255
    augmentation: Literal["semantic", "detr", "lsj", "none"] = "semantic"
    crop_size: tuple[int, int] = (512, 512)
    # The shortest edge the semantic augmentation's scales multiply; 0: the crop's shorter side (ADE20K,
    # COCO-Stuff). Cityscapes and Mapillary Vistas resize from 1024 and 2048 before cropping 512 x 1024 and
    # 1280 (1024) squares.
    base_size: int = 0
    min_scale: float = 0.5
    max_scale: float = 2.0
    num_scales: int = 16
    single_category_max_area: float = 1.0
    color_jitter: bool = True
    # Loader processes; None chooses from the machine (see ``loader_workers``).
    num_workers: int | None = None
    max_val_images: int = 0  # 0 = the whole validation split
    # Before training: check "sample" (check_samples per split), "full" or "off"; problems stop the run.
    check: Literal["sample", "full", "off"] = "sample"
    check_samples: int = 64
    # A sample that fails to load during training stops the run naming its file, unless this is set:
    # then it is left out of its batch and counted (train/skipped_samples).
    skip_bad_samples: bool = False

    @property
    def kind(self) -> Literal["semantic", "panoptic", "instance"]:
        """What the format's ground truth holds: semantic labels, panoptic segments or (overlapping) instances."""
        return {"panoptic": "panoptic", "coco_panoptic": "panoptic", "coco_instance": "instance"}.get(
            self.format, "semantic"
        )


@dataclass
class TrainConfig:
    """Optimisation and engine settings. ``batch_size`` is the global batch (split over processes)."""

    BOUNDS: ClassVar[Bounds] = {
        "max_steps": AT_LEAST_1, "batch_size": AT_LEAST_1, "lr": NON_NEGATIVE, "weight_decay": NON_NEGATIVE,
        "weight_decay_norm": NON_NEGATIVE, "weight_decay_embed": NON_NEGATIVE, "backbone_lr_multiplier": NON_NEGATIVE,
        "poly_power": NON_NEGATIVE, "warmup_steps": NON_NEGATIVE, "warmup_factor": FRACTION,
        "step_milestones": AT_LEAST_1, "step_gamma": NON_NEGATIVE, "clip_grad_norm": NON_NEGATIVE,
        "num_nodes": AT_LEAST_1, "seed": NON_NEGATIVE, "val_every": AT_LEAST_1, "checkpoint_every": AT_LEAST_1,
        "log_every": AT_LEAST_1, "num_val_images": NON_NEGATIVE, "keep_checkpoints": (-1, None),
    }  # fmt: skip

    max_steps: int = 160_000
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    weight_decay_embed: float = 0.0
    backbone_lr_multiplier: float = 0.1
    schedule: Literal["poly", "step"] = "poly"
    poly_power: float = 0.9
    warmup_steps: int = 0
    warmup_factor: float = 1.0
    step_milestones: tuple[int, ...] = ()
    step_gamma: float = 0.1
    clip_grad_norm: float = 0.01
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    # Weights and activations in channels-last memory order: faster convolutions (benchmarks/RESULTS.md).
    # None: where it pays (every model but a Swin MaskFormer, see MaskFormer.prefers_channels_last).
    channels_last: bool | None = None
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    seed: int = 0
    deterministic: bool = False
    val_every: int = 5000
    checkpoint_every: int = 5000
    # Periodic checkpoints kept, the newest (-1: all); the best validation's and last.ckpt are kept besides.
    keep_checkpoints: int = 1
    log_every: int = 20
    num_val_images: int = 4
    # A non-finite loss stops the run ("stop", naming the step) or skips that step ("skip", counted).
    nonfinite_loss: Literal["stop", "skip"] = "stop"


def loader_workers(configured: int | None) -> int:
    """Data-loader processes: ``configured``, or when None one per core beyond the first two, at most 4
    (on two cores a worker process slows training steps: benchmarks/RESULTS.md)."""
    if configured is not None:
        return configured
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(4, cores - 2))


@dataclass
class RunConfig(YamlConfig):
    model: MaskFormerConfig = field(default_factory=MaskFormerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def paper_model(name: str) -> MaskFormerConfig:
    """A model preset starting, as in the papers, from its backbone's ImageNet weights (timm's copies,
    fetched once through the Hugging Face hub cache). R101c is the exception: its DeepLab stem's weights
    (detectron2's R-103.pkl) have no timm counterpart, so it starts from scratch."""
    config = preset(name)
    config.backbone.pretrained = not name.startswith("r101c")
    return config


def _ade(model: str, swin: bool = False, crop: int = 512) -> RunConfig:
    train = TrainConfig()
    if swin:
        train = TrainConfig(
            lr=6e-5, weight_decay=0.01, backbone_lr_multiplier=1.0, warmup_steps=1500, warmup_factor=1e-6
        )
    data = DataConfig(format="ade20k", crop_size=(crop, crop))
    return RunConfig(model=paper_model(model), data=data, train=train)


def _coco(model: str) -> RunConfig:
    train = TrainConfig(max_steps=554_000, batch_size=64, schedule="step", step_milestones=(369_600,))
    if model.startswith("swin"):
        train.weight_decay, train.backbone_lr_multiplier = 0.01, 1.0
    data = DataConfig(format="coco_panoptic", augmentation="detr")
    return RunConfig(model=paper_model(model), data=data, train=train)


# The other datasets' data and schedules, for both families: (format, crop (h, w), base size, ignore value,
# iterations and batch of MaskFormer's config, of Mask2Former's). Sources: MaskFormer's
# configs/{ade20k-full-847,coco-stuff-10k-171,cityscapes-19,mapillary-vistas-65,ade20k-150-panoptic}/*.yaml and
# appendix A; Mask2Former's configs/{ade20k,cityscapes,mapillary-vistas}/*/Base-*.yaml and appendix B. The
# Pascal Context rows are not the papers' (neither trains on it, neither repository has a config): they
# follow mmsegmentation's configs/_base_/datasets/pascal_context_59.py (480 crops, 16 images a batch over
# 4 GPUs, 80k iterations) with MaskFormer's optimiser, and test with the longer side at 520 (set in the model
# presets).
_DATASET_RECIPES: dict[str, tuple] = {
    "ade_full": ("semantic", (512, 512), 0, 65535, (200_000, 16), None),
    "coco_stuff": ("semantic", (640, 640), 0, 255, (60_000, 32), None),
    "cityscapes": ("cityscapes", (512, 1024), 1024, 255, (90_000, 16), (90_000, 16)),
    "vistas": ("semantic", (1280, 1280), 2048, 255, (300_000, 16), (300_000, 16)),
    "ade_panoptic": ("panoptic", (640, 640), 0, 255, (720_000, 16), (160_000, 16)),
    "ade_instance": ("coco_instance", (640, 640), 0, 255, None, (160_000, 16)),
    "cityscapes_panoptic": ("panoptic", (512, 1024), 1024, 255, None, (90_000, 16)),
    "cityscapes_instance": ("coco_instance", (512, 1024), 1024, 255, None, (90_000, 16)),
    "vistas_panoptic": ("panoptic", (1024, 1024), 2048, 255, None, (300_000, 16)),
    "pascal_context_59": ("semantic", (480, 480), 0, 255, (80_000, 16), None),
    "pascal_context_459": ("semantic", (480, 480), 0, 65535, (80_000, 16), None),
}


def _dataset_recipe(name: str, dataset: str, family: str) -> RunConfig:
    """A dataset's recipe (:data:`_DATASET_RECIPES`) with the family's optimiser: MaskFormer's (AdamW 1e-4, weight
    decay 1e-4) or Mask2Former's (weight decay 0.05); both backbone x0.1, poly 0.9, clipping 0.01."""
    data_format, crop, base, ignore, mf_schedule, m2f_schedule = _DATASET_RECIPES[dataset]
    schedule = m2f_schedule if family == "mask2former" else mf_schedule
    steps, batch = schedule
    train = TrainConfig(max_steps=steps, batch_size=batch, weight_decay=0.05 if family == "mask2former" else 1e-4)
    data = DataConfig(format=data_format, crop_size=crop, base_size=base, ignore_value=ignore)
    if family == "mask2former" and dataset == "vistas":
        data.crop_size = (1024, 1024)  # MaskFormer's is 1280
    if dataset == "coco_stuff":
        data.max_scale, data.num_scales = 1.5, 11  # MIN_SIZE_TRAIN int(x * 0.1 * 640) for x in range(5, 16)
    return RunConfig(model=paper_model(name), data=data, train=train)


RECIPES = {
    "r50": lambda: _ade("r50"),
    "r101": lambda: _ade("r101"),
    "r101c": lambda: _ade("r101c"),
    "swin_t": lambda: _ade("swin_t", swin=True),
    "swin_s": lambda: _ade("swin_s", swin=True),
    "swin_b": lambda: _ade("swin_b", swin=True, crop=640),
    "swin_l": lambda: _ade("swin_l", swin=True, crop=640),
    "r50+6enc": lambda: _coco("r50+6enc"),
    "r101+6enc": lambda: _coco("r101+6enc"),
    "swin_t_coco": lambda: _coco("swin_t_coco"),
    "swin_s_coco": lambda: _coco("swin_s_coco"),
    "swin_b_coco": lambda: _coco("swin_b_coco"),
    "swin_l_coco": lambda: _coco("swin_l_coco"),
}


def _mask2former(name: str) -> RunConfig:
    """Mask2Former's recipe (mask2former-facts.md): AdamW lr 1e-4, weight decay 0.05, backbone x0.1, gradient
    clipping 0.01, batch 16; ADE20K semantic 160k iterations of 512 crops (640 for the Swin-B/L "res640" configs),
    poly 0.9; COCO panoptic and instance 50 epochs (368,750 iterations; Swin-L 100 epochs, 737,500) of large-scale
    jitter (scale 0.1-2.0, 1024 crop), the learning rate x0.1 at 88.9% and 96.3% of them; the other datasets as
    :data:`_DATASET_RECIPES` says."""
    dataset = preset_dataset(name)
    if dataset not in ("ade", "coco", "coco_instance"):
        return _dataset_recipe(name, dataset, "mask2former")
    model = paper_model(name)
    train = TrainConfig(lr=1e-4, weight_decay=0.05, backbone_lr_multiplier=0.1, batch_size=16, clip_grad_norm=0.01)
    if dataset == "ade":
        crop = 640 if model.inference.test_shortest_edge == 640 else 512
        train.max_steps, data = 160_000, DataConfig(format="ade20k", crop_size=(crop, crop))
    else:
        # configs/coco/*/Base-COCO-*.yaml: detectron2's default WarmupMultiStepLR (its 10 warm-up steps at
        # factor 1.0 change nothing); the Swin-L configs double the schedule.
        long = name.startswith("m2f_swin_l_")
        train.max_steps = 737_500 if long else 368_750
        train.schedule = "step"
        train.step_milestones = (655_556, 710_184) if long else (327_778, 355_092)
        data = DataConfig(
            format="coco_panoptic" if dataset == "coco" else "coco_instance",
            augmentation="lsj",
            crop_size=(1024, 1024),
            min_scale=0.1,
            max_scale=2.0,
        )
    return RunConfig(model=model, data=data, train=train)


def finetune_recipe(model: MaskFormerConfig, source: str) -> RunConfig:
    """Fine-tuning the trained model ``source`` (whose config is ``model``) on other data, as ``maskformer train
    model.weights=SOURCE`` does without --preset or --config: the source's architecture, normalisation and
    test sizes; training crops of its test size; the family's optimiser (AdamW 1e-4, weight decay 1e-4 for
    MaskFormer and 0.05 for Mask2Former, gradient clipping 0.01), the backbone at x0.1 as in the papers'
    recipes, 100 warm-up steps from 1% while the new class head settles, poly 0.9 over 2000 steps of 8 images.
    Overrides change any of it (README "Fine-tune on your data")."""
    model = copy.deepcopy(model)
    model.weights = source
    model.backbone.pretrained, model.backbone.weights = False, ""
    crop = model.inference.test_shortest_edge
    train = TrainConfig(
        max_steps=2000, batch_size=8, lr=1e-4, weight_decay=0.05 if model.family == "mask2former" else 1e-4,
        backbone_lr_multiplier=0.1, warmup_steps=100, warmup_factor=0.01, val_every=500, checkpoint_every=500,
    )  # fmt: skip
    return RunConfig(model=model, data=DataConfig(crop_size=(crop, crop)), train=train)


def recipe(name: str) -> RunConfig:
    """The paper's training recipe for a model preset: data format and augmentation, schedule and optimiser
    (see :mod:`maskformer.model.presets` for the names)."""
    if name.startswith("m2f_") and name in PRESETS:
        return _mask2former(name)
    if name in PRESETS and preset_dataset(name) in _DATASET_RECIPES:
        return _dataset_recipe(name, preset_dataset(name), "maskformer")
    if name not in RECIPES:
        check_preset(name)
    return copy.deepcopy(RECIPES[name]())
