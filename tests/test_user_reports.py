"""What a new user hit in one afternoon (issue 12), one test per report: model sources, predict = eval,
outputs, configuration errors, messages and the console."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from maskformer.cli.main import main
from maskformer.data.synth import write_dataset
from maskformer.model import MaskFormer
from maskformer.predict import Predictor, load_model
from maskformer.training import RunConfig, train
from tests.helpers import built_once, run_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model that finds segments, trained once for all test processes: (data, run folder). Its four
    validation images are copies of training images, which it learns (PQ 0.33-0.42 there with either AdamW
    kernel); on unseen images it found PQ 0.0-0.13 as rounding went, too close to none for a test that needs
    segments."""

    def build(root):
        data = write_dataset(root / "data", 12, 4, seed=1, size_range=(48, 64))
        for sub in ("images", "semantic", "panoptic"):
            for i in range(4):
                shutil.copy(data / sub / "train" / f"{i:06d}.png", data / sub / "val" / f"{i:06d}.png")
        seen = json.loads((data / "panoptic_train.json").read_text())  # ids 0-3 and file names as the val split's
        seen["images"], seen["annotations"] = seen["images"][:4], seen["annotations"][:4]
        (data / "panoptic_val.json").write_text(json.dumps(seen))
        config = run_config(data, 600, lr=2e-3)
        config.data.augmentation = "none"
        config.model.inference.object_mask_threshold = 0.3
        train(config, root / "run")

    root = built_once(tmp_path_factory, "reports", build)
    return root / "data", root / "run"


def _cli(*argv: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "maskformer.cli.main", *argv], capture_output=True, text=True, env=env, timeout=timeout
    )


# ---- 1. panoptic predictions are scorable as written -----------------------------------------------------
def test_predicted_panoptic_files_score_as_written_and_equal_eval(trained, tmp_path, capsys, monkeypatch):
    data, run = trained
    images = str(data / "images" / "val")
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(run), "--data", str(data), "--out", str(out)]) == 0
    pq = json.loads(out.read_text())["PQ"]
    assert pq > 0, "the fixture's model should find some segments"
    gt = str(data / "panoptic_val.json")
    # Without --gt-json the files name images by file name: eval-files matches them by PNG name.
    assert main(["predict", images, "--model", str(run), "--task", "panoptic", "--out", str(tmp_path / "p")]) == 0
    capsys.readouterr()
    assert main(["eval-files", "panoptic", "--json", "--pred", str(tmp_path / "p" / "panoptic.json"), "--gt", gt]) == 0
    assert json.loads(capsys.readouterr().out)["All"]["pq"] == pytest.approx(pq, abs=1e-12)
    # With --gt-json they carry the ground truth's ids, and panopticapi itself scores them.
    pred = tmp_path / "q"
    argv = ["predict", images, "--model", str(run), "--task", "panoptic", "--out", str(pred), "--gt-json", gt]
    assert main(argv) == 0
    ids = [a["image_id"] for a in json.loads((pred / "panoptic.json").read_text())["annotations"]]
    assert ids == [0, 1, 2, 3]
    panopticapi = pytest.importorskip("panopticapi.evaluation")
    monkeypatch.setattr(panopticapi.multiprocessing, "cpu_count", lambda: 1)
    ref = panopticapi.pq_compute(
        gt, str(pred / "panoptic.json"), str(data / "panoptic" / "val"), str(pred / "panoptic")
    )
    assert ref["All"]["pq"] == pytest.approx(pq, abs=1e-12)


# ---- 2. one resolver of model sources ----------------------------------------------------------------
def test_every_command_takes_a_run_folder_and_its_checkpoint(trained, tmp_path, capsys):
    data, run = trained
    ckpt = run / "checkpoints" / "last.ckpt"
    reference = load_model(run / "model").state_dict()
    for source in (run, ckpt):
        model = MaskFormer.from_pretrained(source)
        assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
        assert main(["info", "--model", str(source)]) == 0
        assert "all weights loaded" in capsys.readouterr().out
        assert main(["eval", "--model", str(source), "--data", str(data), "--max-images", "1"]) == 0
        assert main(["convert", "--model", str(source), "--out", str(tmp_path / source.name)]) == 0
    assert MaskFormer.from_pretrained(tmp_path / "last.ckpt").config.metadata.class_names[0] == "circle"


