"""COCO instance format: polygons, uncompressed and compressed RLE, crowd; errors and `data check` name the
JSON and the annotation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from maskformer.cli.main import main
from maskformer.data import datasets as D
from maskformer.data.check import check_reader

H, W = 30, 40


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE written out by hand: run lengths of 0s and 1s in column-major order,
    starting with a (possibly empty) run of 0s."""
    flat = mask.T.flatten().astype(np.uint8)
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel != value:
            counts.append(run)
            value, run = pixel, 0
        run += 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def blob(top: int, left: int, h: int, w: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[top : top + h, left : left + w] = 1
    mask[top, left] = 0  # not a plain box: a notch at the corner
    return mask


def write_coco_instances(root, annotations: list[dict], images: int = 2) -> None:
    (root / "val2017").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    for i in range(images):
        Image.fromarray(np.full((H, W, 3), 40 * i, dtype=np.uint8)).save(root / "val2017" / f"{i:012d}.jpg")
    data = {
        "images": [{"id": i + 1, "file_name": f"{i:012d}.jpg", "height": H, "width": W} for i in range(images)],
        "annotations": annotations,
        "categories": [{"id": 3, "name": "car"}, {"id": 18, "name": "dog"}],
    }
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))


def coco_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


MASKS = {"rle": blob(2, 3, 10, 12), "compressed": blob(5, 10, 20, 25), "crowd": blob(20, 0, 8, 30)}


def good_annotations() -> list[dict]:
    polygon = [5.0, 4.0, 15.0, 4.0, 15.0, 10.0, 5.0, 10.0]  # a 10 x 6 rectangle
    return [
        {"id": 1, "image_id": 1, "category_id": 18, "segmentation": [polygon], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "segmentation": uncompressed_rle(MASKS["rle"]), "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 3, "segmentation": coco_rle(MASKS["compressed"]), "iscrowd": 0},
        {"id": 4, "image_id": 1, "category_id": 18, "segmentation": uncompressed_rle(MASKS["crowd"]), "iscrowd": 1},
    ]


def test_reader_decodes_polygons_and_both_rle_forms_and_keeps_overlaps(tmp_path):
    write_coco_instances(tmp_path, good_annotations())
    ds = D.coco_instance(tmp_path, "val2017")
    assert len(ds) == 2  # the image without annotations stays: it teaches "no object"
    assert ds.metadata.class_names == ["car", "dog"] and ds.metadata.thing_classes == [0, 1]
    sample = ds[0]
    masks = sample["masks"].numpy()
    assert masks.shape == (4, H, W) and sample["kind"] == "instance"
    assert [(s.category, s.iscrowd) for s in sample["instances"]] == [(1, False), (0, False), (0, False), (1, True)]
    assert np.array_equal(masks[1], MASKS["rle"]) and np.array_equal(masks[2], MASKS["compressed"])
    assert np.array_equal(masks[3], MASKS["crowd"])
    # The polygon covers its rectangle's inside and nothing a pixel beyond it.
    assert masks[0][5:10, 6:15].all() and masks[0].sum() == masks[0][3:12, 4:17].sum()
    assert abs(int(masks[0].sum()) - 60) <= 20
    assert (masks[1] & masks[2]).any()  # objects overlap; each keeps its whole mask
    targets = D.make_targets(sample)
    assert targets["labels"].tolist() == [1, 0, 0]  # the crowd object is left out
    assert np.array_equal(targets["masks"].numpy(), masks[:3].astype(bool))
    semantic = D.semantic_label(sample)
    assert semantic[0, 39] == 255 and semantic[15, 20] == 0  # background is ignore; objects keep their class
    empty = ds[1]
    assert empty["masks"].shape == (0, H, W) and len(D.make_targets(empty)["labels"]) == 0


def test_bad_annotations_name_the_json_and_the_annotation(tmp_path):
    bad = good_annotations()
    bad[0]["segmentation"] = [[1.0, 2.0, 3.0, 4.0]]  # two points: not a polygon
    bad[1]["segmentation"] = {"size": [H + 1, W], "counts": [5, 10]}
    bad[2]["category_id"] = 99
    write_coco_instances(tmp_path, bad)
    ds = D.coco_instance(tmp_path, "val2017")
    json_file = tmp_path / "annotations" / "instances_val2017.json"
    with pytest.raises(ValueError, match=r"instances_val2017\.json: annotation 1 of image 1 .*polygon"):
        ds.load(0)
    report = check_reader(ds)
    messages = [str(p) for p in report.problems]
    assert len(messages) == 3 and all(m.startswith(str(json_file)) for m in messages)
    assert "annotation 1 of 000000000000.jpg" in messages[0] and "polygon" in messages[0]
    assert "RLE size [31, 40]" in messages[1]
    assert "unknown category id: 99" in messages[2]
    assert main(["data", "check", "--data", str(tmp_path), "--split", "val2017"]) == 1  # the layout is found


def test_annotation_of_an_unlisted_image_is_an_error_naming_the_json(tmp_path):
    annotations = good_annotations()
    annotations[0]["image_id"] = 7
    write_coco_instances(tmp_path, annotations)
    with pytest.raises(ValueError, match=r"instances_val2017\.json: annotation 1 refers to image 7"):
        D.coco_instance(tmp_path, "val2017")
