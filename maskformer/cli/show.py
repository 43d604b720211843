"""``maskformer data show``: a dataset's images with their ground truth drawn as the predictions are (class
colours, outlines, names, a legend), in one grid, to see what a dataset holds before training on it."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from ..model.config import MetadataConfig
from ..predict.results import Segment, class_name, is_thing
from ..visualize import draw_segmentation, image_grid


def ground_truth_regions(sample: dict, meta: MetadataConfig) -> tuple[np.ndarray, np.ndarray, dict[int, Segment]]:
    """A reader's sample as what the overlays draw: class index per pixel (-1: none or ignored), region id
    per pixel, and each region's record (crowd regions named as such)."""
    label = sample["label"].numpy().astype(np.int64)
    if sample["kind"] == "semantic":
        classes = np.where(label < len(meta.class_names), label, -1)
        ids = classes + 1
        present = [int(c) for c in np.unique(classes) if c >= 0]
        segments = {c + 1: Segment(c + 1, c, class_name(meta, c), 1.0, int((classes == c).sum()), is_thing(meta, c))
                    for c in present}  # fmt: skip
        return classes, ids, segments
    classes = np.full(label.shape, -1, dtype=np.int64)
    ids = np.zeros(label.shape, dtype=np.int64)
    if sample["kind"] == "panoptic":
        regions = [(sid, s.category, s.iscrowd, label == sid) for sid, s in sample["segments"].items()]
    else:  # instances, painted in order
        regions = [(k + 1, s.category, s.iscrowd, m.numpy().astype(bool))
                   for k, (s, m) in enumerate(zip(sample["instances"], sample["masks"]))]  # fmt: skip
    segments = {}
    for sid, c, crowd, mask in regions:
        classes[mask], ids[mask] = c, sid
        name = class_name(meta, c) + (" (crowd)" if crowd else "")
        segments[sid] = Segment(sid, c, name, 1.0, int(mask.sum()), is_thing(meta, c))
    return classes, ids, segments


def show_dataset(reader, out: str | Path, count: int = 8, columns: int = 4, seed: int = 0) -> int:
    """Draw ``count`` images of ``reader`` (chosen with ``seed``) with their labels into the PNG ``out``;
    returns how many were drawn."""
    if count < 1 or columns < 1:
        raise ValueError(f"--count and --columns must be at least 1, got {count} and {columns}")
    if not len(reader):
        raise ValueError(f"{out}: the split has no images to draw")
    indices = sorted(random.Random(seed).sample(range(len(reader)), min(count, len(reader))))
    drawn = []
    for i in indices:
        sample = reader.load(i)
        classes, ids, segments = ground_truth_regions(sample, reader.metadata)
        drawn.append(draw_segmentation(sample["image"], classes, ids, segments, reader.metadata))
    image_grid(drawn, columns, out)
    return len(drawn)
