"""The record every network returns: what the criterion, post-processing, the Predictor and export read."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Prediction:
    """The queries' prediction for a batch: class ``logits`` [B, N, K+1] (the last class: no object) and mask
    ``masks`` logits [B, N, h, w] at stride 4 of the padded input. ``aux``: the earlier predictions (every
    decoder layer's but the last, and for Mask2Former the one from the queries before the first layer), each
    with an empty ``aux`` of its own; filled in training or with ``with_aux=True`` for deep supervision."""

    logits: Tensor
    masks: Tensor
    aux: list[Prediction] = field(default_factory=list)
