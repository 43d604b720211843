"""Augmentation keeps label maps aligned with images, pixel-exactly, and is a function of its seed."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskformer.data import datasets as D
from maskformer.data.transforms import (
    PadTo,
    RandomCrop,
    RandomHorizontalFlip,
    ResizeShortestEdge,
    detr_panoptic_train_transform,
    large_scale_jitter_transform,
    semantic_train_transform,
)
from tests.helpers import PALETTE, colour_index


def blocky_sample(h=60, w=84, kind="semantic", seed=0):
    """A label map of 12 x 12 blocks, and an image that is the label's palette colour, pixel for pixel."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 4, (-(-h // 12), -(-w // 12)), generator=g)
    label = blocks.repeat_interleave(12, 0).repeat_interleave(12, 1)[:h, :w]
    image = PALETTE[label].permute(2, 0, 1).to(torch.uint8)
    sample = {"image": image, "label": label.long(), "kind": kind, "file": "x"}
    if kind == "panoptic":
        sample["label"] = label.long() + 1  # ids 1..4, 0 = void
        sample["segments"] = {i + 1: D.Annotation(i, False) for i in range(4)}
    return sample


def interior(label):
    """Pixels whose 5 x 5 neighbourhood has one label (resampling may blend colours only at edges)."""
    x = label[None, None].float()
    return (F.max_pool2d(x, 5, 1, 2) == -F.max_pool2d(-x, 5, 1, 2))[0, 0]


def test_geometric_ops_keep_alignment_pixel_exactly():
    g = torch.Generator().manual_seed(1)
    for seed in range(10):
        sample = blocky_sample(seed=seed)
        for t in (RandomCrop((40, 50)), RandomHorizontalFlip(1.0), PadTo((70, 90), 128, 255)):
            out = t(sample, g)
            idx = colour_index(out["image"])
            labelled = out["label"] != 255
            assert torch.equal(idx[labelled], out["label"][labelled])
            assert (out["image"][:, ~labelled] == 128).all()


def test_resizing_keeps_alignment_inside_regions():
    g = torch.Generator().manual_seed(2)
    for seed in range(5):
        sample = blocky_sample(seed=seed)
        out = ResizeShortestEdge([37, 91, 150], 400)(sample, g)
        assert out["image"].shape[-2:] == out["label"].shape
        inner = interior(out["label"])
        assert inner.float().mean() > 0.2
        assert torch.equal(colour_index(out["image"])[inner], out["label"][inner])


def test_full_semantic_pipeline_alignment_and_determinism():
    transform = semantic_train_transform(64, color_jitter=False, single_category_max_area=0.75)
    for seed in range(8):
        sample = blocky_sample(seed=seed)
        out = transform(sample, torch.Generator().manual_seed(seed))
        assert out["image"].shape == (3, 64, 64) and out["label"].shape == (64, 64)
        inner = interior(out["label"]) & (out["label"] != 255)
        assert torch.equal(colour_index(out["image"])[inner], out["label"][inner])
        again = transform(sample, torch.Generator().manual_seed(seed))
        assert torch.equal(out["image"], again["image"]) and torch.equal(out["label"], again["label"])
    jitter = semantic_train_transform(64)
    a = jitter(blocky_sample(), torch.Generator().manual_seed(0))
    b = jitter(blocky_sample(), torch.Generator().manual_seed(0))
    assert torch.equal(a["image"], b["image"])


