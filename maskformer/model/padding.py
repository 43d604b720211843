"""Padding images into batches: bottom / right to a multiple of the size divisibility, and which images
share a padded size (so that batching them pads nothing beyond their own size)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .config import Size


def pad_batch(
    images: Sequence[Tensor], size_divisibility: int = 32, value: float | Tensor = 0.0, square: int = 0
) -> tuple[Tensor, list[Size]]:
    """Images [C, h_i, w_i] -> batch [B, C, H, W] padded bottom/right to a common multiple of
    ``size_divisibility`` and at least ``square`` a side, and the list of (h_i, w_i). ``value``: the padding's,
    one for every channel or a [C] tensor of one per channel."""
    if not images:
        raise ValueError("pad_batch needs at least one image")
    sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
    height, width = padded_size(max(h for h, _ in sizes), max(w for _, w in sizes), size_divisibility, square)
    batch = images[0].new_empty((len(images), images[0].shape[0], height, width))
    batch.copy_(torch.as_tensor(value, dtype=batch.dtype, device=batch.device).reshape(-1, 1, 1))
    for out, img, (h, w) in zip(batch, images, sizes):
        out[:, :h, :w].copy_(img)
    return batch, sizes


def padded_size(height: int, width: int, size_divisibility: int, square: int = 0) -> Size:
    """The size :func:`pad_batch` pads an image of ``height`` x ``width`` to when it is alone (at least
    ``square`` a side)."""
    d = max(size_divisibility, 1)
    return max(-(-height // d) * d, square), max(-(-width // d) * d, square)


def padded_groups(sizes: Sequence[Size], size_divisibility: int, square: int = 0) -> list[list[int]]:
    """Indices of images that pad to the same size, in order of first appearance.

    Forwarding each group as one batch makes results batch-invariant: an image is never padded beyond the
    size it has alone, and padding (through convolutions, attention and normalisation) changes features.
    """
    groups: dict[Size, list[int]] = {}
    for i, (h, w) in enumerate(sizes):
        groups.setdefault(padded_size(h, w, size_divisibility, square), []).append(i)
    return list(groups.values())
