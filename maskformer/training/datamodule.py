"""Lightning data module: dataset readers + augmentation + resumable sampling, from a RunConfig."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..data import datasets as D
from ..data.check import check_reader
from ..data.messages import plural
from ..data.metadata import class_file_ignore_value
from ..data.sampling import AugmentedDataset, ResumableSampler
from ..data.transforms import (
    detr_panoptic_train_transform,
    large_scale_jitter_transform,
    scale_jitter_transform,
    semantic_train_transform,
)
from ..model.config import InferenceConfig, MetadataConfig
from ..model.test_resize import resize_for_test
from .config import DataConfig, RunConfig, loader_workers

DEFAULT_SPLITS = {
    "semantic": ("train", "val"),
    "panoptic": ("train", "val"),
    "ade20k": ("training", "validation"),
    "cityscapes": ("train", "val"),
    "coco_panoptic": ("train2017", "val2017"),
    "coco_instance": ("train2017", "val2017"),
}


def default_splits(data_format: str, root: str | Path) -> tuple[str, str]:
    """(train, val) split names of ``data_format``; COCO layouts whose annotation files are named by
    train/val (as ``data prepare`` writes Cityscapes) rather than train2017/val2017 use those."""
    train, val = DEFAULT_SPLITS[data_format]
    kind = {"coco_panoptic": "panoptic", "coco_instance": "instances"}.get(data_format)
    annotations = Path(root) / "annotations"
    if kind and not (annotations / f"{kind}_{train}.json").exists() and (annotations / f"{kind}_train.json").exists():
        return "train", "val"
    return train, val


def detect_format(root: str | Path) -> str:
    """The data format whose layout ``root`` has (see :class:`DataConfig`)."""
    root = Path(root)
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return "cityscapes"
    if list(root.glob("annotations/panoptic_*.json")):
        return "coco_panoptic"
    if list(root.glob("annotations/instances_*.json")):
        return "coco_instance"
    if list(root.glob("panoptic_*.json")):
        return "panoptic"
    if (root / "images" / "training").is_dir() and (root / "annotations" / "training").is_dir():
        return "ade20k"
    if (root / "images").is_dir():
        return "semantic"
    raise ValueError(
        f"{root}: no known dataset layout (images/ with labels/ or panoptic_SPLIT.json, ADEChallengeData2016, "
        "Cityscapes or COCO panoptic or instances); give --format"
    )


def build_reader(cfg: DataConfig, split: str):
    """The dataset reader for one split of ``cfg``."""
    root = Path(cfg.root)
    if not cfg.root:
        raise ValueError("data.root is not set (pass --data DIR)")
    if not root.exists():
        raise FileNotFoundError(f"{root}: data folder not found")
    if cfg.format == "semantic":
        class_file = Path(cfg.class_file) if cfg.class_file else _first(root, ["classes.json", "classes.txt"])
        return D.generic_semantic(root / "images" / split, root / cfg.label_dir / split, class_file, cfg.ignore_value)
    if cfg.format == "panoptic":
        return D.COCOPanopticDataset(
            root / "images" / split, root / f"panoptic_{split}.json", root / "panoptic" / split
        )
    if cfg.format == "ade20k":
        return D.ade20k(root, split)
    if cfg.format == "cityscapes":
        return D.cityscapes(root, split)
    if cfg.format == "coco_panoptic":
        return D.coco_panoptic(root, split)
    if cfg.format == "coco_instance":
        return D.coco_instance(root, split)
    raise ValueError(f"unknown data format {cfg.format!r}")


def default_ignore_value(data_format: str, root: str | Path, class_file: str = "") -> int:
    """The semantic layout's ignore value when none is given: its JSON class file's ``"ignore_value"`` (as
    ``data prepare`` writes it), else 255."""
    if data_format != "semantic":
        return 255
    named = class_file_ignore_value(class_file or Path(root) / "classes.json")
    return 255 if named is None else named


def _first(root: Path, names: list[str]) -> Path:
    for name in names:
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(
        f"{root}: no class file ({' or '.join(names)}); name one with --class-file (data.class_file when training)"
    )


def train_transform(cfg: DataConfig):
    if cfg.augmentation == "semantic":
        return semantic_train_transform(
            tuple(cfg.crop_size),
            cfg.base_size,
            cfg.min_scale,
            cfg.max_scale,
            cfg.num_scales,
            cfg.single_category_max_area,
            cfg.color_jitter,
            cfg.ignore_value,
        )
    if cfg.augmentation == "detr":
        return detr_panoptic_train_transform()
    if cfg.augmentation == "lsj":
        return large_scale_jitter_transform(tuple(cfg.crop_size), cfg.min_scale, cfg.max_scale, cfg.ignore_value)
    if cfg.augmentation == "scale_jitter":
        crop = tuple(cfg.crop_size)
        return scale_jitter_transform(crop, cfg.min_scale, cfg.max_scale, cfg.color_jitter, cfg.ignore_value)
    return None


class TrainItems:
    """Augmented sample -> {"image", "targets"}."""

    def __init__(self, ignore_value: int):
        self.ignore_value = ignore_value

    def __call__(self, sample: dict) -> dict:
        return {"image": sample["image"], "targets": D.make_targets(sample, self.ignore_value), "file": sample["file"]}


class ValItems(Dataset):
    """Validation samples: the test-resized image (the image as read when ``resize`` is False, for test-time
    augmentation to resize) and the original-size truth (semantic labels; panoptic ids and segments; instance
    masks, classes and crowd flags)."""

    def __init__(self, reader, inference: InferenceConfig, ignore_value: int, resize: bool = True):
        self.reader = reader
        self.inference = inference
        self.ignore_value = ignore_value
        self.resize = resize

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> dict:
        sample = self.reader.load(index)
        item = {
            "image": resize_for_test(sample["image"], self.inference) if self.resize else sample["image"],
            "size": tuple(sample["label"].shape),
            "semantic": D.semantic_label(sample, self.ignore_value),
            "file": sample["file"],
        }
        if sample["kind"] == "instance":
            item["masks"] = sample["masks"].bool()
            item["instances"] = sample["instances"]
        if sample["kind"] == "panoptic":
            item["panoptic"] = sample["label"]
            item["segments"] = sample["segments"]
        return item


def collate(items: list[dict | None]) -> list[dict]:
    """Batches stay lists (images differ in size); samples skipped as bad (None) are left out."""
    return [item for item in items if item is not None]


class MaskFormerDataModule(L.LightningDataModule):
    """``resize_val`` False gives validation images as read (for test-time augmentation, which resizes them);
    so does a model that segments by windows (``inference.semantic_window``), which resize themselves."""

    def __init__(self, config: RunConfig, resize_val: bool = True):
        super().__init__()
        self.config = config
        self.resize_val = resize_val and not config.model.inference.semantic_window
        cfg = config.data
        train_split, val_split = default_splits(cfg.format, cfg.root)
        self.train_split = cfg.train_split or train_split
        self.val_split = cfg.val_split or val_split
        self.train_reader = build_reader(cfg, self.train_split)
        self.val_reader = build_reader(cfg, self.val_split)
        self.metadata: MetadataConfig = self.train_reader.metadata

    def check(self) -> None:
        """Run the configured dataset check on both splits; raise ValueError listing the problems."""
        cfg = self.config.data
        if cfg.check == "off":
            return
        limit = None if cfg.check == "full" else cfg.check_samples
        problems: list[str] = []
        for split, reader in ((self.train_split, self.train_reader), (self.val_split, self.val_reader)):
            report = check_reader(reader, limit=limit, seed=self.config.train.seed)
            problems += [f"[{split}] {p}" for p in report.problems]
        if problems:
            raise ValueError(
                f"data check found {plural(len(problems), 'problem')}, the first: {problems[0]} "
                "(`maskformer data check` lists them all; data.check=off skips the check)"
            )

    def train_dataloader(self) -> DataLoader:
        cfg, train = self.config.data, self.config.train
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        per_process = max(1, train.batch_size // world)
        step = trainer.global_step if trainer else 0
        sampler = ResumableSampler(len(self.train_reader), train.seed, rank, world, start=step * per_process * world)
        dataset = AugmentedDataset(
            self.train_reader, train_transform(cfg), TrainItems(cfg.ignore_value), skip_bad=cfg.skip_bad_samples
        )
        workers = loader_workers(cfg.num_workers)
        return DataLoader(
            dataset,
            batch_size=per_process,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
            persistent_workers=workers > 0,
            pin_memory=False,
        )

    def transfer_batch_to_device(self, batch: list[dict], device: torch.device, dataloader_idx: int) -> list[dict]:
        """Leave batches on the CPU: the module's steps move what the model needs (images through
        ``preprocess``, training targets through ``pad_target``), and validation's ground truth stays where
        the evaluators count. (Lightning's default moved it to the GPU, where indexing a CPU prediction with
        it failed.)"""
        return batch

    def val_dataloader(self) -> DataLoader:
        cfg, inf = self.config.data, self.config.model.inference
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        dataset = ValItems(self.val_reader, inf, cfg.ignore_value, resize=self.resize_val)
        count = len(dataset) if not cfg.max_val_images else min(cfg.max_val_images, len(dataset))
        # Each process scores its own share; evaluators sum their statistics across processes.
        shard = Subset(dataset, list(range(rank, count, world)))
        return DataLoader(
            shard,
            batch_size=max(1, self.config.train.batch_size // world),
            num_workers=loader_workers(cfg.num_workers),
            collate_fn=collate,
        )
