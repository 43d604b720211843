"""What every dataset preparation shares: resumable per-image work, images linked rather than copied, and
the final JSON written once every image is done."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ...model.atomic import atomic_path
from ..io import coco_panoptic_json, write_json, write_png
from ..metadata import builtin_metadata

# Per-image records of an unfinished preparation live here until the dataset's JSON is written.
WORK_DIR = ".prepare"


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` holds ``source``'s bytes: a hard link where the file system allows, else a copy (written
    atomically). An existing target of the same size is kept (a resumed preparation)."""
    if target.exists() and target.stat().st_size == source.stat().st_size:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)


def resumable(
    items: Iterable[tuple[str, object]],
    work: Path,
    do: Callable[[object], dict],
    valid: Callable[[dict], bool],
    desc: str,
    progress: bool = True,
) -> dict[str, dict]:
    """Run ``do`` on each (key, item) and keep its JSON record under ``work/key.json``; an item whose
    record exists, parses and passes ``valid`` (its outputs are there) is not done again. Returns
    key -> record for every item."""
    items = list(items)
    work.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {}
    for key, item in tqdm(items, desc=desc, unit="img", disable=not progress):
        path = work / f"{key}.json"
        record = None
        if path.exists():
            try:
                record = json.loads(path.read_text())
            except json.JSONDecodeError:
                record = None
            if record is not None and not valid(record):
                record = None
        if record is None:
            record = do(item)
            write_json(record, path)
        records[key] = record
    return records


def convert_splits(
    name: str,
    out: Path,
    items: dict[str, Iterable[tuple[str, object]]],
    convert: Callable[[object, str], dict],
    written: Callable[[dict, str], bool],
    progress: bool = True,
) -> dict[str, dict[str, dict]]:
    """The one conversion loop of every preparation: for each split of ``items`` (split -> (key, item)),
    ``convert(item, split)`` each item not done yet, resumably (:func:`resumable`, records under
    ``out/.prepare/name/split``, ``written(record, split)`` saying an item's files exist); returns split ->
    key -> record."""
    records = {}
    for split, split_items in items.items():
        records[split] = resumable(
            split_items,
            out / WORK_DIR / name / split,
            lambda item, s=split: convert(item, s),
            lambda record, s=split: written(record, s),
            f"{name} {split}",
            progress,
        )
    return records


def write_semantic(out: Path, split: str, image: Path, labels: np.ndarray, link_image: bool = True) -> dict:
    """Write one sample of the generic semantic layout: ``labels`` as labels/{split}/<stem>.png and, when
    ``link_image``, the image linked as images/{split}/<name>; returns the record :func:`semantic_done` checks."""
    write_png(labels, out / "labels" / split / f"{image.stem}.png")
    if link_image:
        link_or_copy(image, out / "images" / split / image.name)
    return {"image": image.name, "label": f"{image.stem}.png"}


def semantic_done(out: Path, split: str, record: dict) -> bool:
    """Whether a :func:`write_semantic` record's label and image are written."""
    return (out / "labels" / split / record["label"]).exists() and (out / "images" / split / record["image"]).exists()


def finish(out: Path) -> None:
    """Remove the per-image records once the dataset's files are complete."""
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)


def panoptic_json(records: dict[str, dict], categories: list[dict]) -> dict:
    """COCO panoptic JSON from per-image records {"image": ..., "annotation": ...}."""
    images = [r["image"] for r in records.values()]
    return coco_panoptic_json(images, [r["annotation"] for r in records.values()], categories)


def instances_json(records: dict[str, dict], categories: list[dict]) -> dict:
    """COCO instances JSON from per-image records {"image": ..., "annotations": [...]}: images numbered
    from 1 in the records' order, annotations from 1."""
    images, annotations = [], []
    for image_id, record in enumerate(records.values(), start=1):
        images.append({"id": image_id, **record["image"]})
        for ann in record["annotations"]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_categories(name: str) -> list[dict]:
    """The classes of built-in dataset ``name`` as COCO categories: id (the dataset's), name, isthing, color."""
    meta = builtin_metadata(name)
    things = set(meta.thing_classes or [])
    rows = zip(meta.category_ids, meta.class_names, meta.colors)
    return [
        {"id": cid, "name": cname, "isthing": int(i in things), "color": list(color)}
        for i, (cid, cname, color) in enumerate(rows)
    ]


def class_file(dataset: str, categories: list[dict], ignore_value: int = 255) -> dict:
    """The generic semantic layout's class file (``classes.json``) from COCO-style ``categories`` (id, name,
    isthing, color), with the labels' ignore value."""
    classes = [{"index": i, **c, "isthing": bool(c["isthing"])} for i, c in enumerate(categories)]
    return {"dataset": dataset, "ignore_value": ignore_value, "classes": classes}


def classes_json(name: str, ignore_value: int = 255) -> dict:
    """The class file of built-in dataset ``name``."""
    return class_file(name, coco_categories(name), ignore_value)
