"""Evaluate a model on a dataset split with the same code path as validation during training."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import lightning as L

from ..model import Segmenter
from .config import DataConfig, RunConfig, TrainConfig
from .console import StepProgressBar, quiet_lightning
from .datamodule import MaskFormerDataModule
from .module import MaskFormerModule


def evaluate(
    model: Segmenter,
    data: DataConfig,
    split: str = "",
    batch_size: int = 1,
    accelerator: str = "auto",
    run_dir: str | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    compile: bool = False,
) -> dict:
    """mIoU family (and PQ for panoptic data) of ``model`` on ``split`` (default: the format's val split).

    ``scales`` / ``flip`` other than (1.0,) / False score mIoU alone with multi-scale and flip test-time
    augmentation: class probabilities averaged over the test size times each scale, and mirrored views
    (the papers' "multi-scale" results: scales 0.5-1.75 in steps of 0.25, with flip). ``compile``:
    torch.compile the network (``train.compile``).

    The dataset's metadata must match the model's classes; a mismatch in class count is an error. The
    caller's model and configs are not changed (evaluation moves and lays out a copy).
    """
    model = copy.deepcopy(model)
    model_config = model.config
    data = dataclasses.replace(data, val_split=split or data.val_split)
    train = TrainConfig(batch_size=batch_size, accelerator=accelerator, compile=compile)
    config = RunConfig(model=model_config, data=data, train=train)
    augmented = tuple(scales) != (1.0,) or flip
    datamodule = MaskFormerDataModule(config, resize_val=not augmented)
    found = len(datamodule.metadata.class_names)
    if found != model.config.num_classes:
        raise ValueError(f"{data.root}: the data has {found} classes, the model {model.config.num_classes}")
    if not model_config.metadata.class_names:
        model_config.metadata = datamodule.metadata
    with quiet_lightning():
        module = MaskFormerModule(config, run_dir, model=model, scales=scales, flip=flip)
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            callbacks=[StepProgressBar()],
        )
        trainer.validate(module, datamodule=datamodule, verbose=False)
    return module.last_metrics
