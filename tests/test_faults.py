"""Bad data, faults during training and untrusted files: clear errors naming the file, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from maskformer.cli.main import main
from maskformer.data.io import id_to_rgb, read_image
from maskformer.data.synth import write_dataset
from maskformer.training import train
from maskformer.training.module import MaskFormerModule
from tests.helpers import run_config


def _semantic_dataset(root, n=4, size=(20, 24)):
    for sub in ("images/train", "labels/train", "images/val", "labels/val"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("a\nb\nc\n")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / f"images/{split}/{i}.png")
            Image.fromarray(rng.integers(0, 3, size, dtype=np.uint8)).save(root / f"labels/{split}/{i}.png")
    return root


def test_data_check_names_each_semantic_problem(tmp_path, capsys):
    root = _semantic_dataset(tmp_path / "sem")
    assert main(["data", "check", "--data", str(root)]) == 0
    assert "OK" in capsys.readouterr().out
    data = (root / "images/train/0.png").read_bytes()
    (root / "images/train/0.png").write_bytes(data[: len(data) // 2])  # truncated
    (root / "labels/train/1.png").unlink()  # missing label
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "labels/train/extra.png")  # extra label
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "labels/train/2.png")  # size mismatch
    Image.fromarray(np.full((20, 24), 7, np.uint8)).save(root / "labels/train/3.png")  # not a class, not ignore
    (root / "images/val/0.png").write_bytes(b"not an image")  # unreadable
    assert main(["data", "check", "--data", str(root)]) == 1
    out = capsys.readouterr().out
    assert "train/0.png: cannot read image" in out
    assert "train/1.png: missing label file" in out
    assert "labels/train/extra.png: extra label file" in out
    assert "labels/train/2.png: label size (5, 5) differs from image size (20, 24)" in out
    assert "labels/train/3.png: label values [7] are neither classes 0..2 nor ignore (255)" in out
    assert "val/0.png: cannot read image" in out
    assert "FAILED: 6 problems" in out and "checked 4 of 4 samples: 5 problems" in out


def test_data_check_names_each_panoptic_problem(tmp_path, capsys):
    root = write_dataset(tmp_path / "pan", 4, 2, seed=3, size_range=(32, 40))
    assert main(["data", "check", "--data", str(root), "--format", "panoptic"]) == 0
    capsys.readouterr()
    path = root / "panoptic_train.json"
    data = json.loads(path.read_text())
    anns = data["annotations"]
    dropped = anns[0]["segments_info"].pop()  # its PNG id is no longer in the JSON
    anns[1]["segments_info"].append({"id": 999, "category_id": 1, "iscrowd": 0})  # not in the PNG
    anns[2]["segments_info"][0]["category_id"] = 77  # unknown category
    anns[3]["segments_info"].append(dict(anns[3]["segments_info"][0]))  # duplicate id
    path.write_text(json.dumps(data))
    (root / "panoptic_val.json").write_text(
        json.dumps({**json.loads((root / "panoptic_val.json").read_text()), "annotations": []})
    )
    assert main(["data", "check", "--data", str(root), "--format", "panoptic"]) == 1
    out = capsys.readouterr().out
    assert f"panoptic/train/000000.png: PNG ids absent from the JSON: [{dropped['id']}]" in out
    assert "JSON segments absent from the PNG: [999] of 000001.png" in out
    assert "unknown category id: 77" in out
    assert "duplicate segment id" in out and "000003.png" in out
    assert "panoptic_val.json: empty dataset" in out


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synth"), 12, 4, seed=1, size_range=(48, 64))


def _copy_with_bad_sample(src, dst):
    import shutil

    shutil.copytree(src, dst)
    bad = dst / "images" / "train" / "000007.png"
    bad.write_bytes(bad.read_bytes()[:200])
    return bad


def test_bad_sample_found_late_stops_the_run_or_is_skipped(synth, tmp_path):
    root = tmp_path / "data"
    bad = _copy_with_bad_sample(synth, root)
    config = run_config(root, 8)
    with pytest.raises(ValueError, match="data check found 1 problem, .*000007.png: cannot read image"):
        train(config, tmp_path / "checked")
    config = run_config(root, 8)
    config.data.check = "off"
    with pytest.raises(ValueError, match=f"{bad}: cannot read image"):
        train(config, tmp_path / "stops")
    config = run_config(root, 8)
    config.data.check = "off"
    config.data.skip_bad_samples = True
    summary = train(config, tmp_path / "skips")
    assert summary["steps"] == 8
    csv = (tmp_path / "skips" / "csv" / "metrics.csv").read_text()
    assert "train/skipped_samples" in csv.splitlines()[0]


def test_nonfinite_loss_stops_with_the_step_or_is_skipped(synth, tmp_path, monkeypatch):
    original = MaskFormerModule.training_step
    calls = []

    def poisoned(self, batch, batch_idx):
        calls.append(self.global_step)
        if len(calls) == 6:  # the sixth batch: step 5
            for item in batch:
                item["image"] = item["image"].float() * float("nan")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(MaskFormerModule, "training_step", poisoned)
    config = run_config(synth, 8, checkpoint_every=2)
    with pytest.raises(FloatingPointError, match="non-finite loss.*at step 5"):
        train(config, tmp_path / "stop")
    calls.clear()
    checkpoints = tmp_path / "stop" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("*.ckpt")) == ["step-0000004.ckpt"]  # no last.ckpt
    state = torch.load(checkpoints / "step-0000004.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    config = run_config(synth, 8, nonfinite_loss="skip")
    summary = train(config, tmp_path / "skip")
    assert summary["steps"] == 8 and len(calls) == 8  # the poisoned batch counts as a step without an update
    header = (tmp_path / "skip" / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/skipped_steps" in header


def test_checkpoints_are_atomic(synth, tmp_path, monkeypatch):
    config = run_config(synth, 4, checkpoint_every=2, keep_checkpoints=-1)
    train(config, tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "step-0000004.ckpt"
    before = ckpt.read_bytes()
    real_save = torch.save

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"partial checkpoint bytes")
        raise KeyboardInterrupt("killed while writing")

    from maskformer.training.run import AtomicCheckpointIO

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, ckpt)
    monkeypatch.setattr(torch, "save", real_save)
    assert ckpt.read_bytes() == before
    assert torch.load(ckpt, weights_only=True)["global_step"] == 4
    names = ["best-step-0000004.ckpt", "last.ckpt", "step-0000002.ckpt", "step-0000004.ckpt"]
    assert sorted(p.name for p in ckpt.parent.iterdir()) == names  # no temporary file left beside them


def _train_process(config_path, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "maskformer.cli.main", "train", "--config", str(config_path), "--out", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_and_resume_equals_uninterrupted_run(synth, tmp_path):
    config = run_config(synth, 16, checkpoint_every=2, deterministic=True)
    config.to_yaml(tmp_path / "run.yaml")
    straight = _train_process(tmp_path / "run.yaml", tmp_path / "straight")
    assert straight.wait(timeout=600) == 0, straight.stderr.read()[-2000:]
    killed = _train_process(tmp_path / "run.yaml", tmp_path / "killed")
    first = tmp_path / "killed" / "checkpoints" / "step-0000004.ckpt"
    deadline = time.time() + 300
    while not first.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert not (tmp_path / "killed" / "summary.json").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "maskformer.cli.main", "train", "--config", str(tmp_path / "run.yaml"),
         "--out", str(tmp_path / "killed"), "--resume", "auto"],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    assert max((a[k].double() - b[k].double()).abs().max().item() for k in a) <= 1e-6


def test_out_of_memory_names_batch_and_crop(synth, tmp_path, monkeypatch):
    def oom(self, batch, batch_idx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(MaskFormerModule, "training_step", oom)
    with pytest.raises(RuntimeError, match=r"batch size 2 .*crop \(48, 48\).*bf16-mixed"):
        train(run_config(synth, 4), tmp_path / "run")


def test_image_pixel_limit(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("1", (13000, 12000)).save(path)  # a few KB on disk, 156 million pixels decoded
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ValueError, match=r"bomb.png: .*13000x12000 = 156,000,000 pixels exceeds the limit"):
        read_image(path)
    monkeypatch.setenv("MASKFORMER_MAX_IMAGE_PIXELS", "100")
    Image.new("RGB", (20, 10)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="small.png: .*20x10 = 200 pixels exceeds the limit of 100"):
        read_image(tmp_path / "small.png")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--preset", "r500", "--data", "."], "unknown preset 'r500'"),
        (["train", "--preset", "r50", "--data", ".", "train.no_such=1"], "unknown key 'train.no_such'"),
        (["train", "--preset", "r50", "--data", ".", "train.max_steps"], "not of the form key=value"),
        (["predict", "x.png", "--model", "m", "--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["predict", "missing.png", "--model", "m"], "missing.png: no such file or folder"),
        (["data", "check", "--data", "nowhere"], "nowhere: data folder not found"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse usage errors
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert message in lines[0] and "Traceback" not in err


def test_model_source_that_is_not_a_maskformer(tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    result = subprocess.run(
        [sys.executable, "-m", "maskformer.cli.main", "predict", str(tmp_path / "x.png"), "--model", str(folder)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(folder) in result.stderr and "MaskFormer" in result.stderr


def test_panoptic_images_without_segments_are_valid_samples(tmp_path):
    root = write_dataset(tmp_path / "d", 2, 1, seed=0, size_range=(32, 32))
    data = json.loads((root / "panoptic_train.json").read_text())
    data["annotations"][0]["segments_info"] = []
    (root / "panoptic_train.json").write_text(json.dumps(data))
    png = root / "panoptic" / "train" / data["annotations"][0]["file_name"]
    Image.fromarray(id_to_rgb(np.zeros((32, 32), np.int64))).save(png)
    from maskformer.data.check import check_reader
    from maskformer.data.datasets import COCOPanopticDataset, make_targets

    reader = COCOPanopticDataset(root / "images" / "train", root / "panoptic_train.json", root / "panoptic" / "train")
    assert check_reader(reader).ok
    targets = make_targets(reader.load(0))
    assert targets["labels"].numel() == 0 and targets["masks"].shape[0] == 0


class _RunsCommand:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pth", ".ckpt"])
def test_malicious_torch_checkpoints_are_refused(tmp_path, suffix):
    """torch files are read with weights_only: a pickled command is refused, never run."""
    from maskformer.model import MaskFormer
    from maskformer.predict import load_model

    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    torch.save({"model": {"x": torch.zeros(2)}, "state_dict": {}, "payload": _RunsCommand(marker)}, path)
    loader = MaskFormer.from_pretrained if suffix == ".pth" else load_model
    with pytest.raises(ValueError, match=rf"evil\{suffix}: not a readable (torch file|checkpoint)"):
        loader(path)
    assert not marker.exists()


def test_data_check_names_label_values_outside_a_fixed_format(tmp_path, capsys):
    """An ADE20K label PNG holding 200 (no ADE20K value: 0 is ignore, 1..150 the classes) and a Cityscapes
    labelIds PNG holding 77 (no label id) were read as "ignore" before; now data check names each file."""
    from tests.helpers import official_layouts

    synth = tmp_path / "synth"
    write_dataset(synth, train=3, val=2, seed=0)
    ade = official_layouts(synth, tmp_path)["ade20k"]
    assert main(["data", "check", "--data", str(ade)]) == 0
    label = sorted((ade / "annotations" / "validation").glob("*.png"))[1]
    values = np.asarray(Image.open(label)).copy()
    values[:2, :2] = 200
    Image.fromarray(values).save(label)
    capsys.readouterr()
    assert main(["data", "check", "--data", str(ade)]) == 1
    out = capsys.readouterr().out
    assert f"{label}: label values [200] are not values of this format (it uses 0-150)" in out

    city = tmp_path / "cityscapes"
    for split in ("train", "val"):
        (city / "leftImg8bit" / split / "aachen").mkdir(parents=True)
        (city / "gtFine" / split / "aachen").mkdir(parents=True)
        for i in range(2):
            stem = f"aachen_{i:06d}_000019"
            image = city / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png"
            Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(image)
            ids = np.full((16, 32), 7, np.uint8)
            ids[0, :4] = [0, 33, 255, 26]
            Image.fromarray(ids).save(city / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png")
    assert main(["data", "check", "--data", str(city)]) == 0
    bad = city / "gtFine" / "val" / "aachen" / "aachen_000001_000019_gtFine_labelIds.png"
    ids = np.asarray(Image.open(bad)).copy()
    ids[5, 5] = 77
    Image.fromarray(ids).save(bad)
    capsys.readouterr()
    assert main(["data", "check", "--data", str(city)]) == 1
    assert f"{bad}: label values [77] are not values of this format (it uses 0-33, 255)" in capsys.readouterr().out
