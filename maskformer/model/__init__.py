"""The MaskFormer model core: plain PyTorch + timm, no training, data or CLI code."""

from .config import (
    BackboneConfig,
    InferenceConfig,
    LossConfig,
    Mask2FormerConfig,
    MaskFormerConfig,
    MetadataConfig,
    PixelDecoderConfig,
    TransformerConfig,
)
from .criterion import SetCriterion
from .inference import InstanceResult, PanopticResult
from .maskformer import MaskFormer
from .matcher import HungarianMatcher
from .presets import PRESETS, preset

__all__ = [
    "PRESETS",
    "BackboneConfig",
    "HungarianMatcher",
    "InferenceConfig",
    "InstanceResult",
    "LossConfig",
    "Mask2FormerConfig",
    "MaskFormer",
    "MaskFormerConfig",
    "MetadataConfig",
    "PanopticResult",
    "PixelDecoderConfig",
    "SetCriterion",
    "TransformerConfig",
    "preset",
]
