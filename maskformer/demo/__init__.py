"""``maskformer demo``: the papers' recipe in miniature on generated data. Stage 1 pretrains the backbone as
a classifier of object and texture crops (:mod:`.backbone`, the demo's ImageNet); stage 2 trains the
segmentation model from it (:mod:`.run`)."""

from .backbone import PretrainedBackbone, pretrain_backbone
from .run import demo_config, demo_device, run_demo

__all__ = [
    "PretrainedBackbone",
    "demo_config",
    "demo_device",
    "pretrain_backbone",
    "run_demo",
]
