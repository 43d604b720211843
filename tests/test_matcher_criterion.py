"""Hungarian matching and the set loss: batched = per-image, permutation invariance, empty targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from maskformer.model.prediction import Prediction
from tests.helpers import make_criterion, make_matcher, naive_cost

K = 6  # classes


def make_outputs(batch=3, queries=8, size=(12, 16), gen=None, aux_layers=0):
    gen = gen or torch.Generator().manual_seed(0)

    def one():
        return Prediction(
            torch.randn(batch, queries, K + 1, generator=gen), 3 * torch.randn(batch, queries, *size, generator=gen)
        )

    out = one()
    out.aux = [one() for _ in range(aux_layers)]
    return out


def make_targets(counts, size=(48, 64), gen=None):
    gen = gen or torch.Generator().manual_seed(1)
    targets = []
    for n in counts:
        masks = (torch.rand(n, size[0] // 8, size[1] // 8, generator=gen) > 0.5).float()
        masks = F.interpolate(masks[None], size=size, mode="nearest")[0] if n else torch.zeros(0, *size)
        targets.append({"labels": torch.randint(0, K, (n,), generator=gen), "masks": masks})
    return targets


def test_cost_matrix_equals_naive_pairwise_cost():
    out = make_outputs(batch=2)
    targets = make_targets([3, 2])
    matcher = make_matcher()
    from maskformer.model.matcher import pad_targets

    labels, masks, _ = pad_targets(targets, torch.device("cpu"))
    cost = matcher.cost_matrix(out.logits, out.masks, labels, masks)
    for b, t in enumerate(targets):
        ref = naive_cost(out.logits[b], out.masks[b], t["labels"], t["masks"])
        np.testing.assert_allclose(cost[b, :, : len(t["labels"])].numpy(), ref, atol=1e-5)


def test_batched_matching_equals_per_image_matching():
    out = make_outputs(batch=4)
    targets = make_targets([3, 0, 5, 1])
    matcher = make_matcher()
    batched = matcher(out.logits, out.masks, targets)
    for b, t in enumerate(targets):
        single = matcher(out.logits[b : b + 1], out.masks[b : b + 1], [t])[0]
        assert torch.equal(batched[b][0], single[0]) and torch.equal(batched[b][1], single[1])
        if len(t["labels"]):
            ref = naive_cost(out.logits[b], out.masks[b], t["labels"], t["masks"])
            rows, cols = linear_sum_assignment(ref)
            assert rows.tolist() == batched[b][0].tolist() and cols.tolist() == batched[b][1].tolist()
    assert len(batched[1][0]) == 0


def total(losses):
    return sum(losses.values())


def test_permuting_targets_leaves_loss_unchanged():
    out = make_outputs(batch=2, aux_layers=2)
    targets = make_targets([4, 3])
    criterion = make_criterion(K)
    base = criterion(out, targets)
    gen = torch.Generator().manual_seed(5)
    permuted = []
    for t in targets:
        perm = torch.randperm(len(t["labels"]), generator=gen)
        permuted.append({"labels": t["labels"][perm], "masks": t["masks"][perm]})
    again = criterion(out, permuted)
    for key in base:
        assert torch.allclose(base[key], again[key], atol=1e-6), key


def test_empty_targets_are_valid():
    out = make_outputs(batch=2, aux_layers=1)
    targets = make_targets([0, 0])
    criterion = make_criterion(K)
    losses = criterion(out, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"] == 0 and losses["loss_dice"] == 0
    # Every query must predict "no object".
    expected = F.cross_entropy(out.logits.transpose(1, 2), torch.full((2, 8), K))
    assert torch.allclose(losses["loss_ce"], expected)
    mixed = criterion(out, make_targets([0, 2]))
    assert mixed["loss_mask"] > 0


def test_deep_supervision_keys_and_weights():
    out = make_outputs(batch=2, aux_layers=5)
    targets = make_targets([2, 3])
    losses = make_criterion(K)(out, targets)
    expected = {"loss_ce", "loss_mask", "loss_dice"}
    expected |= {f"{k}_{i}" for k in ("loss_ce", "loss_mask", "loss_dice") for i in range(5)}
    assert set(losses) == expected
    off = make_criterion(K, deep_supervision=False)(out, targets)
    assert set(off) == {"loss_ce", "loss_mask", "loss_dice"}
    doubled = make_criterion(K, mask_weight=40.0, deep_supervision=False)(out, targets)
    assert torch.allclose(doubled["loss_mask"], 2 * off["loss_mask"])


def test_loss_matches_hand_computation_for_one_matched_pair():
    logits = torch.tensor([[[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]]])  # 1 image, 2 queries, K = 2
    masks = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    target_mask = torch.zeros(1, 8, 8)
    target_mask[0, :4, :4] = 1
    targets = [{"labels": torch.tensor([0]), "masks": target_mask}]
    criterion = make_criterion(2, deep_supervision=False)
    losses = criterion(Prediction(logits, masks), targets)
    (src,), _ = criterion.matcher(logits, masks, targets)[0]
    up = F.interpolate(masks[:, src : src + 1], size=(8, 8), mode="bilinear", align_corners=False).flatten()
    y = target_mask.flatten()
    p = up.sigmoid()
    ce = F.binary_cross_entropy_with_logits(up, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    focal = (ce * (1 - p_t) ** 2 * (0.25 * y + 0.75 * (1 - y))).mean()
    dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    target_classes = torch.full((1, 2), 2)
    target_classes[0, src] = 0
    ce_cls = F.cross_entropy(logits.transpose(1, 2), target_classes, weight=torch.tensor([1.0, 1.0, 0.1]))
    assert torch.allclose(losses["loss_mask"], 20 * focal, atol=1e-6)
    assert torch.allclose(losses["loss_dice"], dice, atol=1e-6)
    assert torch.allclose(losses["loss_ce"], ce_cls, atol=1e-6)


@pytest.mark.parametrize("exclude", [False, True])
def test_ignore_pixels_count_as_background_unless_excluded(exclude):
    out = make_outputs(batch=2)
    targets = make_targets([2, 3])
    for t in targets:
        valid = torch.ones(t["masks"].shape[-2:], dtype=torch.bool)
        valid[:, 40:] = False  # an "ignore" band
        t["valid"] = valid
    criterion = make_criterion(K, deep_supervision=False, exclude_invalid_pixels=exclude)
    base = criterion(out, targets)
    # Change the targets only where pixels are invalid: excluded pixels must not matter.
    changed = [{**t, "masks": torch.where(t["valid"], t["masks"], 1 - t["masks"])} for t in targets]
    again = criterion(out, changed)
    same = all(torch.allclose(base[k], again[k]) for k in base)
    assert same == exclude


def test_gradients_flow_to_all_predictions():
    out = make_outputs(batch=2, aux_layers=2)
    for d in [out, *out.aux]:
        d.logits.requires_grad_(True)
        d.masks.requires_grad_(True)
    total(make_criterion(K)(out, make_targets([2, 1]))).backward()
    for d in [out, *out.aux]:
        assert d.logits.grad.abs().sum() > 0 and d.masks.grad.abs().sum() > 0
