"""Panoptic quality by COCO's definition (panopticapi's pq_compute, reimplemented).

Segments match when IoU > 0.5 within one category; the IoU's union leaves out the prediction's overlap
with void; ground-truth crowd segments are never matched, and an unmatched prediction lying more than half
on void or on a crowd region of its category is not a false positive.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..data.io import read_panoptic_png
from ..model.distributed import world_size

OFFSET = 256 * 256 * 256
VOID = 0


class PanopticEvaluator:
    """Accumulates per-category TP / FP / FN / IoU sums over images; ``categories`` maps the dataset's
    category id to a dict with at least ``isthing`` (and ``name``)."""

    def __init__(self, categories: Mapping[int, Mapping]):
        self.categories = {int(k): dict(v) for k, v in categories.items()}
        self.index = {cid: i for i, cid in enumerate(sorted(self.categories))}
        self.reset()

    def reset(self) -> None:
        self.stats = np.zeros((len(self.index), 4), dtype=np.float64)  # tp, fp, fn, iou
        # Rows: each non-crowd ground-truth segment's category; columns: the category of the predicted segment
        # it matches with IoU > 0.5 whatever its category (unique, as in the same-category matching), or,
        # in the last column, none.
        self.confusion = np.zeros((len(self.index), len(self.index) + 1), dtype=np.int64)

    def update(
        self,
        gt_ids: np.ndarray,
        gt_segments: Sequence[Mapping],
        pred_ids: np.ndarray,
        pred_segments: Sequence[Mapping],
        image: str = "image",
    ) -> None:
        """One image. Segment dicts carry ``id`` and ``category_id``; ground truth also ``iscrowd`` and
        ``area`` (counted from ``gt_ids`` when absent, as for freshly made annotations)."""
        gt_ids = np.asarray(gt_ids, dtype=np.int64)
        pred_ids = np.asarray(pred_ids, dtype=np.int64)
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(f"{image}: prediction {pred_ids.shape} and ground truth {gt_ids.shape} sizes differ")
        gt_segms = {int(s["id"]): dict(s) for s in gt_segments}
        pred_segms = {int(s["id"]): dict(s) for s in pred_segments}
        labels, counts = np.unique(pred_ids, return_counts=True)
        unseen = set(pred_segms)
        for label, count in zip(labels.tolist(), counts.tolist()):
            if label not in pred_segms:
                if label == VOID:
                    continue
                raise KeyError(f"{image}: segment {label} is in the prediction PNG but not in its segments")
            pred_segms[label]["area"] = count
            unseen.discard(label)
            if pred_segms[label]["category_id"] not in self.categories:
                raise KeyError(f"{image}: segment {label} has unknown category {pred_segms[label]['category_id']}")
        if unseen:
            raise KeyError(f"{image}: segments {sorted(unseen)} are listed but absent from the prediction PNG")
        if any("area" not in s for s in gt_segms.values()):
            gl, gc = np.unique(gt_ids, return_counts=True)
            gt_area = dict(zip(gl.tolist(), gc.tolist()))
            for k, s in gt_segms.items():
                s.setdefault("area", gt_area.get(k, 0))

        joint = gt_ids.astype(np.uint64) * np.uint64(OFFSET) + pred_ids.astype(np.uint64)
        pairs, inter = np.unique(joint, return_counts=True)
        gt_pred = {(int(p // OFFSET), int(p % OFFSET)): int(c) for p, c in zip(pairs.tolist(), inter.tolist())}

        gt_matched, pred_matched = set(), set()
        called: dict[int, int] = {}
        for (gt_label, pred_label), intersection in gt_pred.items():
            if gt_label not in gt_segms or pred_label not in pred_segms:
                continue
            gt, pred = gt_segms[gt_label], pred_segms[pred_label]
            if gt.get("iscrowd", 0) == 1:
                continue
            union = pred["area"] + gt["area"] - intersection - gt_pred.get((VOID, pred_label), 0)
            iou = intersection / union
            if iou > 0.5:
                called[gt_label] = self.index[pred["category_id"]]
            if gt["category_id"] != pred["category_id"]:
                continue
            if iou > 0.5:
                row = self.index[gt["category_id"]]
                self.stats[row, 0] += 1
                self.stats[row, 3] += iou
                gt_matched.add(gt_label)
                pred_matched.add(pred_label)

        crowd = {}
        for gt_label, gt in gt_segms.items():
            if gt.get("iscrowd", 0) != 1:
                self.confusion[self.index[gt["category_id"]], called.get(gt_label, len(self.index))] += 1
            if gt_label in gt_matched:
                continue
            if gt.get("iscrowd", 0) == 1:
                crowd[gt["category_id"]] = gt_label
                continue
            self.stats[self.index[gt["category_id"]], 2] += 1
        for pred_label, pred in pred_segms.items():
            if pred_label in pred_matched:
                continue
            ignored = gt_pred.get((VOID, pred_label), 0)
            if pred["category_id"] in crowd:
                ignored += gt_pred.get((crowd[pred["category_id"]], pred_label), 0)
            if ignored / pred["area"] > 0.5:
                continue
            self.stats[self.index[pred["category_id"]], 1] += 1

    def sync(self) -> None:
        """Sum statistics over processes (no-op outside torch.distributed)."""
        if world_size() > 1:
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            stats = torch.from_numpy(self.stats).to(device)
            dist.all_reduce(stats)
            self.stats = stats.cpu().numpy()
            confusion = torch.from_numpy(self.confusion).to(device)
            dist.all_reduce(confusion)
            self.confusion = confusion.cpu().numpy()

    def compute(self) -> dict:
        """{"All"|"Things"|"Stuff": {pq, sq, rq, n}, "per_class": {category_id: {pq, sq, rq}}}, in 0..1."""
        per_class = {}
        totals = {"All": [0.0, 0.0, 0.0, 0], "Things": [0.0, 0.0, 0.0, 0], "Stuff": [0.0, 0.0, 0.0, 0]}
        for cid, row in self.index.items():
            tp, fp, fn, iou = self.stats[row]
            if tp + fp + fn == 0:
                per_class[cid] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            pq = iou / (tp + 0.5 * fp + 0.5 * fn)
            sq = iou / tp if tp != 0 else 0
            rq = tp / (tp + 0.5 * fp + 0.5 * fn)
            per_class[cid] = {"pq": pq, "sq": sq, "rq": rq}
            groups = ("All", "Things" if self.categories[cid].get("isthing", 0) == 1 else "Stuff")
            for group in groups:
                t = totals[group]
                t[0] += pq
                t[1] += sq
                t[2] += rq
                t[3] += 1
        result = {
            name: {
                "pq": s[0] / s[3] if s[3] else 0.0,
                "sq": s[1] / s[3] if s[3] else 0.0,
                "rq": s[2] / s[3] if s[3] else 0.0,
                "n": s[3],
            }
            for name, s in totals.items()
        }
        result["per_class"] = per_class
        return result


def png_folder(json_file: Path) -> Path:
    """The PNG folder of a COCO panoptic JSON: its path without ``.json`` (COCO's layout), or
    ``panoptic/SPLIT`` beside a ``panoptic_SPLIT.json`` (the generic panoptic data format's)."""
    coco = json_file.with_suffix("")
    split = json_file.stem.removeprefix("panoptic_")
    generic = json_file.parent / "panoptic" / split
    return generic if not coco.is_dir() and json_file.stem.startswith("panoptic_") and generic.is_dir() else coco


def pq_from_files(
    gt_json: str | Path,
    pred_json: str | Path,
    gt_folder: str | Path | None = None,
    pred_folder: str | Path | None = None,
) -> dict:
    """Score COCO-panoptic prediction files against ground truth (panopticapi's pq_compute).

    Predictions are matched to ground-truth images by ``image_id``, as panopticapi does, when every
    prediction's id is a ground-truth id; otherwise by PNG file name (``maskformer predict`` without
    ``--gt-json`` names each prediction by its image's file name and knows no dataset ids).
    """
    gt_json, pred_json = Path(gt_json), Path(pred_json)
    gt_folder = Path(gt_folder) if gt_folder else png_folder(gt_json)
    pred_folder = Path(pred_folder) if pred_folder else png_folder(pred_json)
    gt = json.loads(gt_json.read_text())
    pred = json.loads(pred_json.read_text())
    categories = {c["id"]: c for c in gt["categories"]}
    evaluator = PanopticEvaluator(categories)
    gt_ids = {a["image_id"] for a in gt["annotations"]}
    by_id = all(a["image_id"] in gt_ids for a in pred["annotations"])
    key = "image_id" if by_id else "file_name"
    pred_by_image = {a[key]: a for a in pred["annotations"]}
    for gt_ann in gt["annotations"]:
        if gt_ann[key] not in pred_by_image:
            raise KeyError(
                f"{pred_json}: no prediction for image {gt_ann['image_id']} ({gt_ann['file_name']}; matching by {key})"
            )
        pred_ann = pred_by_image[gt_ann[key]]
        evaluator.update(
            read_panoptic_png(gt_folder / gt_ann["file_name"]).numpy(),
            gt_ann["segments_info"],
            read_panoptic_png(pred_folder / pred_ann["file_name"]).numpy(),
            pred_ann["segments_info"],
            image=str(pred_folder / pred_ann["file_name"]),
        )
    return evaluator.compute()
