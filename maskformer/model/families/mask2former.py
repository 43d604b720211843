"""Mask2Former (CVPR 2022): MaskFormer's meta-architecture with a multi-scale deformable-attention pixel
decoder, a decoder whose queries attend only inside their previous masks, and point-sampled mask losses
(mask2former-facts.md).

Presets: ``m2f_<backbone>_<dataset>`` for backbones r50, r101, swin_t, swin_s, swin_b, swin_b21k (ImageNet-22k
weights), swin_l and datasets ade (ADE20K-150), ade_panoptic (150), ade_instance (100), coco (COCO panoptic, 133),
coco_instance (80), cityscapes (19), cityscapes_panoptic (19), cityscapes_instance (8), vistas (Mapillary Vistas,
65) and vistas_panoptic (65), with the official configs' queries (200 for Swin-L on panoptic and instance
segmentation), test sizes and thresholds (facebookresearch/Mask2Former ``configs/``).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ..backbone_presets import RESNETS, swin
from ..config import BackboneConfig, InferenceConfig, LossConfig, ModelConfig, PixelDecoderConfig, TransformerConfig
from ..maskformer import MaskFormer
from ..weights import detectron2_format, transformers_format
from ..weights.detectron2_format import HEAD, count_indices
from ..weights.renaming import Rule
from .family import (
    Checkpoint,
    DemoRecipe,
    Family,
    OfficialFormat,
    Recipe,
    TransformersFormat,
    hub_checkpoint,
    zoo_checkpoints,
)


@dataclass
class Mask2FormerConfig(ModelConfig):
    """A whole Mask2Former model: the MSDeformAttn pixel decoder, the masked-attention decoder (9 layers,
    dropout 0) and the point-sampled loss (class 2, BCE 5, dice 5 on 12544 points); mask2former-facts.md."""

    family: str = field(default="mask2former", init=False)
    loss: LossConfig = field(
        default_factory=lambda: LossConfig(
            class_weight=2.0, mask_weight=5.0, dice_weight=5.0, cost_class=2.0, cost_mask=5.0, cost_dice=5.0,
            mask_loss="bce", num_points=12544, point_padding="zeros",
        )
    )  # fmt: skip
    pixel_decoder: PixelDecoderConfig = field(
        default_factory=lambda: PixelDecoderConfig(type="msdeformattn", encoder_ffn_dim=1024, encoder_dropout=0.0)
    )
    transformer: TransformerConfig = field(
        default_factory=lambda: TransformerConfig(type="masked_attention", num_layers=9, dropout=0.0)
    )


# Mask2Former's backbones: (Swin size or ResNet timm weights, Swin weights override).
_M2F_BACKBONES: dict[str, Callable[[], BackboneConfig]] = {
    "r50": RESNETS["r50"],
    "r101": RESNETS["r101"],
    "swin_t": lambda: swin("t"),
    "swin_s": lambda: swin("s"),
    "swin_b": lambda: dataclasses.replace(swin("b"), name="swin_base_patch4_window12_384.ms_in1k"),
    "swin_b21k": lambda: swin("b"),
    "swin_l": lambda: swin("l"),
}
# dataset: (classes, test shortest edge, test longest side, object mask threshold, Swin-L queries), from the
# configs/<dataset>/<task>-segmentation/Base-*.yaml and swin/*large*.yaml files.
_M2F_DATASETS = {
    "ade": (150, 512, 2048, 0.8, 100),
    "ade_panoptic": (150, 640, 2560, 0.8, 200),
    "ade_instance": (100, 640, 2560, 0.8, 200),
    "coco": (133, 800, 1333, 0.8, 200),
    "coco_instance": (80, 800, 1333, 0.8, 200),
    "cityscapes": (19, 1024, 2048, 0.8, 100),
    "cityscapes_panoptic": (19, 1024, 2048, 0.8, 200),
    "cityscapes_instance": (8, 1024, 2048, 0.8, 200),
    "vistas": (65, 2048, 2048, 0.0, 100),
    "vistas_panoptic": (65, 2048, 2048, 0.0, 200),
}


def _mask2former(backbone: str, dataset: str) -> Mask2FormerConfig:
    classes, short, long, threshold, swin_l_queries = _M2F_DATASETS[dataset]
    config = Mask2FormerConfig(num_classes=classes, backbone=_M2F_BACKBONES[backbone]())
    if dataset == "ade" and backbone in ("swin_b", "swin_b21k", "swin_l"):
        short, long = 640, 2560  # the "_res640" configs
    config.inference = InferenceConfig(
        object_mask_threshold=threshold, overlap_threshold=0.8, test_shortest_edge=short, test_max_size=long
    )
    if backbone == "swin_l":
        config.transformer.num_queries = swin_l_queries
    if dataset.startswith("cityscapes") and config.backbone.type == "timm":
        config.backbone.norm = "syncbn"  # the Cityscapes Base configs' RESNETS.NORM
    return config


PRESETS: dict[str, Callable[[], Mask2FormerConfig]] = {
    f"m2f_{backbone}_{dataset}": functools.partial(_mask2former, backbone, dataset)
    for backbone in _M2F_BACKBONES
    for dataset in _M2F_DATASETS
}
# The dataset each preset is configured for (a key of maskformer.data.catalog.DATASETS).
PRESET_DATASETS: dict[str, str] = {f"m2f_{b}_{dataset}": dataset for b in _M2F_BACKBONES for dataset in _M2F_DATASETS}


def _transformers_config(data: Mapping[str, Any], source: str) -> Mask2FormerConfig:
    """The rest of a transformers Mask2Former ``config.json`` (its pixel decoder, decoder and loss)."""
    common = transformers_format.read_common(data, source)
    if data.get("pre_norm", False):
        raise ValueError(f"{source}: pre-norm decoder layers are not Mask2Former's (pre_norm is true)")
    if data.get("common_stride", 4) != 4 or tuple(data.get("feature_strides", (4, 8, 16, 32))) != (4, 8, 16, 32):
        raise ValueError(f"{source}: only mask features at stride 4 from features at strides 4-32 are supported")
    heads = data.get("num_attention_heads", 8)
    base = Mask2FormerConfig()
    return Mask2FormerConfig(
        num_classes=common.num_classes,
        backbone=common.backbone,
        pixel_decoder=PixelDecoderConfig(
            type="msdeformattn",
            conv_dim=data.get("feature_size", 256),
            mask_dim=data.get("mask_feature_size", 256),
            encoder_layers=data.get("encoder_layers", 6),
            encoder_heads=heads,
            encoder_ffn_dim=data.get("encoder_feedforward_dim", 1024),
            encoder_dropout=data.get("dropout", 0.0),
        ),
        transformer=TransformerConfig(
            type="masked_attention",
            hidden_dim=data.get("hidden_dim", 256),
            num_queries=data.get("num_queries", 100),
            num_heads=heads,
            ffn_dim=data.get("dim_feedforward", 2048),
            # transformers counts the prediction from the raw queries as a decoder layer.
            num_layers=data.get("decoder_layers", 10) - 1,
            dropout=data.get("dropout", 0.0),
            enforce_input_proj=data.get("enforce_input_projection", False),
        ),
        loss=transformers_format.point_loss(data, base.loss),
        metadata=common.metadata,
    )


def _transformers_rules(config: ModelConfig) -> list[Rule]:
    """transformers' Mask2Former names of the pixel decoder, the decoder and the heads -> this package's."""
    pd = r"model\.pixel_level_module\.decoder\."
    enc = pd + r"encoder\.layers\.(\d+)\."
    tm = r"model\.transformer_module\."
    lay = tm + r"decoder\.layers\.(\d+)\."
    out = r"predictor.layers.\1."
    qkv = {"q": 0, "k": 1, "v": 2}
    return [
        *transformers_format.backbone_rules(config),
        (pd + r"level_embed", "pixel_decoder.level_embed"),
        (pd + r"input_projections\.(\d)\.([01])\.(\w+)", r"pixel_decoder.input_proj.\1.\2.\3"),
        (enc + r"self_attn\.(\w+)\.(\w+)", r"pixel_decoder.layers.\1.self_attn.\2.\3"),
        (enc + r"self_attn_layer_norm\.(\w+)", r"pixel_decoder.layers.\1.norm1.\2"),
        (enc + r"final_layer_norm\.(\w+)", r"pixel_decoder.layers.\1.norm2.\2"),
        (enc + r"fc([12])\.(\w+)", r"pixel_decoder.layers.\1.linear\2.\3"),
        (pd + r"mask_projection\.(\w+)", r"pixel_decoder.mask_features.\1"),
        (pd + r"adapter_1\.0\.(\w+)", r"pixel_decoder.lateral_conv.conv.\1"),
        (pd + r"adapter_1\.1\.(\w+)", r"pixel_decoder.lateral_conv.norm.\1"),
        (pd + r"layer_1\.0\.(\w+)", r"pixel_decoder.output_conv.conv.\1"),
        (pd + r"layer_1\.1\.(\w+)", r"pixel_decoder.output_conv.norm.\1"),
        (tm + r"queries_embedder\.weight", "predictor.query_embed.weight"),
        (tm + r"queries_features\.weight", "predictor.query_feat.weight"),
        (tm + r"level_embed\.weight", "predictor.level_embed.weight"),
        (tm + r"input_projections\.(\d)\.(\w+)", r"predictor.input_proj.\1.\2"),
        (
            lay + r"self_attn\.([qkv])_proj\.(weight|bias)",
            lambda m: f"predictor.layers.{m[1]}.self_attn.in_proj_{m[3]}#{qkv[m[2]]}",
        ),
        (lay + r"self_attn\.(?:out_proj|o_proj)\.(\w+)", out + r"self_attn.out_proj.\2"),
        (lay + r"cross_attn\.(in_proj_weight|in_proj_bias)", out + r"cross_attn.\2"),
        (lay + r"cross_attn\.out_proj\.(\w+)", out + r"cross_attn.out_proj.\2"),
        (lay + r"cross_attn_layer_norm\.(\w+)", out + r"norm1.\2"),
        (lay + r"self_attn_layer_norm\.(\w+)", out + r"norm2.\2"),
        (lay + r"final_layer_norm\.(\w+)", out + r"norm3.\2"),
        (lay + r"fc([12])\.(\w+)", out + r"linear\2.\3"),
        (tm + r"decoder\.layernorm\.(\w+)", r"predictor.decoder_norm.\1"),
        (tm + r"decoder\.mask_predictor\.mask_embedder\.(\d)\.0\.(\w+)", r"predictor.mask_embed.layers.\1.\2"),
        (r"class_predictor\.(\w+)", r"predictor.class_embed.\1"),
        (r"criterion\..*", None),
    ]


# Mask2Former's encoder layers sample (deformable attention); "+6 Enc" MaskFormer's have in_proj weights.
MSDEFORM = HEAD + "pixel_decoder.transformer.encoder.layers."


def _is_detectron2(state: Mapping[str, Tensor]) -> bool:
    """Deformable-attention encoder weights: Mask2Former's."""
    return MSDEFORM + "0.self_attn.sampling_offsets.weight" in state


