"""Dataset readers on small files made here; synthetic data determinism; targets."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from maskformer.data import datasets as D
from maskformer.data.io import id_to_rgb, read_image
from maskformer.data.metadata import builtin_metadata, load_class_file
from maskformer.data.synth import THINGS, render, write_dataset


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)


def test_builtin_metadata():
    ade, coco, city = (builtin_metadata(n) for n in ("ade20k_150", "coco_panoptic_133", "cityscapes_19"))
    assert len(ade.class_names) == 150 and ade.class_names[0] == "wall"
    assert len(coco.class_names) == 133 and len(coco.thing_classes) == 80 and coco.class_names[0] == "person"
    assert len(city.class_names) == 19 and city.class_names[city.thing_classes[0]] == "person"
    assert all(len(c) == 3 for c in coco.colors)


def test_generic_semantic_reader(tmp_path):
    label = np.zeros((6, 8), dtype=np.uint8)
    label[:, 4:] = 2
    label[0, 0] = 255
    save(tmp_path / "img" / "a.png", np.full((6, 8, 3), 100, dtype=np.uint8))
    save(tmp_path / "lbl" / "a.png", label)
    (tmp_path / "classes.txt").write_text("road\n# comment\ncar:thing\nsky:stuff\n")
    ds = D.generic_semantic(tmp_path / "img", tmp_path / "lbl", tmp_path / "classes.txt")
    sample = ds[0]
    assert sample["image"].shape == (3, 6, 8) and sample["image"].dtype == torch.uint8
    assert torch.equal(sample["label"], torch.from_numpy(label).long())
    assert ds.metadata.class_names == ["road", "car", "sky"] and ds.metadata.thing_classes == [1]
    targets = D.make_targets(sample)
    assert targets["labels"].tolist() == [0, 2]
    assert targets["masks"][1].sum() == 24 and not targets["valid"][0, 0]


def test_semantic_reader_errors_name_the_file(tmp_path):
    save(tmp_path / "img" / "a.png", np.zeros((6, 8, 3), dtype=np.uint8))
    save(tmp_path / "lbl" / "a.png", np.zeros((6, 7), dtype=np.uint8))
    (tmp_path / "classes.txt").write_text("a\nb\n")
    ds = D.generic_semantic(tmp_path / "img", tmp_path / "lbl", tmp_path / "classes.txt")
    with pytest.raises(ValueError, match=r"lbl/a\.png: label size \(6, 7\) differs from image size \(6, 8\)"):
        ds[0]
    save(tmp_path / "lbl" / "a.png", np.full((6, 8), 7, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"lbl/a\.png: label values \[7\] are neither classes 0..1 nor ignore"):
        ds[0]


def test_ade20k_layout(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    label = np.array([[0, 1, 150, 2]], dtype=np.uint8)
    save(root / "images" / "validation" / "x.jpg", np.zeros((1, 4, 3), dtype=np.uint8))
    save(root / "annotations" / "validation" / "x.png", label)
    sample = D.ade20k(root, "validation")[0]
    assert sample["label"].tolist() == [[255, 0, 149, 1]]


def test_cityscapes_label_ids_to_train_ids(tmp_path):
    root = tmp_path / "cityscapes"
    label = np.array([[7, 26, 0, 33]], dtype=np.uint8)
    save(root / "leftImg8bit" / "val" / "aachen" / "a_000000_leftImg8bit.png", np.zeros((1, 4, 3), dtype=np.uint8))
    save(root / "gtFine" / "val" / "aachen" / "a_000000_gtFine_labelIds.png", label)
    sample = D.cityscapes(root, "val")[0]
    assert sample["label"].tolist() == [[0, 13, 255, 18]]


def test_coco_panoptic_reader_respects_crowd(tmp_path):
    ids = np.zeros((4, 6), dtype=np.int64)
    ids[:, :3] = 5
    ids[:2, 3:] = 9
    ids[2:, 3:] = 700  # crowd
    save(tmp_path / "images" / "1.jpg", np.zeros((4, 6, 3), dtype=np.uint8))
    save(tmp_path / "pan" / "1.png", id_to_rgb(ids))
    data = {
        "images": [{"id": 1, "file_name": "1.jpg", "height": 4, "width": 6}],
        "annotations": [
            {
                "image_id": 1,
                "file_name": "1.png",
                "segments_info": [
                    {"id": 5, "category_id": 17, "iscrowd": 0},
                    {"id": 9, "category_id": 3, "iscrowd": 0},
                    {"id": 700, "category_id": 3, "iscrowd": 1},
                ],
            }
        ],
        "categories": [{"id": 3, "name": "car", "isthing": 1}, {"id": 17, "name": "sky", "isthing": 0}],
    }
    (tmp_path / "pan.json").write_text(json.dumps(data))
    ds = D.COCOPanopticDataset(tmp_path / "images", tmp_path / "pan.json", tmp_path / "pan")
    assert ds.metadata.class_names == ["car", "sky"] and ds.metadata.thing_classes == [0]
    sample = ds[0]
    targets = D.make_targets(sample)
    assert targets["labels"].tolist() == [1, 0]  # segment 5 (sky), segment 9 (car); the crowd one is left out
    assert targets["masks"].sum(dim=(1, 2)).tolist() == [12, 6]
    semantic = D.semantic_label(sample)
    assert semantic[3, 5] == 0 and semantic[0, 0] == 1  # crowd keeps its class in the semantic view


def test_unknown_category_names_the_json(tmp_path):
    save(tmp_path / "images" / "1.jpg", np.zeros((2, 2, 3), dtype=np.uint8))
    save(tmp_path / "pan" / "1.png", id_to_rgb(np.ones((2, 2), dtype=np.int64)))
    data = {
        "images": [{"id": 1, "file_name": "1.jpg"}],
        "categories": [{"id": 1, "name": "a", "isthing": 1}],
        "annotations": [{"image_id": 1, "file_name": "1.png", "segments_info": [{"id": 1, "category_id": 4}]}],
    }
    (tmp_path / "pan.json").write_text(json.dumps(data))
    ds = D.COCOPanopticDataset(tmp_path / "images", tmp_path / "pan.json", tmp_path / "pan")
    with pytest.raises(ValueError, match=r"pan\.json: segment 1 of 1\.png has unknown category 4"):
        ds[0]


def digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_synthetic_dataset_is_deterministic_and_consistent(tmp_path):
    a = write_dataset(tmp_path / "a", 4, 2, seed=3)
    b = write_dataset(tmp_path / "b", 4, 2, seed=3)
    c = write_dataset(tmp_path / "c", 4, 2, seed=4)
    assert digest(a) == digest(b) != digest(c)
    meta = load_class_file(a / "classes.json")
    assert meta.class_names[:3] == ["circle", "square", "triangle"] and meta.thing_classes == [0, 1, 2]
    semantic = D.generic_semantic(a / "images" / "train", a / "semantic" / "train", a / "classes.json")
    panoptic = D.COCOPanopticDataset(a / "images" / "train", a / "panoptic_train.json", a / "panoptic" / "train")
    for i in range(4):
        s, p = semantic[i], panoptic[i]
        assert torch.equal(s["image"], p["image"])
        # Wherever panoptic has a segment, its class agrees with the semantic label.
        derived = D.semantic_label(p)
        known = derived != 255
        assert torch.equal(derived[known], s["label"][known]) and known.float().mean() > 0.95


def test_synthetic_things_lie_wholly_inside_the_image():
    # A shape cut by the border no longer shows its class (a circle becomes a D), so none may touch it.
    for index in range(30):
        _, semantic, _, segments = render(np.random.default_rng([7, index]))
        border = np.concatenate([semantic[0], semantic[-1], semantic[:, 0], semantic[:, -1]])
        assert not np.isin(border, THINGS).any()
        assert any(s["category_id"] - 1 in THINGS for s in segments)


def test_read_image_modes(tmp_path):
    save(tmp_path / "gray.png", np.full((3, 4), 77, dtype=np.uint8))
    Image.fromarray(np.zeros((3, 4, 4), dtype=np.uint8)).save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "gray.png").shape == (3, 3, 4)
    assert read_image(tmp_path / "rgba.png").shape == (3, 3, 4)
    with pytest.raises(FileNotFoundError, match="nope.png: image not found"):
        read_image(tmp_path / "nope.png")
