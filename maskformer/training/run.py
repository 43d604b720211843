"""Training runs: a run folder with the resolved config, logs, checkpoints, metrics and the final model.

Layout of ``run_dir``::

    config.yaml            the resolved RunConfig (class count and metadata taken from the data)
    checkpoints/           step-NNNNNNN.ckpt every ``checkpoint_every`` steps (the newest ``keep_checkpoints``
                           kept), best-step-NNNNNNN.ckpt at the best validation, last.ckpt at the end or on exit
    tensorboard/, csv/     Lightning's TensorBoard and CSV logs
    metrics.jsonl          one record per validation
    val_images/            prediction grids per validation
    model/                 the final weights (config.yaml + model.safetensors), loadable by from_pretrained
    summary.json           steps, world size, last metrics, whether all processes ended with equal weights
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..model.atomic import atomic_path
from ..model.distributed import world_size
from ..model.families import family_of
from ..model.loading import load_lightning_checkpoint
from ..model.weights.fit import StateDiff
from ..precision import bf16_speed
from .config import RunConfig
from .console import GracefulInterrupt, StepProgressBar, StopRequested, TrainingInterrupted, quiet_lightning
from .csv_log import CSVLog
from .datamodule import MaskFormerDataModule
from .finetune import starting_model
from .layout import settle_layout
from .module import LAYOUT_KEY, MaskFormerModule

log = logging.getLogger("maskformer")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file, fsynced, then renamed over the target: a process killed at
    any moment leaves either the previous checkpoint or the new one, never a truncated file."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)


class LastCheckpoint(Callback):
    """Write checkpoints/last.ckpt when training ends, or stops on an exception (Ctrl-C included). A
    non-finite loss is the exception: weights may already be damaged, so the periodic checkpoints stay the
    last good state."""

    def __init__(self, directory: Path):
        self.directory = directory

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.directory / "last.ckpt", weights_only=False)

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        if trainer.global_step > 0 and not isinstance(exception, FloatingPointError):
            trainer.save_checkpoint(self.directory / "last.ckpt", weights_only=False)


class ValidateAtEnd(Callback):
    """Validate after the last step when ``max_steps`` is not a multiple of ``val_every``, so that every run
    ends with its metrics (as detectron2 and mmseg do): Lightning validates a step that asks to stop."""

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args) -> None:
        if trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


def out_of_memory_message(config: RunConfig) -> str:
    t, d = config.train, config.data
    return (
        f"out of memory training with batch size {t.batch_size} (all processes together) and crop "
        f"{tuple(d.crop_size)}: lower train.batch_size or data.crop_size, use train.precision=bf16-mixed, "
        "use fewer queries, or spread the batch over more devices (train.devices)"
    )


def weights_checksum(model: torch.nn.Module) -> torch.Tensor:
    """Two float64 numbers summarising all weights (sum and a position-weighted sum)."""
    total = torch.zeros(2, dtype=torch.float64)
    for i, p in enumerate(model.state_dict().values()):
        if p.is_floating_point():
            v = p.detach().double().cpu().flatten()
            total[0] += v.sum()
            total[1] += (v * (i + 1)).sum()
    return total


def ranks_in_sync(model: torch.nn.Module) -> bool:
    """True when every process holds the same weights (trivially true in a single process)."""
    if world_size() == 1:
        return True
    mine = weights_checksum(model)
    gathered = [torch.zeros_like(mine) for _ in range(world_size())]
    dist.all_gather(gathered, mine)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def build_trainer(
    config: RunConfig,
    run_dir: Path,
    callbacks: list[Callback] | None = None,
    resume_step: int = 0,
    selection_metric: str = "PQ",
) -> L.Trainer:
    """The Lightning trainer of a run; ``resume_step`` > 0 continues the logs of a run resumed at that step
    (rows and events of the interrupted part after it are replaced by the new ones).
    ``selection_metric``: the validation metric whose best step's checkpoint is kept."""
    t = config.train
    checkpoints = run_dir / "checkpoints"
    # The newest keep_checkpoints periodic checkpoints ("step" is always among Lightning's monitored values).
    periodic = ModelCheckpoint(
        dirpath=checkpoints,
        filename="step-{step:07d}",
        every_n_train_steps=t.checkpoint_every,
        save_top_k=t.keep_checkpoints,
        monitor=None if t.keep_checkpoints in (-1, 0) else "step",
        mode="max",
        auto_insert_metric_name=False,
    )
    best = ModelCheckpoint(
        dirpath=checkpoints,
        filename="best-step-{step:07d}",
        monitor=f"val/{selection_metric}",
        mode="max",
        save_top_k=1,
        save_on_train_epoch_end=False,
        auto_insert_metric_name=False,
    )
    return L.Trainer(
        default_root_dir=run_dir,
        max_steps=t.max_steps,
        val_check_interval=t.val_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every,
        precision=t.precision,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        gradient_clip_val=t.clip_grad_norm or None,
        gradient_clip_algorithm="norm",
        deterministic=t.deterministic,
        use_distributed_sampler=False,
        logger=[
            TensorBoardLogger(
                run_dir, name="", version="tensorboard", purge_step=resume_step + 1 if resume_step else None
            ),
            CSVLog(run_dir, resume_step=resume_step),
        ],
        callbacks=[
            ValidateAtEnd(),
            periodic,
            best,
            LastCheckpoint(checkpoints),
            StepProgressBar(),
            GracefulInterrupt(),
            *(callbacks or []),
        ],
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
    )


