"""Fine-tuning from trained weights (``model.weights=SOURCE``) and starting a backbone from a state dict file
(``model.backbone.weights=PATH``).

The user's data are the synthetic images with other classes: two shapes swapped in name, one renamed and a
class added, so that some class-head rows must move, some be re-initialised and one stay put by name.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from maskformer.cli.main import main
from maskformer.data.datasets import COCOPanopticDataset, make_targets
from maskformer.data.synth import write_dataset
from maskformer.model import MaskFormer, SetCriterion
from maskformer.model.config import BackboneConfig
from maskformer.predict import load_model
from maskformer.training import DataConfig, RunConfig, TrainConfig, train
from maskformer.training.config import finetune_recipe
from maskformer.training.finetune import match_classes, starting_model
from tests.helpers import (
    hf_to_detectron2,
    relabelled_dataset,
    resnet18_model,
    small_config,
    tiny_config,
    tiny_transformers_model,
    write_zoo_pickle,
)

# Category ids 1-3 of the synthetic data are circle, square, triangle; the user's data calls them otherwise.
RENAMED, EXTRA = {1: "square", 2: "circle", 3: "kite"}, ["person"]
USER_CLASSES = ["square", "circle", "kite", "stripes", "checker", "dots", "person"]
# Names the transformers sources carry (three shared with the user's data, in other places).
HF_CLASSES = ["person", "dots", "car", "circle"]
STEPS = 12
TRAIN_OVERRIDES = [f"train.max_steps={STEPS}", "train.batch_size=2", "train.lr=1e-3", "train.warmup_steps=0",
                   f"train.val_every={STEPS}", "train.accelerator=cpu", "train.devices=1", "data.crop_size=[64,64]",
                   "data.num_workers=0", "data.max_val_images=2", "data.check=off"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(the synthetic data, the user's data with other classes)."""
    root = tmp_path_factory.mktemp("finetune")
    synth = write_dataset(root / "synth", 4, 2, seed=0)
    return synth, relabelled_dataset(synth, root / "user", RENAMED, EXTRA)


@pytest.fixture(scope="module")
def sources(data, tmp_path_factory):
    """Model sources keyed by kind: a training run folder (a tiny demo-like run on the synthetic data, on timm's
    0.4M-parameter test_resnet) and transformers folders of both families."""
    root = tmp_path_factory.mktemp("sources")
    model = small_config("mask2former", "test_resnet", 6, 32, 8, 3, 64, 1, 256, norm="bn")
    model.inference.test_shortest_edge, model.inference.test_max_size = 64, 128  # fine-tuning crops 64
    config = RunConfig(
        model=model,
        data=DataConfig(format="panoptic", root=str(data[0]), crop_size=(64, 64), num_workers=0, max_val_images=2),
        train=TrainConfig(max_steps=2, batch_size=2, val_every=2, accelerator="cpu", devices=1),
    )
    train(config, root / "run")
    out = {"run": root / "run"}
    for family in ("maskformer", "mask2former"):
        folder = root / f"transformers-{family}"
        tiny_transformers_model(family, HF_CLASSES).save_pretrained(folder)
        out[f"transformers-{family}"] = folder
    return out


@pytest.fixture(scope="module")
def zoo_pickle(tmp_path_factory):
    """An official model-zoo pickle (detectron2 names, no class names) of a small Swin MaskFormer with
    ADE20K's 150 classes, whose names the loader fills in from the built-in metadata."""
    path = tmp_path_factory.mktemp("zoo") / "model_final_000000.pkl"
    model = tiny_transformers_model("maskformer", [f"class {i}" for i in range(150)], backbone="swin")
    write_zoo_pickle(hf_to_detectron2(model.state_dict()), path)
    return path


def test_class_names_match_by_synonym_and_suffix():
    source = ["person, individual", "tree-merged", "wall-other-merged", "Car"]
    assert match_classes(source, ["car", "individual", "tree", "wall", "bus"]) == {0: 3, 1: 0, 2: 1, 3: 2}


