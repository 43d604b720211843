"""Typed configs: YAML round trips, overrides, clear errors."""

from __future__ import annotations

import pytest

from maskformer.model import MaskFormerConfig, preset


def test_yaml_round_trip(tmp_path):
    config = preset("swin_b")
    config.metadata.class_names = ["a", "b"]
    config.metadata.thing_classes = [1]
    config.metadata.colors = [(1, 2, 3), (4, 5, 6)]
    path = tmp_path / "c.yaml"
    config.to_yaml(path)
    assert MaskFormerConfig.from_yaml(path) == config


def test_overrides():
    config = preset("r50").override(["num_classes=19", "transformer.num_queries=50", "backbone.norm=bn"])
    assert (config.num_classes, config.transformer.num_queries, config.backbone.norm) == (19, 50, "bn")
    with pytest.raises(ValueError, match="unknown key 'transformer.queries'"):
        preset("r50").override(["transformer.queries=5"])
    with pytest.raises(ValueError, match="not of the form key=value"):
        preset("r50").override(["num_classes"])


def test_bad_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("backbone: {type: swin, widht: 3}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*unknown keys \['widht'\]"):
        MaskFormerConfig.from_yaml(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("num_classes: [\n")
    with pytest.raises(ValueError, match=r"broken\.yaml: not valid YAML"):
        MaskFormerConfig.from_yaml(broken)


def test_override_values_are_checked_against_the_field_types():
    from maskformer.training import RunConfig

    # YAML reads 1e-3 (no dot) as a string; a float field takes it as the number.
    config = RunConfig().override(["train.lr=1e-3", "train.max_steps=10.0", "train.clip_grad_norm=null"])
    assert config.train.lr == 1e-3 and isinstance(config.train.lr, float)
    assert config.train.max_steps == 10 and isinstance(config.train.max_steps, int)
    assert config.train.clip_grad_norm is None
    for item, message in (
        ("train.lr=fast", "RunConfig.train.lr: expected a number, got 'fast'"),
        ("train.max_steps=1.5", "RunConfig.train.max_steps: expected an integer"),
        ("model.num_classes=true", "expected an integer"),
        ("model.loss.deep_supervision=1", "deep_supervision: expected true or false"),
        ("model.backbone.name=[1]", "backbone.name: expected a string"),
    ):
        with pytest.raises(ValueError, match=message):
            RunConfig().override([item])
    # Unions other than with None are left as given; literal choices are listed.
    assert RunConfig().override(["train.devices=2"]).train.devices == 2
    with pytest.raises(ValueError, match="train.precision: expected one of '32-true', 'bf16-mixed', '16-mixed'"):
        RunConfig().override(["train.precision=bf16"])
