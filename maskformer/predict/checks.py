"""Checks of prediction settings that need no model, so that the command line refuses a mistake before it
loads (or downloads) anything: the device, and the test-time augmentation options against the task."""

from __future__ import annotations

from collections.abc import Sequence

import torch

TASKS = ("semantic", "panoptic", "instance")


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device, once it is known to exist here; otherwise one line saying what is
    missing (torch's own error for an absent CUDA is a paragraph about drivers)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {str(device)!r}: expected cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(device)!r}: no CUDA GPU is available to PyTorch here")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} CUDA GPU(s), numbered from 0")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r}: Apple's MPS is not available to PyTorch here")
    return parsed


def check_options(
    task: str,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    window: int | None = None,
    window_stride: int | None = None,
) -> bool:
    """Refuse, in one line, a task this package does not have or test-time augmentation it does not apply
    to the task (multi-scale, flip and sliding windows average class probabilities: semantic only); returns
    whether any is asked for."""
    if task not in TASKS:
        raise ValueError(f"task {task!r}: expected one of {', '.join(TASKS)}")
    augmented = tuple(scales) != (1.0,) or flip or window is not None
    if augmented and task != "semantic":
        raise ValueError(
            "multi-scale, flip and sliding-window inference average class probabilities and apply to "
            f"task='semantic' only (got task={task!r})"
        )
    if any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive, got {list(scales)}")
    if window is not None and window < 1:
        raise ValueError(f"window must be a positive number of pixels, got {window}")
    if window_stride is not None and (window is None or window_stride < 1):
        raise ValueError("window_stride needs a window and must be positive")
    return augmented