@pytest.mark.parametrize("kind", ["run", "transformers-maskformer", "transformers-mask2former", "zoo-pickle"])
def test_finetuning_keeps_every_weight_but_the_new_class_rows_and_learns(request, data, tmp_path, capsys, kind):
    source = str(
        request.getfixturevalue("zoo_pickle") if kind == "zoo-pickle" else request.getfixturevalue("sources")[kind]
    )
    reference = load_model(source)
    config = finetune_recipe(reference.config, source)
    metadata = COCOPanopticDataset(data[1] / "images" / "train", data[1] / "panoptic_train.json",
                                   data[1] / "panoptic" / "train").metadata  # fmt: skip
    config.model.num_classes, config.model.metadata = len(metadata.class_names), metadata
    # Step 0: what a run trains from.
    model, initialisation = starting_model(config.model)
    ours, theirs = model.state_dict(), reference.state_dict()
    head = next(n for n, m in model.named_modules() if m is model.class_head)
    for key, value in ours.items():
        if not key.startswith(head + "."):
            assert torch.equal(value, theirs[key]), key
    assert model.class_head.weight.shape == (len(USER_CLASSES) + 1, reference.class_head.weight.shape[1])
    names = reference.config.metadata.class_names
    rows = {j: names.index(n) for j, n in enumerate(USER_CLASSES) if n in names}
    rows[len(USER_CLASSES)] = reference.config.num_classes  # no object
    assert len(rows) >= 2 + (kind == "run")
    for new, old in rows.items():
        assert torch.equal(model.class_head.weight[new], reference.class_head.weight[old]), (new, old)
        assert torch.equal(model.class_head.bias[new], reference.class_head.bias[old])
    fresh = [j for j in range(len(USER_CLASSES)) if j not in rows]
    assert fresh and all(not torch.equal(model.class_head.weight[j], reference.class_head.weight[j]) for j in fresh)
    assert sorted(initialisation.new) == sorted(USER_CLASSES[j] for j in fresh)
    # The command: the architecture from the source, one line on what was kept; the loss falls.
    run = tmp_path / "run"
    args = ["train", "--data", str(data[1]), "--out", str(run), f"model.weights={source}", *TRAIN_OVERRIDES]
    assert main(args) == 0
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("starting from"))
    assert f"re-initialised for {len(fresh)} of {len(USER_CLASSES)} classes" in line
    saved = RunConfig.from_yaml(run / "config.yaml").model
    assert (saved.family, saved.backbone, saved.weights) == (reference.config.family, config.model.backbone, source)
    before, after = batch_loss(model, data[1]), batch_loss(load_model(run), data[1])
    assert after < before, (before, after)


def batch_loss(model: MaskFormer, root: Path) -> float:
    """The training loss of ``model`` on a fixed batch of ``root``'s training images (64 x 64 corners, no
    augmentation, the same sampled points), so that two models' losses compare without sampling noise."""
    dataset = COCOPanopticDataset(root / "images" / "train", root / "panoptic_train.json", root / "panoptic" / "train")
    samples = [dataset.load(i) for i in range(len(dataset))]
    for s in samples:
        s["image"], s["label"] = s["image"][:, :64, :64], s["label"][:64, :64]
    x, _ = model.preprocess([s["image"].float() for s in samples])
    criterion = SetCriterion.from_config(model.config)
    torch.manual_seed(0)
    with torch.no_grad():
        return float(sum(criterion(model.eval()(x, with_aux=True), [make_targets(s) for s in samples]).values()))


