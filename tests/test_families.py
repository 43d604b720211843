"""The family seam: each family's module owns what is particular to it, one registry lists them, and the rest
of the package reads the registry (issue 25)."""

from __future__ import annotations

import ast
import dataclasses
import itertools
from pathlib import Path

import pytest
import torch

import maskformer
from maskformer.data.synth import write_dataset
from maskformer.model import FAMILIES, Mask2FormerConfig, MaskFormerConfig, ModelConfig, family, family_of
from maskformer.model import families as registry
from maskformer.model.presets import PRESETS
from maskformer.predict.zoo import KNOWN_MODELS
from maskformer.training.config import recipe
from tests.helpers import run_config

PACKAGE = Path(maskformer.__file__).parent
FAMILY_FOLDER = PACKAGE / "model" / "families"
# The public API re-exports the family config classes by name.
REEXPORTS = {PACKAGE / "__init__.py", PACKAGE / "model" / "__init__.py"}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _spellings(path: Path) -> list[str]:
    """Where ``path``'s code names a family: a family's name compared, used as a key or as a choice; a
    family-specific spelling ("mask2former", the "m2f_" preset prefix) anywhere but in prose; a family's config
    class outside the public re-exports. The package's own name, "maskformer", is also the first family's:
    only its uses as a family value count."""
    tree = ast.parse(path.read_text())
    prose = _docstrings(tree)
    parents = {id(child): parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    names = {f.name for f in FAMILIES}
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(PACKAGE)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            text = node.value
            if path in REEXPORTS and text.endswith("FormerConfig"):
                continue  # the names in __all__
            if any(n in text.lower() for n in names - {"maskformer"}) or "m2f_" in text:
                found.append(f"{where}: {text[:60]!r}")
            elif text in names:
                parent = parents.get(id(node))
                while isinstance(parent, (ast.List, ast.Tuple, ast.Set)):
                    parent = parents.get(id(parent))
                key = isinstance(parent, ast.Dict) and any(k is node for k in parent.keys)
                if (
                    key
                    or isinstance(parent, (ast.Compare, ast.Subscript))
                    or (isinstance(parent, ast.keyword) and parent.arg in ("family", "choices"))
                ):
                    found.append(f"{where}: {text!r} used as a family")
        if isinstance(node, ast.Name) and node.id in ("MaskFormerConfig", "Mask2FormerConfig"):
            if path not in REEXPORTS:
                found.append(f"{where}: {node.id}")
        if isinstance(node, ast.ImportFrom) and path not in REEXPORTS:
            found += [f"{where}: imports {a.name}" for a in node.names if a.name.endswith("FormerConfig")]
    return found


def test_no_file_outside_the_families_spells_a_family_name():
    files = [f for f in PACKAGE.rglob("*.py") if FAMILY_FOLDER not in f.parents]
    found = list(itertools.chain.from_iterable(_spellings(f) for f in files))
    assert not found, found


def test_the_checker_finds_what_it_is_meant_to_find(tmp_path):
    """The spelling test above fails on code like the code the seam replaced."""
    sample = PACKAGE / "_spelling_sample.py"
    sample.write_text(
        '"""Mask2Former in prose is fine."""\n'
        'def f(config, name):\n    """maskformer or mask2former: prose."""\n'
        '    if config.family == "maskformer":\n        return "m2f_" + name\n'
        '    return {"mask2former": 1}\n'
    )
    try:
        found = _spellings(sample)
    finally:
        sample.unlink()
    assert len(found) == 3, found


def test_one_registry_lists_each_family_once_with_what_the_package_reads_from_it():
    assert [f.name for f in FAMILIES] == ["maskformer", "mask2former"]
    assert family("mask2former") is FAMILIES[1] and family_of(Mask2FormerConfig()) is FAMILIES[1]
    with pytest.raises(KeyError, match="unknown model family 'mask2fromer' \\(did you mean 'mask2former'"):
        family("mask2fromer")
    # Presets, recipes and published checkpoints are the families' own, nothing else adds any.
    assert set(PRESETS) == {name for f in FAMILIES for name in f.presets}
    assert all(family_of(PRESETS[name]()).presets.get(name) is PRESETS[name] for name in PRESETS)
    assert {m.name: m.family for m in KNOWN_MODELS.values()} == {
        c.name: f.name for f in FAMILIES for c in f.checkpoints
    }
    for f in FAMILIES:
        name = next(iter(f.presets))
        assert recipe(name).train.weight_decay == pytest.approx(
            f.recipe(name, f.preset_datasets[name]).train["weight_decay"]
        )
        assert family_of(f.demo.model()) is f


def test_a_family_config_is_its_own_class_and_cannot_claim_another_family(tmp_path):
    assert not issubclass(Mask2FormerConfig, MaskFormerConfig) and not issubclass(MaskFormerConfig, Mask2FormerConfig)
    with pytest.raises(TypeError, match="family"):
        MaskFormerConfig(family="mask2former")
    # A file picks its class by its family; a file without one is MaskFormer's (written before Mask2Former).
    assert type(ModelConfig.from_dict({"family": "mask2former"})) is Mask2FormerConfig
    assert type(ModelConfig.from_dict({"num_classes": 3})) is MaskFormerConfig
    config = Mask2FormerConfig(num_classes=7)
    config.to_yaml(tmp_path / "m.yaml")
    again = ModelConfig.from_yaml(tmp_path / "m.yaml")
    assert type(again) is Mask2FormerConfig and again == config
    with pytest.raises(ValueError, match="family: expected one of .*got 'mask3former'"):
        ModelConfig.from_dict({"family": "mask3former"})


def test_a_familys_training_hooks_reach_training_without_changes_to_it(tmp_path, monkeypatch):
    """``on_train_step`` runs before every step with the steps done; ``lr_factor`` sets each parameter's
    learning rate: what EoMT's mask annealing and layer-wise decay use."""
    steps = []

    def on_train_step(model, step, max_steps):
        steps.append((step, max_steps, model.training))

    def lr_factor(name, backbone_multiplier):
        return 0.0 if name.startswith("predictor.class_embed") else 1.0

    hooked = dataclasses.replace(FAMILIES[0], on_train_step=on_train_step, lr_factor=lr_factor)
    monkeypatch.setattr(registry, "FAMILIES", (hooked, *FAMILIES[1:]))
    config = run_config(write_dataset(tmp_path / "data", 6, 2, seed=1, size_range=(48, 64)), 3)
    from lightning.pytorch.callbacks import Callback

    from maskformer.training import train

    class Head(Callback):
        def on_train_start(self, trainer, module):
            self.start = module.model.predictor.class_embed.weight.detach().clone()
            self.other = module.model.predictor.mask_embed.layers[0].weight.detach().clone()

    head = Head()
    train(config, tmp_path / "run", callbacks=[head])
    assert steps == [(0, 3, True), (1, 3, True), (2, 3, True)]
    trained = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(trained["model.predictor.class_embed.weight"], head.start)  # learning rate 0
    assert not torch.equal(trained["model.predictor.mask_embed.layers.0.weight"], head.other)
