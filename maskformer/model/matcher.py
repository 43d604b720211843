"""Hungarian matching of predicted (class, mask) pairs to ground-truth segments (paper section 3.2)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from .config import LossConfig

Target = dict[str, Tensor]


def pad_targets(
    targets: Sequence[Target], device: torch.device, with_valid: bool = False
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Stack per-image targets, padding the segment count with empty masks and the masks to the largest
    size with zeros (bottom/right, like the image batch).

    Returns labels [B, T] (0 where padded), masks [B, T, H, W] float, and with ``with_valid`` the map of
    counted pixels [B, H, W] (a target's ``valid`` entry inside its image, False on batch padding).
    """
    b = len(targets)
    t = max((len(x["labels"]) for x in targets), default=0)
    h = max(x["masks"].shape[-2] for x in targets)
    w = max(x["masks"].shape[-1] for x in targets)
    labels = torch.zeros(b, t, dtype=torch.long, device=device)
    masks = torch.zeros(b, t, h, w, dtype=torch.float32, device=device)
    valid = torch.zeros(b, h, w, dtype=torch.bool, device=device) if with_valid else None
    for i, x in enumerate(targets):
        n = len(x["labels"])
        hi, wi = x["masks"].shape[-2:]
        labels[i, :n] = x["labels"].to(device)
        masks[i, :n, :hi, :wi] = x["masks"].to(device=device, dtype=torch.float32)
        if valid is not None:
            valid[i, :hi, :wi] = x["valid"].to(device) if "valid" in x else True
    return labels, masks, valid


def _pairwise_mean(pos: Tensor, neg: Tensor, targets: Tensor, weights: Tensor | None) -> Tensor:
    """Per (query, target) pair the mean over (weighted) points of a loss that is ``pos`` where the target
    is 1 and ``neg`` where it is 0: pos, neg [B, N, P], targets [B, T, P], weights [B, 1, P] or None."""
    if weights is not None:
        pos, neg = pos * weights, neg * weights
    cost = torch.bmm(pos, targets.transpose(1, 2)) + torch.bmm(neg, (1 - targets).transpose(1, 2))
    counted = weights.sum(-1, keepdim=True).clamp(min=1) if weights is not None else pos.shape[-1]
    return cost / counted


def check_mask_loss(mask_loss: str) -> str:
    """``mask_loss`` once known to be one of the mask losses (the matcher's cost and the criterion's loss)."""
    if mask_loss not in ("focal", "bce"):
        raise ValueError(f"mask_loss {mask_loss!r}: expected 'focal' or 'bce'")
    return mask_loss


def focal_cost(logits: Tensor, targets: Tensor, weights: Tensor | None, alpha: float, gamma: float) -> Tensor:
    """Pairwise sigmoid focal loss, averaged over (weighted) pixels.

    logits [B, N, P], targets [B, T, P], weights [B, 1, P] (1 = pixel counts; None = all count) -> [B, N, T].
    """
    prob = logits.sigmoid()
    pos = (
        alpha
        * (1 - prob) ** gamma
        * F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    )
    neg = (
        (1 - alpha)
        * prob**gamma
        * F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    )
    return _pairwise_mean(pos, neg, targets, weights)


def bce_cost(logits: Tensor, targets: Tensor, weights: Tensor | None) -> Tensor:
    """Pairwise sigmoid binary cross-entropy (Mask2Former's mask cost), averaged over (weighted) points.

    logits [B, N, P], targets [B, T, P], weights [B, 1, P] or None -> [B, N, T].
    """
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return _pairwise_mean(pos, neg, targets, weights)