@dataclass
class ResumePoint:
    """The checkpoint a run resumes from: its ``path`` and its contents, read once."""

    path: str
    checkpoint: dict


def find_resume(run_dir: Path, resume: str | None) -> ResumePoint | None:
    """``resume``: None (fresh), "auto" (run_dir's newest readable checkpoint if any: last.ckpt, else the
    periodic checkpoints newest first, saying which unreadable ones were passed over) or a checkpoint path."""
    if resume is None:
        return None
    if resume != "auto":
        if not Path(resume).exists():
            raise FileNotFoundError(f"{resume}: checkpoint to resume from not found")
        return ResumePoint(resume, load_lightning_checkpoint(resume))
    folder = run_dir / "checkpoints"
    candidates = [folder / "last.ckpt", *sorted(folder.glob("step-*.ckpt"), reverse=True)]
    candidates = [path for path in candidates if path.exists()]
    for path in candidates:
        try:
            return ResumePoint(str(path), load_lightning_checkpoint(path))
        except ValueError as err:
            log.warning("--resume auto: %s; trying the next newest checkpoint", err)
    log.info("--resume auto: no %scheckpoint in %s; starting a new run", "readable " if candidates else "", folder)
    return None


def resume_step(point: ResumePoint, module: MaskFormerModule) -> int:
    """The global step the checkpoint was saved at, once it is known to fit ``module``: a run config that
    differs from the checkpoint's in its model (another class count, backbone or size) is one line."""
    diff = StateDiff.between(module.state_dict(), point.checkpoint.get("state_dict", {}))
    if diff:
        raise ValueError(
            f"{point.path}: the run config's model does not fit this checkpoint ({diff.summary(1)}); resume with "
            "the config the run was started with"
        )
    return int(point.checkpoint["global_step"])


def finished_summary(run_dir: Path, step: int) -> dict:
    """A resumed run whose checkpoint is at ``train.max_steps`` already: nothing to train, nothing rewritten;
    its summary as written when it finished."""
    log.info("%s: already finished at step %d, nothing to do (raise train.max_steps to train on)", run_dir, step)
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {"steps": step, "metrics": {}}


def resume_command(run_dir: Path) -> str:
    return f"maskformer train --config {run_dir / 'config.yaml'} --out {run_dir} --resume auto"


