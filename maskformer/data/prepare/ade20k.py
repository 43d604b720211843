"""ADE20K panoptic and instance ground truth from the scene-parsing release and its instance annotations,
by the official rules (Mask2Former's ``prepare_ade20k_pan_seg.py`` and ``prepare_ade20k_ins_seg.py``).

Raw layout (``ADEChallengeData2016.zip`` and ``annotations_instance.tar``)::

    RAW/images/{training,validation}/ADE_*.jpg
    RAW/annotations/{training,validation}/ADE_*.png            0 = ignore, 1..150 the classes
    RAW/annotations_instance/{training,validation}/ADE_*.png   R = instance category 1..100, G = instance

Categories are the 150 classes' 0-based indices; the 100 instance categories map onto 100 of them (the
things) by the official table (``metadata/ade20k_instance_100.json``).

- panoptic: each stuff class present in the semantic map is one segment; then each instance (G > 0)
  is pasted over them as a segment of its mapped class. Thing-class pixels outside every instance are
  void. Areas and boxes are those of the masks before pasting, as the official script computes them.
- instance: each instance (G > 0) one mask of its mapped class, no crowds.
"""

from __future__ import annotations

import json
from importlib import resources
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

SPLITS = {"train": "training", "val": "validation"}


def instance_to_class() -> dict[int, int]:
    """Instance category (1..100) -> 0-based class index of the 150."""
    text = (resources.files("maskformer.data") / "metadata" / "ade20k_instance_100.json").read_text()
    return {int(k): v - 1 for k, v in json.loads(text)["instance_to_semantic"].items()}


def _frames(raw: Path, folder: str, need_semantic: bool) -> list[tuple[str, tuple[Path, Path, Path]]]:
    images = raw / "images" / folder
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: not found; expected ADEChallengeData2016 at {raw}")
    frames = []
    for image in sorted(images.glob("*.jpg")):
        semantic = raw / "annotations" / folder / f"{image.stem}.png"
        instance = raw / "annotations_instance" / folder / f"{image.stem}.png"
        for path in (instance, semantic) if need_semantic else (instance,):
            if not path.exists():
                raise FileNotFoundError(f"{path}: the annotation of {image} is missing")
        frames.append((image.stem, (image, semantic, instance)))
    if not frames:
        raise FileNotFoundError(f"{images}: no .jpg images")
    return frames


def _read(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """A label PNG of ``mode`` ("L" or "RGB") and ``size`` (W, H, the image's) as an int64 array."""
    try:
        with Image.open(path) as img:
            if img.mode != mode or img.size != size:
                raise ValueError(f"expected a {mode} PNG of {size[0]}x{size[1]}, got {img.mode} {img.size[0]}x"
                                 f"{img.size[1]}")  # fmt: skip
            return np.asarray(img).astype(np.int64)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    except Exception as err:
        raise ValueError(f"{path}: cannot read ({err})") from None


def _instances(path: Path, size: tuple[int, int], table: dict[int, int]) -> list[tuple[int, np.ndarray]]:
    """(class index, mask) of each instance of an instance PNG, by instance id."""
    rgb = _read(path, "RGB", size)
    categories, ids = rgb[..., 0], rgb[..., 1]
    out = []
    for instance in np.unique(ids).tolist():
        if instance == 0:
            continue
        mask = ids == instance
        found = np.unique(categories[mask]).tolist()
        if len(found) != 1 or found[0] not in table:
            raise ValueError(f"{path}: instance {instance} has categories {found}, expected one of 1..100")
        out.append((table[found[0]], mask))
    return out


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def panoptic(raw: Path, out: Path, progress: bool = True) -> None:
    """Write ``out`` in the generic panoptic layout: images/{train,val}/, panoptic/{train,val}/*.png and
    panoptic_{train,val}.json (COCO panoptic, 150 categories)."""
    categories, table = coco_categories(DATASETS["ade_panoptic"].metadata), instance_to_class()
    things = {c["id"] for c in categories if c["isthing"]}

    def one(item: tuple[Path, Path, Path], split: str) -> dict:
        image, semantic_file, instance_file = item
        size = _image_size(image)
        classes = _read(semantic_file, "L", size) - 1
        segments = np.zeros(classes.shape, np.int64)
        infos = []
        stuff = [(c, classes == c) for c in np.unique(classes).tolist() if c >= 0 and c not in things]
        for category, mask in stuff + _instances(instance_file, size, table):
            segment_id = len(infos) + 1
            segments[mask] = segment_id
            infos.append({"id": segment_id, "category_id": category, "area": int(mask.sum()),
                          "bbox": mask_box(mask), "iscrowd": 0})  # fmt: skip
        png = out / "panoptic" / split / f"{image.stem}.png"
        write_png(id_to_rgb(segments), png)
        link_or_copy(image, out / "images" / split / image.name)
        return {
            "image": {"id": image.stem, "file_name": image.name, "height": size[1], "width": size[0]},
            "annotation": {"image_id": image.stem, "file_name": png.name, "segments_info": infos},
        }

    def done(record: dict, split: str) -> bool:
        return (out / "panoptic" / split / record["annotation"]["file_name"]).exists() and (
            out / "images" / split / record["image"]["file_name"]
        ).exists()

    items = {split: _frames(raw, folder, True) for split, folder in SPLITS.items()}
    records = convert_splits("ade20k-panoptic", out, items, one, done, progress)
    for split, split_records in records.items():
        write_json(panoptic_json(split_records, categories), out / f"panoptic_{split}.json")
    finish(out)


def instance(raw: Path, out: Path, progress: bool = True) -> None:
    """Write ``out`` in the COCO instance layout: {train,val}/ images and annotations/instances_{split}.json
    (RLE masks; the 100 thing classes, with their 0-based indices of the 150 as category ids)."""
    categories, table = coco_categories(DATASETS["ade_panoptic"].metadata), instance_to_class()
    thing_categories = [{k: c[k] for k in ("id", "name", "color")} for c in categories if c["isthing"]]

    def one(item: tuple[Path, Path, Path], split: str) -> dict:
        image, _, instance_file = item
        size = _image_size(image)
        annotations = [
            {"category_id": category, "iscrowd": 0, "area": int(mask.sum()), "bbox": mask_box(mask),
             "segmentation": encode_rle(mask)}
            for category, mask in _instances(instance_file, size, table)
        ]  # fmt: skip
        link_or_copy(image, out / split / image.name)
        return {"image": {"file_name": image.name, "height": size[1], "width": size[0]}, "annotations": annotations}

    def done(record: dict, split: str) -> bool:
        return (out / split / record["image"]["file_name"]).exists()

    items = {split: _frames(raw, folder, False) for split, folder in SPLITS.items()}
    records = convert_splits("ade20k-instance", out, items, one, done, progress)
    for split, split_records in records.items():
        write_json(instances_json(split_records, thing_categories), out / "annotations" / f"instances_{split}.json")
    finish(out)
