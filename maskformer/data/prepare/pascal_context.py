"""PASCAL-Context, 59 and 459 classes, from the original release (Mottaghi et al. 2014) and PASCAL VOC 2010,
by the rules of the detectron2-based repositories that report on it (SAN, ODISE / FC-CLIP, CAT-Seg): neither
MaskFormer paper trains on it, and their repositories have no preparation for it.

Raw layout (``VOCtrainval_03-May-2010.tar`` with ``trainval.tar.gz`` extracted into ``VOC2010``)::

    RAW/JPEGImages/<id>.jpg
    RAW/ImageSets/Main/{train,val}.txt     4998 and 5105 image ids
    RAW/trainval/<id>.mat                  MATLAB v5, 'LabelMap' uint16: 1-based ids into labels.txt
    RAW/labels.txt                         "<id>: <name>", 459 lines (or RAW/trainval/labels.txt)

(RAW may also be the folder holding ``VOCdevkit/VOC2010``.) A listed image without a ``.mat`` has no context
annotation and is left out, counted in the summary line.

- ``pascal-context-459``: label = LabelMap - 1 (classes 0..458 in labels.txt order), 0 (no label) -> 65535,
  written as 16-bit PNGs (the repositories write 16-bit TIFFs of the same values);
- ``pascal-context-59``: 255 everywhere, then label k where LabelMap is the k-th of the 59 ids below
  (alphabetical, as SAN, ODISE, CAT-Seg and mmsegmentation's PascalContextDataset59 order them); 8-bit PNGs.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from ..metadata import default_colors
from .common import class_file, convert_splits, finish, semantic_done, write_json, write_semantic

# labels.txt ids of the 59 classes, in train-id order (their names' alphabetical order).
IDS_59 = (
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113, 115, 144, 158,
    159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326, 347, 349, 354, 355, 360, 366,
    368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)  # fmt: skip
NUM_FULL = 459
IGNORE_FULL = 65535


def _root(raw: Path) -> Path:
    for root in (raw, raw / "VOC2010", raw / "VOCdevkit" / "VOC2010"):
        if (root / "trainval").is_dir():
            return root
    raise FileNotFoundError(
        f"{raw}: no trainval/ folder of .mat files; expected VOC2010 with PASCAL-Context's trainval.tar.gz "
        "extracted into it"
    )


def read_labels_txt(root: Path) -> list[str]:
    """The 459 class names of ``labels.txt`` ("<id>: <name>" lines, ids 1..459) in id order."""
    for path in (root / "labels.txt", root / "trainval" / "labels.txt"):
        if path.exists():
            break
    else:
        raise FileNotFoundError(f"{root / 'labels.txt'}: not found (it comes with trainval.tar.gz)")
    names: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(.+?)\s*", line)
        if not match:
            raise ValueError(f"{path}:{number}: expected '<id>: <name>', got {line!r}")
        names[int(match.group(1))] = match.group(2)
    if sorted(names) != list(range(1, NUM_FULL + 1)):
        raise ValueError(f"{path}: expected ids 1..{NUM_FULL}, found {len(names)} ids")
    return [names[i] for i in range(1, NUM_FULL + 1)]


def read_label_map(path: Path, size: tuple[int, int]) -> np.ndarray:
    """'LabelMap' [H, W] uint16 of a release .mat, checked against its image's (W, H)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        label_map = loadmat(path)["LabelMap"]
    except (MatReadError, NotImplementedError, ValueError, KeyError, OSError) as err:
        raise ValueError(f"{path}: not a PASCAL-Context annotation (a .mat with 'LabelMap'): {err}") from None
    if label_map.shape != (size[1], size[0]):
        raise ValueError(
            f"{path}: label map {label_map.shape[1]}x{label_map.shape[0]} differs from its image {size[0]}x{size[1]}"
        )
    if label_map.max(initial=0) > NUM_FULL:
        raise ValueError(f"{path}: label ids up to {label_map.max()}, labels.txt has {NUM_FULL}")
    return label_map.astype(np.uint16)


def full_labels(label_map: np.ndarray) -> np.ndarray:
    """459-class labels: LabelMap - 1, no label (0) -> 65535."""
    return np.where(label_map == 0, IGNORE_FULL, label_map.astype(np.int64) - 1).astype(np.uint16)


def labels_59(label_map: np.ndarray) -> np.ndarray:
    """59-class labels: train id k where LabelMap is IDS_59[k], 255 elsewhere."""
    lookup = np.full(NUM_FULL + 1, 255, dtype=np.uint8)
    lookup[list(IDS_59)] = np.arange(len(IDS_59), dtype=np.uint8)
    return lookup[label_map]


def _prepare(raw: Path, out: Path, progress: bool, classes: int) -> None:
    root = _root(raw)
    names = read_labels_txt(root)
    dataset = f"pascal-context-{classes}"
    convert = labels_59 if classes == 59 else full_labels
    items, unannotated = {}, {}
    for split in ("train", "val"):
        list_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.exists():
            raise FileNotFoundError(f"{list_file}: not found; expected PASCAL VOC 2010 at {root}")
        items[split], unannotated[split] = [], 0
        for image_id in [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]:
            image, mat = root / "JPEGImages" / f"{image_id}.jpg", root / "trainval" / f"{image_id}.mat"
            if not image.exists():
                raise FileNotFoundError(f"{image}: missing (listed in {list_file})")
            if not mat.exists():
                unannotated[split] += 1
                continue
            items[split].append((image_id, (image, mat)))

    def one(paths: tuple[Path, Path], split: str) -> dict:
        image, mat = paths
        with Image.open(image) as img:
            size = img.size
        return write_semantic(out, split, image, convert(read_label_map(mat, size)))

    def done(record: dict, split: str) -> bool:
        return semantic_done(out, split, record)

    convert_splits(dataset, out, items, one, done, progress)
    for split, left_out in unannotated.items():
        if progress and left_out:
            kept = len(items[split])
            print(f"{dataset} {split}: {kept} images; {left_out} listed without a context annotation left out")
    ids = list(range(1, NUM_FULL + 1)) if classes == NUM_FULL else list(IDS_59)  # labels.txt ids
    colors = default_colors(len(ids))
    categories = [{"id": i, "name": names[i - 1], "isthing": 0, "color": list(c)} for i, c in zip(ids, colors)]
    write_json(class_file(dataset, categories, 255 if classes == 59 else IGNORE_FULL), out / "classes.json")
    finish(out)


def prepare_59(raw: Path, out: Path, progress: bool = True) -> None:
    """Write ``out`` in the generic semantic layout: images/{train,val}/, labels/{train,val}/ (59 classes, 255
    ignore) and classes.json (names from labels.txt)."""
    _prepare(raw, out, progress, 59)


def prepare_459(raw: Path, out: Path, progress: bool = True) -> None:
    """Write ``out`` in the generic semantic layout: images/{train,val}/, 16-bit labels/{train,val}/ (459
    classes, 65535 ignore) and classes.json (labels.txt's names)."""
    _prepare(raw, out, progress, NUM_FULL)
