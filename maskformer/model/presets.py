"""Named model configurations of the papers, every family's (each family's module lists its own:
:mod:`maskformer.model.families.maskformer`, :mod:`maskformer.model.families.mask2former`)."""

from __future__ import annotations

import copy
from collections.abc import Callable

from .config import ModelConfig, did_you_mean

# Gathered through the families' config classes (the package imports the family modules first), not through
# the registry: the networks' ``from_preset`` reads this module, and the registry imports the networks.
PRESETS: dict[str, Callable[[], ModelConfig]] = {
    name: make for f in ModelConfig.families() for name, make in f.presets.items()
}
# The dataset each preset is configured for, by its key in maskformer.data.catalog.DATASETS: recorded where
# the presets are made, not parsed back from their names.
PRESET_DATASETS: dict[str, str] = {name: key for f in ModelConfig.families() for name, key in f.preset_datasets.items()}


def preset_dataset(name: str) -> str:
    """The dataset key of preset ``name`` (:data:`PRESET_DATASETS`), "" for an unknown name."""
    return PRESET_DATASETS.get(name, "")


def check_preset(name: str) -> None:
    """Refuse a name that is not in :data:`PRESETS`, suggesting the closest."""
    if name not in PRESETS:
        raise KeyError(
            f"unknown preset {name!r}{did_you_mean(name, PRESETS)}; `maskformer presets` lists the known presets"
        )


def preset(name: str) -> ModelConfig:
    """Return a fresh config for a named preset (see :data:`PRESETS`)."""
    check_preset(name)
    return copy.deepcopy(PRESETS[name]())
