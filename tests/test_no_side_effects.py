"""APIs return new objects and leave their caller's as they were: the Predictor, evaluate(), train() and
from_pretrained with a config."""

from __future__ import annotations

import copy

import torch

from maskformer import MaskFormer
from maskformer.data.synth import write_dataset
from maskformer.model.config import MetadataConfig
from maskformer.predict import Predictor
from maskformer.training import DataConfig
from maskformer.training.evaluate import evaluate
from tests.helpers import tiny_config


def _state(model: MaskFormer) -> dict:
    return {
        "training": model.training,
        "config": model.config.to_dict(),
        "layout": [p.stride() for p in model.parameters()],
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
    }


def _same(model: MaskFormer, before: dict) -> None:
    now = _state(model)
    assert now["training"] == before["training"] and now["config"] == before["config"]
    assert now["layout"] == before["layout"]
    assert all(torch.equal(v, before["weights"][k]) for k, v in now["weights"].items())


def test_predictor_and_evaluate_leave_the_model_and_configs_alone(tmp_path):
    torch.manual_seed(0)
    model = MaskFormer(tiny_config(num_classes=6, backbone="resnet18")).train()
    before = _state(model)
    predictor = Predictor(model, metadata=MetadataConfig(class_names=[f"c{i}" for i in range(6)]))
    predictor(torch.rand(3, 40, 50) * 255, task="panoptic")
    _same(model, before)
    data = DataConfig(format="panoptic", root=str(write_dataset(tmp_path / "data", train=1, val=2)))
    data_before = copy.deepcopy(data)
    evaluate(model, data, accelerator="cpu")
    _same(model, before)
    assert data == data_before


def test_from_pretrained_with_a_config_leaves_it_alone(tmp_path):
    model = MaskFormer(tiny_config(num_classes=6, backbone="resnet18"))
    model.save_pretrained(tmp_path / "m")
    config = copy.deepcopy(model.config)
    config.backbone.pretrained = True  # from_pretrained builds without fetching ImageNet weights
    given = copy.deepcopy(config)
    MaskFormer.from_pretrained(tmp_path / "m", config=config)
    assert config == given