def test_panoptic_pipeline_pads_with_void_and_drops_cropped_out_segments():
    sample = blocky_sample(kind="panoptic")
    out = PadTo((80, 100))(sample, torch.Generator())
    assert (out["label"][60:] == 0).all()
    targets = D.make_targets(out)
    assert not targets["valid"][60:].any() and targets["valid"][:60, :84].all()
    # A crop inside one 12 x 12 block keeps exactly one segment.
    crop = RandomCrop((6, 6))(
        {**sample, "label": sample["label"][:12, :12], "image": sample["image"][:, :12, :12]}, torch.Generator()
    )
    assert len(D.make_targets(crop)["labels"]) == 1
    detr = detr_panoptic_train_transform(scales=(48, 64), max_size=128, crop_scales=(40,), crop_range=(20, 30))
    for seed in range(5):
        out = detr(blocky_sample(kind="panoptic", seed=seed), torch.Generator().manual_seed(seed))
        # Two resamplings blend colours further from edges: every exact colour must still match.
        idx = colour_index(out["image"])
        exact = interior(out["label"]) & (idx >= 0)
        assert exact.float().mean() > 0.2
        assert torch.equal(idx[exact], out["label"][exact] - 1)


def instance_sample(sample):
    """The blocky panoptic sample as instance data: one mask per block class, plus one overlapping mask
    (classes 0 and 1 together), the label marking the image's area."""
    ids = sample["label"]
    masks = torch.stack([ids == k for k in range(1, 5)] + [(ids == 1) | (ids == 2)]).to(torch.uint8)
    instances = [D.Annotation(k, False) for k in range(4)] + [D.Annotation(0, False)]
    return {**sample, "kind": "instance", "label": torch.ones_like(ids), "masks": masks, "instances": instances}


def test_large_scale_jitter_keeps_labels_and_instance_masks_aligned():
    # Scales 0.3-2.0 of a 64 x 64 box: images both shrink (padding) and grow (cropping) across the seeds.
    lsj = large_scale_jitter_transform((64, 64), 0.3, 2.0)
    shrunk = grown = 0
    for seed in range(12):
        panoptic = blocky_sample(kind="panoptic", seed=seed)
        out = lsj(panoptic, torch.Generator().manual_seed(seed))
        assert out["image"].shape == (3, 64, 64) and out["label"].shape == (64, 64)
        ids = out["label"]
        pad = ids == 0  # the blocky sample has no void: void is padding, and the image is 128 there
        assert (out["image"][:, pad] == 128).all()
        shrunk += bool(pad.any())
        grown += bool(not pad.any())
        idx = colour_index(out["image"])
        # Shrinking antialiases over more than 5 x 5 pixels: every exact palette colour must match its label.
        exact = interior(ids) & ~pad & (idx >= 0)
        assert exact.any()
        assert torch.equal(idx[exact], ids[exact] - 1)
        # The same seed draws the same geometry: each instance mask equals its blocks' pixels exactly,
        # everywhere (overlapping mask included), and the area map is the unpadded part.
        inst = lsj(instance_sample(panoptic), torch.Generator().manual_seed(seed))
        assert torch.equal(inst["image"], out["image"])
        for k in range(4):
            assert torch.equal(inst["masks"][k].bool(), ids == k + 1)
        assert torch.equal(inst["masks"][4].bool(), (ids == 1) | (ids == 2))
        assert torch.equal(inst["label"] == 1, ~pad)
        again = lsj(panoptic, torch.Generator().manual_seed(seed))
        assert torch.equal(again["image"], out["image"]) and torch.equal(again["label"], ids)
    assert shrunk and grown


def test_instance_targets_drop_crowd_and_emptied_objects():
    sample = instance_sample(blocky_sample(kind="panoptic"))
    sample["instances"][1] = D.Annotation(1, True)  # crowd
    crop = RandomCrop((12, 12))({**sample}, torch.Generator().manual_seed(0))
    targets = D.make_targets(crop)
    present = [k for k in range(5) if crop["masks"][k].any() and k != 1]
    assert targets["labels"].tolist() == [sample["instances"][k].category for k in present]
    assert all(torch.equal(m, crop["masks"][k].bool()) for m, k in zip(targets["masks"], present))
    assert targets["valid"].all()
    empty = {**sample, "masks": sample["masks"][:0], "instances": []}
    out = large_scale_jitter_transform((32, 32))(empty, torch.Generator().manual_seed(1))
    assert out["masks"].shape == (0, 32, 32) and len(D.make_targets(out)["labels"]) == 0
