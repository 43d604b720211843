"""LightningModule: MaskFormer + set criterion, the recipe's optimiser, validation with mIoU / PQ."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..evaluation import InstanceEvaluator, PanopticEvaluator, SemanticEvaluator
from ..model import Segmenter, SetCriterion, family_of, inference, tta
from ..visualize import GridRow, instance_classes, panoptic_classes, prediction_grid, to_tensor_image
from .config import RunConfig, TrainConfig
from .console import GracefulInterrupt
from .optim import build_optimizer

# Losses shown as curves besides the total (the deep-supervision terms only add up into it).
MAIN_LOSSES = ("loss_ce", "loss_mask", "loss_dice")
# The checkpoint entry of the run's memory layout (True: channels-last).
LAYOUT_KEY = "maskformer_channels_last"
# What each kind of ground truth scores: semantic labels; panoptic segments (and from them semantic labels
# and thing instances); overlapping instances alone.
TASKS = {"semantic": ("semantic",), "panoptic": ("semantic", "panoptic", "instance"), "instance": ("instance",)}


def pad_target(target: dict[str, Tensor], size: tuple[int, int], device: torch.device) -> dict[str, Tensor]:
    """Pad a target's masks (zeros) and valid map (False) bottom/right to the batch's padded size."""
    h, w = target["masks"].shape[-2:]
    pad = (0, size[1] - w, 0, size[0] - h)
    return {
        "labels": target["labels"].to(device),
        "masks": F.pad(target["masks"].to(device), pad),
        "valid": F.pad(target["valid"].to(device), pad),
    }


def use_channels_last(train: TrainConfig, model: Segmenter) -> bool:
    """``train.channels_last``, or where it is None (auto) the layout the network trains faster in by its own
    rule (``trains_channels_last``); :func:`~.run.train` times both instead where it can
    (:func:`~.layout.measures_layout`)."""
    return model.trains_channels_last if train.channels_last is None else train.channels_last


class MaskFormerModule(L.LightningModule):
    """``scales`` / ``flip`` other than (1.0,) / False validate semantic segmentation alone, with multi-scale
    and flip test-time augmentation (:func:`tta.augmented_semantic_probabilities`) on validation images
    given as read (``MaskFormerDataModule(resize_val=False)``)."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: str | Path | None = None,
        model: Segmenter | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
    ):
        super().__init__()
        self.config = config
        self.save_hyperparameters({"config": config.to_dict()})
        self.model = model if model is not None else family_of(config.model).network(config.model)
        self.set_channels_last(use_channels_last(config.train, self.model))
        if config.train.compile:
            self.model.compile()  # in place: the state dict, checkpoints and saved model keep their names
        self.criterion = SetCriterion.from_config(config.model)
        self.run_dir = Path(run_dir) if run_dir else None
        self.history: list[dict] = []
        things = config.model.metadata.thing_classes
        self.tasks = [t for t in TASKS[config.data.kind] if t != "instance" or things]
        self.scales, self.flip = tuple(scales), flip
        self.augmented = self.scales != (1.0,) or flip
        if self.augmented:
            self.tasks = ["semantic"]
        self.skipped_samples = 0
        self.skipped_steps = 0
        self.last_metrics: dict = {}

    def set_channels_last(self, channels_last: bool) -> None:
        """Put the network's weights (and so its activations) in channels-last or NCHW memory order; saved in
        checkpoints, so that a resumed run keeps its layout."""
        self.channels_last = channels_last
        self.model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    @property
    def selection_metric(self) -> str:
        """The validation metric that picks the best checkpoint: PQ, else mIoU, else AP (by the tasks)."""
        metric = {"panoptic": "PQ", "semantic": "mIoU", "instance": "AP"}
        return next(metric[task] for task in metric if task in self.tasks)

    # ---- training -------------------------------------------------------------------------------------
    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer.training:
            GracefulInterrupt.stop_between_steps(self.trainer)
        return batch

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Dropout and drop-path draw from a generator seeded by the step: resuming reproduces them exactly.
        seed = self.config.train.seed * 1_000_003 + self.global_step * 4099 + self.global_rank
        torch.manual_seed(seed % (2**63))
        hook = family_of(self.config.model).on_train_step
        if hook is not None:
            hook(self.model, self.global_step, self.config.train.max_steps)

    def training_step(self, batch: list[dict], batch_idx: int) -> Tensor | None:
        train = self.config.train
        expected = max(1, train.batch_size // self.trainer.world_size)
        row: dict[str, float] = {}
        if len(batch) < expected:  # samples left out as bad (data.skip_bad_samples)
            self.skipped_samples += expected - len(batch)
            row["train/skipped_samples"] = float(self.skipped_samples)
        if not batch:
            return self._skip(row)
        x, _ = self.model.preprocess([item["image"] for item in batch])
        targets = [pad_target(item["targets"], tuple(x.shape[-2:]), x.device) for item in batch]
        # The forward pass updates BatchNorm statistics; a skipped step must not keep non-finite ones.
        saved = (
            [b.clone() for b in self.model.buffers() if b.is_floating_point()] if train.nonfinite_loss == "skip" else []
        )
        losses = self.criterion(self.model(x), targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            if train.nonfinite_loss == "skip":
                with torch.no_grad():
                    for buffer, old in zip((b for b in self.model.buffers() if b.is_floating_point()), saved):
                        buffer.copy_(old)
                self.skipped_steps += 1
                row["train/skipped_steps"] = float(self.skipped_steps)
                return self._skip(row)
            raise FloatingPointError(
                f"non-finite loss ({loss.item()}) at step {self.global_step}; the run stops here and its last "
                "periodic checkpoint is intact (train.nonfinite_loss=skip skips such steps instead)"
            )
        self.log("train/loss", loss, prog_bar=True, logger=False, batch_size=len(batch))
        if self._logs_this_step():
            row["train/loss"] = float(loss.detach())
            row.update({f"train/{k}": float(losses[k].detach()) for k in MAIN_LOSSES})
            row["train/lr"] = train.lr * self._schedule_factor()
        self._log_row(row, self.global_step + 1)
        if self.global_rank == 0:
            self.history.append({"step": self.global_step, "loss": float(loss.detach())})
        return loss

    def _logs_this_step(self) -> bool:
        """Losses and the learning rate are written every ``train.log_every`` steps and at the last step
        (counts as they change)."""
        step, train = self.global_step + 1, self.config.train
        return step % train.log_every == 0 or step >= train.max_steps

    def _schedule_factor(self) -> float:
        """The schedule's factor of the groups' learning rates at this step (warm-up, decay): ``train/lr`` is
        the run's base rate times it; a parameter's is that times its family's ``lr_factor`` (a two-stage
        schedule's backbone has a factor of its own: the one outside the backbone is logged)."""
        groups = self.trainer.optimizers[0].param_groups  # resumed from before the "backbone" key: no such key
        group = next((g for g in groups if g["initial_lr"] > 0 and not g.get("backbone")), None)
        return group["lr"] / group["initial_lr"] if group else 1.0

    def _log_row(self, row: dict[str, float], step: int) -> None:
        """One row of the run's logs (CSV, TensorBoard) at ``step``, counted from 1: a training step's values
        at its own number, a validation at the step it follows. The module numbers its rows itself, through
        the loggers' public ``log_metrics``, so that a run stopped between steps and resumed logs as an
        uninterrupted one whatever Lightning's loop counters say."""
        if row:
            for logger in self.loggers:
                logger.log_metrics(row, step=step)
                logger.save()  # on disk at once, as Lightning's own logging does

    def _skip(self, row: dict[str, float]) -> Tensor | None:
        """No update for this step (its counts logged). Alone, return None (Lightning skips the optimizer
        step). Under DDP every process must join the gradient all-reduce, so a loss with zero gradients takes
        its place there."""
        self._log_row(row, self.global_step + 1)
        if self.trainer.world_size == 1:
            return None
        return sum(p.sum() * 0.0 for p in self.model.parameters() if p.requires_grad)

    def configure_optimizers(self):
        optimizer, scheduler = build_optimizer(self.model, self.config.train)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """The recipe's clipping of the whole model's gradient norm (the trainer's ``gradient_clip_val``; its
        algorithm is always "norm"), as Lightning's own hook does it but with torch directly: Lightning's
        mixed-precision plugin refuses to clip for a fused optimizer, a guard for float16's GradScaler that
        bf16-mixed does not use (under 16-mixed the optimizer is not fused, :func:`fused_update`, and
        Lightning has unscaled the gradients before this hook)."""
        if gradient_clip_val:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    # ---- validation -----------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        meta = self.config.model.metadata
        self.semantic_eval = SemanticEvaluator(
            self.config.model.num_classes, self.config.data.ignore_value, meta.class_names or None
        )
        things = set(meta.thing_classes or [])
        self.panoptic_eval = PanopticEvaluator(
            {i: {"isthing": int(i in things), "name": n} for i, n in enumerate(meta.class_names)}
        )
        self.instance_eval = InstanceEvaluator(sorted(things), [meta.class_names[i] for i in sorted(things)])
        self.val_rows: list[GridRow] = []

    def validation_step(self, batch: list[dict], batch_idx: int) -> None:
        meta = self.config.model.metadata
        things = set(meta.thing_classes or [])
        if self.augmented:
            results = {"semantic": [self._semantic_augmented(item["image"], item["size"]) for item in batch]}
        elif self.config.model.inference.semantic_window:  # images as read (the datamodule's choice)
            results = self.model.segment_images([item["image"] for item in batch], self.tasks,
                                                [item["size"] for item in batch], meta)  # fmt: skip
        else:
            images = [self.model.normalize(item["image"].to(self.device)) for item in batch]
            results = self.model.segment(images, self.tasks, [item["size"] for item in batch], meta)
        for pred, item in zip(results.get("semantic", []), batch):
            self.semantic_eval.update(pred.cpu(), item["semantic"])
        panoptic = results.get("panoptic", [])
        for result, item in zip(panoptic, batch):
            gt_segments = [
                {"id": i, "category_id": s.category, "iscrowd": int(s.iscrowd)} for i, s in item["segments"].items()
            ]
            self.panoptic_eval.update(
                item["panoptic"].numpy(),
                gt_segments,
                result.segmentation.cpu().numpy(),
                result.segments,
                image=item["file"],
            )
        for result, item in zip(results.get("instance", []), batch):
            if "masks" in item:
                gt_masks, gt = list(item["masks"].numpy()), item["instances"]
            else:
                panoptic_gt = [(i, s) for i, s in item["segments"].items() if s.category in things]
                gt_masks, gt = [item["panoptic"].numpy() == i for i, _ in panoptic_gt], [s for _, s in panoptic_gt]
            self.instance_eval.update(
                gt_masks,
                [s.category for s in gt],
                [s.iscrowd for s in gt],
                result.masks,
                result.labels.tolist(),
                result.scores.tolist(),
            )
        for i, item in enumerate(batch):
            if len(self.val_rows) >= self.config.train.num_val_images:
                break
            image = F.interpolate(item["image"][None].float(), size=item["size"], mode="bilinear")[0]
            if panoptic:
                pred = panoptic_classes(panoptic[i].segmentation, panoptic[i].segments)
                self.val_rows.append(GridRow(image, item["semantic"], pred, panoptic[i].segmentation.cpu()))
            elif "semantic" in results:
                self.val_rows.append(GridRow(image, item["semantic"], results["semantic"][i].cpu()))
            else:
                pred, segmentation = instance_classes(results["instance"][i])
                self.val_rows.append(GridRow(image, item["semantic"], pred, segmentation))

    def _semantic_augmented(self, image: Tensor, size: tuple[int, int]) -> Tensor:
        """RGB image as read [3, H, W] -> labels [*size] from class probabilities averaged over the module's
        scales and flips."""
        cfg, probabilities = self.config.model.inference, self.model.semantic_probabilities
        total = tta.augmented_semantic_probabilities(image.to(self.device), cfg, self.scales, self.flip, probabilities)
        return inference.resize_argmax(total, size)

    def on_validation_epoch_end(self) -> None:
        record: dict = {"step": self.global_step}
        per_class: dict = {}  # per-class results by class name, kept out of the scalar history
        if "semantic" in self.tasks:
            self.semantic_eval.sync()
            sem = self.semantic_eval.compute()
            record.update({"mIoU": sem["mIoU"], "pACC": sem["pACC"], "fwIoU": sem["fwIoU"]})
        if "panoptic" in self.tasks:
            self.panoptic_eval.sync()
            pq = self.panoptic_eval.compute()
            record.update(
                {
                    "PQ": pq["All"]["pq"],
                    "SQ": pq["All"]["sq"],
                    "RQ": pq["All"]["rq"],
                    "PQ_th": pq["Things"]["pq"],
                    "PQ_st": pq["Stuff"]["pq"],
                }
            )
            names = self.config.model.metadata.class_names
            # Plain floats: the checkpoint keeps them, and numpy scalars would make it unloadable weights-only.
            per_class["PQ_per_class"] = {names[c]: float(v["pq"]) for c, v in pq["per_class"].items()}
        if "instance" in self.tasks:
            self.instance_eval.sync()
            if self.global_rank == 0:
                instance = self.instance_eval.compute()
                per_class["AP_per_class"] = instance.pop("per_class")
                record.update(instance)
        # Plain floats: numpy scalars in the history would make checkpoints unloadable with weights_only.
        record = {k: (int(v) if k == "step" else float(v)) for k, v in record.items()}
        scalars = {f"val/{k}": v for k, v in record.items() if k != "step"}
        self.log_dict(scalars, sync_dist=False, logger=False)  # for the best-checkpoint callback
        self._log_row(scalars, self.global_step)
        if self.global_rank != 0:
            return
        self.history.append(record)
        self.last_metrics = {**record, **({"IoU": sem["IoU"]} if "semantic" in self.tasks else {}), **per_class}
        if self.run_dir is not None:
            with (self.run_dir / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
            if self.val_rows:
                path = prediction_grid(
                    self.val_rows,
                    self.config.model.metadata,
                    self.run_dir / "val_images" / f"step_{self.global_step:07d}.png",
                    ignore_value=self.config.data.ignore_value,
                )
                self._log_image(path)

    def _log_image(self, path: Path) -> None:
        from PIL import Image

        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                with Image.open(path) as img:
                    array = to_tensor_image(np.asarray(img.convert("RGB")))
                experiment.add_image("val/predictions", array, self.global_step)

    # ---- checkpoint state -----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["maskformer_history"] = self.history
        checkpoint["maskformer_skipped"] = [self.skipped_samples, self.skipped_steps]
        checkpoint["maskformer_last_metrics"] = self.last_metrics
        checkpoint[LAYOUT_KEY] = self.channels_last

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = checkpoint.get("maskformer_history", [])
        self.skipped_samples, self.skipped_steps = checkpoint.get("maskformer_skipped", [0, 0])
        self.last_metrics = checkpoint.get("maskformer_last_metrics", {})
