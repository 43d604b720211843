"""What a new user hit in one afternoon and what a read of the code found (issue 24), one test per item:
run folders and checkpoints, file modes, predict on bad files, overlays, messages and checks."""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest
import torch

from maskformer.data.synth import write_dataset
from maskformer.model import MaskFormer
from maskformer.model.atomic import atomic_path
from maskformer.training import train
from tests.helpers import run_config


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
    with pytest.raises(Exception):
        train(config, tmp_path / "typo")
    assert not (tmp_path / "typo").exists()
    config = run_config(tmp_path / "no-data", 2)
    with pytest.raises(Exception):
        train(config, tmp_path / "nodata")
    assert not (tmp_path / "nodata").exists()


# ---- 2. files written atomically get the mode an ordinary write gives ---------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_saved_weights_have_the_mode_of_an_ordinary_write(tmp_path, umask):
    from tests.conftest import tiny_config

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
