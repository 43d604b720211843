"""What a person sees while a run trains: one progress bar, no framework chatter, and Ctrl-C that stops
cleanly after the current step."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import warnings
from collections.abc import Iterator

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks.progress import ProgressBar
from tqdm import tqdm

log = logging.getLogger("maskformer")

# Lightning's messages that say nothing about this run (device availability, cloud-logging tips,
# deprecations inside Lightning itself, loader-worker advice where the worker count was chosen on purpose,
# and the skipped step that a bad batch or a non-finite loss makes on purpose, counted in the run's logs).
_NOISE = (
    r".*LeafSpec.*",
    r".*`training_step` returned `None`.*",
    r".*does not have many workers.*",
    r".*is smaller than the logging interval.*",
    r".*Experiment logs directory .* exists and is not empty.*",
    r".*Checkpoint directory .* exists and is not empty.*",
)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's info messages and known noise warnings off for the duration (its own warnings and
    errors stay)."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in _NOISE:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class TrainingInterrupted(RuntimeError):
    """Training stopped on request (Ctrl-C); the message says where the checkpoint is and how to resume."""


class StepProgressBar(ProgressBar):
    """One bar over the run's steps (step, loss, time left); validation counts its batches in the bar's
    text. Outside training (``evaluate``) a bar over the validation batches."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._bar: tqdm | None = None
        self._val_done = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _new_bar(self, trainer: L.Trainer, **kwargs) -> tqdm:
        return tqdm(disable=not (self._enabled and trainer.is_global_zero), dynamic_ncols=True, **kwargs)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._bar = self._new_bar(
            trainer, total=trainer.max_steps, initial=trainer.global_step, desc="training", unit="step"
        )

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args) -> None:
        if self._bar is None:
            return
        self._bar.update(trainer.global_step - self._bar.n)
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            self._bar.set_postfix_str(f"loss {float(loss):.3f}", refresh=False)

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._val_done = 0
        if trainer.state.fn != "fit":
            self._bar = self._new_bar(trainer, total=sum(trainer.num_val_batches), desc="evaluating", unit="batch")

    def on_validation_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args) -> None:
        if self._bar is None:
            return
        if trainer.state.fn != "fit":
            self._bar.update(1)
            return
        self._val_done += 1
        self._bar.set_postfix_str(f"validating {self._val_done}/{sum(trainer.num_val_batches)}")

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.state.fn != "fit":
            self._close()
        elif self._bar is not None:
            self._bar.set_postfix_str("", refresh=False)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._close()

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class GracefulInterrupt(Callback):
    """Ctrl-C (SIGINT) while training finishes the current step, then stops: ``last.ckpt`` is written at a
    step boundary, so resuming continues exactly. All processes stop at the same step. A second Ctrl-C
    stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        self._validated = False

    @staticmethod
    def of(trainer: L.Trainer) -> GracefulInterrupt:
        return next(c for c in trainer.callbacks if isinstance(c, GracefulInterrupt))

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            self._restore()
            raise KeyboardInterrupt
        self.requested = True
        log.warning("\nCtrl-C: stopping after this step (Ctrl-C again stops at once)")

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args) -> None:
        requested = self.requested
        if trainer.world_size > 1:  # every process stops after the same step
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested:
            self.requested = True
            # Lightning's own stop for SIGTERM: it completes the step (logs, validation, scheduler, loop
            # counters) and then raises SIGTERMException, so that the checkpoint sits at a step boundary.
            self._set_stop(trainer, True)

    # Lightning's validation loop gives up half-way when the stop flag is set; the step's validation
    # must complete (a resumed run does not repeat it), so the flag is lowered while it runs.
    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and self.requested:
            self._set_stop(trainer, False)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._validated = True
        if trainer.state.fn == "fit" and self.requested:
            self._set_stop(trainer, True)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *args) -> None:
        self._validated = False

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict) -> None:
        # Resuming after a step that validated, Lightning assumes the checkpoint was written before the step
        # count of its loggers went up and adds one; this checkpoint is written after, so it records one less
        # (otherwise the resumed run's logs are labelled a step late).
        if self.requested and self._validated:
            checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1

    @staticmethod
    def _set_stop(trainer: L.Trainer, value: bool) -> None:
        trainer._signal_connector.received_sigterm = value

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