def dice_cost(logits: Tensor, targets: Tensor, weights: Tensor | None) -> Tensor:
    """Pairwise dice loss 1 - (2 I + 1) / (S + 1): logits [B, N, P], targets [B, T, P] -> [B, N, T]."""
    prob = logits.sigmoid()
    if weights is not None:
        prob, targets = prob * weights, targets * weights
    numerator = 2 * torch.bmm(prob, targets.transpose(1, 2))
    denominator = prob.sum(-1)[:, :, None] + targets.sum(-1)[:, None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def point_sample(inputs: Tensor, coords: Tensor, mode: str = "bilinear", padding: str = "border") -> Tensor:
    """Values of ``inputs`` [B, C, H, W] at ``coords`` [B, P, 2] ((x, y) in [0, 1], 0 and 1 the outer
    edges of the map) -> [B, C, P]. Bilinear sampling here equals ``F.interpolate(align_corners=False)``
    at pixel centres. Within half a pixel of the edge, ``padding="border"`` clamps like interpolate;
    ``"zeros"`` blends towards 0 there, as Mask2Former's (detectron2's) point_sample does."""
    grid = (2 * coords - 1)[:, :, None, :].to(inputs.dtype)
    return F.grid_sample(inputs, grid, mode=mode, padding_mode=padding, align_corners=False)[..., 0]


class HungarianMatcher(nn.Module):
    """cost = cost_class * (-p(c)) + cost_mask * focal (MaskFormer) or sigmoid BCE (Mask2Former, ``mask_loss
    ="bce"``) + cost_dice * dice, on ground-truth masks downsampled (nearest) to the prediction size; all
    costs for the batch in a few batched matmuls, then scipy's linear_sum_assignment per image.

    With ``num_points`` > 0 the mask costs are computed on that many random points per image instead (the
    same points for every query and segment of an image), as Mask2Former does. Values come from
    :class:`~maskformer.model.config.LossConfig` (:meth:`from_config`).
    """

    def __init__(
        self,
        *,
        cost_class: float,
        cost_mask: float,
        cost_dice: float,
        mask_loss: str,
        focal_alpha: float,
        focal_gamma: float,
        num_points: int,
        point_padding: str,
    ):
        super().__init__()
        self.point_padding = point_padding
        self.mask_loss = check_mask_loss(mask_loss)
        self.num_points = num_points
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @classmethod
    def from_config(cls, loss: LossConfig) -> HungarianMatcher:
        return cls(
            cost_class=loss.cost_class, cost_mask=loss.cost_mask, cost_dice=loss.cost_dice, mask_loss=loss.mask_loss,
            focal_alpha=loss.focal_alpha, focal_gamma=loss.focal_gamma, num_points=loss.num_points,
            point_padding=loss.point_padding,
        )  # fmt: skip

    @torch.no_grad()
    def cost_matrix(
        self, pred_logits: Tensor, pred_masks: Tensor, labels: Tensor, masks: Tensor, valid: Tensor | None = None
    ) -> Tensor:
        """pred_logits [B, N, K+1], pred_masks [B, N, h, w], padded targets from :func:`pad_targets`
        -> costs [B, N, T] (columns of padded segments are meaningless)."""
        # float32 costs under mixed precision too (see SetCriterion.forward).
        with torch.autocast(pred_masks.device.type, enabled=False):
            b, n = pred_logits.shape[:2]
            size = pred_masks.shape[-2:]
            prob = pred_logits.float().softmax(-1)
            cost_class = -prob.gather(2, labels[:, None, :].expand(b, n, labels.shape[1]))
            weights = None
            if self.num_points:
                coords = torch.rand(b, self.num_points, 2, device=pred_masks.device)
                logits = point_sample(pred_masks.float(), coords, padding=self.point_padding)
                t = (
                    point_sample(masks, coords, padding=self.point_padding)
                    if masks.shape[1]
                    else masks.new_zeros(b, 0, self.num_points)
                )
                if valid is not None:
                    weights = point_sample(valid[:, None].float(), coords, mode="nearest")
            else:
                t = F.interpolate(masks, size=size, mode="nearest") if masks.shape[1] else masks.new_zeros(b, 0, *size)
                if valid is not None:
                    weights = F.interpolate(valid[:, None].float(), size=size, mode="nearest").flatten(2)
                logits, t = pred_masks.float().flatten(2), t.flatten(2)
            if self.mask_loss == "bce":
                mask_cost = bce_cost(logits, t, weights)
            else:
                mask_cost = focal_cost(logits, t, weights, self.focal_alpha, self.focal_gamma)
            dice = dice_cost(logits, t, weights)
            cost = self.cost_class * cost_class + self.cost_mask * mask_cost + self.cost_dice * dice
        # Non-finite costs (a diverged model) are matched last instead of crashing scipy.
        big = torch.finfo(cost.dtype).max
        return torch.nan_to_num(cost, nan=big, posinf=big, neginf=big)

    @torch.no_grad()
    def match_padded(
        self,
        pred_logits: Tensor,
        pred_masks: Tensor,
        labels: Tensor,
        masks: Tensor,
        counts: Sequence[int],
        valid: Tensor | None = None,
    ) -> list[tuple[Tensor, Tensor]]:
        """Match against padded targets; ``counts`` gives each image's real number of segments."""
        cost = self.cost_matrix(pred_logits, pred_masks, labels, masks, valid).cpu().numpy()
        indices = []
        for c, num in zip(cost, counts):
            rows, cols = linear_sum_assignment(c[:, :num]) if num else (np.zeros(0), np.zeros(0))
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices

    def forward(
        self, pred_logits: Tensor, pred_masks: Tensor, targets: Sequence[Target], use_valid: bool = False
    ) -> list[tuple[Tensor, Tensor]]:
        """Per image (query indices, target indices), each int64 [min(N, T_i)], sorted by query index.

        ``targets``: dicts with ``labels`` [T_i] and ``masks`` [T_i, H_i, W_i]; ``use_valid`` leaves ignore
        and padding pixels out of the mask costs.
        """
        labels, masks, valid = pad_targets(targets, pred_logits.device, with_valid=use_valid)
        counts = [len(t["labels"]) for t in targets]
        return self.match_padded(pred_logits, pred_masks, labels, masks, counts, valid)
