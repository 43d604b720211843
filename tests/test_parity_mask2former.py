"""Equal weights, equal outputs: transformers' Mask2Former (a test oracle only) against this package, for a
Swin and a ResNet backbone, in float32 and float64, every prediction (final and auxiliary), and the loss."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch

from maskformer import MaskFormer, SetCriterion
from maskformer.model.prediction import Prediction
from tests.helpers import blob_targets, hf_to_official

# Odd sizes, none a multiple of 32. transformers' Swin shrinks a window to a feature map no larger than it
# and drops the shift there, where the official Swin pads (peers.md); these sizes keep every map larger.
SIZES = [(97, 131), (75, 200)]


def build_hf(backbone: str):
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, ResNetConfig, SwinConfig

    stages = ["stage1", "stage2", "stage3", "stage4"]
    if backbone == "swin":
        bb = SwinConfig(embed_dim=32, depths=[2, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=2, out_features=stages,
                        drop_path_rate=0.0)  # fmt: skip
    else:  # depths and block type no standard ResNet has
        bb = ResNetConfig(embedding_size=64, hidden_sizes=[16, 32, 64, 128], depths=[2, 1, 2, 1], layer_type="basic",
                          out_features=stages)  # fmt: skip
    config = Mask2FormerConfig(
        backbone_config=bb, num_labels=7, num_queries=12, feature_size=64, mask_feature_size=64, hidden_dim=64,
        num_attention_heads=4, encoder_layers=2, encoder_feedforward_dim=96, decoder_layers=5, dim_feedforward=96,
        train_num_points=300, output_auxiliary_logits=True,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = Mask2FormerForUniversalSegmentation(config)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # Perturb everything: norms away from 1/0, sampling offsets and attention weights away from their
            # initial ring and zeros (offsets large enough to sample outside the maps).
            scale = 0.5 if "sampling_offsets" in name else 0.05
            p.add_(scale * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if "running_mean" in name:
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif "running_var" in name:
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def m2f_checkpoints(tmp_path_factory):
    out = {}
    for name in ("swin", "resnet"):
        hf = build_hf(name)
        folder = tmp_path_factory.mktemp(f"m2f_{name}")
        hf.save_pretrained(folder)
        out[name] = (folder, hf)
    return out


def _compare(ours: Prediction, ref, tolerance: float) -> float:
    preds = [*ours.aux, ours]
    refs = [*ref.auxiliary_logits, {"class_queries_logits": ref.class_queries_logits,
                                    "masks_queries_logits": ref.masks_queries_logits}]  # fmt: skip
    assert len(preds) == len(refs) == 5  # the raw queries' prediction and four layers'
    worst = 0.0
    for mine, theirs in zip(preds, refs):
        assert mine.masks.shape == theirs["masks_queries_logits"].shape
        worst = max(
            worst,
            (mine.logits - theirs["class_queries_logits"]).abs().max().item(),
            (mine.masks - theirs["masks_queries_logits"]).abs().max().item(),
        )
    assert worst <= tolerance, worst
    return worst


@pytest.mark.parametrize("backbone", ["swin", "resnet"])
def test_equal_outputs_float32_and_float64(m2f_checkpoints, backbone):
    folder, hf = m2f_checkpoints[backbone]
    model = MaskFormer.from_pretrained(folder, strict=True).eval()
    assert model.config.family == "mask2former"
    # transformers' Swin carries the classifier's final LayerNorm, which no output uses; frozen BatchNorm keeps
    # its scale and shift as buffers (detectron2's FrozenBatchNorm2d), transformers' as parameters.
    unused = sum(p.numel() for n, p in hf.named_parameters() if ".swin.layernorm." in n)
    frozen = sum(
        b.numel() for n, b in model.named_buffers() if n.startswith("backbone.") and n.endswith(("weight", "bias"))
    )
    assert model.num_parameters + frozen == sum(p.numel() for p in hf.parameters()) - unused
    gen = torch.Generator().manual_seed(2)
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w, generator=gen)
        with torch.no_grad():
            _compare(model(x, with_aux=True), hf(pixel_values=x), 1e-4)
    model64, hf64 = model.double(), hf.double()
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            _compare(model64(x, with_aux=True), hf64(pixel_values=x), 1e-6)
    hf.float()


@pytest.mark.parametrize("backbone", ["swin", "resnet"])
def test_equal_loss_under_the_same_sampled_points(m2f_checkpoints, backbone):
    """transformers draws its points in the official order (per image for matching, then oversampled and
    uniform points per matched mask, final prediction first); so does this package: one seed, equal points."""
    folder, hf = m2f_checkpoints[backbone]
    model = MaskFormer.from_pretrained(folder, strict=True).eval()
    criterion = SetCriterion.from_config(model.config)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 96, 128, generator=gen)
    targets = blob_targets(gen, (3, 2), 7, (96, 128))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(4)
        ref = hf(pixel_values=x, mask_labels=[t["masks"] for t in targets], class_labels=[t["labels"] for t in targets])
        torch.manual_seed(4)
        losses = criterion(model(x, with_aux=True), targets)
    assert len(losses) == 3 * 5
    total = sum(losses.values()).item()
    assert abs(total - ref.loss.item()) <= 1e-5 * abs(total), (total, ref.loss.item())


def test_official_checkpoint_equals_transformers(m2f_checkpoints, tmp_path):
    _, hf = m2f_checkpoints["swin"]
    state = hf_to_official(hf.state_dict())
    state["criterion.empty_weight"] = np.ones(8, dtype=np.float32)
    path = tmp_path / "model_final_test.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "test"}, f)
    model = MaskFormer.from_pretrained(path, strict=True).eval()
    cfg = model.config
    assert (cfg.family, cfg.num_classes, cfg.transformer.num_queries, cfg.transformer.num_layers) == (
        "mask2former",
        7,
        12,
        4,
    )
    # Head counts are not in the weights: the papers' 8 are assumed; this model has 4.
    model = MaskFormer.from_pretrained(path, config=_with_heads(cfg, 4), strict=True).eval()
    x = torch.randn(2, 3, 97, 131, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        _compare(model(x, with_aux=True), hf(pixel_values=x), 1e-4)


def _with_heads(config, heads: int):
    config = copy.deepcopy(config)
    config.pixel_decoder.encoder_heads = heads
    config.transformer.num_heads = heads
    config.pixel_decoder.encoder_points = 4
    return config


def _count(model) -> int:
    """Parameters, counting frozen BatchNorm's scale and shift (buffers here, parameters in transformers)."""
    frozen = sum(
        b.numel() for n, b in model.named_buffers() if n.startswith("backbone.") and n.endswith(("weight", "bias"))
    )
    return model.num_parameters + frozen


