"""COCO-Stuff-10K (v1.0, 171 classes) from its release, by MaskFormer's official rule
(``prepare_coco_stuff_10k_v1.0_sem_seg.py``).

Raw layout (``cocostuff-10k-v1.0.zip``)::

    RAW/images/COCO_train2014_*.jpg
    RAW/annotations/COCO_train2014_*.mat     MATLAB v7.3 (HDF5): 'S', the label map, stored transposed
    RAW/imageLists/{train,test}.txt          9000 and 1000 image names

Label = (S - 2) as uint8: S = 1 (unlabeled) becomes 255, S = 2..172 the 171 classes 0..170. The release's
test list, on which the paper reports, is written as the ``val`` split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..catalog import DATASETS
from .common import classes_json, convert_splits, finish, semantic_done, write_json, write_semantic

SPLITS = {"train": "train", "val": "test"}


def _read_s(path: Path, size: tuple[int, int]) -> np.ndarray:
    """'S' of a v7.3 .mat file, transposed back to [H, W] and checked against the image's (W, H)."""
    try:
        import h5py
    except ImportError as err:
        raise RuntimeError("COCO-Stuff-10K's .mat files need h5py: pip install 'maskformer[datasets]'") from err
    try:
        with h5py.File(path, "r") as f:
            s = np.asarray(f["S"]).T
    except (OSError, KeyError) as err:
        raise ValueError(f"{path}: not a COCO-Stuff v1.0 annotation (an HDF5 .mat with 'S'): {err}") from None
    if s.shape != (size[1], size[0]):
        raise ValueError(f"{path}: label map {s.shape[1]}x{s.shape[0]} differs from its image {size[0]}x{size[1]}")
    return s


def prepare(raw: Path, out: Path, progress: bool = True) -> None:
    """Write ``out`` in the generic semantic layout: images/{train,val}/, labels/{train,val}/ (171 classes,
    255 ignore) and classes.json."""
    items: dict[str, list] = {}
    for split, listed in SPLITS.items():
        list_file = raw / "imageLists" / f"{listed}.txt"
        if not list_file.exists():
            raise FileNotFoundError(f"{list_file}: not found; expected the cocostuff-10k-v1.0 release at {raw}")
        names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        items[split] = []
        for name in names:
            image, mat = raw / "images" / f"{name}.jpg", raw / "annotations" / f"{name}.mat"
            for path in (image, mat):
                if not path.exists():
                    raise FileNotFoundError(f"{path}: missing (listed in {list_file})")
            items[split].append((name, (image, mat)))

    def one(paths: tuple[Path, Path], split: str) -> dict:
        image, mat = paths
        with Image.open(image) as img:
            size = img.size
        labels = (_read_s(mat, size).astype(np.uint8) - np.uint8(2)).astype(np.uint8)
        return write_semantic(out, split, image, labels)

    def done(record: dict, split: str) -> bool:
        return semantic_done(out, split, record)

    convert_splits("coco-stuff-10k", out, items, one, done, progress)
    write_json(classes_json(DATASETS["coco_stuff"].metadata), out / "classes.json")
    finish(out)
