"""MaskFormer (NeurIPS 2021): a backbone, an FPN pixel decoder (or "+6 Enc", a DETR encoder on res5 before
it), a DETR decoder over res5, and the sigmoid focal + dice mask losses on full-resolution masks
(maskformer-facts.md).

Presets. ADE20K-150 semantic: ``r50``, ``r101``, ``r101c``, ``swin_t``, ``swin_s``, ``swin_b``, ``swin_l``.
COCO panoptic (133 classes): ``r50+6enc``, ``r101+6enc``, ``swin_t_coco``, ``swin_s_coco``, ``swin_b_coco``,
``swin_l_coco``. The other datasets, ``<backbone>_<dataset>`` for each official config (facebookresearch/MaskFormer
``configs/``): ``ade_full`` (847 classes; r50, r101, r101c), ``coco_stuff`` (COCO-Stuff-10K, 171; r50, r101,
r101c), ``cityscapes`` (19; r101, r101c), ``vistas`` (Mapillary Vistas, 65; r50) and ``ade_panoptic`` (ADE20K
panoptic, 150, the "+6 Enc" pixel decoder; r50, r101), and ``pascal_context_59`` / ``pascal_context_459`` (r50;
no paper config, see :mod:`maskformer.training.config`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from ..backbone_presets import RESNETS, resnet, swin
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
class MaskFormerConfig(ModelConfig):
    """A whole MaskFormer model: the shared sections with MaskFormer's defaults (FPN pixel decoder, 6 DETR
    decoder layers with dropout 0.1; class 1, focal 20, dice 1)."""

    FILE_DEFAULT: ClassVar[bool] = True  # config files written before Mask2Former name no family

    family: str = field(default="maskformer", init=False)
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)


def _ade(backbone: BackboneConfig, crop: int = 512) -> MaskFormerConfig:
    return MaskFormerConfig(
        num_classes=150,
        backbone=backbone,
        inference=InferenceConfig(
            object_mask_threshold=0.7, overlap_threshold=0.8, test_shortest_edge=crop, test_max_size=4 * crop
        ),
    )


def _coco(backbone: BackboneConfig, six_enc: bool = False) -> MaskFormerConfig:
    return MaskFormerConfig(
        num_classes=133,
        backbone=backbone,
        pixel_decoder=PixelDecoderConfig(type="transformer_encoder" if six_enc else "fpn"),
        inference=InferenceConfig(
            object_mask_threshold=0.8, overlap_threshold=0.8, test_shortest_edge=800, test_max_size=1333
        ),
    )


def _semantic(backbone: str, classes: int, short: int, long: int) -> MaskFormerConfig:
    """A MaskFormer semantic config on ResNet ``backbone``. Its thresholds stay the defaults: the official
    semantic configs leave them unset (0.0) and unused, since they run semantic inference alone."""
    return MaskFormerConfig(
        num_classes=classes,
        backbone=RESNETS[backbone](),
        inference=InferenceConfig(test_shortest_edge=short, test_max_size=long),
    )


def _ade_panoptic(backbone: BackboneConfig) -> MaskFormerConfig:
    """configs/ade20k-150-panoptic: "+6 Enc", test 640 / 2560, thresholds 0.7 / 0.8."""
    return MaskFormerConfig(
        num_classes=150,
        backbone=backbone,
        pixel_decoder=PixelDecoderConfig(type="transformer_encoder"),
        inference=InferenceConfig(
            object_mask_threshold=0.7, overlap_threshold=0.8, test_shortest_edge=640, test_max_size=2560
        ),
    )


# dataset: (classes, test shortest edge, test longest side, backbones with an official config), from
# configs/{ade20k-full-847,coco-stuff-10k-171,cityscapes-19,mapillary-vistas-65}/Base-*.yaml.
_MF_SEMANTIC = {
    "ade_full": (847, 512, 2048, ("r50", "r101", "r101c")),
    "coco_stuff": (171, 640, 2560, ("r50", "r101", "r101c")),
    "cityscapes": (19, 1024, 2048, ("r101", "r101c")),
    "vistas": (65, 2048, 2048, ("r50",)),
    # Not the papers' (neither trains on Pascal Context): test with the longer side at 520 as
    # mmsegmentation's pascal_context_59.py does.
    "pascal_context_59": (59, 520, 520, ("r50",)),
    "pascal_context_459": (459, 520, 520, ("r50",)),
}

PRESETS: dict[str, Callable[[], MaskFormerConfig]] = {
    "r50": lambda: _ade(RESNETS["r50"]()),
    "r101": lambda: _ade(RESNETS["r101"]()),
    "r101c": lambda: _ade(RESNETS["r101c"]()),
    "swin_t": lambda: _ade(swin("t")),
    "swin_s": lambda: _ade(swin("s")),
    "swin_b": lambda: _ade(swin("b"), crop=640),
    "swin_l": lambda: _ade(swin("l"), crop=640),
    "r50+6enc": lambda: _coco(resnet("resnet50.tv_in1k"), six_enc=True),
    "r101+6enc": lambda: _coco(resnet("resnet101.tv_in1k"), six_enc=True),
    "swin_t_coco": lambda: _coco(swin("t")),
    "swin_s_coco": lambda: _coco(swin("s")),
    "swin_b_coco": lambda: _coco(swin("b")),
    "swin_l_coco": lambda: _coco(swin("l")),
    "r50_ade_panoptic": lambda: _ade_panoptic(RESNETS["r50"]()),
    "r101_ade_panoptic": lambda: _ade_panoptic(RESNETS["r101"]()),
}
PRESETS.update(
    {
        f"{backbone}_{dataset}": functools.partial(_semantic, backbone, classes, short, long)
        for dataset, (classes, short, long, backbones) in _MF_SEMANTIC.items()
        for backbone in backbones
    }
)
# The dataset each preset is configured for, by its key in maskformer.data.catalog.DATASETS: recorded where
# the presets are made, not parsed back from their names.
PRESET_DATASETS: dict[str, str] = {
    **dict.fromkeys(["r50", "r101", "r101c", "swin_t", "swin_s", "swin_b", "swin_l"], "ade"),
    **dict.fromkeys(["r50+6enc", "r101+6enc", "swin_t_coco", "swin_s_coco", "swin_b_coco", "swin_l_coco"], "coco"),
    **dict.fromkeys(["r50_ade_panoptic", "r101_ade_panoptic"], "ade_panoptic"),
    **{f"{b}_{dataset}": dataset for dataset, (*_, backbones) in _MF_SEMANTIC.items() for b in backbones},
}


def _transformers_config(data: Mapping[str, Any], source: str) -> MaskFormerConfig:
    """The rest of a transformers MaskFormer ``config.json`` (its DETR decoder and loss weights)."""
    common = transformers_format.read_common(data, source)
    dec = data.get("decoder_config") or {}
    return MaskFormerConfig(
        num_classes=common.num_classes,
        backbone=common.backbone,
        pixel_decoder=PixelDecoderConfig(
            type="fpn", conv_dim=data.get("fpn_feature_size", 256), mask_dim=data.get("mask_feature_size", 256)
        ),
        transformer=TransformerConfig(
            hidden_dim=dec.get("d_model", 256),
            num_queries=dec.get("num_queries", 100),
            num_heads=dec.get("decoder_attention_heads", 8),
            ffn_dim=dec.get("decoder_ffn_dim", 2048),
            num_layers=dec.get("decoder_layers", 6),
            dropout=dec.get("dropout", 0.1),
        ),
        loss=LossConfig(
            class_weight=data.get("cross_entropy_weight", 1.0),
            mask_weight=data.get("mask_weight", 20.0),
            dice_weight=data.get("dice_weight", 1.0),
            no_object_weight=data.get("no_object_weight", 0.1),
            cost_mask=data.get("mask_weight", 20.0),
            cost_dice=data.get("dice_weight", 1.0),
        ),
        metadata=common.metadata,
    )


def _transformers_rules(config: ModelConfig) -> list[Rule]:
    """transformers' MaskFormer names of the FPN, the DETR decoder and the heads -> this package's."""
    fpn = r"model\.pixel_level_module\.decoder\.fpn\."
    tm = r"model\.transformer_module\."
    lay = tm + r"decoder\.layers\.(\d+)\."
    out = r"predictor.decoder.layers.\1."
    qkv = {"q": 0, "k": 1, "v": 2}
    attn_name = {"self_attn": "self_attn", "encoder_attn": "cross_attn"}
    return [
        *transformers_format.backbone_rules(config),
        (fpn + r"stem\.0\.(\w+)", r"pixel_decoder.output_convs.0.conv.\1"),
        (fpn + r"stem\.1\.(\w+)", r"pixel_decoder.output_convs.0.norm.\1"),
        (fpn + r"layers\.(\d+)\.proj\.0\.(\w+)", r"pixel_decoder.lateral_convs.\1.conv.\2"),
        (fpn + r"layers\.(\d+)\.proj\.1\.(\w+)", r"pixel_decoder.lateral_convs.\1.norm.\2"),
        (fpn + r"layers\.(\d+)\.block\.0\.(\w+)", lambda m: f"pixel_decoder.output_convs.{int(m[1]) + 1}.conv.{m[2]}"),
        (fpn + r"layers\.(\d+)\.block\.1\.(\w+)", lambda m: f"pixel_decoder.output_convs.{int(m[1]) + 1}.norm.{m[2]}"),
        (r"model\.pixel_level_module\.decoder\.mask_projection\.(\w+)", r"pixel_decoder.mask_features.\1"),
        (tm + r"queries_embedder\.weight", "predictor.query_embed.weight"),
        (tm + r"input_projection\.(\w+)", r"predictor.input_proj.\1"),
        (
            lay + r"(self_attn|encoder_attn)\.([qkv])_proj\.(weight|bias)",
            lambda m: f"predictor.decoder.layers.{m[1]}.{attn_name[m[2]]}.in_proj_{m[4]}#{qkv[m[3]]}",
        ),
        # Files saved by transformers 5 use out_proj / fc1 / fc2; older ones and its modules o_proj / mlp.fc*.
        (
            lay + r"(self_attn|encoder_attn)\.(?:o_proj|out_proj)\.(\w+)",
            lambda m: f"predictor.decoder.layers.{m[1]}.{attn_name[m[2]]}.out_proj.{m[3]}",
        ),
        (lay + r"self_attn_layer_norm\.(\w+)", out + r"norm1.\2"),
        (lay + r"encoder_attn_layer_norm\.(\w+)", out + r"norm2.\2"),
        (lay + r"final_layer_norm\.(\w+)", out + r"norm3.\2"),
        (lay + r"(?:mlp\.)?fc1\.(\w+)", out + r"linear1.\2"),
        (lay + r"(?:mlp\.)?fc2\.(\w+)", out + r"linear2.\2"),
        (tm + r"decoder\.layernorm\.(\w+)", r"predictor.decoder.norm.\1"),
        (r"class_predictor\.(\w+)", r"predictor.class_embed.\1"),
        (r"mask_embedder\.(\d)\.0\.(\w+)", r"predictor.mask_embed.layers.\1.\2"),
        (r"criterion\..*", None),
    ]


def _is_detectron2(state: Mapping[str, Tensor]) -> bool:
    """A DETR decoder's weights: MaskFormer's."""
    return HEAD + "predictor.transformer.decoder.layers.0.linear1.weight" in state


def _detectron2_config(state: Mapping[str, Tensor], source: str) -> MaskFormerConfig:
    """The architecture of an official MaskFormer checkpoint, read off its weights' names and shapes."""
    backbone = detectron2_format.backbone_config(state, source)
    pd = HEAD + "pixel_decoder."
    pred = HEAD + "predictor."
    for key in (pd + "mask_features.weight", pred + "query_embed.weight", pred + "class_embed.weight"):
        if key not in state:
            raise ValueError(f"{source}: missing {key}; not a MaskFormer checkpoint")
    enc_layers = count_indices(state, re.escape(pd) + r"transformer\.encoder\.layers\.(\d+)\.")
    mask = state[pd + "mask_features.weight"]
    queries = state[pred + "query_embed.weight"]
    return MaskFormerConfig(
        num_classes=state[pred + "class_embed.weight"].shape[0] - 1,
        backbone=backbone,
        pixel_decoder=PixelDecoderConfig(
            type="transformer_encoder" if enc_layers else "fpn",
            conv_dim=mask.shape[1],
            mask_dim=mask.shape[0],
            encoder_layers=enc_layers or 6,
            encoder_ffn_dim=(
                state[pd + "transformer.encoder.layers.0.linear1.weight"].shape[0] if enc_layers else 2048
            ),
        ),
        transformer=TransformerConfig(
            hidden_dim=queries.shape[1],
            num_queries=queries.shape[0],
            num_layers=count_indices(state, re.escape(pred) + r"transformer\.decoder\.layers\.(\d+)\."),
            ffn_dim=state[pred + "transformer.decoder.layers.0.linear1.weight"].shape[0],
        ),
    )


