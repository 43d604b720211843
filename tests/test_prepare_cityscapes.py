"""``maskformer data prepare cityscapes-panoptic / cityscapes-instance`` on a small raw Cityscapes in the
release's layout and encodings, checked pixel by pixel against the official rules written out here
independently (cityscapesScripts' createPanopticImgs.py; detectron2's Cityscapes instance loader), resumed
after an interruption, trained on and scored."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from maskformer.cli.main import main
from maskformer.data.io import rgb_to_id
from maskformer.data.prepare import cityscapes
from tests.helpers import train_and_score

# Cityscapes label ids: (name, hasInstances, ignoreInEval) as cityscapesScripts' labels.py lists them.
LABELS = {0: ("unlabeled", False, True), 1: ("ego vehicle", False, True), 7: ("road", False, False),
          8: ("sidewalk", False, False), 11: ("building", False, False), 17: ("pole", False, False),
          21: ("vegetation", False, False), 23: ("sky", False, False), 24: ("person", True, False),
          25: ("rider", True, False), 26: ("car", True, False), 29: ("caravan", True, True),
          33: ("bicycle", True, False)}  # fmt: skip
CITIES = {"train": ("aachen", "bremen"), "val": ("frankfurt",)}


def _frame(rng: np.random.Generator, h: int = 40, w: int = 72) -> np.ndarray:
    """An instanceIds map: stuff bands, the ego vehicle, objects with instance numbers, crowds, an
    ignored-class object and a car one pixel wide."""
    ids = np.full((h, w), 7, np.int32)
    ids[: h // 3] = 23
    ids[h // 3 : h // 2, : w // 2] = 11
    ids[h // 3 : h // 2, w // 2 :] = 21
    ids[-4:] = 1
    ids[h // 2 : h // 2 + 3, :] = 8
    ids[5:20, 3] = 17
    ids[0:2, 0:3] = 0
    top = int(rng.integers(h // 2, h // 2 + 4))
    ids[top : top + 8, 10:22] = 26001
    ids[top + 2 : top + 10, 18:30] = 26002
    ids[top : top + 9, 34:38] = 24000 + int(rng.integers(0, 3))
    ids[top : top + 6, 40:46] = 24  # a group of people: a crowd
    ids[top : top + 5, 48:52] = 25003
    ids[top : top + 5, 54:58] = 29001  # caravan: not evaluated
    ids[top : top + 6, 60] = 26005  # one pixel wide
    ids[top : top + 4, 63:69] = 33001
    ids[top + 4 : top + 6, 63:69] = 26  # a group of cars
    return ids


def _write_raw(root, seed: int = 0):
    rng = np.random.default_rng(seed)
    for split, cities in CITIES.items():
        for city in cities:
            for k in range(2):
                stem = f"{city}_{k:06d}_{19 + k:06d}"
                ids = _frame(rng)
                image_dir, gt_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
                image_dir.mkdir(parents=True, exist_ok=True)
                gt_dir.mkdir(parents=True, exist_ok=True)
                image = rng.integers(0, 255, (*ids.shape, 3), dtype=np.uint8)
                Image.fromarray(image).save(image_dir / f"{stem}_leftImg8bit.png")
                Image.fromarray(ids.astype(np.uint16)).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
                labels = np.where(ids >= 1000, ids // 1000, ids).astype(np.uint8)
                Image.fromarray(labels).save(gt_dir / f"{stem}_gtFine_labelIds.png")
                (gt_dir / f"{stem}_gtFine_polygons.json").write_text(json.dumps({"imgHeight": 40, "imgWidth": 72}))
    return root


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return _write_raw(tmp_path_factory.mktemp("cityscapes_raw"))


def _official_panoptic(ids: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """createPanopticImgs.py's loop, with label ids as categories."""
    pan = np.zeros(ids.shape, np.int64)
    infos = []
    for segment_id in np.unique(ids):
        semantic_id, is_crowd = (segment_id, 1) if segment_id < 1000 else (segment_id // 1000, 0)
        _, has_instances, ignore = LABELS[semantic_id]
        if ignore:
            continue
        if not has_instances:
            is_crowd = 0
        mask = ids == segment_id
        pan[mask] = segment_id
        hor = np.nonzero(mask.sum(axis=0))[0]
        vert = np.nonzero(mask.sum(axis=1))[0]
        bbox = [int(hor[0]), int(vert[0]), int(hor[-1] - hor[0] + 1), int(vert[-1] - vert[0] + 1)]
        infos.append({"id": int(segment_id), "category_id": int(semantic_id), "area": int(mask.sum()), "bbox": bbox,
                      "iscrowd": int(is_crowd)})  # fmt: skip
    return pan, infos


def _official_instances(ids: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """detectron2's _cityscapes_files_to_dict (from the PNG): (label id, iscrowd, mask) per instance."""
    out = []
    for instance_id in np.unique(ids[ids >= 24]):
        label_id = instance_id // 1000 if instance_id >= 1000 else instance_id
        _, has_instances, ignore = LABELS[label_id]
        if not has_instances or ignore:
            continue
        mask = ids == instance_id
        inds = np.nonzero(mask)
        if inds[1].max() <= inds[1].min() or inds[0].max() <= inds[0].min():
            continue
        out.append((int(label_id), int(instance_id < 1000), mask))
    return out


def _raw_frames(raw, split):
    for ids_file in sorted((raw / "gtFine" / split).glob("*/*_gtFine_instanceIds.png")):
        yield ids_file.name.removesuffix("_gtFine_instanceIds.png"), np.asarray(Image.open(ids_file)).astype(np.int64)


def test_panoptic_equals_the_official_rules(raw, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "prepare", "cityscapes-panoptic", "--raw", str(raw), "--out", str(out), "--quiet"]) == 0
    assert "OK: no problems found" in capsys.readouterr().out
    assert not (out / ".prepare").exists()
    for split in ("train", "val"):
        data = json.loads((out / f"panoptic_{split}.json").read_text())
        assert [c["id"] for c in data["categories"]] == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
                                                          31, 32, 33]  # fmt: skip
        assert {c["id"] for c in data["categories"] if c["isthing"]} == {24, 25, 26, 27, 28, 31, 32, 33}
        annotations = {a["image_id"]: a for a in data["annotations"]}
        frames = list(_raw_frames(raw, split))
        assert sorted(annotations) == [stem for stem, _ in frames]
        for stem, ids in frames:
            expected_png, expected_infos = _official_panoptic(ids)
            ann = annotations[stem]
            png = rgb_to_id(np.asarray(Image.open(out / "panoptic" / split / ann["file_name"]).convert("RGB")))
            assert np.array_equal(png, expected_png)
            assert ann["segments_info"] == expected_infos
            assert ann["file_name"] == f"{stem}_gtFine_panoptic.png"
            image = out / "images" / split / f"{stem}_leftImg8bit.png"
            city = stem.split("_")[0]
            assert image.read_bytes() == (raw / "leftImg8bit" / split / city / image.name).read_bytes()
        crowd = [s for a in data["annotations"] for s in a["segments_info"] if s["iscrowd"]]
        assert {s["category_id"] for s in crowd} == {24, 26}


