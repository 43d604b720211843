"""ADE20K-Full (847 classes) from the ADE20K 2021 release, by MaskFormer's official rules
(``prepare_ade20k_full_sem_seg.py``).

Raw layout (``ADE20K_2021_17_01.zip``)::

    RAW/index_ade20k.pkl                        "folder" and "filename" of every image
    RAW/images/ADE/{training,validation}/.../ADE_*.jpg and ADE_*_seg.png

(the index's folders start with ``ADE20K_2021_17_01/``: they are read relative to RAW's parent, or to RAW).

- object class of a pixel = (R / 10) * 256 + G of ``_seg.png``; the 847 classes' object ids map to their
  train ids 0..846 (``metadata/ade20k_full_847.json``), every other pixel to 65535 (ignore);
- images whose shorter side exceeds 512 are resized to 512 on that side (the longer side rounded): the
  label by OpenCV's nearest rule (source pixel = floor(destination x source / destination size)), the
  image bilinearly;
- a file whose name's second field is ``val`` belongs to validation, all others to training.

Labels are written as 16-bit PNGs (the official script writes 16-bit TIFFs of the same values).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ...model.atomic import atomic_path
from ...model.weights.safe_pickle import load_pickle
from ..catalog import DATASETS
from .common import (
    classes_json,
    convert_splits,
    finish,
    link_or_copy,
    semantic_done,
    write_json,
    write_semantic,
)

IGNORE = 65535
MAX_SIZE = 512


def object_id_to_train_id() -> dict[int, int]:
    text = (resources.files("maskformer.data") / "metadata" / "ade20k_full_847.json").read_text()
    return {c["id"]: c["index"] for c in json.loads(text)["classes"]}


def resized_size(h: int, w: int) -> tuple[int, int] | None:
    """(H, W) after the official resize, or None when the shorter side is at most 512."""
    if w >= h > MAX_SIZE:
        return MAX_SIZE, round(w / float(h) * MAX_SIZE)
    if h >= w > MAX_SIZE:
        return round(h / float(w) * MAX_SIZE), MAX_SIZE
    return None


def nearest_resize(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """OpenCV's INTER_NEAREST: destination pixel x takes source pixel floor(x * source / destination)."""
    (h, w), (new_h, new_w) = labels.shape, size
    rows = np.minimum(np.floor(np.arange(new_h) * (1.0 / (new_h / h))).astype(np.int64), h - 1)
    cols = np.minimum(np.floor(np.arange(new_w) * (1.0 / (new_w / w))).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def _index(raw: Path) -> list[tuple[Path, str]]:
    """(image file, split) of every image the release's index lists."""
    index_file = raw / "index_ade20k.pkl"
    if not index_file.exists():
        raise FileNotFoundError(f"{index_file}: not found; expected the ADE20K_2021_17_01 release at {raw}")
    index = load_pickle(index_file)
    try:
        folders, names = list(index["folder"]), list(index["filename"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{index_file}: no 'folder' and 'filename' lists ({err})") from None
    out = []
    for folder, name in zip(folders, names):
        image = raw.parent / folder / name
        if not image.exists():
            image = raw / folder / name
        if not image.exists():
            raise FileNotFoundError(f"{raw.parent / folder / name}: listed in {index_file}, not found")
        out.append((image, "val" if name.split("_")[1] == "val" else "train"))
    return out


def prepare(raw: Path, out: Path, progress: bool = True) -> None:
    """Write ``out`` in the generic semantic layout: images/{train,val}/, labels/{train,val}/ (16-bit,
    847 classes, 65535 ignore) and classes.json."""
    table = object_id_to_train_id()
    frames = _index(raw)

    def one(image: Path, split: str) -> dict:
        seg_file = image.with_name(image.name.replace(".jpg", "_seg.png"))
        try:
            with Image.open(seg_file) as img:
                seg = np.asarray(img.convert("RGB"))
        except Exception as err:
            raise ValueError(f"{seg_file}: cannot read the class PNG ({err})") from None
        objects = (seg[..., 0] / 10).astype(np.int32) * 256 + seg[..., 1].astype(np.int32)
        with Image.open(image) as img:
            w, h = img.size
        if objects.shape != (h, w):
            raise ValueError(f"{seg_file}: {objects.shape[1]}x{objects.shape[0]} differs from {image} ({w}x{h})")
        size = resized_size(h, w)
        target = out / "images" / split / image.name
        if size is None:
            link_or_copy(image, target)
        else:
            objects = nearest_resize(objects, size)
            pixels = torch.from_numpy(np.array(Image.open(image).convert("RGB"))).permute(2, 0, 1)[None]
            small = F.interpolate(pixels.float(), size=size, mode="bilinear", align_corners=False)
            array = small[0].round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
            with atomic_path(target) as tmp:
                Image.fromarray(array).save(tmp, format="JPEG", quality=95)
        labels = np.full(objects.shape, IGNORE, np.uint16)
        for object_id in np.unique(objects).tolist():
            if object_id in table:
                labels[objects == object_id] = table[object_id]
        return write_semantic(out, split, image, labels, link_image=False)

    def done(record: dict, split: str) -> bool:
        return semantic_done(out, split, record)

    items = {split: [(image.stem, image) for image, s in frames if s == split] for split in ("train", "val")}
    convert_splits("ade20k-full", out, items, one, done, progress)
    write_json(classes_json(DATASETS["ade_full"].metadata, IGNORE), out / "classes.json")
    finish(out)
