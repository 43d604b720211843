"""The demo's stage 1: a backbone pretrained as a classifier of crops of the training images."""

from __future__ import annotations

import shutil

import torch
from safetensors.torch import load_file

from maskformer.data.datasets import COCOPanopticDataset
from maskformer.data.synth import write_dataset
from maskformer.demo import demo_config, pretrain_backbone
from maskformer.demo.backbone import CROP, cut_crops
from maskformer.model import MaskFormer


def test_crops_of_every_segment_from_training_images_only(tmp_path):
    root = write_dataset(tmp_path / "data", 10, 2, seed=0)
    # The validation split is never read: without it, stage 1 runs the same.
    shutil.rmtree(root / "images" / "val")
    (root / "panoptic_val.json").unlink()
    dataset = COCOPanopticDataset(root / "images" / "train", root / "panoptic_train.json", root / "panoptic" / "train")
    things = set(dataset.metadata.thing_classes)
    crops = cut_crops(dataset, [0, 1, 2], things, seed=0)
    segments = [dataset.load(i)["segments"] for i in range(3)]
    n_things = sum(s.category in things for seg in segments for s in seg.values())
    assert crops.images.shape[1:] == (3, CROP, CROP) and crops.images.dtype == torch.uint8
    assert int(sum(int(c) in things for c in crops.labels)) == n_things  # one crop per thing
    result = pretrain_backbone(root, tmp_path / "backbone.safetensors", steps=2, batch_size=8, progress=False)
    assert result.train_crops > 0 and result.held_out_crops > 0 and 0 <= result.accuracy <= 1
    # Stage 2 starts from the file through model.backbone.weights.
    config = demo_config(root, 2).model
    config.backbone.weights = str(result.path)
    model = MaskFormer(config)
    saved = load_file(str(result.path))
    assert torch.equal(model.backbone.body.conv1.weight, saved["conv1.weight"])
