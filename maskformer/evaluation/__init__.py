"""Metrics equal to the standard evaluators: mIoU family, panoptic quality, COCO instance AP."""

from .instance import InstanceEvaluator
from .panoptic import PanopticEvaluator, pq_from_files
from .semantic import SemanticEvaluator

__all__ = ["InstanceEvaluator", "PanopticEvaluator", "SemanticEvaluator", "pq_from_files"]
