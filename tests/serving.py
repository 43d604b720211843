"""What the serving tests share: a small model with the synthetic dataset's classes, example images, and
the app around them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from maskformer.data.metadata import metadata_from_json
from maskformer.data.synth import metadata_json, render
from maskformer.model import Segmenter
from maskformer.predict import Predictor
from tests.helpers import small_config, tiny_config, tiny_m2f_config


def save_serving_model(folder: Path, family: str = "maskformer") -> Path:
    """A randomly initialised small model of ``family`` with the synthetic dataset's 6 classes, saved in
    ``folder``. Its class and mask heads are sharpened, so that it predicts several classes and confident
    segments."""
    cfg = {"maskformer": tiny_config, "mask2former": tiny_m2f_config, "eomt": lambda num_classes: small_config(
        "eomt", num_classes=num_classes)}[family](num_classes=6)  # fmt: skip
    inference = dataclasses.replace(cfg.inference, test_shortest_edge=160, test_max_size=320, object_mask_threshold=0.5)
    if family == "eomt":  # a random ViT's masks overlap much: at 0.8 no segment keeps enough of its mask
        inference.overlap_threshold = 0.3
    cfg = dataclasses.replace(cfg, metadata=metadata_from_json(metadata_json(), "synth"), inference=inference)
    torch.manual_seed(0)
    model = Segmenter.from_config(cfg)
    with torch.no_grad():
        model.class_head.weight.mul_(40)
        (model.mask_head[-1] if family == "eomt" else model.predictor.mask_embed.layers[-1]).weight.mul_(20)
    model.save_pretrained(folder)
    return folder


def write_scene(path: Path, seed: int, size_range: tuple[int, int] = (200, 260)) -> Path:
    """A synthetic scene (shapes on textures) as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render(np.random.default_rng(seed), size_range)[0]).save(path)
    return path


def predictor(folder: Path) -> Predictor:
    return Predictor.from_pretrained(folder)