def _detectron2_config(state: Mapping[str, Tensor], source: str) -> Mask2FormerConfig:
    """The architecture of an official Mask2Former checkpoint, read off its weights' names and shapes."""
    backbone = detectron2_format.backbone_config(state, source)
    pd = HEAD + "pixel_decoder."
    pred = HEAD + "predictor."
    query_feat = next((pred + n for n in ("query_feat.weight", "static_query.weight") if pred + n in state), None)
    for key in (pd + "mask_features.weight", pred + "class_embed.weight", query_feat or pred + "query_feat.weight"):
        if key not in state:
            raise ValueError(f"{source}: missing {key}; not a Mask2Former checkpoint")
    base = Mask2FormerConfig()
    heads = base.pixel_decoder.encoder_heads
    levels = count_indices(state, re.escape(pd) + r"input_proj\.(\d+)\.")
    offsets = state[MSDEFORM + "0.self_attn.sampling_offsets.weight"].shape[0]
    mask = state[pd + "mask_features.weight"]
    queries = state[pred + "query_embed.weight"]
    return Mask2FormerConfig(
        num_classes=state[pred + "class_embed.weight"].shape[0] - 1,
        backbone=backbone,
        pixel_decoder=PixelDecoderConfig(
            type="msdeformattn",
            conv_dim=mask.shape[1],
            mask_dim=mask.shape[0],
            encoder_layers=count_indices(state, re.escape(MSDEFORM) + r"(\d+)\."),
            encoder_heads=heads,
            encoder_ffn_dim=state[MSDEFORM + "0.linear1.weight"].shape[0],
            encoder_dropout=base.pixel_decoder.encoder_dropout,
            encoder_points=offsets // (heads * levels * 2),
        ),
        transformer=TransformerConfig(
            type="masked_attention",
            hidden_dim=queries.shape[1],
            num_queries=queries.shape[0],
            num_heads=base.transformer.num_heads,
            num_layers=count_indices(state, re.escape(pred) + r"transformer_ffn_layers\.(\d+)\."),
            ffn_dim=state[pred + "transformer_ffn_layers.0.linear1.weight"].shape[0],
            dropout=base.transformer.dropout,
            enforce_input_proj=pred + "input_proj.0.weight" in state,
        ),
    )


