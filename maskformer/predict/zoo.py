"""Known pretrained checkpoints of every family (hub ids and the official model zoos, listed by the
families' modules) and loading any model source with its dataset metadata filled in."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..data.catalog import DATASETS
from ..data.metadata import BUILTIN, builtin_metadata
from ..model import Segmenter
from ..model.config import ModelConfig
from ..model.families import FAMILIES
from ..model.families.family import NON_COMMERCIAL, Checkpoint

log = logging.getLogger("maskformer")


@dataclass(frozen=True)
class KnownModel:
    """A published checkpoint (a family's :class:`~maskformer.model.families.family.Checkpoint`) with what
    the dataset catalog says of its dataset: ``task``, ``dataset`` (its title) and ``metadata`` (the built-in
    class list it is given, "" none), and the ``family`` whose checkpoint it is."""

    name: str
    source: str
    task: str
    dataset: str
    metric: str
    score: float
    metadata: str = ""
    licence: str = NON_COMMERCIAL
    family: str = ""

    @property
    def licence_notice(self) -> str:
        """What loading it says of its licence."""
        if self.licence == NON_COMMERCIAL:
            return f"the published weights are licensed {self.licence} (non-commercial use only)"
        return f"the published weights' licence: {self.licence}"


def _known(family: str, checkpoint: Checkpoint) -> KnownModel:
    record = DATASETS[checkpoint.dataset]
    c = checkpoint
    meta = record.metadata if c.classes else ""
    return KnownModel(c.name, c.source, record.task, record.title, c.metric, c.score, meta, c.licence, family)


KNOWN_MODELS: dict[str, KnownModel] = {c.name: _known(f.name, c) for f in FAMILIES for c in f.checkpoints}


# The official configs' test sizes and object-mask thresholds by dataset (mask2former-facts.md; MaskFormer's
# ADE20K panoptic and COCO configs use the same): (shortest edge, longest side, object mask threshold).
TEST_SETTINGS = {
    "ADE20K-150": (512, 2048, None),
    "ADE20K-150 panoptic": (640, 2560, 0.8),
    "ADE20K-100 instance": (640, 2560, 0.8),
    "COCO panoptic": (800, 1333, 0.8),
    "COCO instance": (800, 1333, 0.8),
    "Cityscapes": (1024, 2048, None),
    "Cityscapes panoptic": (1024, 2048, 0.8),
    "Cityscapes instance": (1024, 2048, 0.8),
    "Mapillary Vistas": (2048, 2048, 0.0),
    "Mapillary Vistas panoptic": (2048, 2048, 0.0),
}


def known_model(source: str | Path) -> KnownModel | None:
    """The published checkpoint ``source`` names (by name or by its hub id / URL), or None."""
    text = str(source)
    return KNOWN_MODELS.get(text) or next((m for m in KNOWN_MODELS.values() if m.source == text), None)


def load_model(
    source: str | Path, config: ModelConfig | None = None, strict: bool = False, delta_base: str | Path | None = None
) -> Segmenter:
    """Load a model of any family from a known model name (``maskformer models``) or anything
    :meth:`Segmenter.from_pretrained` reads (folders, training runs and their ``.ckpt`` files, hub ids,
    model-zoo files and URLs; ``delta_base`` as there). Class names, thing/stuff and colours are filled in from
    the built-in metadata when the checkpoint lacks them and its dataset is known. Every command's ``--model``
    goes through here."""
    known = known_model(source)
    if known:
        log.warning(f"{known.name}: {known.licence_notice}")
    model = Segmenter.from_pretrained(
        known.source if known else source, config=config, strict=strict, delta_base=delta_base
    )
    if known and config is None and known.dataset in TEST_SETTINGS:
        # Checkpoints carry no test sizes (zoo pickles) or a converter's (hub): use the official config's.
        short, long, threshold = TEST_SETTINGS[known.dataset]
        inference = model.config.inference
        inference.test_shortest_edge, inference.test_max_size = short, long
        if threshold is not None:
            inference.object_mask_threshold = threshold
    meta = model.config.metadata
    dataset = known.metadata if known else _guess_dataset(model.config)
    if dataset and (not meta.class_names or meta.thing_classes is None or not meta.colors):
        builtin = builtin_metadata(dataset)
        same = not meta.class_names or meta.class_names == builtin.class_names or known is not None
        if same and len(builtin.class_names) == model.config.num_classes:
            builtin.class_names = meta.class_names or builtin.class_names
            model.config.metadata = builtin
    return model


def _guess_dataset(config: ModelConfig) -> str:
    """A built-in dataset whose class count matches a checkpoint without metadata (model-zoo files), or ''."""
    if config.metadata.class_names:
        return ""
    by_count = {len(builtin_metadata(name).class_names): name for name in BUILTIN}
    return by_count.get(config.num_classes, "")
