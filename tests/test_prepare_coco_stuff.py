"""``maskformer data prepare coco-stuff-10k`` on a small cocostuff-10k-v1.0 release (MATLAB v7.3 .mat
annotations holding 'S' transposed, image lists), checked pixel by pixel against MaskFormer's official rule
(label = S - 2 as uint8) written out here, then trained on and scored."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.helpers import prepare_dataset, train_and_score

h5py = pytest.importorskip("h5py")


def _write_raw(root, seed=0):
    rng = np.random.default_rng(seed)
    for sub in ("images", "annotations", "imageLists"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    lists = {"train": [], "test": []}
    for k in range(5):
        name = f"COCO_train2014_{k:012d}"
        lists["train" if k < 3 else "test"].append(name)
        h, w = int(rng.integers(30, 40)), int(rng.integers(40, 52))
        s = np.full((h, w), 2 + 100, np.uint16)  # a stuff class
        s[: h // 2] = 2 + 156
        s[5:15, 5:20] = 2 + 0  # person
        s[20:28, 25:40] = 2 + 2  # car
        s[0:3, 0:4] = 1  # unlabeled
        s[-1, -1] = 2 + 170
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{name}.jpg")
        with h5py.File(root / "annotations" / f"{name}.mat", "w") as f:
            f.create_dataset("S", data=s.T)  # MATLAB's column-major order, as the release stores it
    for split, names in lists.items():
        (root / "imageLists" / f"{split}.txt").write_text("\n".join(names) + "\n")
    (root / "imageLists" / "all.txt").write_text("\n".join(lists["train"] + lists["test"]) + "\n")
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_dataset(tmp_path_factory, "coco-stuff-10k", _write_raw)


def test_labels_equal_the_official_rule(prepared):
    raw, out = prepared
    for split, listed in (("train", "train"), ("val", "test")):
        names = (raw / "imageLists" / f"{listed}.txt").read_text().split()
        assert sorted(p.stem for p in (out / "labels" / split).glob("*.png")) == sorted(names)
        for name in names:
            with h5py.File(raw / "annotations" / f"{name}.mat", "r") as f:
                s = np.transpose(np.array(f["S"]).astype(np.uint8))
            expected = s - 2
            label = np.asarray(Image.open(out / "labels" / split / f"{name}.png"))
            assert label.dtype == np.uint8 and np.array_equal(label, expected)
            assert (label == 255).sum() == 12 and label.max() == 255 and 170 in label
            image = f"{name}.jpg"
            assert (out / "images" / split / image).read_bytes() == (raw / "images" / image).read_bytes()
    classes = json.loads((out / "classes.json").read_text())["classes"]
    assert len(classes) == 171 and classes[0]["name"] == "person" and classes[-1]["id"] == 182
    assert sum(c["isthing"] for c in classes) == 80


def test_prepared_coco_stuff_trains_and_scores(prepared, tmp_path, capsys):
    _, out = prepared
    assert "mIoU" in train_and_score(out, tmp_path / "run", "r50_coco_stuff", capsys)