def _detectron2_rules(config: ModelConfig) -> list[Rule]:
    """detectron2's Mask2Former names of the pixel decoder, the decoder and the heads -> this package's."""
    pd = re.escape(HEAD + "pixel_decoder.")
    pred = re.escape(HEAD + "predictor.")
    return [
        *detectron2_format.backbone_rules(config),
        (pd + r"input_proj\.(\d)\.([01])\.(\w+)", r"pixel_decoder.input_proj.\1.\2.\3"),
        (pd + r"transformer\.level_embed", "pixel_decoder.level_embed"),
        (pd + r"transformer\.encoder\.layers\.(.*)", r"pixel_decoder.layers.\1"),
        (pd + r"mask_features\.(\w+)", r"pixel_decoder.mask_features.\1"),
        (pd + r"adapter_1\.weight", "pixel_decoder.lateral_conv.conv.weight"),
        (pd + r"adapter_1\.norm\.(\w+)", r"pixel_decoder.lateral_conv.norm.\1"),
        (pd + r"layer_1\.weight", "pixel_decoder.output_conv.conv.weight"),
        (pd + r"layer_1\.norm\.(\w+)", r"pixel_decoder.output_conv.norm.\1"),
        (pred + r"transformer_self_attention_layers\.(\d+)\.self_attn\.(.*)", r"predictor.layers.\1.self_attn.\2"),
        (pred + r"transformer_self_attention_layers\.(\d+)\.norm\.(\w+)", r"predictor.layers.\1.norm2.\2"),
        (
            pred + r"transformer_cross_attention_layers\.(\d+)\.multihead_attn\.(.*)",
            r"predictor.layers.\1.cross_attn.\2",
        ),
        (pred + r"transformer_cross_attention_layers\.(\d+)\.norm\.(\w+)", r"predictor.layers.\1.norm1.\2"),
        (pred + r"transformer_ffn_layers\.(\d+)\.(linear[12])\.(\w+)", r"predictor.layers.\1.\2.\3"),
        (pred + r"transformer_ffn_layers\.(\d+)\.norm\.(\w+)", r"predictor.layers.\1.norm3.\2"),
        (pred + r"decoder_norm\.(\w+)", r"predictor.decoder_norm.\1"),
        # The image checkpoints name the query features static_query (renamed on load by the official code).
        (pred + r"(?:query_feat|static_query)\.weight", "predictor.query_feat.weight"),
        (pred + r"query_embed\.weight", "predictor.query_embed.weight"),
        (pred + r"level_embed\.weight", "predictor.level_embed.weight"),
        (pred + r"input_proj\.(\d)\.(\w+)", r"predictor.input_proj.\1.\2"),
        (pred + r"class_embed\.(\w+)", r"predictor.class_embed.\1"),
        (pred + r"mask_embed\.layers\.(.*)", r"predictor.mask_embed.layers.\1"),
        (r"criterion\..*|pixel_mean|pixel_std", None),
    ]


