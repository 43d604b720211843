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
from maskformer.model import MaskFormer
from maskformer.predict import Predictor
from tests.helpers import tiny_config, tiny_m2f_config


def save_serving_model(folder: Path, family: str = "maskformer") -> Path:
    """A randomly initialised small model of ``family`` with the synthetic dataset's 6 classes, saved in
    ``folder``. Its class and mask heads are sharpened, so that it predicts several classes and confident
    segments."""
    cfg = tiny_config(num_classes=6) if family == "maskformer" else tiny_m2f_config(num_classes=6)
    inference = dataclasses.replace(cfg.inference, test_shortest_edge=160, test_max_size=320, object_mask_threshold=0.5)
    cfg = dataclasses.replace(cfg, metadata=metadata_from_json(metadata_json(), "synth"), inference=inference)
    torch.manual_seed(0)
    model = MaskFormer(cfg)
    with torch.no_grad():
        model.predictor.class_embed.weight.mul_(40)
        model.predictor.mask_embed.layers[-1].weight.mul_(20)
    model.save_pretrained(folder)
    return folder


def write_scene(path: Path, seed: int, size_range: tuple[int, int] = (200, 260)) -> Path:
    """A synthetic scene (shapes on textures) as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render(np.random.default_rng(seed), size_range)[0]).save(path)
    return path


def predictor(folder: Path) -> Predictor:
    return Predictor.from_pretrained(folder)
