"""maskformer: MaskFormer (Cheng, Schwing, Kirillov, NeurIPS 2021), Mask2Former (Cheng, Misra, Schwing,
Kirillov, Girdhar, CVPR 2022) and EoMT (Kerssies et al., CVPR 2025) in plain PyTorch + timm."""

from .model import (
    PRESETS,
    EoMT,
    EoMTConfig,
    HungarianMatcher,
    Mask2FormerConfig,
    MaskFormer,
    MaskFormerConfig,
    ModelConfig,
    Segmenter,
    SetCriterion,
    preset,
)

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "EoMT",
    "EoMTConfig",
    "HungarianMatcher",
    "Mask2FormerConfig",
    "MaskFormer",
    "MaskFormerConfig",
    "ModelConfig",
    "Segmenter",
    "SetCriterion",
    "__version__",
    "preset",
]