# Mask2Former's optimiser besides the training defaults (AdamW lr 1e-4, backbone x0.1, poly 0.9, clipping 0.01).
OPTIMIZER = {"weight_decay": 0.05}
# (iterations, batch) of the official configs/<dataset>/*/Base-*.yaml and appendix B, besides COCO's.
SCHEDULES = {
    "ade": (160_000, 16),
    "ade_panoptic": (160_000, 16),
    "ade_instance": (160_000, 16),
    "cityscapes": (90_000, 16),
    "cityscapes_panoptic": (90_000, 16),
    "cityscapes_instance": (90_000, 16),
    "vistas": (300_000, 16),
    "vistas_panoptic": (300_000, 16),
}


def _recipe(name: str, dataset: str) -> Recipe:
    """Mask2Former's recipe for a preset (mask2former-facts.md): weight decay 0.05, batch 16; ADE20K semantic
    160k iterations of crops of the test size (512, 640 for the Swin-B/L "res640" configs); COCO panoptic and
    instance 50 epochs (368,750 iterations; Swin-L 100 epochs, 737,500) of large-scale jitter (scale 0.1-2.0,
    1024 crop), the learning rate x0.1 at 88.9% and 96.3% of them; Mapillary Vistas semantic on 1024 crops
    (MaskFormer's are 1280); the other datasets their schedules."""
    train: dict[str, Any] = dict(OPTIMIZER)
    data: dict[str, Any] = {}
    if dataset in ("coco", "coco_instance"):
        # configs/coco/*/Base-COCO-*.yaml: detectron2's default WarmupMultiStepLR (its 10 warm-up steps at
        # factor 1.0 change nothing); the Swin-L configs double the schedule.
        long = name.startswith("m2f_swin_l_")
        train.update(
            max_steps=737_500 if long else 368_750,
            batch_size=16,
            schedule="step",
            step_milestones=(655_556, 710_184) if long else (327_778, 355_092),
        )
        data.update(augmentation="lsj", crop_size=(1024, 1024), min_scale=0.1, max_scale=2.0)
        return Recipe(train, data)
    train["max_steps"], train["batch_size"] = SCHEDULES[dataset]
    if dataset == "ade":
        data["crop_size"] = (PRESETS[name]().inference.test_shortest_edge,) * 2
    if dataset == "vistas":
        data["crop_size"] = (1024, 1024)
    return Recipe(train, data)


