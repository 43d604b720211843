"""Augmentation keeps label maps aligned with images, pixel-exactly, and is a function of its seed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maskformer.data import datasets as D
from maskformer.data.transforms import (
    ColorJitterTorchvision,
    PadTo,
    RandomCrop,
    RandomHorizontalFlip,
    ResizeShortestEdge,
    UntilTargets,
    detr_panoptic_train_transform,
    large_scale_jitter_transform,
    scale_jitter_transform,
    semantic_train_transform,
)
from maskformer.training import DataConfig
from maskformer.training.datamodule import train_transform
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


@pytest.mark.parametrize(
    "make, pad_value",
    [(large_scale_jitter_transform, 128), (scale_jitter_transform, 0)],
    ids=["mask2former_grey", "eomt_black"],
)
def test_large_scale_jitter_keeps_labels_and_instance_masks_aligned(make, pad_value):
    """Mask2Former's large-scale jitter pads with grey (detectron2's FixedSizeCrop), EoMT's with black
    (torchvision's pad in the official datasets/transforms.py)."""
    # Scales 0.3-2.0 of a 64 x 64 box: images both shrink (padding) and grow (cropping) across the seeds.
    lsj = make((64, 64), 0.3, 2.0)
    shrunk = grown = 0
    for seed in range(12):
        panoptic = blocky_sample(kind="panoptic", seed=seed)
        out = lsj(panoptic, torch.Generator().manual_seed(seed))
        assert out["image"].shape == (3, 64, 64) and out["label"].shape == (64, 64)
        ids = out["label"]
        pad = ids == 0  # the blocky sample has no void: void is padding, and the image is pad_value there
        assert (out["image"][:, pad] == pad_value).all()
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


def _hue(rgb):
    """The hue of uint8 RGB pixels [3, ...] as a fraction of the circle, in [-0.5, 0.5) (HSV's formula)."""
    r, g, b = rgb.double() / 255
    high, low = torch.maximum(torch.maximum(r, g), b), torch.minimum(torch.minimum(r, g), b)
    span = (high - low).clamp_min(1e-12)
    hue = torch.where(high == r, (g - b) / span, torch.where(high == g, 2 + (b - r) / span, 4 + (r - g) / span))
    return torch.remainder(hue / 6 + 0.5, 1.0) - 0.5


def test_eomt_colour_jitter_moves_hue_and_brightness_within_the_official_ranges():
    """EoMT's jitter (official datasets/transforms.py): brightness multiplies by 1 +- 32/255 (a black image stays
    black, where SSD's adds up to 32), hue moves by at most 18/360 of the circle (SSD's 18/180), and neither
    colours a grey image."""
    black = {"image": torch.zeros(3, 8, 8, dtype=torch.uint8), "label": torch.zeros(8, 8, dtype=torch.long)}
    grey = {**black, "image": torch.full((3, 8, 8), 200, dtype=torch.uint8)}
    jitter = ColorJitterTorchvision()
    values = set()
    for seed in range(40):
        assert not jitter(black, torch.Generator().manual_seed(seed))["image"].any()
        out = jitter(grey, torch.Generator().manual_seed(seed))["image"]
        assert (out == out[0]).all()  # still grey
        values.update(out.unique().tolist())
    # A uniform grey's contrast, saturation and hue leave it; brightness scales 200 by 1 +- 32/255, rounding down.
    assert min(values) >= int(200 * (1 - 32 / 255)) and max(values) <= 200 * (1 + 32 / 255)
    assert min(values) < 190 and max(values) > 210  # the range is used
    # Hue alone (the other factors fixed at 1): pure red's hue follows the shift to within a rounding of one
    # step of 255 in one channel (1 / (6 * 255) of the circle).
    hue_only = ColorJitterTorchvision(brightness=0.0, contrast=0.0, saturation=0.0)
    red = {**black, "image": torch.tensor([255, 0, 0], dtype=torch.uint8)[:, None, None].expand(3, 8, 8).clone()}
    shifts = [float(_hue(hue_only(red, torch.Generator().manual_seed(s))["image"][:, 0, 0])) for s in range(200)]
    assert max(abs(x) for x in shifts) <= 18 / 360 + 1 / (6 * 255)
    assert min(shifts) < -0.04 and max(shifts) > 0.04


def test_until_targets_draws_again_only_when_every_target_was_cropped_out():
    """A segment in one corner of an otherwise void image: 8 x 8 crops miss it most of the time; drawn again
    until one holds it (EoMT's transform), and drawn once when the input has nothing to keep."""
    label = torch.zeros(40, 40, dtype=torch.long)
    label[:12, :12] = 1
    sample = {
        "image": torch.zeros(3, 40, 40, dtype=torch.uint8), "label": label, "kind": "panoptic", "file": "x",
        "segments": {1: D.Annotation(0, False)},
    }  # fmt: skip
    calls = []

    def crop(s, g):
        calls.append(1)
        return RandomCrop((8, 8))(s, g)

    once = [D.has_targets(crop(sample, torch.Generator().manual_seed(seed))) for seed in range(50)]
    assert not all(once)  # a crop alone loses the segment
    retried = UntilTargets(crop, tries=100)
    assert all(D.has_targets(retried(sample, torch.Generator().manual_seed(seed))) for seed in range(50))
    calls.clear()
    nothing = {**sample, "label": torch.zeros_like(label)}
    assert not D.has_targets(retried(nothing, torch.Generator().manual_seed(0))) and len(calls) == 1


def test_the_data_config_picks_each_padding():
    """``data.augmentation`` builds the pipeline whose padding the tests above check: grey for ``lsj``, black for
    ``scale_jitter`` (what EoMT's recipes set), each with the config's ignore value for semantic labels."""
    sample = blocky_sample()
    for augmentation, pad_value in (("lsj", 128), ("scale_jitter", 0)):
        cfg = DataConfig(augmentation=augmentation, crop_size=(64, 64), min_scale=0.3, max_scale=0.5, ignore_value=7)
        out = train_transform(cfg)(sample, torch.Generator().manual_seed(0))
        pad = out["label"] == 7  # scaled to at most half the crop: the rest is padding
        assert pad.float().mean() > 0.5 and (out["image"][:, pad] == pad_value).all(), augmentation