def _detectron2_rules(config: ModelConfig, num_levels: int = 4) -> list[Rule]:
    """detectron2's MaskFormer names of the pixel decoder, the DETR decoder and the heads -> this package's."""
    pd = re.escape(HEAD + "pixel_decoder.")
    pred = re.escape(HEAD + "predictor.")
    # detectron2 numbers FPN convs by input level (layer_1 = res2 ... layer_4 = res5); ours run top-down.
    return [
        *detectron2_format.backbone_rules(config),
        (pd + r"layer_(\d)\.norm\.(\w+)", lambda m: f"pixel_decoder.output_convs.{num_levels - int(m[1])}.norm.{m[2]}"),
        (pd + r"layer_(\d)\.weight", lambda m: f"pixel_decoder.output_convs.{num_levels - int(m[1])}.conv.weight"),
        (
            pd + r"adapter_(\d)\.norm\.(\w+)",
            lambda m: f"pixel_decoder.lateral_convs.{num_levels - 1 - int(m[1])}.norm.{m[2]}",
        ),
        (
            pd + r"adapter_(\d)\.weight",
            lambda m: f"pixel_decoder.lateral_convs.{num_levels - 1 - int(m[1])}.conv.weight",
        ),
        (pd + r"mask_features\.(\w+)", r"pixel_decoder.mask_features.\1"),
        (pd + r"input_proj\.(\w+)", r"pixel_decoder.input_proj.\1"),
        (pd + r"transformer\.encoder\.layers\.(.*)", r"pixel_decoder.encoder.layers.\1"),
        (pred + r"query_embed\.weight", "predictor.query_embed.weight"),
        (pred + r"input_proj\.(\w+)", r"predictor.input_proj.\1"),
        (
            pred + r"transformer\.decoder\.layers\.(\d+)\.multihead_attn\.(.*)",
            r"predictor.decoder.layers.\1.cross_attn.\2",
        ),
        (pred + r"transformer\.decoder\.layers\.(.*)", r"predictor.decoder.layers.\1"),
        (pred + r"transformer\.decoder\.norm\.(\w+)", r"predictor.decoder.norm.\1"),
        (pred + r"class_embed\.(\w+)", r"predictor.class_embed.\1"),
        (pred + r"mask_embed\.layers\.(.*)", r"predictor.mask_embed.layers.\1"),
        (r"criterion\..*|pixel_mean|pixel_std", None),
    ]


