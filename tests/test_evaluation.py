"""Metrics: PQ equals panopticapi's pq_compute; mIoU equals a naive computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from maskformer.data.io import id_to_rgb
from maskformer.evaluation import PanopticEvaluator, SemanticEvaluator, pq_from_files
from maskformer.evaluation.files import score_semantic_files

CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 2, "name": "car", "isthing": 1},
    {"id": 7, "name": "sky", "isthing": 0},
    {"id": 9, "name": "grass", "isthing": 0},
    {"id": 11, "name": "unused", "isthing": 0},
]


def random_panoptic(rng, h, w, crowd=False):
    """Blocky random segment map with categories; 0 = void in places; optionally a crowd segment."""
    blocks = rng.integers(0, 7, size=(h // 8 + 1, w // 8 + 1))
    ids = np.kron(blocks, np.ones((8, 8), dtype=np.int64))[:h, :w]
    ids = ids * 37 + 1000  # arbitrary ids
    ids[rng.random((h, w)) < 0.02] = 0  # scattered void
    ids[: h // 6] = 0 if rng.random() < 0.5 else ids[: h // 6]
    segments = []
    for seg_id in np.unique(ids):
        if seg_id == 0:
            continue
        cat = int(rng.choice([1, 2, 7, 9]))
        segments.append({"id": int(seg_id), "category_id": cat, "iscrowd": 0, "area": int((ids == seg_id).sum())})
    if crowd and segments:
        segments[0]["iscrowd"] = 1
    return ids, segments


def perturb(rng, ids, segments):
    """A prediction: shifted, partly relabelled, partly merged, with extra unmatched segments and void."""
    pred = np.roll(ids, shift=(int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1)).copy()
    pred[rng.random(pred.shape) < 0.03] = 0
    pred[pred == segments[-1]["id"]] = segments[-2]["id"] if len(segments) > 1 else 0  # a merge
    y, x = rng.integers(0, pred.shape[0] - 10), rng.integers(0, pred.shape[1] - 10)
    pred[y : y + 10, x : x + 10] = 99999  # an extra segment
    out = []
    cats = {s["id"]: s["category_id"] for s in segments}
    for seg_id in np.unique(pred):
        if seg_id == 0:
            continue
        cat = cats.get(int(seg_id), 2)
        if rng.random() < 0.2:
            cat = int(rng.choice([1, 2, 7, 9]))
        out.append({"id": int(seg_id), "category_id": cat})
    return pred, out


def write_split(folder, json_path, items):
    folder.mkdir(parents=True, exist_ok=True)
    annotations = []
    for image_id, (ids, segments) in enumerate(items):
        Image.fromarray(id_to_rgb(ids)).save(folder / f"{image_id}.png")
        annotations.append({"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": segments})
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 1, "width": 1} for i in range(len(items))]
    json_path.write_text(json.dumps({"annotations": annotations, "categories": CATEGORIES, "images": images}))


def test_pq_equals_panopticapi(tmp_path, monkeypatch, capsys):
    panopticapi = pytest.importorskip("panopticapi.evaluation")
    rng = np.random.default_rng(0)
    gt_items, pred_items = [], []
    for i in range(6):
        ids, segments = random_panoptic(rng, 48 + 8 * i, 64, crowd=i % 2 == 0)
        gt_items.append((ids, segments))
        pred_items.append(perturb(rng, ids, segments))
    write_split(tmp_path / "gt", tmp_path / "gt.json", gt_items)
    write_split(tmp_path / "pred", tmp_path / "pred.json", pred_items)
    # panopticapi forks one worker per core; one is plenty for six images.
    monkeypatch.setattr(panopticapi.multiprocessing, "cpu_count", lambda: 1)
    ref = panopticapi.pq_compute(
        str(tmp_path / "gt.json"), str(tmp_path / "pred.json"), str(tmp_path / "gt"), str(tmp_path / "pred")
    )
    ours = pq_from_files(tmp_path / "gt.json", tmp_path / "pred.json", tmp_path / "gt", tmp_path / "pred")
    for group in ("All", "Things", "Stuff"):
        for key in ("pq", "sq", "rq", "n"):
            assert abs(ours[group][key] - ref[group][key]) <= 1e-9, (group, key, ours[group][key], ref[group][key])
    for cid, values in ref["per_class"].items():
        for key in ("pq", "sq", "rq"):
            assert abs(ours["per_class"][cid][key] - values[key]) <= 1e-9
    assert 0 < ours["All"]["pq"] < 1  # the perturbations leave a non-trivial score


def test_pq_crowd_and_void_rules():
    ev = PanopticEvaluator({c["id"]: c for c in CATEGORIES})
    gt = np.zeros((10, 10), dtype=np.int64)
    gt[:, :5] = 1  # a car
    gt[:, 5:] = 2  # a crowd of cars
    segments = [{"id": 1, "category_id": 2, "iscrowd": 0}, {"id": 2, "category_id": 2, "iscrowd": 1}]
    pred = np.zeros((10, 10), dtype=np.int64)
    pred[:, :5] = 5  # matches the car exactly
    pred[:, 5:] = 6  # lies on the crowd region: not a false positive
    ev.update(gt, segments, pred, [{"id": 5, "category_id": 2}, {"id": 6, "category_id": 2}])
    result = ev.compute()
    assert result["per_class"][2] == {"pq": 1.0, "sq": 1.0, "rq": 1.0}
    with pytest.raises(KeyError, match="segment 7 is in the prediction PNG"):
        ev.update(gt, segments, np.full((10, 10), 7), [])


def test_confusion_counts_what_each_segment_was_called_whatever_its_class():
    ev = PanopticEvaluator({c["id"]: c for c in CATEGORIES})
    gt = np.zeros((10, 12), dtype=np.int64)
    gt[:, :4], gt[:, 4:8], gt[:, 8:] = 1, 2, 3  # a person, a car, a crowd of people
    segments = [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 2, "iscrowd": 0},
                {"id": 3, "category_id": 1, "iscrowd": 1}]  # fmt: skip
    pred = np.zeros((10, 12), dtype=np.int64)
    pred[:, :4] = 5  # the person's pixels, called a car
    pred[:, 4:6] = 6  # half the car: IoU 0.5 is not a match
    pred[:, 8:] = 7  # the crowd: never counted
    ev.update(gt, segments, pred, [{"id": 5, "category_id": 2}, {"id": 6, "category_id": 2},
                                   {"id": 7, "category_id": 1}])  # fmt: skip
    person, car, none = ev.index[1], ev.index[2], len(ev.index)
    expected = np.zeros_like(ev.confusion)
    expected[person, car] = 1
    expected[car, none] = 1
    assert np.array_equal(ev.confusion, expected)
    # The same-class matching is unchanged: nothing matched, one false positive (the person called a car).
    assert ev.compute()["per_class"][2]["rq"] == 0.0


def test_miou_equals_naive_computation(tmp_path):
    rng = np.random.default_rng(1)
    k, ignore = 5, 255
    ev = SemanticEvaluator(k, ignore)
    preds, gts = [], []
    for _ in range(4):
        gt = rng.integers(0, k - 1, size=(20, 30))  # class k-1 never appears in the ground truth
        gt[rng.random(gt.shape) < 0.1] = ignore
        pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, k, size=gt.shape))
        pred[pred == ignore] = 0
        preds.append(pred)
        gts.append(gt)
        import torch

        ev.update(torch.from_numpy(pred), torch.from_numpy(gt))
    result = ev.compute()
    ious = []
    for c in range(k):
        inter = sum(((p == c) & (g == c) & (g != ignore)).sum() for p, g in zip(preds, gts))
        union = sum((((p == c) | (g == c)) & (g != ignore)).sum() for p, g in zip(preds, gts))
        present = sum((g == c).sum() for g in gts) > 0
        if present:
            ious.append(inter / union)
    assert abs(result["mIoU"] - np.mean(ious)) < 1e-12
    assert result["IoU"][str(k - 1)] is None
    correct = sum(((p == g) & (g != ignore)).sum() for p, g in zip(preds, gts))
    assert abs(result["pACC"] - correct / sum((g != ignore).sum() for g in gts)) < 1e-12
    # The same through files.
    for i, (p, g) in enumerate(zip(preds, gts)):
        (tmp_path / "pred").mkdir(exist_ok=True)
        (tmp_path / "gt").mkdir(exist_ok=True)
        Image.fromarray(p.astype(np.uint8)).save(tmp_path / "pred" / f"{i}.png")
        Image.fromarray(g.astype(np.uint8)).save(tmp_path / "gt" / f"{i}.png")
    assert abs(score_semantic_files(tmp_path / "pred", tmp_path / "gt", k)["mIoU"] - result["mIoU"]) < 1e-12


def test_instance_ap_through_pycocotools():
    from maskformer.evaluation.instance import InstanceEvaluator

    a = np.zeros((20, 20), dtype=bool)
    a[2:9, 2:9] = True
    b = np.zeros((20, 20), dtype=bool)
    b[10:18, 5:15] = True
    perfect = InstanceEvaluator([0, 1])
    perfect.update([a, b], [0, 1], [False, False], np.stack([a, b]), [0, 1], [0.9, 0.8])
    assert perfect.compute()["AP"] == pytest.approx(1.0)
    wrong = InstanceEvaluator([0, 1])
    wrong.update([a, b], [0, 1], [False, False], np.stack([b, a]), [0, 1], [0.9, 0.8])
    assert wrong.compute()["AP"] == pytest.approx(0.0)
    empty = InstanceEvaluator([0, 1])
    empty.update([a], [0], [False], np.zeros((0, 20, 20), dtype=bool), [], [])
    assert empty.compute()["AP"] == 0.0
