"""The model families, one module each, and their registry: the one place that lists them.

Each family's module owns its config class, how its network is built, its weight formats' names, its
presets and recipes and its published checkpoints (:class:`Family`). The rest of the package reads them
from :data:`FAMILIES` through :func:`family` and :func:`family_of`."""

from __future__ import annotations

from ..config import ModelConfig, did_you_mean
from . import eomt, mask2former, maskformer
from .family import Family

# Each family module defines its config class, which makes it known to ModelConfig.families(): the one list,
# in the order the papers were published, that the loader and the presets below this registry read too.
FAMILIES: tuple[Family, ...] = tuple(ModelConfig.families())
assert {f.name for f in FAMILIES} == {maskformer.FAMILY.name, mask2former.FAMILY.name, eomt.FAMILY.name}
# The family `maskformer demo` trains by default: the one whose results show best what training does within
# the demo's minutes (docs/demo.md, "The two families side by side").
DEMO_FAMILY: Family = mask2former.FAMILY


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
    """The families' names, the ``family`` values of their config files."""
    return [f.name for f in FAMILIES]


def demo_names() -> list[str]:
    """The families ``maskformer demo`` can train (``--family``'s choices)."""
    return [f.name for f in FAMILIES if f.demo is not None]


def titles() -> str:
    """The families' titles in a phrase: "MaskFormer or Mask2Former"."""
    return " or ".join(f.title for f in FAMILIES)


__all__ = [
    "DEMO_FAMILY",
    "FAMILIES",
    "Family",
    "demo_names",
    "family",
    "family_of",
    "names",
    "titles",
]
