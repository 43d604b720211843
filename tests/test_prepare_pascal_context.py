"""``maskformer data prepare pascal-context-59`` / ``pascal-context-459`` on a small VOC 2010 + PASCAL-Context
release (JPEGImages, ImageSets/Main lists, MATLAB v5 trainval/*.mat holding uint16 'LabelMap', labels.txt),
checked pixel by pixel against the detectron2-based repositories' rules written out here (FC-CLIP's
prepare_pascal_ctx_full_sem_seg.py for 459, SAN's prepare_pcontext_sem_seg_59cls.py mapping for 59), then
trained on with each dataset's preset and scored."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat, savemat

from maskformer.cli.main import main
from tests.helpers import train_and_score

# SAN's _mapping: the 59 classes' labels.txt ids, sorted; train id = position (background 0 -> 255).
MAPPING_59 = [
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113, 115, 144, 158,
    159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326, 347, 349, 354, 355, 360, 366,
    368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
]  # fmt: skip
NAMES = {1: "accordion", 2: "aeroplane", 3: "air conditioner", 458: "wood", 459: "wool"}


def _write_raw(root, seed=0):
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2010"
    for sub in ("JPEGImages", "ImageSets/Main", "trainval"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    lines = [f"{i}: {NAMES.get(i, f'class {i}')}" for i in range(1, 460)]
    (voc / "trainval" / "labels.txt").write_text("\n".join(lines) + "\n")  # the archive's place for it
    lists = {"train": [], "val": []}
    for k in range(6):
        image_id = f"2008_{k:06d}"
        lists["train" if k < 3 else "val"].append(image_id)
        h, w = int(rng.integers(30, 40)), int(rng.integers(40, 52))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        if k == 5:
            continue  # listed in VOC's split, without a context annotation
        label_map = rng.choice([2, 9, 458, 459, 431, 1, 100], size=(h, w)).astype(np.uint16)
        label_map[: h // 3] = 19  # a 59-class region
        label_map[-2:, :5] = 0  # no label
        savemat(voc / "trainval" / f"{image_id}.mat", {"LabelMap": label_map})  # MATLAB v5, as released
    for split, ids in lists.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root, voc


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return _write_raw(tmp_path_factory.mktemp("pascal_context_raw"))


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = {}
    for classes in (59, 459):
        out[classes] = tmp_path_factory.mktemp(f"pc{classes}")
        args = ["data", "prepare", f"pascal-context-{classes}", "--raw", str(raw[0]), "--out", str(out[classes])]
        assert main([*args, "--quiet"]) == 0
    return out


def _expected(label_map: np.ndarray, classes: int) -> np.ndarray:
    if classes == 459:  # FC-CLIP: 0 -> 65535, minus 1, 65534 -> 65535
        label = label_map.copy()
        label[label == 0] = 65535
        label = label - 1
        label[label == 65534] = 65535
        return label
    label = np.full(label_map.shape, 255, np.uint8)
    for train_id, class_id in enumerate(MAPPING_59):
        label[label_map == class_id] = train_id
    return label


@pytest.mark.parametrize("classes", [59, 459])
def test_labels_equal_the_repositories_rules(raw, prepared, classes):
    _, voc = raw
    out = prepared[classes]
    for split in ("train", "val"):
        ids = (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        annotated = [i for i in ids if (voc / "trainval" / f"{i}.mat").exists()]
        assert sorted(p.stem for p in (out / "labels" / split).glob("*.png")) == annotated
        assert sorted(p.stem for p in (out / "images" / split).glob("*.jpg")) == annotated
        for image_id in annotated:
            label_map = loadmat(voc / "trainval" / f"{image_id}.mat")["LabelMap"]
            label = np.asarray(Image.open(out / "labels" / split / f"{image_id}.png"))
            expected = _expected(label_map, classes)
            assert label.dtype == expected.dtype and np.array_equal(label, expected)
    classes_json = json.loads((out / "classes.json").read_text())
    names = [c["name"] for c in classes_json["classes"]]
    if classes == 459:
        assert len(names) == 459 and names[:3] == ["accordion", "aeroplane", "air conditioner"]
        assert names[-1] == "wool" and classes_json["ignore_value"] == 65535
    else:
        assert len(names) == 59 and names[0] == "aeroplane" and names[-1] == "wood"
        assert names[2] == "class 18" and classes_json["ignore_value"] == 255
    assert [c["id"] for c in classes_json["classes"]] == (MAPPING_59 if classes == 59 else list(range(1, 460)))


def test_a_broken_annotation_is_named(tmp_path, capsys):
    root, voc = _write_raw(tmp_path / "raw", seed=1)
    (voc / "trainval" / "2008_000001.mat").write_bytes(b"not a mat file")
    args = ["data", "prepare", "pascal-context-59", "--raw", str(root), "--out", str(tmp_path / "out"), "--quiet"]
    assert main(args) != 0
    assert "2008_000001.mat: not a PASCAL-Context annotation" in capsys.readouterr().err


@pytest.mark.parametrize("classes", [59, 459])
def test_prepared_pascal_context_trains_and_scores(prepared, tmp_path, capsys, classes):
    assert "mIoU" in train_and_score(prepared[classes], tmp_path / "run", f"r50_pascal_context_{classes}", capsys)


def test_interrupted_prepare_resumes_to_the_same_files(raw, tmp_path, monkeypatch):
    """A semantic-layout preparation killed after two images resumes to the uninterrupted run's files."""
    from maskformer.data.prepare import pascal_context

    root = str(raw[0])
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(["data", "prepare", "pascal-context-459", "--raw", root, "--out", str(whole), "--quiet"]) == 0
    read, calls = pascal_context.read_label_map, []

    def interrupted(path, size):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return read(path, size)

    monkeypatch.setattr(pascal_context, "read_label_map", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["data", "prepare", "pascal-context-459", "--raw", root, "--out", str(resumed), "--quiet"])
    assert len(list((resumed / ".prepare").rglob("*.json"))) == 2 and not (resumed / "classes.json").exists()
    monkeypatch.setattr(pascal_context, "read_label_map", read)
    done_before = {p: p.stat().st_mtime_ns for p in (resumed / "labels").rglob("*.png")}
    assert main(["data", "prepare", "pascal-context-459", "--raw", root, "--out", str(resumed), "--quiet"]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in done_before.items()), "finished images are not redone"
    files = sorted(p.relative_to(whole) for p in whole.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(resumed) for p in resumed.rglob("*") if p.is_file())
    for rel in files:
        assert (whole / rel).read_bytes() == (resumed / rel).read_bytes(), rel