def test_instances_equal_the_official_rules(raw, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "prepare", "cityscapes-instance", "--raw", str(raw), "--out", str(out), "--quiet"]) == 0
    assert "OK: no problems found" in capsys.readouterr().out
    for split in ("train", "val"):
        data = json.loads((out / "annotations" / f"instances_{split}.json").read_text())
        assert [c["id"] for c in data["categories"]] == [24, 25, 26, 27, 28, 31, 32, 33]
        images = {im["id"]: im for im in data["images"]}
        frames = dict(_raw_frames(raw, split))
        assert sorted(im["file_name"].removesuffix("_leftImg8bit.png") for im in images.values()) == sorted(frames)
        for image_id, image in images.items():
            ids = frames[image["file_name"].removesuffix("_leftImg8bit.png")]
            got = [a for a in data["annotations"] if a["image_id"] == image_id]
            expected = _official_instances(ids)
            # 2 cars, a person, a crowd of people, a rider, a bicycle, a crowd of cars; no caravan, no 1-px car
            assert len(got) == len(expected) == 7
            for ann, (label, crowd, mask) in zip(got, expected):
                assert (ann["category_id"], ann["iscrowd"]) == (label, crowd)
                assert np.array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), mask)
                assert ann["area"] == mask.sum()
            assert (out / split / image["file_name"]).exists()


def test_interrupted_prepare_resumes_to_the_same_files(raw, tmp_path, monkeypatch):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(["data", "prepare", "cityscapes-panoptic", "--raw", str(raw), "--out", str(whole), "--quiet"]) == 0
    read, calls = cityscapes._read_ids, []

    def interrupted(path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return read(path)

    monkeypatch.setattr(cityscapes, "_read_ids", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["data", "prepare", "cityscapes-panoptic", "--raw", str(raw), "--out", str(resumed), "--quiet"])
    assert len(list((resumed / ".prepare").rglob("*.json"))) == 2
    monkeypatch.setattr(cityscapes, "_read_ids", read)
    done_before = {p: p.stat().st_mtime_ns for p in (resumed / "panoptic").rglob("*.png")}
    assert main(["data", "prepare", "cityscapes-panoptic", "--raw", str(raw), "--out", str(resumed), "--quiet"]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in done_before.items()), "finished images are not redone"
    files = sorted(p.relative_to(whole) for p in whole.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(resumed) for p in resumed.rglob("*") if p.is_file())
    for rel in files:
        assert (whole / rel).read_bytes() == (resumed / rel).read_bytes(), rel


@pytest.mark.parametrize("name, preset, metric", [
    ("cityscapes-panoptic", "m2f_r50_cityscapes_panoptic", "PQ"),
    ("cityscapes-instance", "m2f_r50_cityscapes_instance", "AP"),
])  # fmt: skip
def test_prepared_cityscapes_trains_and_scores(raw, tmp_path, capsys, name, preset, metric):
    out, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", "prepare", name, "--raw", str(raw), "--out", str(out), "--quiet"]) == 0
    assert metric in train_and_score(out, run, preset, capsys)
