"""The ``maskformer`` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from maskformer.cli.main import main


def test_presets_lists_paper_configurations(capsys):
    from maskformer.model import PRESETS

    assert main(["presets"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == list(PRESETS)
    # Counting builds each model (on the meta device); the papers give 42M for Swin-T and 45M for R50+6Enc.
    assert main(["presets", "--count", "swin_t", "r50+6enc"]) == 0
    rows = {row.split()[0]: row.split()[-1] for row in capsys.readouterr().out.splitlines()[1:]}
    assert (rows.pop("swin_t"), rows.pop("swin_t_coco"), rows.pop("r50+6enc")) == ("41.8M", "41.8M", "45.0M")
    assert rows and all(name.startswith("m2f_swin_t_") for name in rows)  # "swin_t" matches those too
    assert main(["presets", "eomt"]) == 0
    names = [row.split()[0] for row in capsys.readouterr().out.splitlines()[1:]]
    assert names and all(name.startswith("eomt_") for name in names)
    assert main(["presets", "xyz"]) == 2
    assert "no preset matches 'xyz'" in capsys.readouterr().err


def test_info_and_convert(tmp_path, capsys, hf_checkpoints):
    assert main(["info", "--preset", "r50"]) == 0
    assert "# parameters: 41,25" in capsys.readouterr().out
    folder, _ = hf_checkpoints["r50"]
    assert main(["convert", "--model", str(folder), "--out", str(tmp_path / "out"), "--strict"]) == 0
    assert (tmp_path / "out" / "config.yaml").exists()
    assert main(["info", "--model", str(tmp_path / "out")]) == 0
    assert "all weights loaded" in capsys.readouterr().out


def test_errors_are_one_line_with_nonzero_exit(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "maskformer.cli.main", "info", "--model", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "missing: no such file or folder" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("family", ["maskformer", "mask2former"])
def test_demo_smoke(tmp_path, capsys, family):
    """The demo end to end at toy size, for each family (the real run is `make demo`)."""
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--steps", "4", "--backbone-steps", "3", "--train-images", "10",
            "--val-images", "6"]  # fmt: skip
    assert main([*args, "--family", family, "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"mIoU", "PQ", "AP", "wall_time_s", "steps"} <= set(metrics) and metrics["steps"] == 4
    assert metrics["family"] == family and metrics["device"] == "cpu" and metrics["backbone_steps"] == 3
    for name in ("training.png", "predictions.png", "confusion.png", "run/model/model.safetensors",
                 "data/classes.json", "predictions/panoptic.json", "predictions/overlays/000000.png",
                 "backbone/resnet18.safetensors"):  # fmt: skip
        assert (out / name).exists(), name
    config = (out / "run" / "config.yaml").read_text()
    assert f"family: {family}" in config and f"weights: {out / 'backbone' / 'resnet18.safetensors'}" in config
    # Every shape of the validation images is counted once in the confusion matrix.
    shapes = sum(sum(row.values()) for row in metrics["thing_confusion"].values())
    val = json.loads((out / "data" / "panoptic_val.json").read_text())
    thing_ids = {c["id"] for c in val["categories"] if c["isthing"]}
    assert shapes == sum(s["category_id"] in thing_ids for a in val["annotations"] for s in a["segments_info"])
    console = capsys.readouterr().out
    assert "[demo] mIoU" in console and "on the CPU" in console and "stage 1:" in console and "stage 2:" in console


def test_demo_on_cuda_without_a_gpu_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "demo" / "data").exists()
