"""Hugging Face transformers' formats (config.json + safetensors/bin): what every family's files share, the
backbone's config and weight names, for files saved by transformers 4 and 5 (whose Swin and attention
weights are named apart). Each family's module reads the rest of its config.json and names its other weights.

Only the file format is read here; transformers itself is never imported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..backbone_presets import RESNET_BY_DEPTHS, SWIN_WEIGHTS_BY_WIDTH
from ..config import BackboneConfig, LossConfig, MetadataConfig, ModelConfig
from .renaming import Rule


@dataclass(frozen=True)
class Common:
    """What a transformers ``config.json`` says the same way for every family: the backbone, the class count
    and the class names (when id2label lists every class)."""

    backbone: BackboneConfig
    num_classes: int
    metadata: MetadataConfig


def read_common(data: Mapping[str, Any], source: str = "config.json") -> Common:
    """The family-independent part of a transformers ``config.json``."""
    bb = data.get("backbone_config")
    if not isinstance(bb, Mapping):
        raise ValueError(f"{source}: no backbone_config; only checkpoints with an explicit backbone are supported")
    backbone = _backbone(bb, source)
    id2label = data.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)]
    num_classes = int(data.get("num_labels", len(names)))
    metadata = MetadataConfig(class_names=names if len(names) == num_classes else [])
    return Common(backbone, num_classes, metadata)


def point_loss(data: Mapping[str, Any], base: LossConfig) -> LossConfig:
    """The point-sampled loss a transformers ``config.json`` of a Mask2Former-style model describes (class,
    mask and dice weights, also the matching costs; no-object weight; points, oversampling, importance);
    ``base`` gives the rest."""
    weights = {"class_weight": data.get("class_weight", base.class_weight),
               "mask_weight": data.get("mask_weight", base.mask_weight),
               "dice_weight": data.get("dice_weight", base.dice_weight)}  # fmt: skip
    return dataclasses.replace(
        base,
        **weights,
        cost_class=weights["class_weight"],
        cost_mask=weights["mask_weight"],
        cost_dice=weights["dice_weight"],
        no_object_weight=data.get("no_object_weight", base.no_object_weight),
        mask_loss="bce",
        num_points=data.get("train_num_points", base.num_points),
        oversample_ratio=data.get("oversample_ratio", base.oversample_ratio),
        importance_sample_ratio=data.get("importance_sample_ratio", base.importance_sample_ratio),
    )


def _backbone(bb: Mapping[str, Any], source: str) -> BackboneConfig:
    kind = bb.get("model_type")
    if kind in ("swin", "maskformer-swin"):
        if bb.get("use_absolute_embeddings"):
            raise ValueError(f"{source}: Swin with absolute position embeddings is not a MaskFormer backbone")
        return BackboneConfig(
            type="swin",
            name=SWIN_WEIGHTS_BY_WIDTH.get(bb["embed_dim"], ""),
            embed_dim=bb["embed_dim"],
            depths=tuple(bb["depths"]),
            num_heads=tuple(bb["num_heads"]),
            window_size=bb["window_size"],
            patch_size=bb.get("patch_size", 4),
            mlp_ratio=bb.get("mlp_ratio", 4.0),
            qkv_bias=bb.get("qkv_bias", True),
            drop_path_rate=bb.get("drop_path_rate", 0.3),
        )
    if kind == "resnet":
        return _resnet_backbone(bb, source)
    raise ValueError(f"{source}: unsupported backbone model_type {kind!r} (expected swin or resnet)")


def _resnet_backbone(bb: Mapping[str, Any], source: str) -> BackboneConfig:
    """A transformers ResNet of any depths, widths and block type as a timm ResNet (the same layers)."""
    depths = tuple(bb.get("depths", (3, 4, 6, 3)))
    layer_type = bb.get("layer_type", "bottleneck")
    widths = tuple(bb.get("hidden_sizes", (256, 512, 1024, 2048)))
    stem = bb.get("embedding_size", 64)
    if layer_type not in ("bottleneck", "basic"):
        raise ValueError(f"{source}: unsupported ResNet layer_type {layer_type!r} (expected bottleneck or basic)")
    if len(depths) != 4 or len(widths) != 4:
        raise ValueError(f"{source}: a ResNet backbone needs four stages, got depths {list(depths)}")
    if bb.get("downsample_in_first_stage", False) or bb.get("hidden_act", "relu") != "relu" or stem != 64:
        raise ValueError(
            f"{source}: unsupported ResNet (a strided first stage, an activation other than relu, or a stem of "
            f"{stem} channels: timm's 7x7 stem has 64)"
        )
    expansion = 4 if layer_type == "bottleneck" else 1
    standard = layer_type == "bottleneck" and widths == (256, 512, 1024, 2048) and stem == 64
    if standard and depths in RESNET_BY_DEPTHS:
        name, kwargs = RESNET_BY_DEPTHS[depths], {}
    else:
        name = "resnet50" if layer_type == "bottleneck" else "resnet18"
        kwargs = {"layers": list(depths), "channels": [w // expansion for w in widths]}
    return BackboneConfig(
        type="timm",
        name=name,
        norm="frozen_bn",
        stride_in_1x1=bool(bb.get("downsample_in_bottleneck", False)),
        timm_kwargs=kwargs,
    )


def _swin_rules() -> list[Rule]:
    # MaskFormer's MaskFormerSwin sits at encoder.model.*; Mask2Former's SwinBackbone at encoder.* (transformers 4)
    # or encoder.swin.* (transformers 5). Attention weights are self.query/key/value + output.dense (4, and
    # MaskFormerSwin) or q/k/v/o_proj (5).
    enc = r"model\.pixel_level_module\.encoder\.(?:model\.|swin\.)?"
    blk = enc + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\."
    out = r"backbone.layers.\1.blocks.\2."
    qkv = {"query": 0, "key": 1, "value": 2, "q_proj": 0, "k_proj": 1, "v_proj": 2}
    return [
        (enc + r"embeddings\.patch_embeddings\.projection\.(\w+)", r"backbone.patch_embed.proj.\1"),
        (enc + r"embeddings\.norm\.(\w+)", r"backbone.patch_embed.norm.\1"),
        (blk + r"layernorm_before\.(\w+)", out + r"norm1.\3"),
        (blk + r"layernorm_after\.(\w+)", out + r"norm2.\3"),
        (
            blk + r"attention\.(?:self\.|relative_position_bias\.)relative_position_bias_table",
            out + "attn.relative_position_bias_table",
        ),
        (blk + r"attention\.(?:self\.|relative_position_bias\.)relative_position_index", None),
        (
            blk + r"attention\.(?:self\.)?(query|key|value|q_proj|k_proj|v_proj)\.(\w+)",
            lambda m: f"backbone.layers.{m[1]}.blocks.{m[2]}.attn.qkv.{m[4]}#{qkv[m[3]]}",
        ),
        (blk + r"attention\.(?:output\.dense|o_proj)\.(\w+)", out + r"attn.proj.\3"),
        (blk + r"(?:intermediate\.dense|mlp\.fc1)\.(\w+)", out + r"mlp.fc1.\3"),
        (blk + r"(?:output\.dense|mlp\.fc2)\.(\w+)", out + r"mlp.fc2.\3"),
        # transformers merges patches at the end of stage i, timm at the start of stage i + 1.
        (
            enc + r"encoder\.layers\.(\d+)\.downsample\.(\w+)\.(\w+)",
            lambda m: f"backbone.layers.{int(m[1]) + 1}.downsample.{m[2]}.{m[3]}",
        ),
        (enc + r"layernorm\.\w+", None),  # the classification model's final norm; unused
        (r"model\.pixel_level_module\.encoder\.hidden_states_norms\.(\d+)\.(\w+)", r"backbone.norms.\1.\2"),
        (
            r"model\.pixel_level_module\.encoder\.hidden_states_norms\.stage(\d+)\.(\w+)",
            lambda m: f"backbone.norms.{int(m[1]) - 1}.{m[2]}",
        ),
    ]


def _resnet_rules() -> list[Rule]:
    enc = r"model\.pixel_level_module\.encoder\."
    layer = enc + r"encoder\.stages\.(\d+)\.layers\.(\d+)\."

    def stage(m) -> str:
        return f"backbone.body.layer{int(m[1]) + 1}.{m[2]}."

    return [
        (r".*\.num_batches_tracked", None),
        (enc + r"embedder\.embedder\.convolution\.(\w+)", r"backbone.body.conv1.\1"),
        (enc + r"embedder\.embedder\.normalization\.(\w+)", r"backbone.body.bn1.\1"),
        (layer + r"shortcut\.convolution\.(\w+)", lambda m: stage(m) + f"downsample.0.{m[3]}"),
        (layer + r"shortcut\.normalization\.(\w+)", lambda m: stage(m) + f"downsample.1.{m[3]}"),
        (layer + r"layer\.(\d)\.convolution\.(\w+)", lambda m: stage(m) + f"conv{int(m[3]) + 1}.{m[4]}"),
        (layer + r"layer\.(\d)\.normalization\.(\w+)", lambda m: stage(m) + f"bn{int(m[3]) + 1}.{m[4]}"),
    ]


def backbone_rules(config: ModelConfig) -> list[Rule]:
    """The renaming of the backbone's weights, the same in every family's files."""
    return _swin_rules() if config.backbone.type == "swin" else _resnet_rules()
