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
# the skipped step that a bad batch or a non-finite loss makes on purpose, counted in the run's logs, and
# the module's own batch hook, which is where a Ctrl-C stops between steps).
_NOISE = (
    r".*LeafSpec.*",
    r".*`training_step` returned `None`.*",
    r".*does not have many workers.*",
    r".*is smaller than the logging interval.*",
    r".*Experiment logs directory .* exists and is not empty.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*overridden `on_before_batch_transfer` in `LightningModule` but have passed in a `LightningDataModule`.*",
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


class StopRequested(Exception):
    """Raised by :class:`GracefulInterrupt` between two steps: the run stops there, ``last.ckpt`` is written."""


class GracefulInterrupt(Callback):
    """Ctrl-C (SIGINT) while training finishes the current step (its validation and checkpoints included),
    then stops before the next (:meth:`stop_between_steps`): ``last.ckpt`` is written at that step boundary,
    so resuming continues exactly. All processes stop at the same step. A second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        # Set at the end of a step when a request was seen there (under DDP, by any process: all of them agree
        # on it), so a Ctrl-C during a step's validation stops after the next step.
        self._stop = False
        self._previous = None

    @staticmethod
    def of(trainer: L.Trainer) -> GracefulInterrupt | None:
        return next((c for c in trainer.callbacks if isinstance(c, GracefulInterrupt)), None)

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
        if trainer.world_size > 1:  # every process stops after the same step
            self._stop = trainer.strategy.reduce_boolean_decision(self.requested, all=False)
            self.requested = self.requested or self._stop
        else:
            self._stop = self.requested

    @staticmethod
    def stop_between_steps(trainer: L.Trainer) -> None:
        """Raise :class:`StopRequested` if a Ctrl-C asked to stop. Called by the module's first hook of a
        step (``on_before_batch_transfer``), where the step before has completed everything Lightning does
        after a step (validation, checkpoints, learning-rate update, loop counters) and the next one does not
        yet count as begun: the run stops at a step boundary from which a resumed run continues exactly. A
        request before this run's first step lets that step finish, so that there is a step to save."""
        interrupt = GracefulInterrupt.of(trainer)
        if interrupt is not None and interrupt._stop:
            raise StopRequested

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
