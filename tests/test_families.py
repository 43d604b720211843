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


def _used_as_a_family(node: ast.AST, parents: dict[int, ast.AST]) -> bool:
    """Whether a constant is a family value: compared, a key or index, a ``family`` / ``choices`` argument, a
    ``family`` default, assigned to a ``family`` name or attribute, or returned."""
    parent = parents.get(id(node))
    while isinstance(parent, (ast.List, ast.Tuple, ast.Set)):
        parent = parents.get(id(parent))
    if isinstance(parent, (ast.Compare, ast.Subscript, ast.Return)):
        return True
    if isinstance(parent, ast.Dict) and any(k is node for k in parent.keys):
        return True
    if isinstance(parent, ast.keyword) and parent.arg in ("family", "choices"):
        return True
    if isinstance(parent, (ast.Assign, ast.AnnAssign)):
        targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
        return any("family" in ast.unparse(t).lower() for t in targets)
    if isinstance(parent, ast.arguments):
        named = [*parent.posonlyargs, *parent.args]
        for arg, default in zip(named[len(named) - len(parent.defaults) :], parent.defaults):
            if default is node and "family" in arg.arg:
                return True
        return any(d is node and "family" in a.arg for a, d in zip(parent.kwonlyargs, parent.kw_defaults))
    return False


def _spellings(path: Path, reexports: bool = False) -> list[str]:
    """Where ``path``'s code names a family: a family's name used as a family value (:func:`_used_as_a_family`);
    a family-specific spelling ("mask2former", the "m2f_" preset prefix) anywhere but in prose; a family's config
    or network class (but MaskFormer, the package's class of two families), except where the public API
    re-exports it (``reexports``: its imports and ``__all__``). The package's own name, "maskformer", is
    also the first family's: only its uses as a family value count."""
    tree = ast.parse(path.read_text())
    prose = _docstrings(tree)
    parents = {id(child): parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    names = {f.name for f in FAMILIES}
    classes = {f.config.__name__ for f in FAMILIES} | ({f.network.__name__ for f in FAMILIES} - {"MaskFormer"})
    lists = [node.value for node in ast.walk(tree) if reexports and _assigns_all(node)]
    exported = {id(c) for value in lists for c in ast.walk(value)}
    found = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose | exported:
            text = node.value
            if any(n in text.lower() for n in names - {"maskformer"}) or "m2f_" in text:
                found.append(f"{where}: {text[:60]!r}")
            elif text in names and _used_as_a_family(node, parents):
                found.append(f"{where}: {text!r} used as a family")
        if isinstance(node, ast.Name) and node.id in classes and not reexports:
            found.append(f"{where}: {node.id}")
        if isinstance(node, ast.ImportFrom) and not reexports:
            found += [f"{where}: imports {a.name}" for a in node.names if a.name in classes]
    return found


def _assigns_all(node: ast.AST) -> bool:
    """Whether ``node`` is ``__all__ = [...]`` (a public API's list of names)."""
    return isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)


def test_no_file_outside_the_families_spells_a_family_name():
    files = [f for f in PACKAGE.rglob("*.py") if FAMILY_FOLDER not in f.parents]
    found = list(itertools.chain.from_iterable(_spellings(f, f in REEXPORTS) for f in files))
    assert not found, found


def test_the_checker_finds_what_it_is_meant_to_find(tmp_path):
    """The spelling test above fails on code like the code the seam replaced, in each way it looks for."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Mask2Former in prose is fine, and so is logging.getLogger("maskformer")."""\n'
        "import logging\n"
        'log = logging.getLogger("maskformer")\n'
        'def f(config, name, family="maskformer"):\n'
        '    """maskformer or mask2former: prose."""\n'
        '    config.family = "maskformer"\n'
        '    if config.family == "maskformer":\n'
        '        return "m2f_" + name\n'
        "    if name:\n"
        '        return "maskformer"\n'
        '    return {"mask2former": 1, "maskformer": 2}\n'
        "from maskformer.model import MaskFormerConfig\n"
    )
    found = _spellings(sample)
    lines = sorted(int(f.split(":")[1]) for f in found)
    assert lines == [4, 6, 7, 8, 10, 11, 11, 12], found


def test_one_registry_lists_each_family_once_with_what_the_package_reads_from_it():
    assert [f.name for f in FAMILIES] == ["maskformer", "mask2former", "eomt"]
    assert family("mask2former") is FAMILIES[1] and family_of(Mask2FormerConfig()) is FAMILIES[1]
    with pytest.raises(KeyError, match="unknown model family 'mask2fromer' \\(did you mean 'mask2former'"):
        family("mask2fromer")
    # Presets, recipes and published checkpoints come from the family that owns them.
    assert (
        family_of(PRESETS["r50"]()).name == "maskformer" and family_of(PRESETS["m2f_r50_coco"]()).name == "mask2former"
    )
    assert KNOWN_MODELS["maskformer-swin-tiny-ade"].family == "maskformer"
    assert KNOWN_MODELS["zoo-m2f-coco-panoptic-r50"].family == "mask2former"
    assert (recipe("r50").train.weight_decay, recipe("m2f_r50_ade").train.weight_decay) == (1e-4, 0.05)
    for f in FAMILIES:
        assert f.demo is None or family_of(f.demo.model()) is f


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

    def lr_factor(config, name, backbone_multiplier):
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


def test_a_model_loads_as_its_familys_network(tmp_path):
    """``Segmenter.from_pretrained`` builds whatever network the source's family has; a network class's own
    ``from_pretrained`` refuses a source built as another class, naming both."""
    from maskformer.model import MaskFormer, Segmenter
    from tests.helpers import tiny_m2f_config

    MaskFormer(tiny_m2f_config(num_classes=3)).save_pretrained(tmp_path / "m")
    loaded = Segmenter.from_pretrained(tmp_path / "m")
    assert type(loaded) is family("mask2former").network is MaskFormer

    class Other(MaskFormer):
        pass

    with pytest.raises(ValueError, match="a Mask2Former model, built as MaskFormer, not Other"):
        Other.from_pretrained(tmp_path / "m")
