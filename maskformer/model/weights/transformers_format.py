"""Hugging Face transformers' MaskFormer and Mask2Former formats (config.json + safetensors/bin): config and
weight names, for files saved by transformers 4 and 5 (whose Swin and attention weights are named apart).

Only the file format is read here; transformers itself is never imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..config import (
    BackboneConfig,
    LossConfig,
    Mask2FormerConfig,
    MaskFormerConfig,
    MetadataConfig,
    PixelDecoderConfig,
    TransformerConfig,
)
from ..presets import RESNET_BY_DEPTHS, SWIN_WEIGHTS_BY_WIDTH
from .renaming import Renamed, Rule, rename_state_dict


def config_from_transformers(data: Mapping[str, Any], source: str = "config.json") -> MaskFormerConfig:
    """The model config of a transformers ``config.json`` of model_type "maskformer" or "mask2former"."""
    kind = data.get("model_type")
    if kind not in ("maskformer", "mask2former"):
        raise ValueError(f"{source}: model_type is {kind!r}, not a MaskFormer or Mask2Former")
    bb = data.get("backbone_config")
    if not isinstance(bb, Mapping):
        raise ValueError(f"{source}: no backbone_config; only checkpoints with an explicit backbone are supported")
    backbone = _backbone(bb, source)
    id2label = data.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)]
    num_classes = int(data.get("num_labels", len(names)))
    metadata = MetadataConfig(class_names=names if len(names) == num_classes else [])
    if kind == "mask2former":
        return _mask2former_config(data, backbone, num_classes, metadata, source)
    dec = data.get("decoder_config") or {}
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
        metadata=metadata,
    )


def _mask2former_config(
    data: Mapping[str, Any], backbone: BackboneConfig, num_classes: int, metadata: MetadataConfig, source: str
) -> Mask2FormerConfig:
    if data.get("pre_norm", False):
        raise ValueError(f"{source}: pre-norm decoder layers are not Mask2Former's (pre_norm is true)")
    if data.get("common_stride", 4) != 4 or tuple(data.get("feature_strides", (4, 8, 16, 32))) != (4, 8, 16, 32):
        raise ValueError(f"{source}: only mask features at stride 4 from features at strides 4-32 are supported")
    heads = data.get("num_attention_heads", 8)
    base = Mask2FormerConfig()
    weights = {"class_weight": data.get("class_weight", 2.0), "mask_weight": data.get("mask_weight", 5.0),
               "dice_weight": data.get("dice_weight", 5.0)}  # fmt: skip
    return Mask2FormerConfig(
        num_classes=num_classes,
        backbone=backbone,
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
        loss=LossConfig(
            **weights,
            cost_class=weights["class_weight"],
            cost_mask=weights["mask_weight"],
            cost_dice=weights["dice_weight"],
            no_object_weight=data.get("no_object_weight", 0.1),
            mask_loss="bce",
            num_points=data.get("train_num_points", base.loss.num_points),
            oversample_ratio=data.get("oversample_ratio", base.loss.oversample_ratio),
            importance_sample_ratio=data.get("importance_sample_ratio", base.loss.importance_sample_ratio),
            point_padding=base.loss.point_padding,
        ),
        metadata=metadata,
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


def _mask2former_rules() -> list[Rule]:
    pd = r"model\.pixel_level_module\.decoder\."
    enc = pd + r"encoder\.layers\.(\d+)\."
    tm = r"model\.transformer_module\."
    lay = tm + r"decoder\.layers\.(\d+)\."
    out = r"predictor.layers.\1."
    qkv = {"q": 0, "k": 1, "v": 2}
    return [
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


def convert_transformers_state_dict(state: Mapping[str, Tensor], config: MaskFormerConfig) -> Renamed:
    """Rename a transformers MaskFormer or Mask2Former state dict to this package's names."""
    backbone_rules = _swin_rules() if config.backbone.type == "swin" else _resnet_rules()
    head_rules = _mask2former_rules() if config.family == "mask2former" else _head_rules()
    return rename_state_dict(state, backbone_rules + head_rules)
