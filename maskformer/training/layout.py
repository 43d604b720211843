"""The memory layout a training step runs faster in on this machine: measured, because CPUs differ.

A training step (forward, loss, backward) of the same network at the same size took 6.56 s channels-last
against 5.52 s in NCHW on a 2-core AMD EPYC (AVX2) for R50 MaskFormer, and was faster channels-last for R50
MaskFormer and both Mask2Formers on an Intel Xeon with AVX-512 (benchmarks/RESULTS.md): oneDNN's
convolution backward kernels differ by instruction set. No rule of CPU flags held on both, so where the
choice is not given, a run times a few steps of each layout on a throwaway copy of its network before it
starts and keeps the faster.
"""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lightning as L
import torch
from torch import Tensor

from ..model import Segmenter, SetCriterion
from .config import TrainConfig

if TYPE_CHECKING:
    from .module import MaskFormerModule

SEGMENT_SIDE = 32  # the synthetic targets' square segments, in pixels
SEGMENTS = 8  # classes drawn per synthetic image


@dataclass(frozen=True)
class LayoutTiming:
    """The fastest of a few training steps in each memory layout, in seconds."""

    channels_last_s: float
    nchw_s: float

    @property
    def channels_last(self) -> bool:
        """Whether channels-last was the faster layout (a tie keeps NCHW, PyTorch's default)."""
        return self.channels_last_s < self.nchw_s

    def describe(self) -> str:
        """One console line: both timings and the choice."""
        chosen = "channels-last" if self.channels_last else "NCHW"
        return (
            f"memory layout: a training step took {self.channels_last_s:.2f} s channels-last and {self.nchw_s:.2f} s "
            f"in NCHW on this machine: training in {chosen} (train.channels_last=true|false chooses)"
        )


def synthetic_batch(
    batch: int, size: tuple[int, int], num_classes: int, device: torch.device
) -> tuple[Tensor, list[dict[str, Tensor]]]:
    """Normalised random images [B, 3, H, W] and targets of square segments (all pixels valid), from a fixed
    generator: the global random state, which seeds the run's augmentation, is not drawn from."""
    g = torch.Generator().manual_seed(0)
    h, w = size
    images = torch.randn(batch, 3, h, w, generator=g)
    targets = []
    for _ in range(batch):
        blocks = torch.randint(0, SEGMENTS, (-(-h // SEGMENT_SIDE), -(-w // SEGMENT_SIDE)), generator=g)
        ids = blocks.repeat_interleave(SEGMENT_SIDE, 0).repeat_interleave(SEGMENT_SIDE, 1)[:h, :w]
        present = ids.unique()
        targets.append(
            {
                "labels": torch.randint(0, num_classes, (len(present),), generator=g).to(device),
                "masks": (ids[None] == present[:, None, None]).to(device, torch.uint8),
                "valid": torch.ones(h, w, dtype=torch.bool, device=device),
            }
        )
    return images.to(device), targets


def time_training_layouts(
    model: Segmenter,
    criterion: SetCriterion,
    batch: int,
    size: tuple[int, int],
    autocast: torch.dtype | None = None,
    repeats: int = 2,
) -> LayoutTiming:
    """Time the training step (forward, loss, backward) of a copy of ``model`` in each layout on a synthetic
    batch on the model's device, under autocast to ``autocast`` if given: one warm-up step each, then
    ``repeats`` rounds alternating the layouts (so that a slow spell of the machine hits both), the fastest
    step of each kept. ``model`` is not changed (its BatchNorm statistics neither); the global random state
    (dropout, drop-path) is restored after."""
    device = next(model.parameters()).device
    images, targets = synthetic_batch(batch, size, model.config.num_classes, device)
    probe = copy.deepcopy(model).train()
    context = torch.autocast(device.type, dtype=autocast) if autocast is not None else nullcontext()

    def step(layout: torch.memory_format) -> float:
        probe.to(memory_format=layout)
        x = images.contiguous(memory_format=layout)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        with context:
            losses = criterion(probe(x), targets)
        sum(losses.values()).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        probe.zero_grad(set_to_none=True)
        return time.perf_counter() - began

    layouts = (torch.channels_last, torch.contiguous_format)
    best = {layout: float("inf") for layout in layouts}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for layout in layouts:
            step(layout)
        for _ in range(repeats):
            for layout in layouts:
                best[layout] = min(best[layout], step(layout))
    return LayoutTiming(channels_last_s=best[torch.channels_last], nchw_s=best[torch.contiguous_format])


# The autocast type of each mixed precision (train.precision), for steps timed outside Lightning.
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}

# The shortest run that times the layouts. The timing costs about six training steps (a warm-up and two
# rounds of each layout); the layouts' steps differed by 10-20% where they differed (the module docstring), so
# the faster one pays the timing back only over some 30-60 steps.
MIN_MEASURED_STEPS = 60


def measures_layout(train: TrainConfig, trainer: L.Trainer) -> bool:
    """Whether a run whose ``train.channels_last`` is not given times its training step in both memory layouts
    before it starts (:func:`time_training_layouts`): on a CPU in one process, not deterministic, and at least
    ``MIN_MEASURED_STEPS`` long (a shorter run would spend more on the timing than it saves).
    On a GPU the network's ``trains_channels_last`` decides (channels-last feeds tensor cores); processes could
    measure differently; two runs could too where the layouts are close, which a deterministic run must not;
    compiling each layout to time it would take minutes."""
    return (
        train.channels_last is None
        and train.max_steps >= MIN_MEASURED_STEPS
        and trainer.strategy.root_device.type == "cpu"
        and trainer.world_size == 1
        and not train.deterministic
        and not train.compile
    )


def settle_layout(module: MaskFormerModule, train: TrainConfig, trainer: L.Trainer, saved: bool | None) -> str:
    """Put ``module``'s network in the memory layout the run trains in and return a console line saying why: a
    resumed run's checkpoint's layout (``saved``), else the faster one where :func:`measures_layout`. Returns ""
    where nothing changes: ``train.channels_last`` given, or the network's own rule (as the module was built)."""
    if train.channels_last is not None:
        return ""
    if saved is not None:
        module.set_channels_last(saved)
        return (
            f"memory layout: {'channels-last' if saved else 'NCHW'}, as the run trained before its checkpoint "
            "(train.channels_last=true|false chooses)"
        )
    if not measures_layout(train, trainer):
        return ""
    timing = time_training_layouts(
        module.model, module.criterion, train.batch_size, module.config.data.crop_size,
        autocast=AUTOCAST.get(train.precision),
    )  # fmt: skip
    module.set_channels_last(timing.channels_last)
    return timing.describe()
