"""Writing predictions to files: semantic label PNGs, COCO panoptic PNGs + JSON, COCO instance results
with RLE masks, and overlay PNGs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor
from typing_extensions import TypedDict  # pydantic reads it on Python < 3.12 (the API answers these)

from ..data.io import coco_panoptic_json, encode_png, encode_rle, id_to_rgb, mask_box, write_json, write_png
from ..data.messages import plural
from ..model.atomic import atomic_path
from ..model.config import MetadataConfig
from .results import InstanceResult, PanopticResult, Result, SemanticResult

OUTPUT_KINDS = ("label", "panoptic", "instances", "overlay")


class SegmentRecord(TypedDict):
    """A segment as JSON (:func:`segment_records`; the HTTP API answers these)."""

    id: int
    class_id: int
    category_id: int
    name: str
    isthing: bool
    score: float
    area: int
    bbox: list[float]
    segmentation: dict


def category_id(meta: MetadataConfig, class_id: int) -> int:
    """The dataset's own category id of a contiguous class index."""
    return meta.category_ids[class_id] if len(meta.category_ids) > class_id else class_id


def categories(meta: MetadataConfig) -> list[dict]:
    things = set(meta.thing_classes or [])
    return [
        {"id": category_id(meta, i), "name": name, "isthing": int(meta.thing_classes is None or i in things)}
        for i, name in enumerate(meta.class_names)
    ]


def semantic_png(result: SemanticResult) -> bytes:
    """Label PNG of class indices: 8-bit up to 256 classes, else 16-bit."""
    labels = result.label_map.cpu().numpy()
    dtype = np.uint8 if len(result.metadata.class_names) <= 256 else np.uint16
    return encode_png(labels.astype(dtype))


def panoptic_png(result: PanopticResult) -> bytes:
    """COCO panoptic PNG (segment id = R + 256 G + 256^2 B)."""
    return encode_png(id_to_rgb(result.segmentation.cpu().numpy()))


