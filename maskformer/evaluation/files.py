"""Scoring prediction files against ground-truth files, without a model (``maskformer eval-files``)."""

from __future__ import annotations

import json
from pathlib import Path

from ..data.io import read_label
from .panoptic import pq_from_files
from .semantic import SemanticEvaluator


def score_semantic_files(
    pred_dir: str | Path, gt_dir: str | Path, num_classes: int | None, ignore_value: int = 255, label_offset: int = 0
) -> dict:
    """mIoU family over label PNGs with equal names in ``pred_dir`` and ``gt_dir``.

    ``label_offset`` is subtracted from ground-truth values first, values that fall below 0 becoming ignore
    (ADE20K's 0 = unlabelled, 1..150 = classes: offset 1).
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if not num_classes:
        raise ValueError("semantic scoring needs --num-classes")
    gts = sorted(gt_dir.rglob("*.png"))
    if not gts:
        raise FileNotFoundError(f"{gt_dir}: no ground-truth PNGs found")
    evaluator = SemanticEvaluator(num_classes, ignore_value)
    for gt_path in gts:
        pred_path = pred_dir / gt_path.relative_to(gt_dir)
        if not pred_path.exists():
            raise FileNotFoundError(f"{pred_path}: prediction missing for ground truth {gt_path}")
        gt = read_label(gt_path)
        if label_offset:
            gt = gt - label_offset
            gt[gt < 0] = ignore_value
            gt[gt == ignore_value - label_offset] = ignore_value
        pred = read_label(pred_path)
        if pred.shape != gt.shape:
            raise ValueError(f"{pred_path}: size {tuple(pred.shape)} differs from ground truth {tuple(gt.shape)}")
        evaluator.update(pred, gt)
    return evaluator.compute()


def score_panoptic_files(
    pred_json: str | Path,
    gt_json: str | Path,
    pred_folder: str | Path | None = None,
    gt_folder: str | Path | None = None,
) -> dict:
    """PQ of COCO-panoptic prediction files (JSON + PNG folder) against ground truth."""
    for path in (pred_json, gt_json):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: panoptic JSON not found")
    result = pq_from_files(gt_json, pred_json, gt_folder, pred_folder)
    names = {c["id"]: c.get("name", str(c["id"])) for c in json.loads(Path(gt_json).read_text())["categories"]}
    repeated = {n for n in names.values() if list(names.values()).count(n) > 1}
    label = {cid: f"{n} ({cid})" if n in repeated else n for cid, n in names.items()}
    result["per_class"] = {label[k]: v for k, v in result["per_class"].items()}
    return result
