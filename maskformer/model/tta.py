"""Multi-scale and flip test-time augmentation of semantic segmentation (the papers' multi-scale results)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor

from .config import InferenceConfig
from .test_resize import resize_for_test, test_size


def augmented_semantic_probabilities(
    image: Tensor,
    config: InferenceConfig,
    scales: Sequence[float],
    flip: bool,
    probabilities: Callable[[Tensor], Tensor],
) -> Tensor:
    """Multi-scale and flip test-time augmentation for semantic segmentation.

    RGB ``image`` [3, H, W] is resized to the test size times each of ``scales`` (and mirrored when ``flip``);
    ``probabilities`` maps each view [3, h_s, w_s] to class probabilities [K, h_s, w_s]. Returns their sum
    [K, h, w], each resized bilinearly to the scale-1 test size (h, w) and unmirrored first; its argmax is
    that of the average.
    """
    base = test_size(*image.shape[-2:], config)
    total = None
    for scale in scales:
        resized = resize_for_test(image, config, scale)
        for flipped in (False, True) if flip else (False,):
            probs = probabilities(resized.flip(-1) if flipped else resized)
            if flipped:
                probs = probs.flip(-1)
            if tuple(probs.shape[-2:]) != base:
                probs = F.interpolate(probs[None], size=base, mode="bilinear", align_corners=False)[0]
            total = probs if total is None else total + probs
    if total is None:
        raise ValueError("test-time augmentation needs at least one scale")
    return total