# MaskFormer's optimiser besides the training defaults (AdamW lr 1e-4, backbone x0.1, poly 0.9, clipping 0.01).
OPTIMIZER = {"weight_decay": 1e-4}
# (iterations, batch) of MaskFormer's config for each dataset: configs/*/Base-*.yaml and appendix A. The Pascal
# Context rows are not the paper's (it does not train on Pascal Context): mmsegmentation's 80k iterations of 16.
SCHEDULES = {
    "ade": (160_000, 16),
    "coco": (554_000, 64),
    "ade_full": (200_000, 16),
    "coco_stuff": (60_000, 32),
    "cityscapes": (90_000, 16),
    "vistas": (300_000, 16),
    "ade_panoptic": (720_000, 16),
    "pascal_context_59": (80_000, 16),
    "pascal_context_459": (80_000, 16),
}


def _recipe(name: str, dataset: str) -> Recipe:
    """MaskFormer's recipe for a preset (maskformer-facts.md): the schedule of its dataset; ADE20K crops of the
    test size (512, 640 for the Swin-B/L "res640" configs), with Swin lr 6e-5, weight decay 0.01, backbone x1
    and 1500 warm-up steps from 1e-6; COCO panoptic the learning rate x0.1 at 369.6k of 554k iterations,
    DETR's augmentation and, with Swin, weight decay 0.01 and backbone x1."""
    steps, batch = SCHEDULES[dataset]
    train: dict[str, Any] = {**OPTIMIZER, "max_steps": steps, "batch_size": batch}
    data: dict[str, Any] = {}
    config = PRESETS[name]()
    swin = config.backbone.type == "swin"
    if dataset == "ade":
        data["crop_size"] = (config.inference.test_shortest_edge,) * 2
        if swin:
            train.update(lr=6e-5, weight_decay=0.01, backbone_lr_multiplier=1.0, warmup_steps=1500, warmup_factor=1e-6)
    elif dataset == "coco":
        train.update(schedule="step", step_milestones=(369_600,))
        data["augmentation"] = "detr"
        if swin:
            train.update(weight_decay=0.01, backbone_lr_multiplier=1.0)
    return Recipe(train, data)


