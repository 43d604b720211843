"""Hugging Face transformers' MaskFormer format (config.json + safetensors/bin): config and weight names.

Only the file format is read here; transformers itself is never imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..config import (
    BackboneConfig,
    LossConfig,
    MaskFormerConfig,
    MetadataConfig,
    PixelDecoderConfig,
    TransformerConfig,
)
from ..presets import RESNET_BY_DEPTHS, SWIN_WEIGHTS_BY_WIDTH
from .renaming import Renamed, Rule, rename_state_dict


def config_from_transformers(data: Mapping[str, Any], source: str = "config.json") -> MaskFormerConfig:
    """MaskFormerConfig from a transformers ``config.json`` of model_type "maskformer"."""
    if data.get("model_type") != "maskformer":
        raise ValueError(f"{source}: model_type is {data.get('model_type')!r}, not a MaskFormer")
    bb = data.get("backbone_config")
    if not isinstance(bb, Mapping):
        raise ValueError(f"{source}: no backbone_config; only checkpoints with an explicit backbone are supported")
    kind = bb.get("model_type")
    if kind in ("swin", "maskformer-swin"):
        if bb.get("use_absolute_embeddings"):
            raise ValueError(f"{source}: Swin with absolute position embeddings is not a MaskFormer backbone")
        backbone = BackboneConfig(
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
    elif kind == "resnet":
        depths = tuple(bb["depths"])
        if bb.get("layer_type", "bottleneck") != "bottleneck" or depths not in RESNET_BY_DEPTHS:
            raise ValueError(f"{source}: unsupported ResNet (layer_type {bb.get('layer_type')}, depths {depths})")
        if bb.get("embedding_size", 64) != 64 or bb.get("downsample_in_first_stage", False):
            raise ValueError(f"{source}: unsupported ResNet stem (embedding_size {bb.get('embedding_size')})")
        backbone = BackboneConfig(
            type="timm",
            name=RESNET_BY_DEPTHS[depths],
            norm="frozen_bn",
            stride_in_1x1=bool(bb.get("downsample_in_bottleneck", False)),
        )
    else:
        raise ValueError(f"{source}: unsupported backbone model_type {kind!r} (expected swin or resnet)")

    dec = data.get("decoder_config") or {}
    id2label = data.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)]
    num_classes = int(data.get("num_labels", len(names)))
    return MaskFormerConfig(
        num_classes=num_classes,
        backbone=backbone,
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
        metadata=MetadataConfig(class_names=names if len(names) == num_classes else []),
    )


def _swin_rules() -> list[Rule]:
    enc = r"model\.pixel_level_module\.encoder\."
    blk = enc + r"model\.encoder\.layers\.(\d+)\.blocks\.(\d+)\."
    out = r"backbone.layers.\1.blocks.\2."
    qkv = {"query": 0, "key": 1, "value": 2}
    return [
        (enc + r"model\.embeddings\.patch_embeddings\.projection\.(\w+)", r"backbone.patch_embed.proj.\1"),
        (enc + r"model\.embeddings\.norm\.(\w+)", r"backbone.patch_embed.norm.\1"),
        (blk + r"layernorm_before\.(\w+)", out + r"norm1.\3"),
        (blk + r"layernorm_after\.(\w+)", out + r"norm2.\3"),
        (blk + r"attention\.self\.relative_position_bias_table", out + "attn.relative_position_bias_table"),
        (blk + r"attention\.self\.relative_position_index", None),
        (
            blk + r"attention\.self\.(query|key|value)\.(\w+)",
            lambda m: f"backbone.layers.{m[1]}.blocks.{m[2]}.attn.qkv.{m[4]}#{qkv[m[3]]}",
        ),
        (blk + r"attention\.output\.dense\.(\w+)", out + r"attn.proj.\3"),
        (blk + r"intermediate\.dense\.(\w+)", out + r"mlp.fc1.\3"),
        (blk + r"output\.dense\.(\w+)", out + r"mlp.fc2.\3"),
        # transformers merges patches at the end of stage i, timm at the start of stage i + 1.
        (
            enc + r"model\.encoder\.layers\.(\d+)\.downsample\.(\w+)\.(\w+)",
            lambda m: f"backbone.layers.{int(m[1]) + 1}.downsample.{m[2]}.{m[3]}",
        ),
        (enc + r"model\.layernorm\.\w+", None),  # the classification model's final norm; unused
        (enc + r"hidden_states_norms\.(\d+)\.(\w+)", r"backbone.norms.\1.\2"),
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


def _head_rules() -> list[Rule]:
    fpn = r"model\.pixel_level_module\.decoder\.fpn\."
    tm = r"model\.transformer_module\."
    lay = tm + r"decoder\.layers\.(\d+)\."
    out = r"predictor.decoder.layers.\1."
    qkv = {"q": 0, "k": 1, "v": 2}
    attn_name = {"self_attn": "self_attn", "encoder_attn": "cross_attn"}
    return [
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


def convert_transformers_state_dict(state: Mapping[str, Tensor], config: MaskFormerConfig) -> Renamed:
    """Rename a transformers MaskFormerForInstanceSegmentation state dict to this package's names."""
    backbone_rules = _swin_rules() if config.backbone.type == "swin" else _resnet_rules()
    return rename_state_dict(state, backbone_rules + _head_rules())