# ---- 3. model.predict resizes as the config says, like the Predictor --------------------------------
def test_model_predict_equals_the_predictor(trained):
    data, run = trained
    model = load_model(run)  # test size 64: the 48-64 pixel images are enlarged first
    # The same weights in the same memory order: the Predictor's own copy would be channels-last, whose
    # convolutions round differently from the NCHW model's (a rare pixel at a tie).
    predictor = Predictor(model, copy_model=False)
    classes, segments = set(), 0
    for path in sorted((data / "images" / "val").glob("*.png")):
        image = Image.open(path)
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)
        (semantic,) = model.predict([tensor], task="semantic")
        assert torch.equal(semantic, predictor(image)[0].label_map)
        (panoptic,) = model.predict([tensor], task="panoptic")
        assert torch.equal(panoptic.segmentation, predictor(image, task="panoptic")[0].segmentation)
        classes |= set(semantic.unique().tolist())
        segments += len(panoptic.segments)
    assert len(classes) > 1 and segments > 4  # maps that depend on the pixels


# ---- 4. draw takes what the predictor takes ---------------------------------------------------------
def test_draw_accepts_paths_pil_images_grayscale_and_rgba(tiny_model, tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "img.png")
    predictor = Predictor(tiny_model)
    result = predictor(tmp_path / "img.png")[0]
    expected = np.asarray(result.draw(rgb))
    for image in (tmp_path / "img.png", str(tmp_path / "img.png"), Image.fromarray(rgb), None):
        assert np.array_equal(np.asarray(result.draw(image)), expected)
    for image in (rgb[..., 0], np.concatenate([rgb, np.full((40, 52, 1), 255, np.uint8)], -1)):
        assert result.draw(image).size == Image.fromarray(expected).size
    with pytest.raises(ValueError, match="the image is 20x20, the result 40x52"):
        result.draw(np.zeros((20, 20, 3), np.uint8))


# ---- 6. literal fields take their own spellings -----------------------------------------------------
def test_literal_choices_spelled_like_yaml_booleans():
    assert RunConfig().override(["data.check=off"]).data.check == "off"
    assert RunConfig().override(["data.check='off'"]).data.check == "off"