_hub = hub_checkpoint
_zoo = zoo_checkpoints("mask2former/")


# The papers' published weights: the hub copies and the official model zoo (MODEL_ZOO.md).
CHECKPOINTS: tuple[Checkpoint, ...] = (
    # Mask2Former (hub copies converted from the official zoo by transformers; Swin backbones only). Only
    # ids with evidence of a hub page or of being loaded are listed: swin-base-IN21k-coco-panoptic and
    # swin-large-ade-instance had none (issue 24), so those models are known by their zoo URLs alone
    # (zoo-m2f-coco-panoptic-swin-b-in21k, zoo-m2f-ade-instance-swin-l below). swin-base-IN21k-cityscapes-
    # panoptic stays: published benchmark reports load it with transformers.
    _hub("mask2former-swin-tiny-coco-panoptic", "coco", "PQ", 53.2, classes=True),
    _hub("mask2former-swin-small-coco-panoptic", "coco", "PQ", 54.6, classes=True),
    _hub("mask2former-swin-base-coco-panoptic", "coco", "PQ", 55.1, classes=True),
    _hub("mask2former-swin-large-coco-panoptic", "coco", "PQ", 57.8, classes=True),
    _hub("mask2former-swin-tiny-coco-instance", "coco_instance", "AP", 45.0),
    _hub("mask2former-swin-small-coco-instance", "coco_instance", "AP", 46.3),
    _hub("mask2former-swin-base-coco-instance", "coco_instance", "AP", 46.7),
    _hub("mask2former-swin-base-IN21k-coco-instance", "coco_instance", "AP", 48.1),
    _hub("mask2former-swin-large-coco-instance", "coco_instance", "AP", 50.1),
    _hub("mask2former-swin-tiny-cityscapes-panoptic", "cityscapes_panoptic", "PQ", 63.9, classes=True),
    _hub("mask2former-swin-small-cityscapes-panoptic", "cityscapes_panoptic", "PQ", 64.8, classes=True),
    _hub("mask2former-swin-base-IN21k-cityscapes-panoptic", "cityscapes_panoptic", "PQ", 66.1, classes=True),
    _hub("mask2former-swin-large-cityscapes-panoptic", "cityscapes_panoptic", "PQ", 66.6, classes=True),
    _hub("mask2former-swin-tiny-cityscapes-instance", "cityscapes_instance", "AP", 39.7),
    _hub("mask2former-swin-small-cityscapes-instance", "cityscapes_instance", "AP", 41.8),
    _hub("mask2former-swin-base-IN21k-cityscapes-instance", "cityscapes_instance", "AP", 42.0),
    _hub("mask2former-swin-large-cityscapes-instance", "cityscapes_instance", "AP", 43.7),
    _hub("mask2former-swin-tiny-cityscapes-semantic", "cityscapes", "mIoU", 82.1, classes=True),
    _hub("mask2former-swin-small-cityscapes-semantic", "cityscapes", "mIoU", 82.6, classes=True),
    _hub("mask2former-swin-base-IN21k-cityscapes-semantic", "cityscapes", "mIoU", 83.3, classes=True),
    _hub("mask2former-swin-large-cityscapes-semantic", "cityscapes", "mIoU", 83.3, classes=True),
    _hub("mask2former-swin-large-ade-panoptic", "ade_panoptic", "PQ", 48.1, classes=True),
    _hub("mask2former-swin-tiny-ade-semantic", "ade", "mIoU", 47.7, classes=True),
    _hub("mask2former-swin-small-ade-semantic", "ade", "mIoU", 51.3, classes=True),
    _hub("mask2former-swin-base-ade-semantic", "ade", "mIoU", 52.4, classes=True),
    _hub("mask2former-swin-base-IN21k-ade-semantic", "ade", "mIoU", 53.9, classes=True),
    _hub("mask2former-swin-large-ade-semantic", "ade", "mIoU", 56.1, classes=True),
    _hub("mask2former-swin-large-mapillary-vistas-panoptic", "vistas_panoptic", "PQ", 45.5),
    _hub("mask2former-swin-large-mapillary-vistas-semantic", "vistas", "mIoU", 63.2),
    # Mask2Former's official model zoo (MODEL_ZOO.md), all backbones.
    _zoo("zoo-m2f-coco-panoptic-r50",
         "coco/panoptic/maskformer2_R50_bs16_50ep/model_final_94dc52.pkl",
         "coco", "PQ", 51.9, classes=True),
    _zoo("zoo-m2f-coco-panoptic-r101",
         "coco/panoptic/maskformer2_R101_bs16_50ep/model_final_b807bd.pkl",
         "coco", "PQ", 52.6, classes=True),
    _zoo("zoo-m2f-coco-panoptic-swin-t",
         "coco/panoptic/maskformer2_swin_tiny_bs16_50ep/model_final_9fd0ae.pkl",
         "coco", "PQ", 53.2, classes=True),
    _zoo("zoo-m2f-coco-panoptic-swin-s",
         "coco/panoptic/maskformer2_swin_small_bs16_50ep/model_final_a407fd.pkl",
         "coco", "PQ", 54.6, classes=True),
    _zoo("zoo-m2f-coco-panoptic-swin-b",
         "coco/panoptic/maskformer2_swin_base_384_bs16_50ep/model_final_9d7f02.pkl",
         "coco", "PQ", 55.1, classes=True),
    _zoo("zoo-m2f-coco-panoptic-swin-b-in21k",
         "coco/panoptic/maskformer2_swin_base_IN21k_384_bs16_50ep/model_final_54b88a.pkl",
         "coco", "PQ", 56.4, classes=True),
    _zoo("zoo-m2f-coco-panoptic-swin-l",
         "coco/panoptic/maskformer2_swin_large_IN21k_384_bs16_100ep/model_final_f07440.pkl",
         "coco", "PQ", 57.8, classes=True),
    _zoo("zoo-m2f-coco-instance-r50",
         "coco/instance/maskformer2_R50_bs16_50ep/model_final_3c8ec9.pkl",
         "coco_instance", "AP", 43.7),
    _zoo("zoo-m2f-coco-instance-r101",
         "coco/instance/maskformer2_R101_bs16_50ep/model_final_eba159.pkl",
         "coco_instance", "AP", 44.2),
    _zoo("zoo-m2f-coco-instance-swin-t",
         "coco/instance/maskformer2_swin_tiny_bs16_50ep/model_final_86143f.pkl",
         "coco_instance", "AP", 45.0),
    _zoo("zoo-m2f-coco-instance-swin-s",
         "coco/instance/maskformer2_swin_small_bs16_50ep/model_final_1e7f22.pkl",
         "coco_instance", "AP", 46.3),
    _zoo("zoo-m2f-coco-instance-swin-b",
         "coco/instance/maskformer2_swin_base_384_bs16_50ep/model_final_f6e0f6.pkl",
         "coco_instance", "AP", 46.7),
    _zoo("zoo-m2f-coco-instance-swin-b-in21k",
         "coco/instance/maskformer2_swin_base_IN21k_384_bs16_50ep/model_final_83d103.pkl",
         "coco_instance", "AP", 48.1),
    _zoo("zoo-m2f-coco-instance-swin-l",
         "coco/instance/maskformer2_swin_large_IN21k_384_bs16_100ep/model_final_e5f453.pkl",
         "coco_instance", "AP", 50.1),
    _zoo("zoo-m2f-cityscapes-panoptic-r50",
         "cityscapes/panoptic/maskformer2_R50_bs16_90k/model_final_4ab90c.pkl",
         "cityscapes_panoptic", "PQ", 62.1, classes=True),
    _zoo("zoo-m2f-cityscapes-panoptic-r101",
         "cityscapes/panoptic/maskformer2_R101_bs16_90k/model_final_04d286.pkl",
         "cityscapes_panoptic", "PQ", 62.4, classes=True),
    _zoo("zoo-m2f-cityscapes-panoptic-swin-t",
         "cityscapes/panoptic/maskformer2_swin_tiny_bs16_90k/model_final_ceba0f.pkl",
         "cityscapes_panoptic", "PQ", 63.9, classes=True),
    _zoo("zoo-m2f-cityscapes-panoptic-swin-s",
         "cityscapes/panoptic/maskformer2_swin_small_bs16_90k/model_final_23efb7.pkl",
         "cityscapes_panoptic", "PQ", 64.8, classes=True),
    _zoo("zoo-m2f-cityscapes-panoptic-swin-b-in21k",
         "cityscapes/panoptic/maskformer2_swin_base_IN21k_384_bs16_90k/model_final_fa840f.pkl",
         "cityscapes_panoptic", "PQ", 66.1, classes=True),
    _zoo("zoo-m2f-cityscapes-panoptic-swin-l",
         "cityscapes/panoptic/maskformer2_swin_large_IN21k_384_bs16_90k/model_final_064788.pkl",
         "cityscapes_panoptic", "PQ", 66.6, classes=True),
    _zoo("zoo-m2f-cityscapes-instance-r50",
         "cityscapes/instance/maskformer2_R50_bs16_90k/model_final_01a8ed.pkl",
         "cityscapes_instance", "AP", 37.4),
    _zoo("zoo-m2f-cityscapes-instance-r101",
         "cityscapes/instance/maskformer2_R101_bs16_90k/model_final_c2b8c8.pkl",
         "cityscapes_instance", "AP", 38.5),
    _zoo("zoo-m2f-cityscapes-instance-swin-t",
         "cityscapes/instance/maskformer2_swin_tiny_bs16_90k/model_final_6a63f8.pkl",
         "cityscapes_instance", "AP", 39.7),
    _zoo("zoo-m2f-cityscapes-instance-swin-s",
         "cityscapes/instance/maskformer2_swin_small_bs16_90k/model_final_974824.pkl",
         "cityscapes_instance", "AP", 41.8),
    _zoo("zoo-m2f-cityscapes-instance-swin-b-in21k",
         "cityscapes/instance/maskformer2_swin_base_IN21k_384_bs16_90k/model_final_7a3b6d.pkl",
         "cityscapes_instance", "AP", 42.0),
    _zoo("zoo-m2f-cityscapes-instance-swin-l",
         "cityscapes/instance/maskformer2_swin_large_IN21k_384_bs16_90k/model_final_dfa862.pkl",
         "cityscapes_instance", "AP", 43.7),
    _zoo("zoo-m2f-cityscapes-semantic-r50",
         "cityscapes/semantic/maskformer2_R50_bs16_90k/model_final_cc1b1f.pkl",
         "cityscapes", "mIoU", 79.4, classes=True),
    _zoo("zoo-m2f-cityscapes-semantic-r101",
         "cityscapes/semantic/maskformer2_R101_bs16_90k/model_final_257ce8.pkl",
         "cityscapes", "mIoU", 80.1, classes=True),
    _zoo("zoo-m2f-cityscapes-semantic-swin-t",
         "cityscapes/semantic/maskformer2_swin_tiny_bs16_90k/model_final_2d58d4.pkl",
         "cityscapes", "mIoU", 82.1, classes=True),
    _zoo("zoo-m2f-cityscapes-semantic-swin-s",
         "cityscapes/semantic/maskformer2_swin_small_bs16_90k/model_final_fa26ae.pkl",
         "cityscapes", "mIoU", 82.6, classes=True),
    _zoo("zoo-m2f-cityscapes-semantic-swin-b-in21k",
         "cityscapes/semantic/maskformer2_swin_base_IN21k_384_bs16_90k/model_final_1c6b65.pkl",
         "cityscapes", "mIoU", 83.3, classes=True),
    _zoo("zoo-m2f-cityscapes-semantic-swin-l",
         "cityscapes/semantic/maskformer2_swin_large_IN21k_384_bs16_90k/model_final_17c1ee.pkl",
         "cityscapes", "mIoU", 83.3, classes=True),
    _zoo("zoo-m2f-ade-panoptic-r50",
         "ade20k/panoptic/maskformer2_R50_bs16_160k/model_final_5c90d4.pkl",
         "ade_panoptic", "PQ", 39.7, classes=True),
    _zoo("zoo-m2f-ade-panoptic-swin-l",
         "ade20k/panoptic/maskformer2_swin_large_IN21k_384_bs16_160k/model_final_e0c58e.pkl",
         "ade_panoptic", "PQ", 48.1, classes=True),
    _zoo("zoo-m2f-ade-instance-r50",
         "ade20k/instance/maskformer2_R50_bs16_160k/model_final_67e945.pkl",
         "ade_instance", "AP", 26.4),
    _zoo("zoo-m2f-ade-instance-swin-l",
         "ade20k/instance/maskformer2_swin_large_IN21k_384_bs16_160k/model_final_92dae9.pkl",
         "ade_instance", "AP", 34.9),
    _zoo("zoo-m2f-ade-semantic-r50",
         "ade20k/semantic/maskformer2_R50_bs16_160k/model_final_500878.pkl",
         "ade", "mIoU", 47.2, classes=True),
    _zoo("zoo-m2f-ade-semantic-r101",
         "ade20k/semantic/maskformer2_R101_bs16_90k/model_final_0d68be.pkl",
         "ade", "mIoU", 47.8, classes=True),
    _zoo("zoo-m2f-ade-semantic-swin-t",
         "ade20k/semantic/maskformer2_swin_tiny_bs16_160k/model_final_5274a6.pkl",
         "ade", "mIoU", 47.7, classes=True),
    _zoo("zoo-m2f-ade-semantic-swin-s",
         "ade20k/semantic/maskformer2_swin_small_bs16_160k/model_final_011c6d.pkl",
         "ade", "mIoU", 51.3, classes=True),
    _zoo("zoo-m2f-ade-semantic-swin-b",
         "ade20k/semantic/maskformer2_swin_base_384_bs16_160k_res640/model_final_503e96.pkl",
         "ade", "mIoU", 52.4, classes=True),
    _zoo("zoo-m2f-ade-semantic-swin-b-in21k",
         "ade20k/semantic/maskformer2_swin_base_IN21k_384_bs16_160k_res640/model_final_7e47bf.pkl",
         "ade", "mIoU", 53.9, classes=True),
    _zoo("zoo-m2f-ade-semantic-swin-l",
         "ade20k/semantic/maskformer2_swin_large_IN21k_384_bs16_160k_res640/model_final_6b4a3a.pkl",
         "ade", "mIoU", 56.1, classes=True),
    _zoo("zoo-m2f-mapillary-vistas-panoptic-r50",
         "mapillary_vistas/panoptic/maskformer_R50_bs16_300k/model_final_4e9874.pkl",
         "vistas_panoptic", "PQ", 36.3),
    _zoo("zoo-m2f-mapillary-vistas-panoptic-swin-l",
         "mapillary_vistas/panoptic/maskformer2_swin_large_IN21k_384_bs16_300k/model_final_132c71.pkl",
         "vistas_panoptic", "PQ", 45.5),
    _zoo("zoo-m2f-mapillary-vistas-semantic-r50",
         "mapillary_vistas/semantic/maskformer_R50_bs16_300k/model_final_6c66d0.pkl",
         "vistas", "mIoU", 57.4),
    _zoo("zoo-m2f-mapillary-vistas-semantic-swin-l",
         "mapillary_vistas/semantic/maskformer2_swin_large_IN21k_384_bs16_300k/model_final_90ee2d.pkl",
         "vistas", "mIoU", 63.2),
)  # fmt: skip


