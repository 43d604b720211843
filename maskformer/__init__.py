"""maskformer: MaskFormer (Cheng, Schwing, Kirillov, NeurIPS 2021) in plain PyTorch + timm."""

from .model import (
    PRESETS,
    HungarianMatcher,
    MaskFormer,
    MaskFormerConfig,
    SetCriterion,
    preset,
)

__version__ = "0.1.0"

__all__ = ["PRESETS", "HungarianMatcher", "MaskFormer", "MaskFormerConfig", "SetCriterion", "__version__", "preset"]
