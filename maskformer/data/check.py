"""Dataset checks: every problem a training run would hit later, found up front and named by file.

``check_reader`` inspects a semantic, COCO panoptic or COCO instance reader: missing and extra label files,
unreadable or truncated images and labels, size mismatches, label values that are neither a class nor
ignore, panoptic PNG ids absent from the JSON and JSON segments absent from the PNG, instance
segmentations that do not decode (malformed polygons, RLE of the wrong size), unknown category ids,
duplicate ids, and empty datasets.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .datasets import COCOInstanceDataset, COCOPanopticDataset, SemanticDataset
from .io import IMAGE_SUFFIXES, decode_segmentation, read_image, read_panoptic_png
from .messages import plural


@dataclass
class Problem:
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class CheckReport:
    """Problems found, how many samples were looked at, and per class (index) of the samples read: the
    images it appears in, its labelled pixels and its segments (instances; stuff segments for panoptic)."""

    checked: int = 0
    total: int = 0
    problems: list[Problem] = field(default_factory=list)
    images: Counter = field(default_factory=Counter)
    pixels: Counter = field(default_factory=Counter)
    segments: Counter = field(default_factory=Counter)

    def count(self, pixels: dict[int, int], segments: dict[int, int] | None = None) -> None:
        """One image's pixels (and segments) per class index."""
        present = {c for c, n in pixels.items() if n} | set(segments or {})
        self.images.update(present)
        self.pixels.update({c: n for c, n in pixels.items() if n})
        self.segments.update(segments or {})

    def statistics(self, class_names: list[str]) -> str:
        """A table of the classes: images, share of labelled pixels, segments; classes never seen last."""
        total = sum(self.pixels.values()) or 1
        width = max([len("class"), *(len(n) for n in class_names)])
        lines = [f"{'class':<{width}} {'images':>7} {'pixels %':>9} {'segments':>9}"]
        order = sorted(range(len(class_names)), key=lambda c: (-self.pixels[c], -self.segments[c], c))
        for c in order:
            segments = str(self.segments[c]) if self.segments else "-"
            lines.append(f"{class_names[c]:<{width}} {self.images[c]:>7} {100 * self.pixels[c] / total:>9.2f} "
                         f"{segments:>9}")  # fmt: skip
        unseen = [class_names[c] for c in order if not self.images[c]]
        if unseen:
            lines.append(f"{plural(len(unseen), 'class')} never seen in the {plural(self.checked, 'image')} read")
        return "\n".join(lines)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, file: str | Path, message: str) -> None:
        self.problems.append(Problem(str(file), message))

    def summary(self) -> str:
        kinds = Counter(p.message.split(":")[0].split(" (")[0] for p in self.problems)
        head = f"checked {self.checked} of {self.total} samples: {plural(len(self.problems), 'problem')}"
        return head + "".join(f"\n  {n} x {kind}" for kind, n in kinds.most_common())


def _sample_indices(total: int, limit: int | None, seed: int) -> list[int]:
    if limit is None or limit >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), limit))


def check_reader(reader, limit: int | None = None, seed: int = 0) -> CheckReport:
    """Check all samples of ``reader`` (or ``limit`` of them, drawn with ``seed``)."""
    if isinstance(reader, COCOPanopticDataset):
        return _check_panoptic(reader, limit, seed)
    if isinstance(reader, COCOInstanceDataset):
        return _check_instance(reader, limit, seed)
    if isinstance(reader, SemanticDataset):
        return _check_semantic(reader, limit, seed)
    raise TypeError(f"cannot check a {type(reader).__name__}")