def _demo_model() -> Mask2FormerConfig:
    """The demo's Mask2Former: a ResNet-18; the paper's 9 masked-attention layers (three rounds over strides
    32, 16, 8) and point loss, on 1024 points (one per stride-4 pixel of a 128 crop; the paper's 12544 are for
    1024 crops); one deformable encoder layer of width 128; 20 queries; and the class term at weight 5 (loss
    and matching cost; the paper's is 2), for the reason MaskFormer's demo gives."""
    base = Mask2FormerConfig()
    return Mask2FormerConfig(
        num_classes=6,
        backbone=BackboneConfig(type="timm", name="resnet18", norm="bn"),
        pixel_decoder=dataclasses.replace(
            base.pixel_decoder, conv_dim=128, mask_dim=128, encoder_layers=1, encoder_heads=4, encoder_ffn_dim=512
        ),
        transformer=dataclasses.replace(base.transformer, hidden_dim=128, num_queries=20, num_heads=4, ffn_dim=512),
        loss=dataclasses.replace(base.loss, class_weight=5.0, cost_class=5.0, num_points=1024),
    )


# Twice MaskFormer's learning rate, with a longer warm-up. 600 steps: the whole demo took 296-367 s on two CPU
# cores of one machine on two days since the deformable attention's faster gradient (400 steps took 410-440 s
# before it); 1000 steps took 536 s, too long for the 10 minutes with the venv (docs/demo.md).
DEMO = DemoRecipe(_demo_model, lr=6e-4, warmup_steps=100, cpu_steps=600)


FAMILY = Family(
    name="mask2former",
    title="Mask2Former",
    year=2022,
    config=Mask2FormerConfig,
    network=MaskFormer,
    presets=PRESETS,
    preset_datasets=PRESET_DATASETS,
    checkpoints=CHECKPOINTS,
    recipe=_recipe,
    optimizer=OPTIMIZER,
    demo=DEMO,
    describe=lambda config: config.pixel_decoder.type,
    transformers=TransformersFormat(("mask2former",), _transformers_config, _transformers_rules),
    official=OfficialFormat(_is_detectron2, _detectron2_config, _detectron2_rules),
)
Mask2FormerConfig.FAMILY = FAMILY
