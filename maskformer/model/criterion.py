"""The set loss of both families: classification cross-entropy + a binary mask loss (MaskFormer's focal,
Mask2Former's sigmoid cross-entropy) and dice on matched pairs, with deep supervision on every earlier
prediction (MaskFormer paper sections 3.2 and 4.1; Mask2Former section 3.2.2 for the point sampling)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig
from .distributed import world_size
from .matcher import HungarianMatcher, Target, check_mask_loss, pad_targets, point_sample
from .prediction import Prediction


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, weights: Tensor | None, alpha: float, gamma: float) -> Tensor:
    """Per-mask focal loss averaged over counted pixels: logits, targets, weights [M, P] -> [M].
    ``weights`` None counts every pixel (the original's behaviour, and no extra full-size tensor)."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    if weights is None:
        return loss.mean(1)
    return (loss * weights).sum(1) / weights.sum(1).clamp(min=1)


def sigmoid_ce_loss(logits: Tensor, targets: Tensor, weights: Tensor | None) -> Tensor:
    """Per-mask sigmoid binary cross-entropy averaged over counted points: logits, targets, weights [M, P] -> [M]."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if weights is None:
        return loss.mean(1)
    return (loss * weights).sum(1) / weights.sum(1).clamp(min=1)


def dice_loss(logits: Tensor, targets: Tensor, weights: Tensor | None) -> Tensor:
    """Per-mask dice loss 1 - (2 I + 1) / (S + 1): logits, targets, weights [M, P] -> [M]."""
    prob = logits.sigmoid()
    if weights is not None:
        prob, targets = prob * weights, targets * weights
    numerator = 2 * (prob * targets).sum(1)
    denominator = prob.sum(1) + targets.sum(1)
    return 1 - (numerator + 1) / (denominator + 1)


def num_masks_across_processes(targets: Sequence[Target], device: torch.device) -> Tensor:
    """Number of ground-truth masks, averaged over processes under torch.distributed, at least 1."""
    num = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
    world = world_size()
    if world > 1:
        dist.all_reduce(num)
    return (num / world).clamp(min=1)


class SetCriterion(nn.Module):
    """Weighted losses ``loss_ce``, ``loss_mask`` (focal, or sigmoid cross-entropy with ``mask_loss="bce"``),
    ``loss_dice``, and the same with suffix ``_i`` for the i-th earlier prediction (``outputs.aux[i]``) when
    deep supervision is on; the training loss is their sum. Values come from
    :class:`~maskformer.model.config.LossConfig` (:meth:`from_config`).

    Targets are dicts with ``labels`` [T] (int64, 0..K-1) and ``masks`` [T, H, W] at the (padded) input
    resolution, optionally ``valid`` [H, W] bool (False on ignore pixels). By default, like the original,
    ignore and batch-padding pixels count as background; ``exclude_invalid_pixels`` drops them from the
    mask losses and the matching cost.

    ``num_points`` > 0 selects Mask2Former's point-sampled mask losses: per matched mask, ``num_points``
    points, of which ``importance_sample_ratio`` are the most uncertain (logit nearest 0) among
    ``oversample_ratio`` x as many random points and the rest uniformly random. Memory then no longer grows
    with the image size.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        *,
        class_weight: float,
        mask_weight: float,
        dice_weight: float,
        no_object_weight: float,
        mask_loss: str,
        focal_alpha: float,
        focal_gamma: float,
        deep_supervision: bool,
        exclude_invalid_pixels: bool,
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
        point_padding: str,
        final_last: bool = False,
    ):
        super().__init__()
        self.mask_loss = check_mask_loss(mask_loss)
        self.num_points = num_points
        self.point_padding = point_padding
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.deep_supervision = deep_supervision
        self.final_last = final_last
        self.exclude_invalid_pixels = exclude_invalid_pixels
        class_weights = torch.ones(num_classes + 1)
        class_weights[-1] = no_object_weight
        self.register_buffer("class_weights", class_weights, persistent=False)

    @classmethod
    def from_config(cls, config: ModelConfig) -> SetCriterion:
        """The criterion (and its matcher) that a model config's ``loss`` describes."""
        loss = config.loss
        return cls(
            config.num_classes,
            HungarianMatcher.from_config(loss),
            class_weight=loss.class_weight,
            mask_weight=loss.mask_weight,
            dice_weight=loss.dice_weight,
            no_object_weight=loss.no_object_weight,
            mask_loss=loss.mask_loss,
            focal_alpha=loss.focal_alpha,
            focal_gamma=loss.focal_gamma,
            deep_supervision=loss.deep_supervision,
            exclude_invalid_pixels=loss.exclude_invalid_pixels,
            num_points=loss.num_points,
            oversample_ratio=loss.oversample_ratio,
            importance_sample_ratio=loss.importance_sample_ratio,
            point_padding=loss.point_padding,
            final_last=loss.final_last,
        )

    def forward(self, outputs: Prediction, targets: Sequence[Target]) -> dict[str, Tensor]:
        device = outputs.logits.device
        num_masks = num_masks_across_processes(targets, device)
        labels, masks, valid = pad_targets(targets, device, with_valid=self.exclude_invalid_pixels)
        counts = [len(t["labels"]) for t in targets]
        # Matching costs and losses in float32 even under mixed precision: bfloat16 products would round
        # the costs (and so change the assignment) and the dice sums.
        with torch.autocast(device.type, enabled=False):
            losses = {} if self.final_last else self._single(outputs, counts, labels, masks, valid, num_masks)
            if self.deep_supervision:
                for i, aux in enumerate(outputs.aux):
                    for key, value in self._single(aux, counts, labels, masks, valid, num_masks).items():
                        losses[f"{key}_{i}"] = value
            if self.final_last:
                losses.update(self._single(outputs, counts, labels, masks, valid, num_masks))
        return losses

    def _single(
        self,
        outputs: Prediction,
        counts: list[int],
        labels: Tensor,
        masks: Tensor,
        valid: Tensor | None,
        num_masks: Tensor,
    ) -> dict[str, Tensor]:
        pred_logits, pred_masks = outputs.logits, outputs.masks
        indices = self.matcher.match_padded(pred_logits, pred_masks, labels, masks, counts, valid)
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(labels.device)
        src_idx = torch.cat([src for src, _ in indices]).to(labels.device)
        tgt_idx = torch.cat([tgt for _, tgt in indices]).to(labels.device)

        target_classes = torch.full(pred_logits.shape[:2], self.num_classes, dtype=torch.long, device=labels.device)
        target_classes[batch_idx, src_idx] = labels[batch_idx, tgt_idx]
        loss_ce = F.cross_entropy(pred_logits.float().transpose(1, 2), target_classes, self.class_weights)

        matched = pred_masks[batch_idx, src_idx].float()
        target = masks[batch_idx, tgt_idx]
        if self.num_points:
            matched, target, weights = self._sample_points(
                matched, target, valid[batch_idx] if valid is not None else None
            )
        else:
            # Predictions are upsampled to the padded target size, not targets downsampled.
            matched = F.interpolate(matched[:, None], size=target.shape[-2:], mode="bilinear", align_corners=False)
            matched, target = matched.flatten(1), target.flatten(1)
            weights = valid[batch_idx].flatten(1).float() if valid is not None else None
        if self.mask_loss == "bce":
            loss_mask = sigmoid_ce_loss(matched, target, weights).sum()
        else:
            loss_mask = sigmoid_focal_loss(matched, target, weights, self.focal_alpha, self.focal_gamma).sum()
        loss_dice = dice_loss(matched, target, weights).sum()
        return {
            "loss_ce": self.weights["loss_ce"] * loss_ce,
            "loss_mask": self.weights["loss_mask"] * loss_mask / num_masks,
            "loss_dice": self.weights["loss_dice"] * loss_dice / num_masks,
        }

    def _sample_points(self, logits: Tensor, target: Tensor, valid: Tensor | None) -> tuple[Tensor, ...]:
        """Matched mask logits [M, h, w] and targets [M, H, W] -> values at importance-sampled points
        [M, P] (and validity weights [M, P] or None)."""
        m, p = logits.shape[0], self.num_points
        with torch.no_grad():
            candidates = torch.rand(m, int(p * self.oversample_ratio), 2, device=logits.device)
            uncertainty = -point_sample(logits[:, None], candidates, padding=self.point_padding).abs()[:, 0]
            k = int(p * self.importance_sample_ratio)
            top = uncertainty.topk(k, dim=1).indices
            coords = torch.cat(
                [
                    candidates.gather(1, top[..., None].expand(-1, -1, 2)),
                    torch.rand(m, p - k, 2, device=logits.device),
                ],
                dim=1,
            )
            target = point_sample(target[:, None], coords, padding=self.point_padding)[:, 0]
            weights = point_sample(valid[:, None].float(), coords, mode="nearest")[:, 0] if valid is not None else None
        return point_sample(logits[:, None], coords, padding=self.point_padding)[:, 0], target, weights