@pytest.mark.parametrize("name", ["m2f_r50_coco", "m2f_swin_t_coco"])
def test_preset_parameter_count_equals_transformers(name):
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, ResNetConfig, SwinConfig

    from maskformer import preset

    stages = ["stage1", "stage2", "stage3", "stage4"]
    if "swin" in name:
        bb = SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7, out_features=stages)
    else:
        bb = ResNetConfig(out_features=stages)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        hf = Mask2FormerForUniversalSegmentation(Mask2FormerConfig(backbone_config=bb, num_labels=133))
        ours = MaskFormer(preset(name))
    unused = sum(p.numel() for n, p in hf.named_parameters() if ".swin.layernorm." in n)
    assert _count(ours) == sum(p.numel() for p in hf.parameters()) - unused


# Mask2Former's Table 1 (COCO panoptic), millions of parameters.
PAPER_PARAMETERS = {"r50": 44, "r101": 63, "swin_t": 47, "swin_s": 69, "swin_b": 107, "swin_l": 216}


@pytest.mark.parametrize("backbone", PAPER_PARAMETERS)
def test_preset_parameter_counts_round_to_the_paper(backbone):
    from maskformer import preset

    with torch.device("meta"):
        model = MaskFormer(preset(f"m2f_{backbone}_coco"))
    assert round(_count(model) / 1e6) == PAPER_PARAMETERS[backbone]
