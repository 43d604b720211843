"""Building blocks several test modules share."""

from __future__ import annotations

from typing import Any

from maskformer.model import HungarianMatcher, LossConfig, MaskFormerConfig, SetCriterion


def make_criterion(num_classes: int, **loss: Any) -> SetCriterion:
    """The set criterion of a MaskFormer loss config with ``loss`` changed."""
    return SetCriterion.from_config(MaskFormerConfig(num_classes=num_classes, loss=LossConfig(**loss)))


def make_matcher(**loss: Any) -> HungarianMatcher:
    """The matcher of a MaskFormer loss config with ``loss`` changed."""
    return HungarianMatcher.from_config(LossConfig(**loss))
