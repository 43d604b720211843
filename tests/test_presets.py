"""The presets reproduce the paper's parameter counts (ADE20K-150 table; COCO R50+6Enc)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from maskformer.model import PRESETS, MaskFormer, family_of, preset
from maskformer.model.config import InferenceConfig

PAPER_MILLIONS = {
    "r50": 41,
    "r101": 60,
    "swin_t": 42,
    "swin_s": 63,
    "swin_b": 102,
    "swin_l": 212,
    "r50+6enc": 45,
}


@pytest.mark.parametrize("name", list(PAPER_MILLIONS))
def test_parameter_count_matches_paper(name):
    config = preset(name)
    with torch.device("meta"):
        model = MaskFormer(config)
    assert round(model.num_parameters / 1e6) == PAPER_MILLIONS[name], model.num_parameters


def test_preset_architecture_settings():
    swin_b = preset("swin_b")
    assert (swin_b.backbone.embed_dim, swin_b.backbone.window_size) == (128, 12)
    assert swin_b.backbone.drop_path_rate == 0.3
    assert swin_b.inference.test_shortest_edge == 640
    coco = preset("r50+6enc")
    assert coco.num_classes == 133 and coco.pixel_decoder.type == "transformer_encoder"
    assert coco.inference.object_mask_threshold == 0.8
    ade = preset("r50")
    assert ade.backbone.norm == "frozen_bn"
    assert (ade.transformer.num_queries, ade.transformer.num_layers, ade.transformer.num_heads) == (100, 6, 8)
    assert (ade.loss.no_object_weight, ade.loss.mask_weight, ade.loss.dice_weight) == (0.1, 20.0, 1.0)


def test_every_preset_builds_and_the_number_of_classes_is_settable():
    configs = {}
    for name in PRESETS:
        config = preset(name)
        config.num_classes = 7
        # Presets that differ only in their classes or inference settings (which no network reads): built once.
        configs.setdefault(dataclasses.replace(config, inference=InferenceConfig()).to_yaml(), config)
    for config in configs.values():
        with torch.device("meta"):
            model = family_of(config).network(config)
        assert model.class_head.out_features == 8


def test_unknown_preset_is_named():
    with pytest.raises(KeyError, match="swin_xl.*maskformer presets` lists"):
        preset("swin_xl")
