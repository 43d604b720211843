"""Mapillary Vistas v1.2 (65 classes) from its release, as MaskFormer and Mask2Former read it.

Raw layout (``mapillary-vistas-dataset_public_v1.2.zip``)::

    RAW/{training,validation}/images/*.jpg
    RAW/{training,validation}/labels/*.png                 palette PNGs: 0..64 the classes, 65 unlabeled
    RAW/{training,validation}/panoptic/*.png               COCO panoptic PNGs
    RAW/{training,validation}/panoptic/panoptic_2018.json  categories 1..65

The official code reads these files as they are (ignore label 65). Here the label PNGs are rewritten with
255 for 65 (this package's ignore value; every other value kept), and the panoptic PNGs and annotations
are kept as released, with the built-in categories (names, colours, thing/stuff of the release's config).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..catalog import DATASETS
from ..io import coco_panoptic_json, write_png
from .common import classes_json, coco_categories, convert_splits, finish, link_or_copy, write_json

SPLITS = {"train": "training", "val": "validation"}
UNLABELED = 65


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found; expected the Mapillary Vistas v1.2 release") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path}: not a COCO panoptic JSON (no 'annotations' list)")
    return data


def prepare(raw: Path, out: Path, progress: bool = True) -> None:
    """Write ``out`` in both generic layouts: images/{train,val}/, labels/{train,val}/ + classes.json
    (semantic, 255 = ignore) and panoptic/{train,val}/ + panoptic_{train,val}.json."""
    categories = coco_categories(DATASETS["vistas_panoptic"].metadata)
    items, listed = {}, {}
    for split, folder in SPLITS.items():
        panoptic = _read_json(raw / folder / "panoptic" / "panoptic_2018.json")
        annotations = {Path(a["file_name"]).stem: a for a in panoptic["annotations"]}
        images = {Path(im["file_name"]).stem: im for im in panoptic.get("images", [])}
        listed[split] = (annotations, images)
        items[split] = []
        for stem in sorted(annotations):
            paths = (raw / folder / "images" / f"{stem}.jpg", raw / folder / "labels" / f"{stem}.png",
                     raw / folder / "panoptic" / annotations[stem]["file_name"])  # fmt: skip
            for path in paths:
                if not path.exists():
                    raise FileNotFoundError(f"{path}: missing (listed in {folder}/panoptic/panoptic_2018.json)")
            items[split].append((stem, paths))

    def one(paths: tuple[Path, Path, Path], split: str) -> dict:
        image, label, png = paths
        try:
            with Image.open(label) as img:
                values = np.asarray(img)
        except Exception as err:
            raise ValueError(f"{label}: cannot read the label PNG ({err})") from None
        converted = np.where(values == UNLABELED, 255, values).astype(np.uint8)
        write_png(converted, out / "labels" / split / label.name)
        link_or_copy(image, out / "images" / split / image.name)
        link_or_copy(png, out / "panoptic" / split / png.name)
        return {"image": image.name, "label": label.name, "panoptic": png.name}

    def done(record: dict, split: str) -> bool:
        outputs = (("images", "image"), ("labels", "label"), ("panoptic", "panoptic"))
        return all((out / sub / split / record[key]).exists() for sub, key in outputs)

    convert_splits("mapillary-vistas", out, items, one, done, progress)
    for split, (annotations, images) in listed.items():
        stems = sorted(annotations)
        image_records = [images.get(stem, {"id": annotations[stem]["image_id"], "file_name": f"{stem}.jpg"})
                         for stem in stems]  # fmt: skip
        data = coco_panoptic_json(image_records, [annotations[stem] for stem in stems], categories)
        write_json(data, out / f"panoptic_{split}.json")
    write_json(classes_json(DATASETS["vistas"].metadata), out / "classes.json")
    finish(out)
