"""A tiny model of each family overfits one batch: every pixel's class and every segment come out right.

What is asserted holds on any CPU: properties of the fitted predictions (pixels labelled right, each target
segment recovered whole by a query of its class), not a loss ratio. The loss of a set-prediction model
spikes whenever two near-equal queries swap their matches, so where it stands at a given step depends on
the arithmetic (it ended at 0.020 of its start on an AMD EPYC and 0.056 on an Intel Xeon with AMX after the
same 300 steps, with every pixel right on both).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from maskformer.data import datasets as D
from maskformer.data.synth import write_dataset
from maskformer.model import ModelConfig, Segmenter, SetCriterion, inference
from tests.helpers import FAMILIES, resnet18_model, small_config

SIZE = 64
# Training stops once two checks in a row find the batch fitted: that took 40-100 steps (the first such check
# at 40-60) for both families on the machines tried; the limit leaves three times that.
CHECK_EVERY, MAX_STEPS = 20, 300
PIXEL_ACCURACY = 0.99
# Intersection over union of each target with its best query of the same class. Seed 4's smallest segment
# has 55 pixels, and masks predicted at stride 4 cannot follow its edge to the pixel: 0.83-0.98 when fitted.
SEGMENT_IOU = 0.75


def tiny(family: str) -> ModelConfig:
    # The point loss on 64 x 64 crops: 1024 points, four per stride-4 prediction pixel.
    if family == "eomt":
        return small_config("eomt", num_classes=6, width=64, queries=12, layers=2, ffn=128, points=1024)
    layers = 2 if family == "maskformer" else 3
    return resnet18_model(family, width=64, queries=12, layers=layers, ffn=128, points=1024, dropout=0.0)


def worst_segment_iou(out: dict, targets: list[dict]) -> float:
    """The lowest, over the targets, of the best IoU of a query that predicts the target's class."""
    masks = F.interpolate(out.masks, size=(SIZE, SIZE), mode="bilinear", align_corners=False) > 0
    classes = out.logits.argmax(-1)
    worst = 1.0
    for b, target in enumerate(targets):
        for mask, label in zip(target["masks"], target["labels"]):
            inter = (masks[b] & mask).sum((1, 2)).float()
            union = (masks[b] | mask).sum((1, 2)).clamp(min=1).float()
            iou = torch.where(classes[b] == label, inter / union, torch.zeros_like(inter))
            worst = min(worst, iou.max().item())
    return worst


def pixel_accuracy(out: dict, truths: list[Tensor]) -> float:
    """The lowest share, over the images, of labelled pixels whose semantic prediction is right."""
    semantic = inference.semantic_inference(out.logits, out.masks, [(SIZE, SIZE)] * 2, (SIZE, SIZE))
    return min((p[t != 255] == t[t != 255]).float().mean().item() for p, t in zip(semantic, truths))


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_overfits_one_batch(tmp_path, family):
    root = write_dataset(tmp_path / "synth", 2, 0, seed=4)
    ds = D.COCOPanopticDataset(root / "images" / "train", root / "panoptic_train.json", root / "panoptic" / "train")
    samples = [ds.load(i) for i in range(2)]
    # Small crops keep the test fast; the same crops every step.
    for s in samples:
        s["image"], s["label"] = s["image"][:, :SIZE, :SIZE], s["label"][:SIZE, :SIZE]
    torch.manual_seed(0)
    config = tiny(family)
    model = Segmenter.from_config(config)
    criterion = SetCriterion.from_config(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0)
    x, _ = model.preprocess([s["image"].float() for s in samples])
    targets = [D.make_targets(s) for s in samples]
    truths = [D.semantic_label(s) for s in samples]
    history, fitted, checks = [], 0, []
    for step in range(1, MAX_STEPS + 1):
        model.train()
        loss = sum(criterion(model(x), targets).values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)  # the recipe's full-model clipping
        optimizer.step()
        history.append(loss.item())
        if step % CHECK_EVERY:
            continue
        model.eval()
        with torch.no_grad():
            out = model(x)
        checks.append((step, pixel_accuracy(out, truths), worst_segment_iou(out, targets)))
        fitted = fitted + 1 if checks[-1][1] > PIXEL_ACCURACY and checks[-1][2] > SEGMENT_IOU else 0
        if fitted == 2:
            break
    assert fitted == 2, f"not fitted in {MAX_STEPS} steps; (step, pixel accuracy, worst segment IoU): {checks}"
    # A fitted batch has a small loss; the bound is loose because of the spikes the docstring describes.
    assert sorted(history[-CHECK_EVERY:])[CHECK_EVERY // 2] < 0.5 * history[0], history
