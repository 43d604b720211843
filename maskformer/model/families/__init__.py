"""The model families, one module each, and their registry: the one place that lists them.

Each family's module owns its config class, how its network is built, its weight formats' names, its
presets and recipes and its published checkpoints (:class:`Family`). The rest of the package reads them
from :data:`FAMILIES` through :func:`family` and :func:`family_of`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..config import ModelConfig, did_you_mean
from .family import Family
from .mask2former import FAMILY as _MASK2FORMER
from .maskformer import FAMILY as _MASKFORMER

# The first is the default: the family of a config file that names none.
FAMILIES: tuple[Family, ...] = (_MASKFORMER, _MASK2FORMER)
# The family `maskformer demo` trains by default: the one whose results show best what training does within
# the demo's minutes (docs/demo.md, "The two families side by side").
DEMO_FAMILY: Family = _MASK2FORMER


def family(name: str) -> Family:
    """The family called ``name``."""
    for f in FAMILIES:
        if f.name == name:
            return f
    raise KeyError(f"unknown model family {name!r}{did_you_mean(name, names())}; known: {', '.join(names())}")


def family_of(config: ModelConfig) -> Family:
    """The family of a whole-model config."""
    return family(config.family)


def names() -> list[str]:
    return [f.name for f in FAMILIES]


def titles() -> str:
    """The families' titles in a phrase: "MaskFormer or Mask2Former"."""
    return " or ".join(f.title for f in FAMILIES)


def by_transformers_type(model_type: Any, source: str) -> Family:
    """The family whose transformers checkpoints have ``model_type``."""
    for f in FAMILIES:
        if f.transformers is not None and f.transformers.model_type == model_type:
            return f
    raise ValueError(f"{source}: model_type is {model_type!r}, not a {titles()} model")


def by_detectron2_state(state: Mapping[str, Tensor], source: str) -> Family:
    """The family an official (detectron2) checkpoint's weights belong to, by their names."""
    for f in FAMILIES:
        if f.detectron2 is not None and f.detectron2.recognises(state):
            return f
    raise ValueError(f"{source}: not a {titles()} checkpoint (keys start {sorted(state)[:3]})")


__all__ = [
    "DEMO_FAMILY",
    "FAMILIES",
    "Family",
    "by_detectron2_state",
    "by_transformers_type",
    "family",
    "family_of",
    "names",
    "titles",
]
