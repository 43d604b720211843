"""Run configuration: model + data + training recipe, with the paper's recipes as presets."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ..model.config import (
    AT_LEAST_1,
    FRACTION,
    NON_NEGATIVE,
    Bounds,
    ModelConfig,
    YamlConfig,
    config_from_dict,
    to_plain,
)
from ..model.families import family_of
from ..model.presets import check_preset, preset, preset_dataset


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
    crop size times ``min_scale``-``max_scale``, crop, pad with grey), ``scale_jitter`` (EoMT's, on torchvision's
    ScaleJitter: its colour jitter where ``color_jitter``, flip, the same scale jitter, pad with black, crop;
    drawn again when no target is left) or ``none``.
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
    augmentation: Literal["semantic", "detr", "lsj", "scale_jitter", "none"] = "semantic"
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
        "backbone_warmup_steps": NON_NEGATIVE,
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
    # "poly" and "step" (detectron2's): a decay over the whole run times a linear warm-up from warmup_factor
    # over warmup_steps. "two_stage_poly" (EoMT's official schedule): the parameters outside the backbone warm
    # up from 0 over warmup_steps, the backbone's stay at 0 until then and warm up over backbone_warmup_steps;
    # each then decays by poly over the steps left after its warm-up.
    schedule: Literal["poly", "step", "two_stage_poly"] = "poly"
    poly_power: float = 0.9
    warmup_steps: int = 0
    warmup_factor: float = 1.0
    backbone_warmup_steps: int = 0
    step_milestones: tuple[int, ...] = ()
    step_gamma: float = 0.1
    clip_grad_norm: float = 0.01
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    # Weights and activations in channels-last memory order: faster convolutions where oneDNN or cuDNN has the
    # kernels (benchmarks/RESULTS.md). None: the faster layout, timed before the run starts on a CPU in one
    # process (training/layout.py); elsewhere the network's trains_channels_last.
    channels_last: bool | None = None
    # torch.compile the network (Module.compile; inductor on CPUs and GPUs): the same results to float rounding,
    # after a compile of the first steps' shapes (and of each new validation image size, up to torch's limit).
    compile: bool = False
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
    model: ModelConfig = field(default_factory=lambda: ModelConfig.default_class()())
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def paper_model(name: str) -> ModelConfig:
    """A model preset starting, as in the papers, from its backbone's ImageNet weights (timm's copies,
    fetched once through the Hugging Face hub cache). R101c is the exception: its DeepLab stem's weights
    (detectron2's R-103.pkl) have no timm counterpart, so it starts from scratch."""
    config = preset(name)
    config.backbone.pretrained = not name.startswith("r101c")
    return config


# Each dataset's own data settings, the same in every family's recipe: (format, crop, base size, ignore value
# and scales where they are not the defaults). Sources: the papers' configs/<dataset>/Base-*.yaml and appendices.
# The Pascal Context rows follow mmsegmentation's configs/_base_/datasets/pascal_context_59.py (480 crops; the
# model presets test with the longer side at 520); neither paper trains on it.
DATASET_DATA: dict[str, dict] = {
    "ade": {"format": "ade20k"},
    "coco": {"format": "coco_panoptic"},
    "coco_instance": {"format": "coco_instance"},
    "ade_full": {"format": "semantic", "crop_size": (512, 512), "ignore_value": 65535},
    # MIN_SIZE_TRAIN int(x * 0.1 * 640) for x in range(5, 16)
    "coco_stuff": {"format": "semantic", "crop_size": (640, 640), "max_scale": 1.5, "num_scales": 11},
    "cityscapes": {"format": "cityscapes", "crop_size": (512, 1024), "base_size": 1024},
    "vistas": {"format": "semantic", "crop_size": (1280, 1280), "base_size": 2048},
    "ade_panoptic": {"format": "panoptic", "crop_size": (640, 640)},
    "ade_instance": {"format": "coco_instance", "crop_size": (640, 640)},
    "cityscapes_panoptic": {"format": "panoptic", "crop_size": (512, 1024), "base_size": 1024},
    "cityscapes_instance": {"format": "coco_instance", "crop_size": (512, 1024), "base_size": 1024},
    "vistas_panoptic": {"format": "panoptic", "crop_size": (1024, 1024), "base_size": 2048},
    "pascal_context_59": {"format": "semantic", "crop_size": (480, 480)},
    "pascal_context_459": {"format": "semantic", "crop_size": (480, 480), "ignore_value": 65535},
}


def recipe(name: str) -> RunConfig:
    """The paper's training recipe for a model preset: its dataset's data settings, and its family's schedule,
    optimiser and augmentation for that preset (see :mod:`maskformer.model.families` for the names)."""
    check_preset(name)
    model = paper_model(name)
    dataset = preset_dataset(name)
    steps = family_of(model).recipe(name, dataset)
    data = config_from_dict(DataConfig, to_plain({**DATASET_DATA[dataset], **steps.data}), f"{name} recipe data")
    train = config_from_dict(TrainConfig, to_plain(dict(steps.train)), f"{name} recipe train")
    return RunConfig(model=model, data=data, train=train)


def finetune_recipe(model: ModelConfig, source: str) -> RunConfig:
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
        max_steps=2000, batch_size=8, lr=1e-4, backbone_lr_multiplier=0.1, warmup_steps=100, warmup_factor=0.01,
        val_every=500, checkpoint_every=500, **family_of(model).optimizer,
    )  # fmt: skip
    return RunConfig(model=model, data=DataConfig(crop_size=(crop, crop)), train=train)
