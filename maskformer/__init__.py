"""maskformer: MaskFormer (Cheng, Schwing, Kirillov, NeurIPS 2021) and Mask2Former (Cheng, Misra, Schwing,
Kirillov, Girdhar, CVPR 2022) in plain PyTorch + timm."""

from .model import (
    PRESETS,
    HungarianMatcher,
    Mask2FormerConfig,
    MaskFormer,
    MaskFormerConfig,
    ModelConfig,
    SetCriterion,
    preset,
)

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "HungarianMatcher",
    "Mask2FormerConfig",
    "MaskFormer",
    "MaskFormerConfig",
    "ModelConfig",
    "SetCriterion",
    "__version__",
    "preset",
]
