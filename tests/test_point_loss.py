"""Mask2Former's point-sampled mask loss: unbiased against the full-resolution loss, gradients flow."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskformer.model.matcher import point_sample
from maskformer.model.prediction import Prediction
from tests.helpers import make_criterion, make_matcher


def _toy(gen):
    """Predictions constant on 4 x 4 blocks of a 16 x 16 map; targets the same blocks at 64 x 64."""
    logits = torch.randn(1, 3, 5, generator=gen)
    blocks = 3 * torch.randn(1, 3, 4, 4, generator=gen)
    pred = blocks.repeat_interleave(4, 2).repeat_interleave(4, 3)
    target = (torch.rand(2, 4, 4, generator=gen) > 0.5).float()
    masks = target.repeat_interleave(16, 1).repeat_interleave(16, 2)
    return Prediction(logits, pred), [{"labels": torch.tensor([0, 2]), "masks": masks}]


def test_point_sample_reads_pixel_centres():
    image = torch.arange(12.0).view(1, 1, 3, 4)
    centres = torch.tensor([[[(0.5) / 4, (0.5) / 3], [(3.5) / 4, (2.5) / 3]]])
    assert torch.allclose(point_sample(image, centres), torch.tensor([[[0.0, 11.0]]]), atol=1e-5)
    # At the centres of a finer grid, bilinear sampling equals interpolate's upsampling, borders included.
    ys, xs = torch.meshgrid((torch.arange(8) + 0.5) / 8, (torch.arange(8) + 0.5) / 8, indexing="ij")
    up = F.interpolate(image[:, :, :, :3], size=(8, 8), mode="bilinear", align_corners=False)
    dense = point_sample(image[:, :, :, :3], torch.stack([xs, ys], -1).view(1, -1, 2)).view(1, 1, 8, 8)
    assert torch.allclose(dense, up, atol=1e-5)


def test_uniform_points_equal_the_full_loss_in_expectation():
    outputs, targets = _toy(torch.Generator().manual_seed(0))
    full = make_criterion(4, deep_supervision=False)(outputs, targets)
    # Uniform points only (importance ratio 0): the point loss is an unbiased estimate of the pixel mean.
    torch.manual_seed(0)
    sampled = make_criterion(4, deep_supervision=False, num_points=4096, importance_sample_ratio=0.0)
    draws = [sampled(outputs, targets) for _ in range(30)]
    for key in ("loss_mask", "loss_dice"):
        mean = torch.stack([d[key] for d in draws]).mean()
        assert torch.allclose(mean, full[key], rtol=0.02), (key, mean, full[key])
    assert all(torch.equal(d["loss_ce"], full["loss_ce"]) for d in draws)  # same matching


def test_importance_sampling_gradients_flow_and_are_finite():
    outputs, targets = _toy(torch.Generator().manual_seed(1))
    outputs = Prediction(outputs.logits.clone().requires_grad_(True), outputs.masks.clone().requires_grad_(True))
    for valid in (None, torch.rand(64, 64) > 0.3):
        if valid is not None:
            targets[0]["valid"] = valid
        criterion = make_criterion(4, num_points=112, exclude_invalid_pixels=valid is not None)
        losses = criterion(outputs, targets)
        total = sum(losses.values())
        total.backward()
        assert torch.isfinite(total)
        grad = outputs.masks.grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
        outputs.masks.grad = None


def test_point_matching_agrees_with_full_matching_on_clear_cases():
    gen = torch.Generator().manual_seed(2)
    masks = (torch.rand(3, 8, 8, generator=gen) > 0.5).float()
    up = F.interpolate(masks[None], size=(32, 32), mode="nearest")[0]
    pred = (masks * 12 - 6)[torch.tensor([2, 0, 1])][None]  # query q predicts target perm[q]
    logits = torch.zeros(1, 3, 4)
    targets = [{"labels": torch.tensor([1, 1, 1]), "masks": up}]
    ((src, tgt),) = make_matcher(num_points=500)(logits, pred, targets)
    assert dict(zip(src.tolist(), tgt.tolist())) == {0: 2, 1: 0, 2: 1}
