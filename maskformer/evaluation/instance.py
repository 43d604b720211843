"""COCO instance-segmentation AP through pycocotools (masks encoded as RLE in memory)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
import torch.distributed as dist
from torch import Tensor

from ..data.io import encode_rle, mask_box
from ..model.distributed import world_size


class InstanceEvaluator:
    """Accumulates ground-truth instances and scored predicted masks; ``compute`` runs COCOeval("segm")."""

    def __init__(self, categories: Sequence[int], names: Sequence[str] | None = None):
        """``categories``: the thing classes' ids; ``names``: their names, which key the per-class APs."""
        self.categories = list(categories)
        self.names = list(names) if names is not None else [str(c) for c in self.categories]
        self.reset()

    def reset(self) -> None:
        self.images: list[dict] = []
        self.gt: list[dict] = []
        self.dt: list[dict] = []

    def update(
        self,
        gt_masks: Sequence[np.ndarray],
        gt_labels: Sequence[int],
        gt_crowd: Sequence[bool],
        pred_masks: Tensor | np.ndarray,
        pred_labels: Sequence[int],
        pred_scores: Sequence[float],
    ) -> None:
        """One image: ground-truth masks [H, W] with classes and crowd flags; predictions [M, H, W]."""
        image_id = len(self.images) + 1
        pred_masks = pred_masks.cpu().numpy() if isinstance(pred_masks, Tensor) else np.asarray(pred_masks)
        h, w = pred_masks.shape[-2:] if len(pred_masks) else (gt_masks[0].shape if len(gt_masks) else (1, 1))
        self.images.append({"id": image_id, "height": int(h), "width": int(w)})
        for mask, label, crowd in zip(gt_masks, gt_labels, gt_crowd):
            rle = encode_rle(mask)
            bbox = [float(v) for v in mask_box(mask)]
            self.gt.append(
                {
                    "id": len(self.gt) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "segmentation": rle,
                    "area": float(mask.sum()),
                    "iscrowd": int(crowd),
                    "bbox": bbox,
                }
            )
        for mask, label, score in zip(pred_masks, pred_labels, pred_scores):
            self.dt.append(
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "segmentation": encode_rle(mask),
                    "score": float(score),
                }
            )

    def sync(self) -> None:
        """Gather every process's images and instances (ids renumbered) before ``compute``."""
        if world_size() == 1:
            return
        parts: list = [None] * world_size()
        dist.all_gather_object(parts, (self.images, self.gt, self.dt))
        self.reset()
        for images, gt, dt in parts:
            offset = len(self.images)
            self.images += [{**im, "id": im["id"] + offset} for im in images]
            self.gt += [{**a, "id": len(self.gt) + i + 1, "image_id": a["image_id"] + offset} for i, a in enumerate(gt)]
            self.dt += [{**d, "image_id": d["image_id"] + offset} for d in dt]

    def compute(self) -> dict:
        """AP, AP50, AP75, APs, APm, APl in 0..1 (COCO's definitions; -1 where undefined), and "per_class":
        each category's AP (over IoU 0.50:0.95, all areas, 100 detections, as COCO's summary averages it;
        None for a category without ground truth)."""
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
        if not self.dt or not self.gt:
            return {**dict.fromkeys(keys, 0.0), "per_class": dict.fromkeys(self.names, None if not self.gt else 0.0)}
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = {
                "images": self.images,
                "annotations": self.gt,
                "categories": [{"id": c, "name": str(c)} for c in self.categories],
            }
            coco.createIndex()
            result = coco.loadRes(self.dt)
            evaluator = COCOeval(coco, result, "segm")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        # precision: [IoU thresholds, recall points, categories, area ranges (all first), max detections (100 last)]
        precision = evaluator.eval["precision"][:, :, :, 0, -1]
        per_class = {}
        for k, name in enumerate(self.names):
            values = precision[:, :, k]
            values = values[values > -1]
            per_class[name] = float(values.mean()) if values.size else None
        return {**{k: float(v) for k, v in zip(keys, evaluator.stats[:6])}, "per_class": per_class}
