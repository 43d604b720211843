"""Segmenting images with a trained or pretrained MaskFormer: inputs, predictor, typed results, writers."""

from .inputs import LoadedImage, load_inputs
from .predictor import Predictor
from .results import InstanceResult, PanopticResult, Segment, SemanticResult
from .writers import PredictionWriter
from .zoo import KNOWN_MODELS, KnownModel, load_model

__all__ = [
    "KNOWN_MODELS",
    "InstanceResult",
    "KnownModel",
    "LoadedImage",
    "PanopticResult",
    "PredictionWriter",
    "Predictor",
    "Segment",
    "SemanticResult",
    "load_inputs",
    "load_model",
]