def train(
    config: RunConfig, run_dir: str | Path, resume: str | None = None, callbacks: list[Callback] | None = None
) -> dict:
    """Train (or resume) a run; returns the summary (also written to run_dir/summary.json).

    ``config`` is checked first (every field's type and range) and not changed. Ctrl-C finishes the current
    step, writes ``checkpoints/last.ckpt`` and raises :class:`TrainingInterrupted`, whose message says how
    to resume.
    """
    config = RunConfig.from_dict(config.to_dict())
    run_dir = Path(run_dir)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    datamodule = MaskFormerDataModule(config)
    datamodule.check()
    # The data decides the classes: a model preset's head is resized to the dataset's class count.
    config.model.num_classes = len(datamodule.metadata.class_names)
    config.model.metadata = datamodule.metadata
    point = find_resume(run_dir, resume)
    ckpt_path = point.path if point else None
    with quiet_lightning():
        model, initialisation = starting_model(config.model, resume=point is not None)
        module = MaskFormerModule(config, run_dir, model=model)
        start = resume_step(point, module) if point else 0
        saved_layout = point.checkpoint.get(LAYOUT_KEY) if point else None
        point = None  # Lightning reads the checkpoint again: do not hold two copies
        if start >= config.train.max_steps:
            return finished_summary(run_dir, start)
        # Nothing is written before the data, the model and the checkpoint have passed their checks, so a
        # command that stops on an error leaves no run folder behind.
        run_dir.mkdir(parents=True, exist_ok=True)
        config.to_yaml(run_dir / "config.yaml")
        trainer = build_trainer(config, run_dir, callbacks, resume_step=start, selection_metric=module.selection_metric)
        if trainer.is_global_zero and initialisation:
            log.info("%s", initialisation)
        if trainer.is_global_zero:
            log.info(
                "%s %s with a %s backbone (%.1fM parameters) on %s: %d training / %d validation images, steps "
                "%d-%d, batch %d, %s; run folder %s",
                "resuming" if start else "training",
                family_of(config.model).a_title,
                config.model.backbone.name or config.model.backbone.type,
                module.model.num_parameters / 1e6,
                config.data.root,
                len(datamodule.train_reader),
                len(datamodule.val_reader),
                start + 1,
                config.train.max_steps,
                config.train.batch_size,
                trainer.strategy.root_device.type,
                run_dir,
            )
        device = trainer.strategy.root_device
        layout = settle_layout(module, config.train, trainer, saved_layout)
        if trainer.is_global_zero and layout:
            log.info("%s", layout)
        if trainer.is_global_zero and config.train.precision == "bf16-mixed" and device.type == "cpu":
            speed = bf16_speed(device)
            if not speed.fast:
                log.warning("train.precision=bf16-mixed: %s; 32-true trains faster on this CPU", speed.describe())
        began = time.time()
        # Checkpoints hold only tensors and plain containers: load them without unpickling arbitrary objects.
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except torch.OutOfMemoryError as err:
            raise RuntimeError(out_of_memory_message(config)) from err
        except (StopRequested, SIGTERMException, SystemExit) as stop:
            interrupt = GracefulInterrupt.of(trainer)
            requested = interrupt is not None and interrupt.requested
            between_steps = isinstance(stop, (StopRequested, SIGTERMException))
            if not requested and not between_steps:
                raise
            # StopRequested: Ctrl-C stopped the run between steps (SIGTERMException: Lightning's own stop for
            # SIGTERM, also between steps); a bare SystemExit is Lightning's exit after a second Ctrl-C, in the
            # middle of a step.
            step, last = trainer.global_step, run_dir / "checkpoints" / "last.ckpt"
            if between_steps:
                what = f"interrupted after step {step}: saved {last}"
            else:
                what = (
                    f"stopped at once by a second Ctrl-C, in the middle of step {step + 1}: saved {last} at step "
                    f"{step}; a resumed run continues from there, though not exactly as an uninterrupted one"
                )
            raise TrainingInterrupted(f"{what}; resume with: {resume_command(run_dir)}") from None
    in_sync = ranks_in_sync(module.model)
    summary = {
        "steps": trainer.global_step,
        "world_size": trainer.world_size,
        "ddp_weights_in_sync": in_sync,
        "seconds": round(time.time() - began, 1),
        "skipped_samples": module.skipped_samples,
        "skipped_steps": module.skipped_steps,
        "metrics": module.last_metrics,
    }
    if trainer.is_global_zero:
        module.model.save_pretrained(run_dir / "model")
        (run_dir / "history.json").write_text(json.dumps(module.history) + "\n")
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
