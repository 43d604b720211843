"""``maskformer data prepare ade20k-panoptic / ade20k-instance`` on a small ADEChallengeData2016 with
``annotations_instance`` in the release's layout and encodings, checked pixel by pixel against the official
rules (Mask2Former's prepare_ade20k_pan_seg.py / prepare_ade20k_ins_seg.py) written out here, then trained
on and scored."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from maskformer.cli.main import main
from maskformer.data.io import rgb_to_id
from tests.helpers import train_and_score

# A few rows of the official instance-category table (instance id -> SceneParse150 id, both 1-based).
TABLE = {1: 8, 4: 13, 8: 20, 11: 24, 13: 28}
STUFF = (1, 2, 3, 4, 7)  # wall, building, sky, floor, road (1-based)


def _scene(rng: np.random.Generator, h: int = 40, w: int = 56):
    semantic = np.zeros((h, w), np.uint8)
    semantic[: h // 3] = 3
    semantic[h // 3 : h // 2] = 2
    semantic[h // 2 :] = 4
    semantic[-5:, : w // 2] = 7
    semantic[0:3, 0:4] = 0  # unlabelled
    instance = np.zeros((h, w, 3), np.uint8)
    top = int(rng.integers(12, 18))
    for k, (inst_cat, box) in enumerate([(1, (top, 4, 10, 14)), (13, (top + 4, 10, 8, 8)), (8, (2, 30, 10, 8)),
                                         (11, (25, 40, 12, 10)), (11, (27, 46, 10, 8))], start=1):  # fmt: skip
        y, x, bh, bw = box
        instance[y : y + bh, x : x + bw] = (inst_cat, k, 0)
        semantic[y : y + bh, x : x + bw] = TABLE[inst_cat]
    semantic[5:9, 50:54] = 13  # a person's pixels without an instance: void in panoptic
    return semantic, instance


def _write_raw(root, seed=0):
    rng = np.random.default_rng(seed)
    for folder in ("training", "validation"):
        for sub in ("images", "annotations", "annotations_instance"):
            (root / sub / folder).mkdir(parents=True, exist_ok=True)
        for k in range(2):
            stem = f"ADE_{folder[:5]}_{k:08d}"
            semantic, instance = _scene(rng)
            image = rng.integers(0, 255, (*semantic.shape, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "images" / folder / f"{stem}.jpg", quality=95)
            Image.fromarray(semantic).save(root / "annotations" / folder / f"{stem}.png")
            Image.fromarray(instance).save(root / "annotations_instance" / folder / f"{stem}.png")
    return root


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return _write_raw(tmp_path_factory.mktemp("ADEChallengeData2016"))


def _official_panoptic(semantic: np.ndarray, instance: np.ndarray, things: set[int]):
    """The official loop: stuff first (semantic - 1, 255 skipped, things skipped), then instances pasted
    over; areas and boxes of each mask as it was when made. -> (segment map, [(category, area, bbox)])."""
    categories = semantic.astype(np.uint8) - np.uint8(1)
    pan = np.zeros(semantic.shape, np.int64)
    segments = []
    for cat in np.unique(categories):
        if cat == 255 or cat in things:
            continue
        mask = categories == cat
        segments.append((int(cat), mask))
    ids = instance[..., 1]
    for thing in np.unique(ids):
        if thing == 0:
            continue
        mask = ids == thing
        (inst_cat,) = np.unique(instance[..., 0][mask])
        segments.append((TABLE[int(inst_cat)] - 1, mask))
    infos = []
    for k, (cat, mask) in enumerate(segments, start=1):
        pan[mask] = k
        hor, vert = np.nonzero(mask.sum(0))[0], np.nonzero(mask.sum(1))[0]
        bbox = [int(hor[0]), int(vert[0]), int(hor[-1] - hor[0] + 1), int(vert[-1] - vert[0] + 1)]
        infos.append((cat, int(mask.sum()), bbox))
    return pan, infos


def _same_partition(got: np.ndarray, expected: np.ndarray) -> dict[int, int]:
    """The id renaming that turns ``got`` into ``expected`` (asserting there is one)."""
    pairs = set(zip(got.flatten().tolist(), expected.flatten().tolist()))
    renaming = dict(pairs)
    assert len(renaming) == len(pairs) == len({v for _, v in pairs}), "the segments differ"
    return renaming


def test_panoptic_equals_the_official_rules(raw, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "prepare", "ade20k-panoptic", "--raw", str(raw), "--out", str(out), "--quiet"]) == 0
    assert "OK: no problems found" in capsys.readouterr().out
    for split, folder in (("train", "training"), ("val", "validation")):
        data = json.loads((out / f"panoptic_{split}.json").read_text())
        assert len(data["categories"]) == 150 and sum(c["isthing"] for c in data["categories"]) == 100
        things = {c["id"] for c in data["categories"] if c["isthing"]}
        assert {v - 1 for v in TABLE.values()} <= things and not {s - 1 for s in STUFF} & things
        for ann in data["annotations"]:
            stem = ann["image_id"]
            semantic = np.asarray(Image.open(raw / "annotations" / folder / f"{stem}.png"))
            instance = np.asarray(Image.open(raw / "annotations_instance" / folder / f"{stem}.png"))
            expected, infos = _official_panoptic(semantic, instance, things)
            got = rgb_to_id(np.asarray(Image.open(out / "panoptic" / split / ann["file_name"]).convert("RGB")))
            renaming = _same_partition(got, expected)
            by_expected = {renaming[s["id"]]: s for s in ann["segments_info"]}
            assert sorted(by_expected) == list(range(1, len(infos) + 1))
            for k, (cat, area, bbox) in enumerate(infos, start=1):
                s = by_expected[k]
                assert (s["category_id"], s["area"], s["bbox"], s["iscrowd"]) == (cat, area, bbox, 0)
            assert (expected == 0).sum() > 12, "unlabelled and instance-less person pixels are void"


def test_instances_equal_the_official_rules(raw, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "prepare", "ade20k-instance", "--raw", str(raw), "--out", str(out), "--quiet"]) == 0
    assert "OK: no problems found" in capsys.readouterr().out
    for split, folder in (("train", "training"), ("val", "validation")):
        data = json.loads((out / "annotations" / f"instances_{split}.json").read_text())
        assert len(data["categories"]) == 100
        for image in data["images"]:
            stem = image["file_name"].removesuffix(".jpg")
            instance = np.asarray(Image.open(raw / "annotations_instance" / folder / f"{stem}.png"))
            got = [a for a in data["annotations"] if a["image_id"] == image["id"]]
            ids = instance[..., 1]
            expected = [(TABLE[int(np.unique(instance[..., 0][ids == t])[0])] - 1, ids == t)
                        for t in np.unique(ids) if t != 0]  # fmt: skip
            assert len(got) == len(expected) == 5
            for ann, (cat, mask) in zip(got, expected):
                assert (ann["category_id"], ann["iscrowd"], ann["area"]) == (cat, 0, mask.sum())
                assert np.array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), mask)
            source = raw / "images" / folder / image["file_name"]
            assert (out / split / image["file_name"]).read_bytes() == source.read_bytes()


def test_a_bad_instance_png_is_named(raw, tmp_path):
    broken = tmp_path / "raw"
    _write_raw(broken)
    png = broken / "annotations_instance" / "validation" / "ADE_valid_00000001.png"
    instance = np.asarray(Image.open(png)).copy()
    instance[0, 0] = (0, 3, 0)  # instance 3 now also holds category 0
    Image.fromarray(instance).save(png)
    with pytest.raises(ValueError, match=rf"{png}: instance 3 has categories \[0, 8\]"):
        main(["--debug", "data", "prepare", "ade20k-instance", "--raw", str(broken), "--out", str(tmp_path / "o"),
              "--quiet"])  # fmt: skip


@pytest.mark.parametrize("name, preset, metric", [
    ("ade20k-panoptic", "m2f_r50_ade_panoptic", "PQ"),
    ("ade20k-panoptic", "r50_ade_panoptic", "PQ"),
    ("ade20k-instance", "m2f_r50_ade_instance", "AP"),
])  # fmt: skip
def test_prepared_ade20k_trains_and_scores(raw, tmp_path, capsys, name, preset, metric):
    out, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", "prepare", name, "--raw", str(raw), "--out", str(out), "--quiet"]) == 0
    assert metric in train_and_score(out, run, preset, capsys)
