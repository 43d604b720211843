"""Semantic segmentation by square windows, as EoMT's official code and transformers' EoMT image processor
do: the image is resized so that its shorter side is the window's, windows of that side are spread evenly
along the longer side (overlapping by as little as whole windows allow), and their class probabilities are
averaged where they overlap. A model trained on square crops then sees square inputs at its training scale."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor

from .test_resize import resize_image


def window_starts(length: int, window: int) -> list[int]:
    """Where the windows of side ``window`` start along a side of ``length`` (>= ``window``): as few windows
    as cover it, the first at 0 and the last ending at ``length``, the overlap shared evenly (the official
    formula, truncated to whole pixels as it does)."""
    count = math.ceil(length / window)
    overlap = count * window - length
    step = window - (overlap / (count - 1) if overlap > 0 else 0)
    return [int(j * step) for j in range(count)]


def windowed_size(height: int, width: int, window: int) -> tuple[int, int]:
    """The size an image is resized to: its shorter side ``window``, its aspect ratio kept."""
    factor = max(window / height, window / width)
    return round(height * factor), round(width * factor)


def windowed_semantic_probabilities(image: Tensor, window: int, probabilities: Callable[[Tensor], Tensor]) -> Tensor:
    """RGB ``image`` [3, H, W] -> class probabilities [K, h, w] at :func:`windowed_size`, averaged over its
    windows; ``probabilities`` maps one window [3, window, window] to its class probabilities [K, window,
    window]."""
    size = windowed_size(*image.shape[-2:], window)
    resized = resize_image(image, size)
    tall = size[0] > size[1]
    total = count = None
    for start in window_starts(max(size), window):
        part = (slice(None), slice(start, start + window), slice(None))
        if not tall:
            part = (slice(None), slice(None), slice(start, start + window))
        probs = probabilities(resized[part])
        if total is None:
            total, count = probs.new_zeros((probs.shape[0], *size)), probs.new_zeros((1, *size))
        total[part] += probs
        count[part] += 1
    return total / count