def write_semantic(result: SemanticResult, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(semantic_png(result))


def panoptic_record(result: PanopticResult, image_id: str, file_name: str) -> dict:
    """A COCO panoptic annotation for ``result`` (segment ids as in its PNG)."""
    seg = result.segmentation.cpu().numpy()
    infos = []
    for s in result.segments_info:
        infos.append(
            {
                "id": s.id,
                "category_id": category_id(result.metadata, s.class_id),
                "iscrowd": 0,
                "isthing": int(s.isthing),
                "score": round(float(s.score), 5),
                "area": int(s.area),
                "bbox": mask_box(seg == s.id),
            }
        )
    return {"image_id": image_id, "file_name": file_name, "segments_info": infos}


def write_panoptic(result: PanopticResult, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(panoptic_png(result))


def instance_records(result: InstanceResult, image_id: int | str) -> list[dict]:
    """COCO detection results (RLE masks) for ``result``."""
    records = []
    masks = result.masks.cpu().numpy()
    for inst, mask in zip(result.instances, masks):
        rle = encode_rle(mask)
        records.append(
            {
                "image_id": image_id,
                "category_id": category_id(result.metadata, inst.class_id),
                "segmentation": rle,
                "score": round(float(inst.score), 5),
                "bbox": [float(v) for v in mask_box(mask)],
                "area": int(inst.area),
            }
        )
    return records


def segment_records(result: Result) -> list[SegmentRecord]:
    """Every segment of ``result`` as JSON-ready dicts with the same keys whatever the task: ``id`` (its
    value in the label / panoptic PNG; instances numbered by falling score), ``class_id`` (contiguous),
    ``category_id`` (the dataset's), ``name``, ``isthing``, ``score``, ``area``, ``bbox`` (COCO
    [x, y, w, h]) and ``segmentation`` (COCO compressed RLE). Scores, boxes and RLE are those the files
    of :class:`PredictionWriter` hold."""
    meta = result.metadata
    if isinstance(result, InstanceResult):
        records = instance_records(result, 0)
        masks = None
        segments = result.instances
    elif isinstance(result, PanopticResult):
        records = panoptic_record(result, "", "")["segments_info"]
        masks = result.segmentation.cpu().numpy()
        segments = result.segments_info
    else:
        masks = result.label_map.cpu().numpy() + 1
        segments = result.segments
        records = [{"score": 1.0, "area": s.area, "bbox": mask_box(masks == s.id)} for s in segments]
    out = []
    for segment, record in zip(segments, records):
        rle = record["segmentation"] if masks is None else encode_rle(masks == segment.id)
        out.append(
            {
                "id": segment.id,
                "class_id": segment.class_id,
                "category_id": category_id(meta, segment.class_id),
                "name": segment.name,
                "isthing": bool(segment.isthing),
                "score": record["score"],
                "area": record["area"],
                "bbox": record["bbox"],
                "segmentation": rle,
            }
        )
    return out


# What each task can write.
TASK_OUTPUTS = {
    "semantic": ("label", "overlay"),
    "panoptic": ("panoptic", "overlay"),
    "instance": ("instances", "overlay"),
}


def coco_image_ids(json_file: str | Path) -> dict[str, int]:
    """File stem -> image id from a COCO-format JSON's ``images`` list (panoptic or instances ground truth)."""
    path = Path(json_file)
    try:
        images = json.loads(path.read_text())["images"]
        return {Path(im["file_name"]).stem: im["id"] for im in images}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: ground-truth JSON not found") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a COCO JSON with an images list ({err})") from None


class PredictionWriter:
    """Writes results under ``out``: ``labels/NAME.png``, ``panoptic/NAME.png`` + ``panoptic.json``,
    ``instances.json`` (+ ``images.json``, the COCO image list it refers to) and ``overlays/NAME.png``,
    as ``kinds`` selects (:data:`TASK_OUTPUTS` lists what fits each task). JSON files are written by
    :meth:`close`.

    ``image_ids`` (file stem -> id, e.g. :func:`coco_image_ids` of the ground truth) gives the images the
    dataset's ids, so that COCO tools score the files as written; without it panoptic records are named by
    the file stem and instances numbered from 1.
    """

    def __init__(
        self,
        out: str | Path,
        task: str,
        kinds: Sequence[str] | None = None,
        image_ids: dict[str, int] | None = None,
    ):
        if task not in TASK_OUTPUTS:
            raise ValueError(f"task {task!r}: expected one of {', '.join(TASK_OUTPUTS)}")
        fits = TASK_OUTPUTS[task]
        kinds = list(fits if kinds is None else kinds)
        unknown = sorted(set(kinds) - set(OUTPUT_KINDS))
        if unknown:
            raise ValueError(f"unknown outputs {unknown}; expected some of {', '.join(OUTPUT_KINDS)}")
        unfit = sorted(set(kinds) - set(fits))
        if unfit:
            raise ValueError(f"outputs {unfit} do not fit task {task!r}; it writes {', '.join(fits)}")
        self.out = Path(out)
        self.task = task
        self.kinds = set(kinds)
        self.image_ids = image_ids
        self.written: dict[tuple[str, str], int] = {}
        self.names: set[str] = set()
        self.images: list[dict] = []
        self.panoptic: list[dict] = []
        self.instances: list[dict] = []
        self.metadata: MetadataConfig | None = None

    def _unique(self, name: str) -> str:
        unique, k = name, 1
        while unique in self.names:
            unique, k = f"{name}_{k}", k + 1
        self.names.add(unique)
        return unique

    def add(self, image: Tensor, result: Result) -> str:
        """Write the files of one image; returns the (de-duplicated) name used."""
        name = self._unique(result.name)
        self.metadata = result.metadata
        if self.image_ids is not None:
            if result.name not in self.image_ids:
                raise KeyError(f"{result.path or result.name}: not among the ground truth's images")
            image_id = self.image_ids[result.name]
        else:
            image_id = len(self.images) + 1
        h, w = result.image_size
        self.images.append({"id": image_id, "file_name": str(result.path or name), "height": h, "width": w})
        if isinstance(result, SemanticResult) and "label" in self.kinds:
            write_semantic(result, self.out / "labels" / f"{name}.png")
            self._count("label PNG", "in labels/")
        if isinstance(result, PanopticResult) and "panoptic" in self.kinds:
            write_panoptic(result, self.out / "panoptic" / f"{name}.png")
            record_id = image_id if self.image_ids is not None else name
            self.panoptic.append(panoptic_record(result, record_id, f"{name}.png"))
            self._count("panoptic PNG", "in panoptic/ with panoptic.json")
        if isinstance(result, InstanceResult) and "instances" in self.kinds:
            self.instances.extend(instance_records(result, image_id))
            self._count("image", "with instances in instances.json and images.json")
        if "overlay" in self.kinds:
            write_png(np.asarray(result.draw(image)), self.out / "overlays" / f"{name}.png")
            self._count("overlay", "in overlays/")
        return name

    def _count(self, noun: str, where: str) -> None:
        self.written[(noun, where)] = self.written.get((noun, where), 0) + 1

    def summary(self) -> str:
        """What was written, e.g. "3 panoptic PNGs in panoptic/ with panoptic.json, 1 overlay in overlays/"."""
        parts = [f"{plural(n, noun)} {where}" for (noun, where), n in self.written.items()]
        return ", ".join(parts) or "nothing"

    def close(self) -> None:
        """Write the JSON files."""
        meta = self.metadata
        if meta is None:
            return
        if self.panoptic:
            images = [dict(im, id=rec["image_id"]) for im, rec in zip(self.images, self.panoptic)]
            write_json(coco_panoptic_json(images, self.panoptic, categories(meta)), self.out / "panoptic.json")
        if "instances" in self.kinds:
            write_json(self.instances, self.out / "instances.json")
            write_json({"images": self.images, "categories": categories(meta)}, self.out / "images.json")
