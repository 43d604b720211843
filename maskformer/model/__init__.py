"""The MaskFormer model core: plain PyTorch + timm, no training, data or CLI code."""

from .config import (
    BackboneConfig,
    InferenceConfig,
    LossConfig,
    MetadataConfig,
    ModelConfig,
    PixelDecoderConfig,
    TransformerConfig,
)
from .criterion import SetCriterion
from .families import FAMILIES, Family, family, family_of
from .families.eomt import EoMT, EoMTConfig
from .families.mask2former import Mask2FormerConfig
from .families.maskformer import MaskFormerConfig
from .inference import InstanceResult, PanopticResult
from .maskformer import MaskFormer
from .matcher import HungarianMatcher
from .prediction import Prediction
from .presets import PRESETS, preset
from .segmenter import Segmenter

__all__ = [
    "FAMILIES",
    "PRESETS",
    "BackboneConfig",
    "EoMT",
    "EoMTConfig",
    "Family",
    "HungarianMatcher",
    "InferenceConfig",
    "InstanceResult",
    "LossConfig",
    "Mask2FormerConfig",
    "MaskFormer",
    "MaskFormerConfig",
    "MetadataConfig",
    "ModelConfig",
    "PanopticResult",
    "PixelDecoderConfig",
    "Prediction",
    "Segmenter",
    "SetCriterion",
    "TransformerConfig",
    "family",
    "family_of",
    "preset",
]