_hub = hub_checkpoint
_zoo = zoo_checkpoints("")


# The papers' published weights: the hub copies and the official model zoo (MODEL_ZOO.md).
CHECKPOINTS: tuple[Checkpoint, ...] = (
    _hub("maskformer-swin-tiny-ade", "ade", "mIoU", 46.7, classes=True),
    _hub("maskformer-swin-small-ade", "ade", "mIoU", 49.8, classes=True),
    _hub("maskformer-swin-base-ade", "ade", "mIoU", 52.7, classes=True),
    _hub("maskformer-swin-large-ade", "ade", "mIoU", 54.1, classes=True),
    _hub("maskformer-resnet50-ade", "ade", "mIoU", 44.5, classes=True),
    _hub("maskformer-resnet101-ade", "ade", "mIoU", 45.5, classes=True),
    _hub("maskformer-resnet50-coco-stuff", "coco_stuff", "mIoU", 37.1),
    _hub("maskformer-resnet101-coco-stuff", "coco_stuff", "mIoU", 38.1),
    _hub("maskformer-resnet50-ade20k-full", "ade_full", "mIoU", 16.0),
    _hub("maskformer-resnet101-ade20k-full", "ade_full", "mIoU", 16.8),
    _hub("maskformer-resnet101-cityscapes", "cityscapes", "mIoU", 78.5, classes=True),
    _hub("maskformer-resnet50-vistas", "vistas", "mIoU", 53.1),
    _hub("maskformer-swin-tiny-coco", "coco", "PQ", 47.7, classes=True),
    _hub("maskformer-swin-small-coco", "coco", "PQ", 49.7, classes=True),
    _hub("maskformer-swin-base-coco", "coco", "PQ", 51.8, classes=True),
    _hub("maskformer-swin-large-coco", "coco", "PQ", 52.7, classes=True),
    _zoo("zoo-ade20k-r50", "semantic-ade20k/maskformer_R50_bs16_160k/model_final_d8dbeb.pkl",
         "ade", "mIoU", 44.5, classes=True),
    _zoo("zoo-ade20k-r101", "semantic-ade20k/maskformer_R101_bs16_160k/model_final_1aeb94.pkl",
         "ade", "mIoU", 45.5, classes=True),
    _zoo("zoo-ade20k-r101c", "semantic-ade20k/maskformer_R101c_bs16_160k/model_final_b432ea.pkl",
         "ade", "mIoU", 46.0, classes=True),
    _zoo("zoo-ade20k-swin-t", "semantic-ade20k/maskformer_swin_tiny_bs16_160k/model_final_8657a5.pkl",
         "ade", "mIoU", 46.7, classes=True),
    _zoo("zoo-ade20k-swin-s", "semantic-ade20k/maskformer_swin_small_bs16_160k/model_final_528157.pkl",
         "ade", "mIoU", 49.8, classes=True),
    _zoo("zoo-ade20k-swin-b",
         "semantic-ade20k/maskformer_swin_base_IN21k_384_bs16_160k_res640/model_final_45388b.pkl",
         "ade", "mIoU", 52.7, classes=True),
    _zoo("zoo-ade20k-swin-l",
         "semantic-ade20k/maskformer_swin_large_IN21k_384_bs16_160k_res640/model_final_aefa3b.pkl",
         "ade", "mIoU", 54.1, classes=True),
    _zoo("zoo-cityscapes-r101", "semantic-cityscapes/maskformer_R101_bs16_90k/model_final_38c00c.pkl",
         "cityscapes", "mIoU", 78.5, classes=True),
    _zoo("zoo-cityscapes-r101c", "semantic-cityscapes/maskformer_R101c_bs16_90k/model_final_4f8ff9.pkl",
         "cityscapes", "mIoU", 79.7, classes=True),
    _zoo("zoo-coco-panoptic-r50", "panoptic-coco/maskformer_panoptic_R50_bs64_554k/model_final_6f60dc.pkl",
         "coco", "PQ", 46.5, classes=True),
    _zoo("zoo-coco-panoptic-r101", "panoptic-coco/maskformer_panoptic_R101_bs64_554k/model_final_57b049.pkl",
         "coco", "PQ", 47.6, classes=True),
    _zoo("zoo-coco-panoptic-swin-t", "panoptic-coco/model_final_539394.pkl",
         "coco", "PQ", 47.7, classes=True),
    _zoo("zoo-coco-panoptic-swin-s", "panoptic-coco/model_final_5bf6b1.pkl",
         "coco", "PQ", 49.7, classes=True),
    _zoo("zoo-coco-panoptic-swin-b", "panoptic-coco/model_final_4b7f49.pkl",
         "coco", "PQ", 51.8, classes=True),
    _zoo("zoo-coco-panoptic-swin-l", "panoptic-coco/model_final_7505c4.pkl",
         "coco", "PQ", 52.7, classes=True),
    _zoo("zoo-ade20k-panoptic-r50", "panoptic-ade20k/maskformer_panoptic_R50_bs16_720k/model_final_7aa977.pkl",
         "ade_panoptic", "PQ", 34.7, classes=True),
    _zoo("zoo-ade20k-panoptic-r101", "panoptic-ade20k/maskformer_panoptic_R101_bs16_720k/model_final_0b3cc8.pkl",
         "ade_panoptic", "PQ", 35.7, classes=True),
)  # fmt: skip