def test_a_source_of_another_architecture_is_one_line(sources, data, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    RunConfig(model=resnet18_model("mask2former", width=32, queries=8, layers=3, ffn=64, points=256)).to_yaml(config)
    source = sources["transformers-maskformer"]
    args = ["train", "--config", str(config), "--data", str(data[1]), "--format", "panoptic", "--out",
            str(tmp_path / "run"), f"model.weights={source}", *TRAIN_OVERRIDES]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "a maskformer with a resnet" in err and "does not fit this run's mask2former with a resnet18 backbone" in err


def test_resume_with_a_config_that_does_not_fit_is_one_line(sources, data, capsys):
    run = sources["run"]
    args = ["train", "--config", str(run / "config.yaml"), "--out", str(run), "--resume", "auto",
            "model.transformer.num_queries=9", "train.max_steps=3"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "does not fit this checkpoint" in err and "query" in err


def _backbone_config(kind: str) -> BackboneConfig:
    if kind == "swin":
        return tiny_config(backbone="swin").backbone
    return BackboneConfig(type="timm", name=kind, norm="bn")


def _timm_model(kind: str) -> torch.nn.Module:
    """The backbone as timm builds it (a classifier with 6 outputs): the format a saved backbone has."""
    if kind == "swin":
        bb = tiny_config(backbone="swin").backbone
        return timm.create_model("swin_tiny_patch4_window7_224", embed_dim=bb.embed_dim, depths=bb.depths,
                                 num_heads=bb.num_heads, window_size=bb.window_size, num_classes=6)  # fmt: skip
    return timm.create_model(kind, num_classes=6)


def _flat(key: str) -> str:
    """A name as timm's feature wrappers spell it (stages.0 -> stages_0, under model. for some)."""
    return key.removeprefix("body.").removeprefix("model.").replace("_", ".")


@pytest.mark.parametrize("family", ["maskformer", "mask2former"])
@pytest.mark.parametrize("kind", ["resnet18", "swin", "convnext_atto"])
def test_backbone_weights_load_a_saved_backbone(tmp_path, family, kind):
    torch.manual_seed(1)
    source = _timm_model(kind)
    file = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(file))
    config = resnet18_model(family, width=32, queries=8, layers=3, ffn=64, points=256)
    config.backbone = _backbone_config(kind)
    config.backbone.weights = str(file)
    model = MaskFormer(config)
    given = {_flat(k): v for k, v in source.state_dict().items()}
    checked = 0
    for key, value in model.backbone.state_dict().items():
        if key.startswith("norms."):  # the Swin's per-stage output norms are this package's own
            continue
        assert torch.equal(value, given[_flat(key)]), key
        checked += 1
    assert checked > 20
    # A torch file works as well, and a saved model does not need the file any more.
    torch.save(source.state_dict(), tmp_path / "backbone.pth")
    config.backbone.weights = str(tmp_path / "backbone.pth")
    assert torch.equal(next(iter(MaskFormer(config).backbone.parameters())), next(iter(model.backbone.parameters())))
    model.save_pretrained(tmp_path / "saved")
    file.unlink(), (tmp_path / "backbone.pth").unlink()
    assert MaskFormer.from_pretrained(tmp_path / "saved", strict=True).load_report.ok


@pytest.mark.parametrize("kind", ["resnet18", "swin"])
def test_backbone_weights_of_another_model_are_refused_naming_the_keys(tmp_path, kind):
    other = timm.create_model("resnet34") if kind == "resnet18" else _timm_model("resnet18")
    file = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(file))
    config = resnet18_model("maskformer", width=32, queries=8, layers=3, ffn=64, points=256)
    config.backbone = _backbone_config(kind)
    config.backbone.weights = str(file)
    with pytest.raises(ValueError) as err:
        MaskFormer(config)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(file)) and "not a backbone state dict" in message
    assert re.search(r"\d+ (unexpected|missing): [\w.]+", message), message


def test_readme_finetuning_example_runs_as_written(sources, data, tmp_path, monkeypatch, capsys):
    """The README's first fine-tuning command, word for word, where the demo's run and the user's data are."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Fine-tune on your data\n")[1].split("\n## ")[0]
    block = section.split("```bash\n")[1].split("```")[0]
    command = next(line for line in block.splitlines() if line.startswith("maskformer train"))
    assert "model.weights=demo-output/run" in command and "--data my-shapes" in command
    shutil.copytree(sources["run"], tmp_path / "demo-output" / "run")
    shutil.copytree(data[1], tmp_path / "my-shapes")
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(command)[1:]) == 0
    err = capsys.readouterr().err
    assert "starting from demo-output/run:" in err and "rows of 5 kept by class name" in err
    summary = json.loads((tmp_path / "runs" / "my-shapes" / "summary.json").read_text())
    assert summary["steps"] == 100 and "PQ" in summary["metrics"]
