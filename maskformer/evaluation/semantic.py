"""Semantic segmentation metrics from one confusion matrix over the dataset (detectron2's SemSegEvaluator).

Ignore pixels are excluded; classes absent from the ground truth are excluded from the means.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ..model.distributed import world_size


class SemanticEvaluator:
    def __init__(self, num_classes: int, ignore_value: int = 255, class_names: list[str] | None = None):
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.reset()

    def reset(self) -> None:
        # [gt, pred] counts; row/column K collects ignore-free pixels predicted outside 0..K-1 (never, normally).
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """prediction, target: [H, W] class indices (target may hold ignore_value), on any devices."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} sizes differ")
        prediction, target = prediction.cpu(), target.cpu()
        keep = target != self.ignore_value
        gt = target[keep].to(torch.int64)
        pred = prediction[keep].to(torch.int64)
        if gt.numel() and (int(gt.max()) >= self.num_classes or int(gt.min()) < 0):
            raise ValueError(f"target holds values outside 0..{self.num_classes - 1} and ignore")
        k = self.num_classes
        self.confusion += torch.bincount(gt * k + pred, minlength=k * k).view(k, k)

    def sync(self) -> None:
        """Sum the confusion matrices of all processes (no-op outside torch.distributed)."""
        if world_size() > 1:
            backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            confusion = self.confusion.to(backend_device)
            dist.all_reduce(confusion)
            self.confusion = confusion.cpu()

    def compute(self) -> dict:
        """mIoU, fwIoU, mACC, pACC (fractions in 0..1) and per-class IoU / accuracy (None when absent)."""
        conf = self.confusion.double().numpy()
        tp = np.diag(conf)
        pos_gt = conf.sum(1)
        pos_pred = conf.sum(0)
        present = pos_gt > 0
        union = pos_gt + pos_pred - tp
        iou = np.where(present, tp / np.maximum(union, 1), np.nan)
        acc = np.where(present, tp / np.maximum(pos_gt, 1), np.nan)
        total = pos_gt.sum()
        weights = pos_gt / max(total, 1)
        return {
            "mIoU": float(np.nanmean(iou)) if present.any() else 0.0,
            "fwIoU": float(np.nansum(iou * weights)),
            "mACC": float(np.nanmean(acc)) if present.any() else 0.0,
            "pACC": float(tp.sum() / max(total, 1)),
            "IoU": {n: (None if np.isnan(v) else float(v)) for n, v in zip(self.class_names, iou)},
            "ACC": {n: (None if np.isnan(v) else float(v)) for n, v in zip(self.class_names, acc)},
        }
