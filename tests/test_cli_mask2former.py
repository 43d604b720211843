"""The CLI and the Predictor on Mask2Former checkpoints: a transformers folder and an official-zoo pickle
(built here from the same weights), through info, convert, predict (all three tasks) and eval. (Export is
test_export.py's, of models loaded by the same loader.)"""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest
import torch

from maskformer import MaskFormer
from maskformer.cli.main import main
from maskformer.data.synth import CLASSES, write_dataset
from maskformer.predict import Predictor, load_model
from tests.helpers import hf_to_official, randomize_norms


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """{"folder": transformers folder, "pickle": zoo pickle} of one small-headed R50 Mask2Former with the
    synthetic data's six classes (8 heads: the zoo reader assumes the paper's), and the synthetic data."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, ResNetConfig

    root = tmp_path_factory.mktemp("m2f_cli")
    # ResNet-50, the official zoo's smallest backbone.
    bb = ResNetConfig(out_features=["stage1", "stage2", "stage3", "stage4"])
    id2label = {i: c["name"] for i, c in enumerate(CLASSES)}
    config = Mask2FormerConfig(
        backbone_config=bb, num_labels=len(CLASSES), id2label=id2label, label2id={v: k for k, v in id2label.items()},
        num_queries=12, feature_size=64, mask_feature_size=64, hidden_dim=64, num_attention_heads=8,
        encoder_layers=2, encoder_feedforward_dim=96, decoder_layers=4, dim_feedforward=96,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        hf = Mask2FormerForUniversalSegmentation(config).eval()
    randomize_norms(hf, torch.Generator().manual_seed(1))  # a misplaced BatchNorm statistic shows
    with torch.no_grad():  # confident classes, so that panoptic and instance results are not empty
        hf.class_predictor.weight.mul_(30)
    hf.save_pretrained(root / "hf")
    with open(root / "model_final_000000.pkl", "wb") as f:
        pickle.dump({"model": hf_to_official(hf.state_dict()), "__author__": "test"}, f)
    data = write_dataset(root / "data", train=2, val=3)
    return {"folder": root / "hf", "pickle": root / "model_final_000000.pkl"}, data


@pytest.mark.parametrize("kind", ["folder", "pickle"])
def test_commands_run_on_mask2former_checkpoints(sources, kind, tmp_path, capsys):
    paths, data = sources
    source = str(paths[kind])
    assert main(["info", "--model", source]) == 0
    out = capsys.readouterr().out
    assert "mask2former" in out and "all weights loaded" in out
    assert main(["convert", "--model", source, "--out", str(tmp_path / "converted"), "--strict"]) == 0
    converted = MaskFormer.from_pretrained(tmp_path / "converted", strict=True)
    reference = load_model(source)
    assert converted.config.family == "mask2former"
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in converted.state_dict().items())
    images = data / "images" / "val"
    for task in ("semantic", "panoptic", "instance"):
        out_dir = tmp_path / task
        assert main(["predict", str(images), "--model", source, "--task", task, "--out", str(out_dir)]) == 0
        assert len(list((out_dir / "overlays").glob("*.png"))) == 3
    records = json.loads((tmp_path / "instance" / "instances.json").read_text())
    assert records and {"segmentation", "score", "bbox"} <= set(records[0])
    assert main(["eval", "--model", source, "--data", str(data), "--out", str(tmp_path / "eval.json")]) == 0
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert {"mIoU", "PQ"} <= set(metrics)


def test_predictor_on_both_sources_gives_the_same_results(sources):
    paths, data = sources
    images = sorted((data / "images" / "val").glob("*.png"))
    by_source = {kind: Predictor.from_pretrained(path, batch_size=2) for kind, path in paths.items()}
    for task in ("semantic", "panoptic", "instance"):
        results = {kind: p(images, task=task) for kind, p in by_source.items()}
        for a, b in zip(results["folder"], results["pickle"]):
            if task == "semantic":
                assert np.array_equal(a.label_map, b.label_map)
            elif task == "panoptic":
                assert torch.equal(a.segmentation, b.segmentation)
                # Names differ: the pickle carries none (its six classes match no built-in dataset).
                assert [(x.id, x.class_id, x.score) for x in a.segments_info] == [
                    (x.id, x.class_id, x.score) for x in b.segments_info
                ]
            else:
                assert torch.equal(a.masks, b.masks) and len(a.masks)


def test_a_known_zoo_model_gets_its_dataset_test_settings_and_licence_notice(sources, monkeypatch, caplog):
    from maskformer.predict import zoo

    paths, _ = sources
    known = zoo.KnownModel("zoo-test-coco", str(paths["pickle"]), "panoptic", "COCO panoptic", "PQ", 51.9)
    monkeypatch.setitem(zoo.KNOWN_MODELS, known.name, known)
    with caplog.at_level("WARNING", logger="maskformer"):
        model = load_model("zoo-test-coco")
    inference = model.config.inference
    assert (inference.test_shortest_edge, inference.test_max_size, inference.object_mask_threshold) == (800, 1333, 0.8)
    assert "CC BY-NC 4.0" in caplog.text


def test_multi_scale_eval_scores_what_multi_scale_predict_writes(sources, tmp_path, capsys):
    """`eval --scales --flip` (the papers' multi-scale mIoU) scores exactly the label maps `predict --scales
    --flip` writes, as the independent file scorer counts them; and it is not the single-scale score."""
    from tests.helpers import tiny_m2f_config

    _, data = sources
    torch.manual_seed(0)
    model = MaskFormer(tiny_m2f_config(num_classes=6)).eval()
    with torch.no_grad():  # distinct, confident queries and sharp masks: maps that vary across pixels and scales
        model.predictor.query_feat.weight.mul_(10)
        model.predictor.class_embed.weight.mul_(30)
        for layer in model.predictor.mask_embed.layers:
            layer.weight.mul_(5)
    source = str(model.save_pretrained(tmp_path / "model"))
    tta = ["--scales", "0.75,1,1.25", "--flip"]
    out = tmp_path / "pred"
    images = str(data / "images" / "val")
    assert main(["predict", images, "--model", source, "--outputs", "label", "--out", str(out), *tta]) == 0
    capsys.readouterr()
    gt = str(data / "semantic" / "val")
    assert (
        main(["eval-files", "semantic", "--pred", str(out / "labels"), "--gt", gt, "--num-classes", "6", "--json"]) == 0
    )
    from_files = json.loads(capsys.readouterr().out)
    assert main(["eval", "--model", source, "--data", str(data), *tta, "--out", str(tmp_path / "multi.json")]) == 0
    multi = json.loads((tmp_path / "multi.json").read_text())
    assert set(multi) == {"step", "mIoU", "pACC", "fwIoU", "IoU"}  # mIoU alone: augmentation averages classes
    assert list(multi["IoU"].values()) == list(from_files["IoU"].values())  # by name / by index
    assert multi["mIoU"] == from_files["mIoU"] and multi["pACC"] == from_files["pACC"]
    assert main(["eval", "--model", source, "--data", str(data), "--out", str(tmp_path / "single.json")]) == 0
    single = json.loads((tmp_path / "single.json").read_text())
    assert single["IoU"] != multi["IoU"] and single["pACC"] != multi["pACC"]
