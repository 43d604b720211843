"""A tiny MaskFormer overfits one batch: the loss goes near zero and the predicted masks are exact."""

from __future__ import annotations

import torch

from maskformer.data import datasets as D
from maskformer.data.synth import write_dataset
from maskformer.model import MaskFormer, SetCriterion, inference
from maskformer.model.config import BackboneConfig, MaskFormerConfig, PixelDecoderConfig, TransformerConfig


def test_tiny_model_overfits_one_batch(tmp_path):
    # Seed 4's two 64 x 64 crops hold segments of 55-3185 pixels; on them the loss ends at 0.020 of its start
    # (measured), under the 0.03 bound. Small segments are what keep a tiny model's loss up: the seed matters.
    root = write_dataset(tmp_path / "synth", 2, 0, seed=4)
    ds = D.COCOPanopticDataset(root / "images" / "train", root / "panoptic_train.json", root / "panoptic" / "train")
    samples = [ds.load(i) for i in range(2)]
    # 64 x 64 crops keep the test fast; the same crops every step.
    for s in samples:
        s["image"], s["label"] = s["image"][:, :64, :64], s["label"][:64, :64]
    torch.manual_seed(0)
    config = MaskFormerConfig(
        num_classes=6,
        backbone=BackboneConfig(type="timm", name="resnet18", norm="bn"),
        pixel_decoder=PixelDecoderConfig(conv_dim=64, mask_dim=64),
        transformer=TransformerConfig(
            hidden_dim=64, num_queries=12, num_heads=4, ffn_dim=128, num_layers=2, dropout=0.0
        ),
    )
    model = MaskFormer(config)
    criterion = SetCriterion.from_config(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0)
    x, _ = model.preprocess([s["image"].float() for s in samples])
    targets = [D.make_targets(s) for s in samples]
    history = []
    for _ in range(300):
        loss = sum(criterion(model(x), targets).values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)  # the recipe's full-model clipping
        optimizer.step()
        history.append(loss.item())
    # A re-matching between two near-equal queries can spike one step; the median of the end must be near 0.
    end = sorted(history[-11:])[5]
    assert end < 0.03 * history[0], (history[0], end)
    model.eval()
    with torch.no_grad():
        out = model(x)
    semantic = inference.semantic_inference(out["pred_logits"], out["pred_masks"], [(64, 64)] * 2, (64, 64))
    for pred, sample in zip(semantic, samples):
        truth = D.semantic_label(sample)
        known = truth != 255
        assert (pred[known] == truth[known]).float().mean() > 0.99
