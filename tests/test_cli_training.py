"""``maskformer data synth``, ``train``, ``eval`` and ``eval-files`` from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from maskformer.cli.main import main
from maskformer.data.io import id_to_rgb
from maskformer.data.synth import write_dataset
from tests.helpers import TINY_M2F, official_layouts


def test_synth_train_eval(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["data", "synth", "--out", str(data), "--train", "6", "--val", "3", "--seed", "2"]) == 0
    assert len(list((data / "images" / "train").glob("*.png"))) == 6
    overrides = [
        "model.backbone.name=test_resnet",
        "model.backbone.pretrained=false",
        "model.backbone.norm=bn",
        "model.pixel_decoder.conv_dim=32",
        "model.pixel_decoder.mask_dim=32",
        "model.transformer.hidden_dim=32",
        "model.transformer.num_queries=6",
        "model.transformer.num_layers=1",
        "model.transformer.num_heads=4",
        "model.transformer.ffn_dim=32",
        "model.inference.test_shortest_edge=64",
        "data.crop_size=[48,48]",
        "data.num_workers=0",
        "train.max_steps=3",
        "train.batch_size=2",
        "train.val_every=3",
        "train.accelerator=cpu",
        "train.devices=1",
    ]
    code = main(
        [
            "train",
            "--preset",
            "r50",
            "--data",
            str(data),
            "--format",
            "panoptic",
            "--out",
            str(tmp_path / "run"),
            *overrides,
        ]
    )
    assert code == 0
    assert "trained 3 steps" in capsys.readouterr().out
    out = tmp_path / "metrics.json"
    evaluate = ["eval", "--model", str(tmp_path / "run" / "model"), "--data", str(data), "--workers", "0"]
    assert main([*evaluate, "--format", "panoptic", "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert {"mIoU", "PQ", "AP"} <= set(metrics)
    assert main([*evaluate, "--format", "semantic", "--label-dir", "semantic"]) == 0
    # A run folder and a run's Lightning checkpoint are model sources for predict, with the data's classes.
    images = str(data / "images" / "val")
    for source in (tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt"):
        pred = tmp_path / f"pred_{source.name}"
        assert main(["predict", images, "--model", str(source), "--out", str(pred), "--quiet"]) == 0
        assert len(list((pred / "labels").glob("*.png"))) == 3
    from maskformer.predict import load_model

    assert load_model(tmp_path / "run" / "checkpoints" / "last.ckpt").config.metadata.class_names[0] == "circle"


def test_train_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--preset", "r50", "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: data folder not found" in capsys.readouterr().err
    assert main(["train", "--preset", "r50", "--data", str(tmp_path), "train.max_stepz=3"]) == 2
    assert "unknown key 'train.max_stepz'" in capsys.readouterr().err


def test_eval_files_panoptic(tmp_path, capsys):
    ids = np.zeros((8, 8), dtype=np.int64)
    ids[:, :4] = 3
    ids[:, 4:] = 4
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
        Image.fromarray(id_to_rgb(ids)).save(tmp_path / folder / "0.png")
    categories = [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 0}]
    segments = [
        {"id": 3, "category_id": 1, "iscrowd": 0, "area": 32},
        {"id": 4, "category_id": 2, "iscrowd": 0, "area": 32},
    ]
    for name in ("gt", "pred"):
        (tmp_path / f"{name}.json").write_text(
            json.dumps(
                {
                    "annotations": [{"image_id": 0, "file_name": "0.png", "segments_info": segments}],
                    "categories": categories,
                }
            )
        )
    assert (
        main(
            [
                "eval-files",
                "panoptic",
                "--json",
                "--pred",
                str(tmp_path / "pred.json"),
                "--gt",
                str(tmp_path / "gt.json"),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["All"]["pq"] == 1.0


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    synth = write_dataset(root / "synth", 4, 2, seed=3, size_range=(48, 64))
    return {"synth": synth, **official_layouts(synth, root)}


@pytest.mark.parametrize(
    "preset, layout, extra, metric",
    [
        ("m2f_r50_ade", "ade20k", [], "mIoU"),
        ("m2f_r50_coco", "coco_panoptic", [], "PQ"),
        ("m2f_r50_coco_instance", "coco_instance", [], "AP"),
        ("m2f_r50_ade", "synth", ["--format", "semantic", "data.label_dir=semantic"], "mIoU"),
        ("m2f_r50_coco", "synth", ["--format", "panoptic"], "PQ"),
    ],
)
def test_mask2former_presets_train_on_every_layout(layouts, tmp_path, capsys, preset, layout, extra, metric):
    out = tmp_path / "run"
    args = ["train", "--preset", preset, "--data", str(layouts[layout]), "--out", str(out), *extra, *TINY_M2F]
    assert main(args) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert metric in summary["metrics"]
    config = (out / "config.yaml").read_text()
    assert "family: mask2former" in config and "type: masked_attention" in config
