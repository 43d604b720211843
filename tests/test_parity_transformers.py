"""Equal weights, equal outputs: transformers' MaskFormer (a test oracle only) against this package."""

from __future__ import annotations

import warnings

import pytest
import torch

from maskformer import MaskFormer, SetCriterion

SIZES = [(64, 64), (97, 131), (75, 200)]  # square, and non-square sizes that are not multiples of 32
TOLERANCE = 1e-4


def load(folder) -> MaskFormer:
    model = MaskFormer.from_pretrained(folder, strict=True)
    return model.eval()


@pytest.mark.parametrize("backbone", ["swin", "r50"])
def test_equal_outputs(hf_checkpoints, backbone):
    folder, hf = hf_checkpoints[backbone]
    model = load(folder)
    assert model.load_report.ok, str(model.load_report)
    gen = torch.Generator().manual_seed(1)
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w, generator=gen)
        with torch.no_grad():
            ref = hf(pixel_values=x)
            out = model(x)
        assert out.logits.shape == ref.class_queries_logits.shape == (2, 100, 151)
        assert out.masks.shape == ref.masks_queries_logits.shape
        assert out.masks.shape[-2:] == (-(-h // 4), -(-w // 4))
        logit_diff = (out.logits - ref.class_queries_logits).abs().max().item()
        mask_diff = (out.masks - ref.masks_queries_logits).abs().max().item()
        assert logit_diff <= TOLERANCE, (backbone, h, w, logit_diff)
        assert mask_diff <= TOLERANCE, (backbone, h, w, mask_diff)


def random_targets(batch: int, size: tuple[int, int], num_classes: int, gen: torch.Generator):
    """Per image 1..5 random blob masks with random classes."""
    targets = []
    for _ in range(batch):
        n = int(torch.randint(1, 6, (1,), generator=gen))
        noise = torch.nn.functional.interpolate(torch.rand(1, n, size[0] // 8, size[1] // 8, generator=gen), size=size)
        masks = (noise[0] > 0.6).float()
        labels = torch.randint(0, num_classes, (n,), generator=gen)
        targets.append({"labels": labels, "masks": masks})
    return targets


@pytest.mark.parametrize("backbone", ["swin", "r50"])
def test_equal_loss(hf_checkpoints, backbone):
    folder, hf = hf_checkpoints[backbone]
    model = load(folder)
    model.config.loss.deep_supervision = False
    criterion = SetCriterion.from_config(model.config)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 96, 128, generator=gen)
    targets = random_targets(2, (96, 128), 150, gen)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = hf(
            pixel_values=x,
            mask_labels=[t["masks"] for t in targets],
            class_labels=[t["labels"] for t in targets],
        )
        losses = criterion(model(x), targets)
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"}
    total = sum(losses.values())
    assert abs(total.item() - ref.loss.item()) <= TOLERANCE, (total.item(), ref.loss.item())