# ---- 7. invalid values: one line naming the key, before anything runs ------------------------------
@pytest.mark.parametrize(
    "override, message",
    [
        ("data.crop_size=128", "data.crop_size: expected a list of 2 integers, got 128"),
        ("data.crop_size=[128]", "data.crop_size: expected a list of 2 integers, got [128]"),
        ("train.max_steps=-5", "train.max_steps: must be at least 1, got -5"),
        ("train.batch_size=0", "train.batch_size: must be at least 1, got 0"),
        ("model.inference.overlap_threshold=1.5", "overlap_threshold: must be at most 1, got 1.5"),
    ],
)
def test_invalid_values_are_one_line_errors_naming_the_key(override, message, tmp_path, capsys):
    data = write_dataset(tmp_path / "d", 2, 1, seed=0, size_range=(32, 32))
    argv = ["train", "--preset", "r50", "--data", str(data), "--format", "panoptic", "--out", str(tmp_path / "r"),
            "model.backbone.pretrained=false", "train.max_steps=1", "data.crop_size=[32,32]"]  # fmt: skip
    assert main([*argv, override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "r").exists()  # checked before anything ran


def test_configs_built_in_python_are_checked_by_train(tmp_path):
    config = run_config(write_dataset(tmp_path / "d", 2, 1, seed=0, size_range=(32, 32)), 1)
    config.train.batch_size = 0
    with pytest.raises(ValueError, match="train.batch_size: must be at least 1"):
        train(config, tmp_path / "run")


# ---- 8. outputs that do not fit the task ------------------------------------------------------------
def test_outputs_must_fit_the_task_and_the_message_says_what_was_written(trained, tmp_path, capsys):
    data, run = trained
    image = str(data / "images" / "val" / "000000.png")
    argv = ["predict", image, "--model", str(run), "--task", "panoptic", "--out", str(tmp_path / "x")]
    assert main([*argv, "--outputs", "label"]) == 2
    assert "outputs ['label'] do not fit task 'panoptic'; it writes panoptic, overlay" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main([*argv, "--outputs", "panoptic", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "panoptic predictions for 1 image: wrote 1 panoptic PNG in panoptic/ with panoptic.json" in out
    assert (tmp_path / "x" / "panoptic" / "000000.png").exists() and not (tmp_path / "x" / "overlays").exists()


# ---- 9. paper recipes start from ImageNet weights ---------------------------------------------------
def test_presets_start_from_imagenet_weights_and_fail_offline_in_one_line(tmp_path, capsys):
    from maskformer.training import recipe

    assert recipe("r50").model.backbone.pretrained and recipe("swin_t").model.backbone.pretrained
    assert main(["presets"]) == 0
    assert "ImageNet: resnet50.tv_in1k" in capsys.readouterr().out
    data = write_dataset(tmp_path / "d", 2, 1, seed=0, size_range=(32, 32))
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    argv = ["train", "--preset", "r50", "--data", str(data), "--format", "panoptic", "--out", str(tmp_path / "r"),
            "model.backbone.name=resnet18.tv_in1k", "train.max_steps=1", "data.crop_size=[32,32]"]  # fmt: skip
    result = _cli(*argv, env=offline)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "model.backbone.pretrained=false" in lines[-1] and "resnet18.tv_in1k" in lines[-1]
    assert "Traceback" not in result.stderr


def test_pretrained_backbone_loads_from_the_hub_cache(tmp_path):
    """timm's download path, fed from a local hub cache of the same layout (no network)."""
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", pretrained=False)
    snapshot = tmp_path / "hub" / "models--timm--resnet18.tv_in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 1000}))
    (tmp_path / "hub" / "models--timm--resnet18.tv_in1k" / "refs").mkdir()
    (tmp_path / "hub" / "models--timm--resnet18.tv_in1k" / "refs" / "main").write_text("0" * 40)
    code = (
        "import torch, timm; from maskformer.model.backbone import TimmBackbone\n"
        "b = TimmBackbone('resnet18.tv_in1k', pretrained=True, norm='bn')\n"
        "print(float(b.body.conv1.weight.sum()))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout) == pytest.approx(float(source.conv1.weight.detach().sum()), rel=1e-6)


# ---- 10. smaller reports ----------------------------------------------------------------------------
def test_train_names_its_run_folder_and_says_when_resume_finds_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_dataset(tmp_path / "d", 4, 2, seed=0, size_range=(48, 48))
    config = run_config(data, 2)
    config.to_yaml(tmp_path / "small.yaml")
    result = _cli("train", "--config", "small.yaml", "--resume", "auto")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--resume auto: no checkpoint in runs/small/checkpoints; starting a new run" in result.stderr
    assert "run folder runs/small" in result.stderr and "run folder runs/small" in result.stdout
    assert (tmp_path / "runs" / "small" / "model" / "model.safetensors").exists()


def test_data_check_and_eval_find_the_layout(tmp_path, capsys):
    data = write_dataset(tmp_path / "d", 2, 1, seed=0, size_range=(32, 32))
    assert main(["data", "check", "--data", str(data)]) == 0
    captured = capsys.readouterr()
    assert "panoptic layout" in captured.err and "OK: no problems found" in captured.out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "check", "--data", str(empty)]) == 2
    assert "no known dataset layout" in capsys.readouterr().err


def test_offline_download_names_the_url(tmp_path, monkeypatch):
    from urllib.error import URLError

    from maskformer.model.loading import resolve_source

    def offline(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    url = "https://dl.fbaipublicfiles.com/maskformer/x/model_final_abcdef.pkl"
    with pytest.raises(OSError, match=rf"{url}: download failed \(\[Errno -2\]"):
        resolve_source(url)
    assert not list(tmp_path.iterdir())


def test_messages_name_the_option(tmp_path, tiny_model, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["predict", "x.png", "--model", "m", "--scales", "0.5,abc"])
    assert exit.value.code == 2
    assert "argument --scales: expected comma-separated numbers, got '0.5,abc'" in capsys.readouterr().err
    tiny_model.save_pretrained(tmp_path / "m")
    (tmp_path / "data" / "images").mkdir(parents=True)
    assert main(["eval", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "no class file (classes.json or classes.txt); name one with --class-file" in err


def test_help_has_no_markup():
    result = _cli("--help")
    assert result.returncode == 0 and "``" not in result.stdout and "maskformer command" in result.stdout


def test_overrides_may_stand_anywhere(tmp_path):
    from maskformer.cli.main import _parse, build_parser

    args = _parse(build_parser(), ["train", "--preset", "r50", "model.num_classes=3", "--out", "run", "train.seed=2"])
    assert args.overrides == ["model.num_classes=3", "train.seed=2"] and args.out == "run"
    with pytest.raises(SystemExit):
        _parse(build_parser(), ["train", "--preset", "r50", "--out", "run", "--nope"])


def test_skipped_samples_are_reported(tmp_path):
    data = write_dataset(tmp_path / "d", 8, 2, seed=0, size_range=(48, 48))
    bad = data / "images" / "train" / "000003.png"
    bad.write_bytes(bad.read_bytes()[:100])
    config = run_config(data, 8)
    config.data.check = "off"
    config.data.skip_bad_samples = True
    config.to_yaml(tmp_path / "c.yaml")
    result = _cli("train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_samples"] >= 1
    assert f"left out: {summary['skipped_samples']} skipped samples" in result.stdout


# ---- 11, 12. Ctrl-C: a message, and an exact resume -------------------------------------------------
def test_ctrl_c_mid_step_then_resume_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    """SIGINT arrives in the middle of step 6, a validation and checkpoint step: the step completes with its
    validation and checkpoint, and the resumed run ends with the uninterrupted run's weights, buffers,
    metrics and logs (losses logged every second step, so that a shifted step count would show)."""
    import signal

    from safetensors.torch import load_file

    from maskformer.training.console import TrainingInterrupted
    from maskformer.training.module import MaskFormerModule

    data = write_dataset(tmp_path / "d", 12, 4, seed=1, size_range=(48, 64))

    def config():
        return run_config(data, 9, val_every=3, checkpoint_every=3, log_every=2)

    train(config(), tmp_path / "straight")
    original = MaskFormerModule.training_step

    def interrupted(self, batch, batch_idx):
        if self.global_step == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(MaskFormerModule, "training_step", interrupted)
    with pytest.raises(TrainingInterrupted, match=r"interrupted after step 6: saved .*last.ckpt; resume with: "):
        train(config(), tmp_path / "resumed")
    monkeypatch.setattr(MaskFormerModule, "training_step", original)
    train(config(), tmp_path / "resumed", resume="auto")
    a = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # BatchNorm counts included
    for name in ("metrics.jsonl", "history.json", "csv/metrics.csv"):
        assert (tmp_path / "straight" / name).read_text() == (tmp_path / "resumed" / name).read_text(), name
    names = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "straight" / "checkpoints").iterdir())


def test_ctrl_c_on_the_command_line_says_how_to_resume(tmp_path):
    import signal
    import time

    data = write_dataset(tmp_path / "d", 8, 2, seed=1, size_range=(48, 64))
    run_config(data, 400, checkpoint_every=1000, val_every=1000).to_yaml(tmp_path / "c.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "maskformer.cli.main", "train", "--config", str(tmp_path / "c.yaml"),
           "--out", str(tmp_path / "run")]  # fmt: skip
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run" / "csv"
    deadline = time.time() + 300
    while not log.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("maskformer: interrupted after step ") and "last.ckpt" in last
    assert f"resume with: maskformer train --config {tmp_path / 'run' / 'config.yaml'}" in last
    assert "--resume auto" in last and "Traceback" not in err and "KeyboardInterrupt" not in err


# ---- 13. the console shows what runs, one progress bar, the results and where they are -------------
def test_train_console_is_clean(tmp_path):
    data = write_dataset(tmp_path / "d", 4, 2, seed=0, size_range=(48, 48))
    run_config(data, 4, val_every=2).to_yaml(tmp_path / "c.yaml")
    result = _cli("train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-2000:]
    console = result.stdout + result.stderr
    for noise in ("GPU available", "TPU available", "Tip:", "litlogger", "LeafSpec", "FLOPs", "Epoch 0/", "| Name",
                  "Warning", "warn", "Seed set", "Trainer.fit"):  # fmt: skip
        assert noise not in console, noise
    assert "training a MaskFormer with a test_resnet backbone" in result.stderr and "run folder" in result.stderr
    assert "training: 100%" in result.stderr and "4/4" in result.stderr
    assert result.stdout.startswith("trained 4 steps in ") and "mIoU" in result.stdout


def test_predict_errors_start_on_their_own_line(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "m")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not an image")
    argv = ["predict", str(tmp_path), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "out")]
    result = _cli(*argv, "--on-error", "stop")
    assert result.returncode == 2
    assert any(line.startswith("maskformer: error: ") and "b.png" in line for line in result.stderr.splitlines())
    result = _cli(*argv)  # skipping (the default): each skipped file on a line of its own
    assert result.returncode == 1
    assert any(line.startswith("maskformer: skipped ") and "b.png" in line for line in result.stderr.splitlines())
