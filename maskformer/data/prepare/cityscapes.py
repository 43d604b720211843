"""Cityscapes panoptic and instance ground truth from the gtFine release, by the official rules.

Raw layout (the downloads ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip``)::

    RAW/leftImg8bit/{train,val}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    RAW/gtFine/{train,val}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png

``*_instanceIds.png`` holds label id x 1000 + instance number for each object with an instance, and the
label id alone for stuff and for object groups (crowds). The rules written out here are those of
cityscapesScripts' ``createPanopticImgs.py`` (panoptic) and detectron2's Cityscapes instance loader (the one
Mask2Former trains and evaluates on):

- panoptic: every segment id of the PNG whose label is evaluated (the 19 classes) becomes a segment with
  that id and the label id as its category; an id below 1000 of a class with instances is a crowd;
  labels not evaluated are void. Box = the mask's extent.
- instance: ids of labels 24 and above, of the 8 evaluated classes with instances, each one mask; below
  1000 a crowd; a mask one pixel wide or high is left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..catalog import DATASETS
from ..io import encode_rle, id_to_rgb, mask_box, write_png
from .common import (
    coco_categories,
    convert_splits,
    finish,
    instances_json,
    link_or_copy,
    panoptic_json,
    write_json,
)

SPLITS = ("train", "val")


def _classes() -> tuple[list[dict], set[int], set[int]]:
    """The 19 evaluated classes as COCO categories (id = Cityscapes label id), their ids, the thing ids."""
    categories = coco_categories(DATASETS["cityscapes_panoptic"].metadata)
    return categories, {c["id"] for c in categories}, {c["id"] for c in categories if c["isthing"]}


def _frames(raw: Path, split: str) -> list[tuple[str, tuple[Path, Path]]]:
    """(frame stem, (instanceIds PNG, image)) of a split, sorted by stem."""
    gt = raw / "gtFine" / split
    if not gt.is_dir():
        raise FileNotFoundError(f"{gt}: not found; expected the gtFine release under {raw} (gtFine/{split}/CITY/)")
    frames = []
    for ids_file in sorted(gt.glob("*/*_gtFine_instanceIds.png")):
        stem = ids_file.name.removesuffix("_gtFine_instanceIds.png")
        image = raw / "leftImg8bit" / split / ids_file.parent.name / f"{stem}_leftImg8bit.png"
        if not image.exists():
            raise FileNotFoundError(f"{image}: the image of {ids_file} is missing")
        frames.append((stem, (ids_file, image)))
    if not frames:
        raise FileNotFoundError(f"{gt}: no *_gtFine_instanceIds.png files")
    return frames


def _read_ids(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img).astype(np.int64)
    except Exception as err:
        raise ValueError(f"{path}: cannot read the instance id PNG ({err})") from None


def panoptic(raw: Path, out: Path, progress: bool = True) -> None:
    """Write ``out`` in the generic panoptic layout: images/{split}/, panoptic/{split}/*_gtFine_panoptic.png
    and panoptic_{split}.json (COCO panoptic)."""
    categories, evaluated, things = _classes()

    def one(item: tuple[Path, Path], split: str) -> dict:
        ids_file, image = item
        ids = _read_ids(ids_file)
        stem = ids_file.name.removesuffix("_gtFine_instanceIds.png")
        segments = np.zeros(ids.shape, np.int64)
        infos = []
        for segment in np.unique(ids).tolist():
            label, crowd = (segment, 1) if segment < 1000 else (segment // 1000, 0)
            if label not in evaluated:
                continue
            mask = ids == segment
            segments[mask] = segment
            infos.append({"id": segment, "category_id": label, "area": int(mask.sum()), "bbox": mask_box(mask),
                          "iscrowd": crowd if label in things else 0})  # fmt: skip
        png = out / "panoptic" / split / f"{stem}_gtFine_panoptic.png"
        write_png(id_to_rgb(segments), png)
        link_or_copy(image, out / "images" / split / image.name)
        h, w = ids.shape
        return {
            "image": {"id": stem, "file_name": image.name, "height": h, "width": w},
            "annotation": {"image_id": stem, "file_name": png.name, "segments_info": infos},
        }

    def done(record: dict, split: str) -> bool:
        return (out / "panoptic" / split / record["annotation"]["file_name"]).exists() and (
            out / "images" / split / record["image"]["file_name"]
        ).exists()

    items = {split: _frames(raw, split) for split in SPLITS}
    records = convert_splits("cityscapes-panoptic", out, items, one, done, progress)
    for split, split_records in records.items():
        data = panoptic_json(split_records, categories)
        write_json(data, out / f"panoptic_{split}.json")
    finish(out)


def instance(raw: Path, out: Path, progress: bool = True) -> None:
    """Write ``out`` in the COCO instance layout: {split}/ images and annotations/instances_{split}.json
    (RLE masks; the 8 classes with instances)."""
    categories, _, things = _classes()

    def one(item: tuple[Path, Path], split: str) -> dict:
        ids_file, image = item
        ids = _read_ids(ids_file)
        annotations = []
        for segment in np.unique(ids[ids >= 24]).tolist():
            label = segment // 1000 if segment >= 1000 else segment
            if label not in things:
                continue
            mask = ids == segment
            ys, xs = np.nonzero(mask)
            if xs.max() <= xs.min() or ys.max() <= ys.min():
                continue
            annotations.append({"category_id": label, "iscrowd": int(segment < 1000), "area": int(mask.sum()),
                                "bbox": mask_box(mask), "segmentation": encode_rle(mask)})  # fmt: skip
        link_or_copy(image, out / split / image.name)
        h, w = ids.shape
        return {"image": {"file_name": image.name, "height": h, "width": w}, "annotations": annotations}

    def done(record: dict, split: str) -> bool:
        return (out / split / record["image"]["file_name"]).exists()

    items = {split: _frames(raw, split) for split in SPLITS}
    records = convert_splits("cityscapes-instance", out, items, one, done, progress)
    for split, split_records in records.items():
        thing_categories = [{k: c[k] for k in ("id", "name", "color")} for c in categories if c["id"] in things]
        data = instances_json(split_records, thing_categories)
        write_json(data, out / "annotations" / f"instances_{split}.json")
    finish(out)
