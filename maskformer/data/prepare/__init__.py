"""``maskformer data prepare``: the papers' datasets from their raw downloads to a layout this package
trains on, resumable, by each dataset's official preparation rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..catalog import DATASETS
from . import ade20k, ade20k_full, cityscapes, coco_stuff, mapillary, pascal_context


@dataclass(frozen=True)
class Preparation:
    """A dataset preparation: ``run(raw, out, progress)`` writes the catalog's ``dataset`` (its key) under
    ``out`` in the layouts ``formats`` (``--format`` names) read; semantic labels use ``ignore_value`` for
    pixels of no class."""

    dataset: str
    summary: str
    formats: tuple[str, ...]
    run: Callable[[Path, Path, bool], None]
    ignore_value: int = 255

    @property
    def name(self) -> str:
        """The ``maskformer data prepare`` name: the catalog record's."""
        return DATASETS[self.dataset].preparation


PREPARATIONS = {
    p.name: p
    for p in (
        Preparation("ade_panoptic", "ADE20K scene parsing + instances -> COCO panoptic (150 classes)",
                    ("panoptic",), ade20k.panoptic),
        Preparation("ade_instance", "ADE20K instance annotations -> COCO instances (100 classes)",
                    ("coco_instance",), ade20k.instance),
        Preparation("ade_full", "ADE20K 2021 release -> 16-bit semantic labels (847 classes, 65535 ignore)",
                    ("semantic",), ade20k_full.prepare, ade20k_full.IGNORE),
        Preparation("coco_stuff", "COCO-Stuff-10K v1.0 .mat annotations -> semantic labels (171 classes)",
                    ("semantic",), coco_stuff.prepare),
        Preparation("cityscapes_panoptic", "Cityscapes gtFine instanceIds -> COCO panoptic (19 classes)",
                    ("panoptic",), cityscapes.panoptic),
        Preparation("cityscapes_instance", "Cityscapes gtFine instanceIds -> COCO instances (8 classes)",
                    ("coco_instance",), cityscapes.instance),
        Preparation("pascal_context_59", "PASCAL-Context .mat files + VOC 2010 -> semantic labels (59 classes)",
                    ("semantic",), pascal_context.prepare_59),
        Preparation("pascal_context_459", "PASCAL-Context + VOC 2010 -> 16-bit semantic labels (459 classes, 65535 "
                    "ignore)", ("semantic",), pascal_context.prepare_459, pascal_context.IGNORE_FULL),
        Preparation("vistas", "Mapillary Vistas v1.2 -> semantic labels (65 classes) and COCO panoptic",
                    ("semantic", "panoptic"), mapillary.prepare),
    )
}  # fmt: skip


def prepare(name: str, raw: str | Path, out: str | Path, progress: bool = True) -> Preparation:
    """Prepare dataset ``name`` from the raw download under ``raw`` into ``out``; an interrupted run picks
    up where it stopped (per-image outputs already written are kept)."""
    if name not in PREPARATIONS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(PREPARATIONS)}")
    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise FileNotFoundError(f"{raw}: raw dataset folder not found")
    preparation = PREPARATIONS[name]
    preparation.run(raw, out, progress)
    return preparation


__all__ = ["PREPARATIONS", "Preparation", "prepare"]
