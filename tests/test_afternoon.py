"""What a new user hit in one afternoon and what a read of the code found (issue 24), one test per item:
run folders and checkpoints, file modes, predict on bad files, overlays, messages and checks."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from pathlib import Path

import pytest
import torch

from maskformer.data.synth import write_dataset
from maskformer.model import MaskFormer
from maskformer.model.atomic import atomic_path
from maskformer.training import train
from tests.helpers import run_config, straightforward_instance, straightforward_panoptic


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("afternoon"), 6, 2, seed=1, size_range=(48, 64))


def _validated_steps(run) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---- 1 and 4. a run ends with its metrics, and resuming it when finished loses nothing ----------------------
def test_runs_validate_at_their_last_step_and_a_finished_run_is_left_alone(synth, tmp_path, caplog):
    run = tmp_path / "run"
    config = run_config(synth, 3, val_every=2)
    first = train(config, run)
    assert _validated_steps(run) == [2, 3], "3 steps with val_every 2: validated at 2 and at the last step"
    assert first["metrics"]["step"] == 3 and "PQ" in first["metrics"]
    written = {name: (run / name).read_bytes() for name in ("summary.json", "config.yaml", "history.json")}
    with caplog.at_level(logging.INFO, logger="maskformer"):
        again = train(config, run, resume="auto")
    assert "already finished at step 3, nothing to do" in caplog.text
    assert again == json.loads(written["summary.json"])
    assert {name: (run / name).read_bytes() for name in written} == written
    config.train.max_steps = 4
    extended = train(config, run, resume="auto")
    assert extended["steps"] == 4 and extended["metrics"]["step"] == 4
    assert _validated_steps(run) == [2, 3, 4]


# ---- 5. the last and the best checkpoints are kept, not every one ------------------------------------------
@pytest.mark.parametrize("keep", [1, 2, -1])
def test_checkpoints_kept_are_the_newest_and_the_best(synth, tmp_path, keep):
    run = tmp_path / "run"
    config = run_config(synth, 4, val_every=2, checkpoint_every=1, keep_checkpoints=keep)
    train(config, run)
    names = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    periodic = [n for n in names if n.startswith("step-")]
    expected = {1: [4], 2: [3, 4], -1: [1, 2, 3, 4]}[keep]
    assert periodic == [f"step-{s:07d}.ckpt" for s in expected]
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best_pq = max(h["PQ"] for h in history)
    best_step = next(h["step"] for h in history if h["PQ"] == best_pq)  # a tie keeps the earlier
    assert [n for n in names if n.startswith("best-")] == [f"best-step-{best_step:07d}.ckpt"]
    assert "last.ckpt" in names


# ---- 6. a truncated last.ckpt: resume from the newest readable one; a corrupt file is one line -------------
def test_resume_passes_over_an_unreadable_last_checkpoint(synth, tmp_path, caplog):
    run = tmp_path / "run"
    config = run_config(synth, 3, val_every=3, checkpoint_every=2)
    train(config, run)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    config.train.max_steps = 4
    with caplog.at_level(logging.INFO, logger="maskformer"):
        summary = train(config, run, resume="auto")
    assert "last.ckpt: not a readable checkpoint" in caplog.text
    assert "resuming" in caplog.text and "steps 3-4" in caplog.text  # from step-0000002.ckpt
    assert summary["steps"] == 4


def test_a_corrupt_checkpoint_is_one_line(synth, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint at all\n" * 64)
    with pytest.raises(ValueError) as err:
        train(run_config(synth, 2), tmp_path / "run", resume=str(bad))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{bad}: not a readable checkpoint")
    assert "weights_only" not in message


# ---- 7. a command that stops on an error leaves no run folder ----------------------------------------------
def test_failed_runs_leave_no_folder(synth, tmp_path):
    config = run_config(synth, 2)
    config.model.backbone.name = "resnet81"
    with pytest.raises(ValueError, match="resnet81"):
        train(config, tmp_path / "typo")
    assert not (tmp_path / "typo").exists()
    config = run_config(tmp_path / "no-data", 2)
    with pytest.raises(FileNotFoundError, match="no-data"):
        train(config, tmp_path / "nodata")
    assert not (tmp_path / "nodata").exists()


# ---- 2. files written atomically get the mode an ordinary write gives ---------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_saved_weights_have_the_mode_of_an_ordinary_write(tmp_path, umask):
    from tests.helpers import tiny_config

    previous = os.umask(umask)
    try:
        (tmp_path / "ordinary.txt").write_text("x")
        MaskFormer(tiny_config()).save_pretrained(tmp_path / "model")
    finally:
        os.umask(previous)
    ordinary = stat.S_IMODE((tmp_path / "ordinary.txt").stat().st_mode)
    assert ordinary == 0o666 & ~umask
    for name in ("model.safetensors", "config.yaml"):
        assert stat.S_IMODE((tmp_path / "model" / name).stat().st_mode) == ordinary, name
    # Rewriting a file keeps the mode its owner gave it, as open(path, "w") does.
    target = tmp_path / "model" / "model.safetensors"
    target.chmod(0o640)
    with atomic_path(target) as tmp:
        torch.save({}, tmp)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


# ---- 3. one unreadable image does not stop predict, or stops it with complete outputs ------------------------
@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    from maskformer.data.synth import metadata_json
    from maskformer.model.config import MetadataConfig
    from tests.helpers import tiny_config

    config = tiny_config(num_classes=6)
    meta = metadata_json()
    config.metadata = MetadataConfig(
        class_names=[c["name"] for c in meta["classes"]],
        thing_classes=[c["index"] for c in meta["classes"] if c["isthing"]],
    )
    folder = tmp_path_factory.mktemp("small_model")
    torch.manual_seed(0)
    MaskFormer(config).save_pretrained(folder)
    return folder


def _images_with_bad_ones(folder):
    from PIL import Image

    folder.mkdir()
    for name in ("a", "c", "e"):
        Image.new("RGB", (40, 30), (200, 50, 50)).save(folder / f"{name}.png")
    (folder / "b.png").write_text("this is not an image\n")
    good = (folder / "a.png").read_bytes()
    (folder / "d.png").write_bytes(good[: len(good) // 2])  # truncated
    return folder


def test_predict_skips_unreadable_images_and_finishes_the_others(small_model, tmp_path, capsys):
    from maskformer.cli.main import main

    images = _images_with_bad_ones(tmp_path / "images")
    out = tmp_path / "out"
    code = main(["predict", str(images), "--model", str(small_model), "--task", "panoptic", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"skipped {images / 'b.png'}: cannot read image" in err and f"skipped {images / 'd.png'}" in err
    assert "skipped 2 unreadable files" in err
    written = json.loads((out / "panoptic.json").read_text())
    assert [Path(im["file_name"]).name for im in written["images"]] == ["a.png", "c.png", "e.png"]
    assert sorted(p.name for p in (out / "panoptic").iterdir()) == ["a.png", "c.png", "e.png"]
    assert sorted(p.stem for p in (out / "overlays").iterdir()) == ["a", "c", "e"]


def test_predict_can_stop_at_the_first_unreadable_image_keeping_what_it_wrote(small_model, tmp_path, capsys):
    from maskformer.cli.main import main

    images = _images_with_bad_ones(tmp_path / "images")
    out = tmp_path / "out"
    argv = ["predict", str(images), "--model", str(small_model), "--task", "panoptic", "--out", str(out)]
    assert main([*argv, "--on-error", "stop"]) == 2
    assert f"{images / 'b.png'}: cannot read image" in capsys.readouterr().err
    assert [Path(im["file_name"]).name for im in json.loads((out / "panoptic.json").read_text())["images"]] == ["a.png"]


# ---- 10 and 11. options are checked before anything loads, in the option's own words -----------------------
@pytest.mark.parametrize(
    "options, message",
    [
        (["--task", "panoptic", "--scales", "0.5,1"], "apply to task='semantic' only"),
        (["--task", "instance", "--flip"], "apply to task='semantic' only"),
        (["--score-threshold", "1.5"], "argument --score-threshold: expected a number in [0, 1], got '1.5'"),
        (["--overlap-threshold", "x"], "argument --overlap-threshold: expected a number in [0, 1], got 'x'"),
        (["--device", "cuda:7"], "device 'cuda:7': "),
        (["--device", "gpu"], "device 'gpu': expected cpu, cuda, cuda:N or mps"),
    ],
)
def test_predict_options_are_refused_before_the_model_loads(tmp_path, capsys, options, message):
    from maskformer.cli.main import main

    if "cuda:7" in options and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    (tmp_path / "a.png").write_bytes(b"")
    missing = tmp_path / "no-such-model"
    with pytest.raises(SystemExit) if "argument" in message else contextlib.nullcontext():
        main(["predict", str(tmp_path / "a.png"), "--model", str(missing), *options])
    err = capsys.readouterr().err
    assert message in err and "no-such-model" not in err, err
    assert len(err.strip().splitlines()) == 1


# ---- 10. messages ------------------------------------------------------------------------------------------
def test_a_mistyped_backbone_is_named_with_close_names(synth, tmp_path):
    config = run_config(synth, 2)
    config.model.backbone.name = "resnet81"
    with pytest.raises(
        ValueError, match=r"^model.backbone.name 'resnet81': not a timm model \(did you mean 'resnet18'"
    ):
        train(config, tmp_path / "run")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--preset", "r5O"], "unknown preset 'r5O' (did you mean 'r50'"),
        (
            ["train", "--preset", "r50", "train.max_step=3"],
            "unknown key 'train.max_step' (did you mean 'train.max_steps'",
        ),
        (["train", "--preset", "r50", "trian.max_steps=3"], "unknown section 'trian' (did you mean 'train'?)"),
    ],
)
def test_mistyped_names_get_a_suggestion(tmp_path, capsys, argv, message):
    from maskformer.cli.main import main

    assert main([*argv, "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_unreadable_bytes_are_named_without_pillows_file_object(tmp_path):
    from maskformer.data.io import decode_image, read_image

    with pytest.raises(ValueError) as err:
        decode_image(b"hello, this is text", "notes.txt")
    assert str(err.value) == "notes.txt: cannot read image (not an image, or in a format Pillow does not read)"
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(ValueError) as err:
        read_image(tmp_path / "notes.png")
    assert str(err.value).count("notes.png") == 1 and "object at" not in str(err.value)


def test_counts_are_in_good_english(synth, tmp_path, capsys):
    from maskformer.cli.main import main
    from maskformer.data.messages import plural

    assert [plural(1, "problem"), plural(2, "step"), plural(0, "image")] == ["1 problem", "2 steps", "0 images"]
    config = run_config(synth, 1, val_every=1)
    config.to_yaml(tmp_path / "one.yaml")
    assert main(["train", "--config", str(tmp_path / "one.yaml"), "--out", str(tmp_path / "run")]) == 0
    assert "trained 1 step in" in capsys.readouterr().out
    label = synth / "semantic" / "train" / "000000.png"
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(synth, broken)
    (broken / "panoptic" / "train" / "000000.png").write_bytes(label.read_bytes()[:20])
    assert main(["data", "check", "--data", str(broken), "--split", "train"]) == 1
    out = capsys.readouterr().out
    assert "1 problem\n" in out + "\n" and "FAILED: 1 problem" in out


# ---- 8. train finds the layout of --data, as data check does ------------------------------------------------
def test_train_detects_the_layout_of_its_data(synth, tmp_path, capsys):
    import shutil

    from maskformer.cli.main import main

    semantic = tmp_path / "semantic_layout"
    for split in ("train", "val"):
        shutil.copytree(synth / "images" / split, semantic / "images" / split)
        shutil.copytree(synth / "semantic" / split, semantic / "labels" / split)
    shutil.copy(synth / "classes.json", semantic / "classes.json")
    config = run_config(synth, 1)
    config.data.format = "ade20k"  # as the ADE20K presets say
    config.to_yaml(tmp_path / "ade.yaml")
    argv = ["train", "--config", str(tmp_path / "ade.yaml"), "--data", str(semantic), "--out", str(tmp_path / "run")]
    assert main(argv) == 0, capsys.readouterr().err
    assert "semantic layout, used instead of the configuration's ade20k" in capsys.readouterr().err
    assert "format: semantic" in (tmp_path / "run" / "config.yaml").read_text()


# ---- 14. 16-bit images are scaled by their bit depth --------------------------------------------------------
def test_a_16_bit_copy_of_an_image_reads_as_the_8_bit_one(tmp_path):
    import numpy as np
    from PIL import Image

    from maskformer.data.io import read_image

    gray = (np.arange(40 * 30).reshape(30, 40) % 200).astype(np.uint8)  # peak 199: a peak-stretch changes it
    Image.fromarray(gray).save(tmp_path / "eight.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    with Image.open(tmp_path / "sixteen.png") as img:
        assert img.mode.startswith("I")  # read as 16-bit
    assert torch.equal(read_image(tmp_path / "sixteen.png"), read_image(tmp_path / "eight.png"))


# ---- 12. the console: the family in the training line, eval as a table with per-class results by name -------
@pytest.fixture(scope="module")
def short_run(synth, tmp_path_factory):
    run = tmp_path_factory.mktemp("short") / "run"
    train(run_config(synth, 2), run)
    return run


def test_eval_prints_a_table_with_per_class_results_by_name(synth, short_run, tmp_path, capsys):
    from maskformer.cli.main import main

    evaluate = ["eval", "--model", str(short_run), "--data", str(synth), "--workers", "0"]
    assert main(evaluate) == 0
    table = capsys.readouterr().out
    assert "mIoU" in table and "(%)" in table and not table.lstrip().startswith("{")
    header = next(line for line in table.splitlines() if line.startswith("class"))
    assert header.split() == ["class", "IoU", "PQ", "AP"]
    assert {line.split()[0] for line in table.splitlines() if line.strip()} >= {"circle", "square", "stripes"}
    assert main([*evaluate, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics["AP_per_class"]) == {"circle", "square", "triangle"}  # things only
    assert set(metrics["PQ_per_class"]) == set(metrics["IoU"]) == {"circle", "square", "triangle", "stripes",
                                                                    "checker", "dots"}  # fmt: skip
    assert all(v is None or 0 <= v <= 1 for v in metrics["AP_per_class"].values())
    # eval-files: panopticapi's per-class results, keyed by the ground truth's category names.
    out = tmp_path / "pred"
    images = str(synth / "images" / "val")
    assert main(["predict", images, "--model", str(short_run), "--task", "panoptic", "--out", str(out)]) == 0
    capsys.readouterr()
    files = ["eval-files", "panoptic", "--pred", str(out / "panoptic.json"), "--gt", str(synth / "panoptic_val.json")]
    assert main([*files, "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["per_class"]) == set(metrics["IoU"])
    assert main(files) == 0
    assert next(line for line in capsys.readouterr().out.splitlines() if line.startswith("All"))


def test_per_class_ap_averages_cocos_precision_as_its_summary_does():
    import numpy as np

    from maskformer.evaluation.instance import InstanceEvaluator

    evaluator = InstanceEvaluator([1, 2], ["cat", "dog"])
    a = np.zeros((20, 20), bool)
    a[2:10, 2:10] = True
    b = np.zeros((20, 20), bool)
    b[12:18, 12:18] = True
    half = np.zeros((20, 20), bool)
    half[12:18, 12:15] = True  # IoU 0.5 with b
    evaluator.update([a, b], [1, 2], [False, False], np.stack([a, half]), [1, 2], [0.9, 0.8])
    result = evaluator.compute()
    assert result["per_class"]["cat"] == pytest.approx(1.0)
    # dog: matched at IoU threshold 0.50 only, of the ten 0.50:0.95: AP 0.1; the mean of the two is COCO's AP.
    assert result["per_class"]["dog"] == pytest.approx(0.1, abs=1e-6)
    assert result["AP"] == pytest.approx((1.0 + 0.1) / 2, abs=1e-6)


def test_the_training_line_names_the_family(synth, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="maskformer"):
        train(run_config(synth, 1, family="mask2former"), tmp_path / "run")
    assert "training a Mask2Former with a test_resnet backbone" in caplog.text


# ---- 15. the README says how to install and activate, and agrees with the command ---------------------------
README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_says_how_to_install_and_run_and_agrees_with_the_command(capsys):
    import re

    from maskformer.cli.main import main
    from maskformer.training.config import paper_model

    text = README.read_text()
    assert "source .venv/bin/activate" in text and "pip install ." in text
    assert "maskformer[" not in text, "no package of that name on PyPI: extras are installed from a clone"
    with pytest.raises(SystemExit):
        main(["--help"])
    # The demo's minutes in its help span the README's, measured on each kind of machine.
    low, high = map(float, re.search(r"demo\s+.*?(\d+)-(\d+) minutes", capsys.readouterr().out, re.S).groups())
    measured = re.search(r"about ([\d.]+) minutes for the demo in all on an Intel .*?, ([\d.]+) on an AMD", text)
    assert low <= float(measured.group(1)) and float(measured.group(2)) <= high
    assert not paper_model("r101c").backbone.pretrained and "except the r101c presets" in text


# ---- 9. overlays: void drawn as such, labels apart, a legend that scales with the image ---------------------
def _crowded_panoptic(size: tuple[int, int]):
    import numpy as np

    from maskformer.model.config import MetadataConfig
    from maskformer.predict.results import PanopticResult, Segment

    meta = MetadataConfig(class_names=["circle", "square", "triangle", "stripes"], thing_classes=[0, 1, 2],
                          colors=[[230, 60, 60], [60, 200, 80], [70, 110, 240], [240, 200, 40]])  # fmt: skip
    h, w = size
    seg = torch.zeros(h, w, dtype=torch.int32)
    segments = []
    for i in range(6):  # six narrow shapes side by side: their labels would run into each other
        seg[h // 3 : 2 * h // 3, (1 + 3 * i) * w // 20 : (3 + 3 * i) * w // 20] = i + 1
        segments.append(Segment(i + 1, i % 3, meta.class_names[i % 3], 0.9, 1, True))
    seg[3 * h // 4 :] = 7
    segments.append(Segment(7, 3, "stripes", 0.95, 2, False))
    image = np.full((h, w, 3), (250, 40, 40), np.uint8)  # the image's own colour is circle-red
    return PanopticResult("x", size, meta, seg, segments), image


def test_overlays_draw_void_apart_from_classes():
    import numpy as np

    result, image = _crowded_panoptic((400, 500))
    drawn = np.asarray(result.draw(image))[:400]
    void = drawn[5:100, 5:100].reshape(-1, 3)  # no segment there
    assert (void.max(1) - void.min(1) <= 1).all(), "void is a neutral grey, not the image's colour"
    assert void.max() < 128


@pytest.mark.parametrize("mark_void", [False, True])
def test_overlay_equals_the_per_pixel_formula(mark_void):
    """The table look-ups of ``overlay`` and ``dim_void`` give, pixel by pixel, the blend in float32 rounded,
    the image (or its dim grey, 40 + 0.3 x luma rounded, computed here in exact fractions) where no class is,
    and white on the outlines; classes out of range, negative or the ignore value count as none."""
    from fractions import Fraction

    import numpy as np

    from maskformer.visualize import boundaries, overlay

    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (19, 23, 3), dtype=np.uint8)
    classes = rng.integers(-2, 6, (19, 23))
    classes[0, :5] = 255  # the ignore value
    colors = rng.integers(0, 256, (4, 3)).tolist()  # classes 4 and 5: no colour, drawn as none
    alpha = 0.55
    want = image.copy()
    for y, x in np.ndindex(classes.shape):
        c = int(classes[y, x])
        if 0 <= c < len(colors):
            blend = np.float32(1 - alpha) * image[y, x].astype(np.float32) + np.float32(alpha) * np.float32(colors[c])
            want[y, x] = np.clip(blend + np.float32(0.5), 0, 255).astype(np.uint8)
        elif mark_void:
            luma = sum(Fraction(k, 1000) * int(v) for k, v in zip((299, 587, 114), image[y, x]))
            want[y, x] = int(40 + Fraction(3, 10) * luma + Fraction(1, 2))
    want[boundaries(classes)] = 255
    assert np.array_equal(overlay(image, classes, colors, alpha=alpha, mark_void=mark_void), want)


def test_labels_are_placed_apart():
    from maskformer.visualize import place_labels

    points = [(100, 100)] * 5 + [(110, 104), (300, 100)]
    sizes = [(80, 20)] * 7
    places = place_labels(points, sizes, (400, 300))
    boxes = [(x - 40, y - 10, x + 40, y + 10) for x, y in (p for p in places if p is not None)]
    assert len(boxes) == 7
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
        assert 0 <= a[0] and a[2] <= 400 and 0 <= a[1] and a[3] <= 300


def test_the_legend_scales_with_the_image():
    small_result, small_image = _crowded_panoptic((512, 640))
    big_result, big_image = _crowded_panoptic((3000, 4000))
    small, big = small_result.draw(small_image), big_result.draw(big_image)
    # Below each image, the legend: its height in proportion to the image's side.
    small_legend = small.height - 512
    big_legend = big.height - 3000
    assert big_legend >= 3000 / 512 * small_legend * 0.9 and big_legend > 100


# ---- 13 and 21. serve: unknown parameters, the model's task, favicon, /docs offline, validated answers ------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from maskformer.serve import ServeConfig, background_server, create_app
    from tests.serving import predictor, save_serving_model, write_scene

    root = tmp_path_factory.mktemp("served")
    model_dir = save_serving_model(root / "model")
    scene = write_scene(root / "scene.png", seed=3, size_range=(64, 80))
    with background_server(create_app(predictor(model_dir), ServeConfig(), str(model_dir))) as base:
        yield base, scene


def test_serve_refuses_unknown_parameters_and_answers_what_predict_writes(served, tmp_path):
    import httpx

    from maskformer.cli.main import main

    base, scene = served
    answer = httpx.post(f"{base}/predict", params={"tsk": "panoptic"}, content=scene.read_bytes())
    assert answer.status_code == 422 and "unknown query parameter(s) tsk" in answer.json()["detail"]
    model = httpx.get(f"{base}/models").json()["models"][0]
    assert model["task"] == "panoptic"  # things and stuff
    files = {"image": ("scene.png", scene.read_bytes(), "image/png")}
    panoptic = httpx.post(f"{base}/predict", params={"task": "panoptic", "coco": "true"}, files=files).json()
    # The COCO JSON is the one `maskformer predict` writes for the same image and model.
    out = tmp_path / "pred"
    assert main(["predict", str(scene), "--model", model["source"], "--task", "panoptic", "--out", str(out)]) == 0
    written = json.loads((out / "panoptic.json").read_text())
    assert panoptic["coco"]["categories"] == written["categories"]
    assert panoptic["coco"]["annotations"][0]["segments_info"] == written["annotations"][0]["segments_info"]
    assert panoptic["coco"]["annotations"][0]["file_name"] == "scene_panoptic.png"
    instance = httpx.post(f"{base}/predict", params={"task": "instance", "coco": "true"}, files=files).json()
    assert [r["score"] for r in instance["coco"]] == [s["score"] for s in instance["segments"]]


def test_serve_answers_a_favicon_and_docs_that_need_no_internet(served):
    import re

    import httpx

    base, _ = served
    icon = httpx.get(f"{base}/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/png"
    docs = httpx.get(f"{base}/docs").text
    assets = re.findall(r"""(?:src|href)=["']([^"']+\.(?:js|css))["']""", docs)
    assert assets and all(a.startswith("/") for a in assets), assets  # served here, not from a CDN
    for asset in assets:
        assert httpx.get(f"{base}{asset}").status_code == 200, asset


def test_the_openapi_schema_describes_the_answers(served):
    import httpx

    base, _ = served
    schema = httpx.get(f"{base}/openapi.json").json()
    answer = schema["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/Prediction"}
    assert set(schema["components"]["schemas"]["Prediction"]["properties"]) >= {"segments", "png", "coco"}
    assert "models" in schema["components"]["schemas"]["Models"]["properties"]


# ---- 17. one post-processing path, one mask at a time, at a photo's size ----------------------------------
@pytest.mark.parametrize("task", ["panoptic", "instance"])
def test_post_processing_at_a_photos_size_equals_the_straightforward_formula(task):
    """12 queries x 6.9 MP (above the [N, H, W] size the post-processing once built in blocks): the one mask at a
    time path equals whole tensors exactly, with a crop of the padding and a resize to the output size."""
    from maskformer.model import inference
    from maskformer.model.config import InferenceConfig

    generator = torch.Generator().manual_seed(0)
    queries, classes = 12, 5
    logits = torch.randn(1, queries, classes + 1, generator=generator) * 3
    masks = torch.randn(1, queries, 40, 56, generator=generator) * 4
    config = InferenceConfig(object_mask_threshold=0.1, overlap_threshold=0.0)
    image, padded, out = (152, 220), (160, 224), (2300, 3000)
    things = [0, 1] if task == "panoptic" else []  # instance: every class (the reference restricts to none)
    ours = inference.postprocess(task, logits, masks, [image], padded, [out], config, things)[0]
    if task == "panoptic":
        segmentation, segments = straightforward_panoptic(logits, masks, image, padded, out, [0, 1], 0.1, 0.0)
        assert ours.segments == segments and len(segments) > 2
        assert torch.equal(ours.segmentation, segmentation)
    else:
        binary, labels, scores = straightforward_instance(logits, masks, image, padded, out)
        assert torch.equal(ours.masks, binary) and torch.equal(ours.scores, scores) and torch.equal(ours.labels, labels)


def test_the_predictor_post_processes_large_images_as_the_model_does(small_model):
    from maskformer.predict import Predictor

    model = MaskFormer.from_pretrained(small_model).eval()
    model.config.inference.object_mask_threshold = 0.0
    model.config.inference.test_shortest_edge = 64
    image = torch.randint(0, 256, (3, 2100, 3300), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    # The model's 10 queries at 6.9 MP: above the size at which the predictor used to post-process smaller.
    predictor = Predictor(model)
    for task in ("panoptic", "instance"):
        ours = predictor(image, task)[0]
        # The predictor's network (its copy, in its channels-last layout, which rounds differently from NCHW):
        # only the post-processing paths differ.
        reference = predictor.model.predict([image], task)[0]
        if task == "panoptic":
            assert torch.equal(ours.segmentation, reference.segmentation.cpu())
            assert [s.id for s in ours.segments_info] == [s["id"] for s in reference.segments]
        else:
            assert torch.equal(ours.masks, reference.masks.cpu()) and torch.equal(ours.scores, reference.scores)


# ---- 23. hub ids without evidence are known by their official zoo URLs alone --------------------------------
def test_models_without_a_hub_page_are_known_by_their_zoo_url():
    from maskformer.predict.zoo import KNOWN_MODELS

    sources = {m.source for m in KNOWN_MODELS.values()}
    for unproven in (
        "facebook/mask2former-swin-base-IN21k-coco-panoptic",
        "facebook/mask2former-swin-large-ade-instance",
    ):
        assert unproven not in sources
    assert KNOWN_MODELS["zoo-m2f-coco-panoptic-swin-b-in21k"].source.endswith(
        "coco/panoptic/maskformer2_swin_base_IN21k_384_bs16_50ep/model_final_54b88a.pkl"
    )
    assert KNOWN_MODELS["zoo-m2f-ade-instance-swin-l"].source.endswith(
        "ade20k/instance/maskformer2_swin_large_IN21k_384_bs16_160k/model_final_92dae9.pkl"
    )
    assert "facebook/mask2former-swin-base-IN21k-cityscapes-panoptic" in sources


# ---- 16. data show, and class statistics in data check ------------------------------------------------------
def test_data_show_draws_a_grid_of_images_with_their_labels(synth, tmp_path, capsys):
    from PIL import Image

    from maskformer.cli.main import main

    out = tmp_path / "show.png"
    assert main(["data", "show", "--data", str(synth), "--count", "2", "--columns", "2", "--out", str(out)]) == 0
    assert "drew 2 images" in capsys.readouterr().out
    with Image.open(out) as grid:
        assert grid.width == 2 * 480 + 8 and grid.height > 300


def test_data_check_prints_class_statistics(synth, capsys):
    import numpy as np
    from PIL import Image

    from maskformer.cli.main import main

    assert main(["data", "check", "--data", str(synth), "--split", "val"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split() and line.split()[0] in
            {"circle", "square", "triangle", "stripes", "checker", "dots"}}  # fmt: skip
    # The ground truth's own counts: images containing each class and its share of the labelled pixels.
    meta = json.loads((synth / "panoptic_val.json").read_text())
    names = {c["id"]: c["name"] for c in meta["categories"]}
    images, pixels, segments = {}, {}, {}
    for ann in meta["annotations"]:
        for seg in ann["segments_info"]:
            name = names[seg["category_id"]]
            pixels[name] = pixels.get(name, 0) + seg["area"]
            segments[name] = segments.get(name, 0) + 1
        for name in {names[s["category_id"]] for s in ann["segments_info"]}:
            images[name] = images.get(name, 0) + 1
    total = sum(pixels.values())
    assert set(rows) == set(names.values()), out  # a row for every class, seen or not
    for name, (n_images, share, n_segments) in rows.items():
        assert int(n_images) == images.get(name, 0) and int(n_segments) == segments.get(name, 0)
        assert float(share) == pytest.approx(100 * pixels.get(name, 0) / total, abs=0.006)
    assert np.asarray(Image.open(synth / "semantic" / "val" / "000000.png")).size  # the data is there


# ---- 20. exact resume through public Lightning APIs only ------------------------------------------------------
def test_training_touches_no_private_lightning_state():
    """A Ctrl-C stops through a public hook and an exception of our own, and the module numbers its log rows
    itself: no private attribute of the trainer, its strategy or loops is read or set, and no checkpoint's
    loop state is edited, so a Lightning upgrade cannot silently break exact resume (the exact-resume tests
    show that it is still exact)."""
    import ast

    import maskformer

    found = []
    for path in Path(maskformer.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = ast.unparse(node.value)
                if any(word in base for word in ("trainer", "strategy", "loop", "connector")):
                    found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
            if isinstance(node, ast.Constant) and node.value in ("loops", "_batches_that_stepped", "fit_loop"):
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not found, found


def test_the_last_step_is_logged_with_the_schedules_learning_rate(synth, tmp_path):
    """The module writes its own log rows: every log_every steps and the last, each with the learning rate the
    step used (the base rate times the schedule's factor), as Lightning's own logging did."""
    import csv

    from maskformer.training.optim import lr_lambda

    config = run_config(synth, 3, log_every=2)
    train(config, tmp_path / "run")
    with (tmp_path / "run" / "csv" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == [2, 3]
    factor = lr_lambda(config.train)
    assert [float(r["train/lr"]) for r in rows] == pytest.approx([3e-4 * factor(1), 3e-4 * factor(2)])


# ---- 10. the second Ctrl-C's message ------------------------------------------------------------------------
def test_a_second_ctrl_c_says_what_was_saved_in_plain_words(synth, tmp_path, monkeypatch):
    import signal

    from maskformer.training.console import TrainingInterrupted
    from maskformer.training.module import MaskFormerModule

    original = MaskFormerModule.training_step

    def twice(self, batch, batch_idx):
        if self.global_step == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # the second stops at once, inside step 3
        return original(self, batch, batch_idx)

    monkeypatch.setattr(MaskFormerModule, "training_step", twice)
    with pytest.raises(TrainingInterrupted) as stop:
        train(run_config(synth, 6), tmp_path / "run")
    message = str(stop.value)
    assert message.startswith("stopped at once by a second Ctrl-C, in the middle of step 3: saved ")
    assert "last.ckpt at step 2" in message and "resume with: maskformer train --config" in message


# ---- 19. one record per dataset: presets, recipes, the zoo and the preparations name it by its key ---------
def test_every_name_of_a_dataset_comes_from_its_catalog_record():
    from maskformer.data.catalog import DATASETS
    from maskformer.data.metadata import BUILTIN
    from maskformer.data.prepare import PREPARATIONS
    from maskformer.model.presets import PRESET_DATASETS, PRESETS, preset
    from maskformer.predict.zoo import KNOWN_MODELS

    assert set(PRESET_DATASETS) == set(PRESETS) and set(PRESET_DATASETS.values()) <= set(DATASETS)
    for key, record in DATASETS.items():
        assert record.metadata in (*BUILTIN, ""), key
        assert record.preparation in (*PREPARATIONS, ""), key
    assert {p.name for p in PREPARATIONS.values()} == {d.preparation for d in DATASETS.values()} - {""}
    titles = {(d.task, d.title) for d in DATASETS.values()}
    assert all((m.task, m.dataset) in titles for m in KNOWN_MODELS.values())
    # A preset's class count is its dataset's (the built-in class list's, where the package has one).
    from maskformer.data.metadata import builtin_metadata

    for name, key in PRESET_DATASETS.items():
        if DATASETS[key].metadata and DATASETS[key].task != "instance":
            assert preset(name).num_classes == len(builtin_metadata(DATASETS[key].metadata).class_names), name