def _demo_model() -> MaskFormerConfig:
    """The demo's MaskFormer: a ResNet-18, widths 128, 20 queries, 3 decoder layers without dropout, and the
    class term at weight 5 (loss and matching cost; the paper's is 1), so that a backbone learning from few
    steps learns shapes and textures and not only the colour edges the mask losses need."""
    return MaskFormerConfig(
        num_classes=6,
        backbone=BackboneConfig(type="timm", name="resnet18", norm="bn"),
        pixel_decoder=PixelDecoderConfig(conv_dim=128, mask_dim=128),
        transformer=TransformerConfig(
            hidden_dim=128, num_queries=20, num_heads=4, ffn_dim=512, num_layers=3, dropout=0.0
        ),
        loss=LossConfig(class_weight=5.0, cost_class=5.0),
    )


DEMO = DemoRecipe(_demo_model, lr=3e-4, warmup_steps=50, cpu_steps=800)


FAMILY = Family(
    name="maskformer",
    title="MaskFormer",
    year=2021,
    config=MaskFormerConfig,
    network=MaskFormer,
    presets=PRESETS,
    preset_datasets=PRESET_DATASETS,
    checkpoints=CHECKPOINTS,
    recipe=_recipe,
    optimizer=OPTIMIZER,
    demo=DEMO,
    describe=lambda config: config.pixel_decoder.type,
    transformers=TransformersFormat(("maskformer",), _transformers_config, _transformers_rules),
    official=OfficialFormat(_is_detectron2, _detectron2_config, _detectron2_rules),
)
MaskFormerConfig.FAMILY = FAMILY
