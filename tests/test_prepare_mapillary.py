"""``maskformer data prepare mapillary-vistas`` on a small release in the v1.2 layout and encodings
(palette label PNGs, COCO panoptic PNGs and panoptic_2018.json): labels as released with 65 (unlabeled) as
255, panoptic files as released, built-in categories; then trained on and scored in both layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from maskformer.cli.main import main
from maskformer.data.io import id_to_rgb
from maskformer.data.metadata import builtin_metadata
from tests.helpers import prepare_dataset, train_and_score


def _write_raw(root, seed=0):
    rng = np.random.default_rng(seed)
    meta = builtin_metadata("mapillary_vistas_65")
    palette = [v for color in meta.colors for v in color] + [0, 0, 0]
    rows = zip(meta.category_ids, meta.class_names, meta.colors)
    categories = [{"id": cid, "name": name, "supercategory": "x", "isthing": int(i in meta.thing_classes),
                   "color": list(color)} for i, (cid, name, color) in enumerate(rows)]  # fmt: skip
    for folder in ("training", "validation"):
        for sub in ("images", "labels", "panoptic"):
            (root / folder / sub).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for k in range(2):
            stem = f"{folder[:3]}{k:04d}xyz"
            h, w = 36, 48
            labels = np.full((h, w), 27, np.uint8)  # sky (id 28)
            labels[h // 2 :] = 13  # road (id 14)
            labels[-3:] = 64  # ego vehicle (id 65)
            labels[:2, :2] = 65  # unlabeled
            ids = np.zeros((h, w), np.int64)
            segments = []
            for cls, box in ((27, (0, 0, h // 2, w)), (13, (h // 2, 0, h // 2 - 3, w)), (64, (h - 3, 0, 3, w))):
                y, x, bh, bw = box
                segments.append((cls, (slice(y, y + bh), slice(x, x + bw))))
            top = int(rng.integers(14, 20))
            for cls in (55, 55, 19):  # two cars (id 56) and a person (id 20)
                x = int(rng.integers(2, 40))
                labels[top : top + 6, x : x + 6] = cls
                segments.append((cls, (slice(top, top + 6), slice(x, x + 6))))
            infos = []
            for n, (_, where) in enumerate(segments, start=1):
                ids[where] = n
            for n, (cls, _) in enumerate(segments, start=1):
                mask = ids == n
                if mask.any():
                    infos.append({"id": n, "category_id": cls + 1, "area": int(mask.sum()), "bbox": [0, 0, 1, 1],
                                  "iscrowd": 0})  # fmt: skip
            ids[:2, :2] = 0
            label = Image.fromarray(labels, mode="P")
            label.putpalette(palette)
            label.save(root / folder / "labels" / f"{stem}.png")
            Image.fromarray(id_to_rgb(ids)).save(root / folder / "panoptic" / f"{stem}.png")
            image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / folder / "images" / f"{stem}.jpg")
            images.append({"id": stem, "file_name": f"{stem}.jpg", "width": w, "height": h})
            annotations.append({"image_id": stem, "file_name": f"{stem}.png", "segments_info": infos})
        data = {"images": images, "annotations": annotations, "categories": categories}
        (root / folder / "panoptic" / "panoptic_2018.json").write_text(json.dumps(data))
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_dataset(tmp_path_factory, "mapillary-vistas", _write_raw)


def test_labels_and_panoptic_as_released(prepared, capsys):
    raw, out = prepared
    for split, folder in (("train", "training"), ("val", "validation")):
        released = json.loads((raw / folder / "panoptic" / "panoptic_2018.json").read_text())
        written = json.loads((out / f"panoptic_{split}.json").read_text())
        assert written["annotations"] == released["annotations"]
        assert [(c["id"], c["name"], c["isthing"]) for c in written["categories"]] == [
            (c["id"], c["name"], c["isthing"]) for c in released["categories"]
        ]
        for ann in released["annotations"]:
            stem = ann["file_name"].removesuffix(".png")
            raw_label = np.asarray(Image.open(raw / folder / "labels" / f"{stem}.png"))
            label = np.asarray(Image.open(out / "labels" / split / f"{stem}.png"))
            assert np.array_equal(label, np.where(raw_label == 65, 255, raw_label))
            assert (label == 255).sum() == 4 and (label == 64).any()
            png = (out / "panoptic" / split / ann["file_name"]).read_bytes()
            assert png == (raw / folder / "panoptic" / ann["file_name"]).read_bytes()
    classes = json.loads((out / "classes.json").read_text())
    assert len(classes["classes"]) == 65 and classes["ignore_value"] == 255
    assert sum(c["isthing"] for c in classes["classes"]) == 37


def test_a_label_value_beyond_the_classes_is_named(prepared, tmp_path, capsys):
    _, out = prepared
    bad = out / "labels" / "val" / "val0001xyz.png"
    good = bad.read_bytes()
    values = np.asarray(Image.open(bad)).copy()
    values[0, 5] = 70
    Image.fromarray(values).save(bad)
    try:
        assert main(["data", "check", "--data", str(out), "--format", "semantic"]) == 1
        assert f"{bad}: label values [70] are neither classes 0..64 nor ignore (255)" in capsys.readouterr().out
    finally:
        bad.write_bytes(good)


@pytest.mark.parametrize("preset, metric", [("r50_vistas", "mIoU"), ("m2f_r50_vistas_panoptic", "PQ")])
def test_prepared_vistas_trains_and_scores(prepared, tmp_path, capsys, preset, metric):
    _, out = prepared
    assert metric in train_and_score(out, tmp_path / "run", preset, capsys)
