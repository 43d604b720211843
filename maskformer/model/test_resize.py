"""Test-time resizing: the shortest edge to ``inference.test_shortest_edge``, the longer side at most
``test_max_size`` (detectron2's ResizeShortestEdge at test time), as prediction, validation and evaluation
all do."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .config import InferenceConfig, Size


def resized_size(height: int, width: int, shortest_edge: int, max_size: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge: scale the short side to ``shortest_edge`` unless the long side then
    exceeds ``max_size``."""
    scale = shortest_edge / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    """RGB [3, h, w] (uint8 or float) -> float [3, *size], bilinear with antialiasing when shrinking."""
    image = image.float()
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def test_size(height: int, width: int, config: InferenceConfig, scale: float = 1.0) -> Size:
    """The size an image is resized to before the forward: the config's shortest edge and longest side, both
    times ``scale`` (multi-scale test-time augmentation)."""
    return resized_size(height, width, round(config.test_shortest_edge * scale), round(config.test_max_size * scale))


def resize_for_test(image: Tensor, config: InferenceConfig, scale: float = 1.0) -> Tensor:
    """RGB [3, h, w] -> float [3, H, W] at :func:`test_size`: the one test-time resize of ``MaskFormer.predict``,
    the Predictor and evaluation, so that they score and predict the same pixels."""
    return resize_image(image, test_size(*image.shape[-2:], config, scale))