def _check_semantic(reader: SemanticDataset, limit: int | None, seed: int) -> CheckReport:
    report = CheckReport(total=len(reader))
    if not len(reader):
        report.add(reader.image_dir, "empty dataset: no images")
        return report
    expected = {p.resolve() for p in reader.labels}
    for path in sorted(reader.label_dir.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and path.resolve() not in expected:
            report.add(path, "extra label file: no image with this name")
    for i in _sample_indices(len(reader), limit, seed):
        report.checked += 1
        image_file, label_file = reader.images[i], reader.labels[i]
        if not label_file.exists():
            report.add(image_file, f"missing label file: {label_file} not found")
            continue
        try:
            label = reader.load(i)["label"]
        except (ValueError, OSError) as err:
            file, _, message = str(err).partition(": ")
            report.add(file or image_file, message or str(err))
            continue
        counts = np.bincount(label[label != reader.ignore_value].numpy().ravel(), minlength=0)
        report.count(dict(enumerate(counts.tolist())))
    return report


def _check_panoptic(reader: COCOPanopticDataset, limit: int | None, seed: int) -> CheckReport:
    report = CheckReport(total=len(reader))
    if not len(reader):
        report.add(reader.json_file, "empty dataset: no annotations")
        return report
    json_file = reader.json_file
    for key, what in ((lambda a: a["image_id"], "image id"), (lambda a: a["file_name"], "file name")):
        counts = Counter(key(a) for a in reader.annotations)
        for value, n in counts.items():
            if n > 1:
                report.add(json_file, f"duplicate {what}: {value!r} annotated {n} times")
    for i in _sample_indices(len(reader), limit, seed):
        report.checked += 1
        ann = reader.annotations[i]
        png = reader.png_dir / ann["file_name"]
        image_file = reader.image_files[i]
        try:
            image = read_image(image_file)
            ids = read_panoptic_png(png)
        except (ValueError, OSError) as err:
            file, _, message = str(err).partition(": ")
            report.add(file or image_file, message or str(err))
            continue
        if ids.shape != image.shape[-2:]:
            report.add(png, f"size mismatch: {tuple(ids.shape)} vs image {tuple(image.shape[-2:])} of {image_file}")
        seg_ids = Counter(int(s["id"]) for s in ann["segments_info"])
        for sid, n in seg_ids.items():
            if n > 1:
                report.add(json_file, f"duplicate segment id: {sid} listed {n} times for {png.name}")
        for seg in ann["segments_info"]:
            if seg["category_id"] not in reader.category_index:
                report.add(json_file, f"unknown category id: {seg['category_id']} (segment {seg['id']} of {png.name})")
        present = {int(v) for v in np.unique(ids.numpy())} - {0}
        missing = sorted(present - set(seg_ids))
        absent = sorted(set(seg_ids) - present)
        if missing:
            report.add(png, f"PNG ids absent from the JSON: {missing[:10]}")
        if absent:
            report.add(json_file, f"JSON segments absent from the PNG: {absent[:10]} of {png.name}")
        areas = dict(zip(*(v.tolist() for v in np.unique(ids.numpy(), return_counts=True))))
        pixels: Counter = Counter()
        segments: Counter = Counter()
        for seg in ann["segments_info"]:
            if seg["category_id"] in reader.category_index:
                c = reader.category_index[seg["category_id"]]
                pixels[c] += areas.get(int(seg["id"]), 0)
                segments[c] += 1
        report.count(pixels, segments)
    return report


def _check_instance(reader: COCOInstanceDataset, limit: int | None, seed: int) -> CheckReport:
    report = CheckReport(total=len(reader))
    json_file = reader.json_file
    if not len(reader):
        report.add(json_file, "empty dataset: no images")
        return report
    for what, values in (
        ("image id", [img["id"] for img in reader.images]),
        ("file name", [img["file_name"] for img in reader.images]),
        ("annotation id", [a["id"] for anns in reader.annotations for a in anns if "id" in a]),
    ):
        for value, n in Counter(values).items():
            if n > 1:
                report.add(json_file, f"duplicate {what}: {value!r} listed {n} times")
    for i in _sample_indices(len(reader), limit, seed):
        report.checked += 1
        info, image_file = reader.images[i], reader.image_files[i]
        try:
            h, w = read_image(image_file).shape[-2:]
        except (ValueError, OSError) as err:
            file, _, message = str(err).partition(": ")
            report.add(file or image_file, message or str(err))
            continue
        if (info.get("height", h), info.get("width", w)) != (h, w):
            report.add(
                image_file, f"size mismatch: {h} x {w}, the JSON says {info.get('height')} x {info.get('width')}"
            )
            continue
        pixels: Counter = Counter()
        segments: Counter = Counter()
        for ann in reader.annotations[i]:
            where = f"annotation {ann.get('id')} of {info['file_name']}"
            known = ann.get("category_id") in reader.category_index
            if not known:
                report.add(json_file, f"unknown category id: {ann.get('category_id')} ({where})")
            try:
                mask = decode_segmentation(ann["segmentation"], h, w)
            except (KeyError, ValueError, TypeError) as err:
                report.add(json_file, f"bad segmentation: {where} ({err})")
                continue
            if known:
                c = reader.category_index[ann["category_id"]]
                pixels[c] += int(mask.sum())
                segments[c] += 1
        report.count(pixels, segments)
    return report
