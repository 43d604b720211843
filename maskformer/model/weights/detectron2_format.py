"""The official model zoos' format: ``{"model": {detectron2 name: array}}`` pickles, of MaskFormer and of
Mask2Former (told apart by their pixel decoder's weights).

The zoo files carry no config, so the architecture is read off the weights' names and shapes (backbone
kind and depth, Swin geometry, pixel decoder kind, queries, layers, classes, deformable sampling points).
Attention head counts are not visible in weights; the papers' 8 heads are assumed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import BackboneConfig, Mask2FormerConfig, MaskFormerConfig, PixelDecoderConfig, TransformerConfig
from ..presets import RESNET_BY_DEPTHS, SWIN_WEIGHTS_BY_WIDTH
from .renaming import Renamed, Rule, rename_state_dict

HEAD = "sem_seg_head."
MSDEFORM = HEAD + "pixel_decoder.transformer.encoder.layers."


def model_state_from_checkpoint(obj: Any, source: str) -> dict[str, Tensor]:
    """The ``model`` dict of a detectron2 checkpoint as tensors (numpy arrays converted)."""
    state = obj.get("model", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"{source}: not a detectron2 checkpoint (expected a dict with a 'model' state dict)")
    out = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, Tensor):
            raise ValueError(f"{source}: entry {key!r} is a {type(value).__name__}, not an array")
        out[key] = value
    return out


def _count(state: Mapping[str, Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m[1] for k in state if (m := regex.match(k))})


def config_from_detectron2(state: Mapping[str, Tensor], source: str = "checkpoint") -> MaskFormerConfig:
    """Infer the model config (MaskFormer or Mask2Former) from detectron2 parameter names and shapes."""
    backbone = _backbone_config(state, source)
    # Mask2Former's encoder layers sample (deformable attention); "+6 Enc" MaskFormer's have in_proj weights.
    if MSDEFORM + "0.self_attn.sampling_offsets.weight" in state:
        return _mask2former_config(state, backbone, source)
    return _maskformer_config(state, backbone, source)


def _backbone_config(state: Mapping[str, Tensor], source: str) -> BackboneConfig:
    if "backbone.patch_embed.proj.weight" in state:
        proj = state["backbone.patch_embed.proj.weight"]
        dim = proj.shape[0]
        num_stages = _count(state, r"backbone\.layers\.(\d+)\.")
        depths = tuple(_count(state, rf"backbone\.layers\.{i}\.blocks\.(\d+)\.") for i in range(num_stages))
        heads = tuple(
            state[f"backbone.layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1] for i in range(num_stages)
        )
        table = state["backbone.layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
        backbone = BackboneConfig(
            type="swin",
            name=SWIN_WEIGHTS_BY_WIDTH.get(dim, ""),
            embed_dim=dim,
            depths=depths,
            num_heads=heads,
            window_size=(math.isqrt(table) + 1) // 2,
            patch_size=proj.shape[-1],
            mlp_ratio=state["backbone.layers.0.blocks.0.mlp.fc1.weight"].shape[0] / dim,
            qkv_bias="backbone.layers.0.blocks.0.attn.qkv.bias" in state,
            drop_path_rate=0.3,
        )
    elif "backbone.stem.conv1.weight" in state:
        depths = tuple(_count(state, rf"backbone\.res{s}\.(\d+)\.") for s in range(2, 6))
        if depths not in RESNET_BY_DEPTHS:
            raise ValueError(f"{source}: unsupported ResNet depths {depths}")
        kwargs = {}
        if "backbone.stem.conv2.weight" in state:
            kwargs = {"stem_type": "deep", "stem_width": int(state["backbone.stem.conv1.weight"].shape[0])}
        backbone = BackboneConfig(type="timm", name=RESNET_BY_DEPTHS[depths], norm="frozen_bn", timm_kwargs=kwargs)
    else:
        raise ValueError(f"{source}: no Swin or ResNet backbone weights found (keys start {sorted(state)[:3]})")
    return backbone


def _maskformer_config(state: Mapping[str, Tensor], backbone: BackboneConfig, source: str) -> MaskFormerConfig:
    pd = HEAD + "pixel_decoder."
    pred = HEAD + "predictor."
    for key in (pd + "mask_features.weight", pred + "query_embed.weight", pred + "class_embed.weight"):
        if key not in state:
            raise ValueError(f"{source}: missing {key}; not a MaskFormer checkpoint")
    enc_layers = _count(state, re.escape(pd) + r"transformer\.encoder\.layers\.(\d+)\.")
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
            num_layers=_count(state, re.escape(pred) + r"transformer\.decoder\.layers\.(\d+)\."),
            ffn_dim=state[pred + "transformer.decoder.layers.0.linear1.weight"].shape[0],
        ),
    )


def _mask2former_config(state: Mapping[str, Tensor], backbone: BackboneConfig, source: str) -> Mask2FormerConfig:
    pd = HEAD + "pixel_decoder."
    pred = HEAD + "predictor."
    query_feat = next((pred + n for n in ("query_feat.weight", "static_query.weight") if pred + n in state), None)
    for key in (pd + "mask_features.weight", pred + "class_embed.weight", query_feat or pred + "query_feat.weight"):
        if key not in state:
            raise ValueError(f"{source}: missing {key}; not a Mask2Former checkpoint")
    base = Mask2FormerConfig()
    heads = base.pixel_decoder.encoder_heads
    levels = _count(state, re.escape(pd) + r"input_proj\.(\d+)\.")
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
            encoder_layers=_count(state, re.escape(MSDEFORM) + r"(\d+)\."),
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
            num_layers=_count(state, re.escape(pred) + r"transformer_ffn_layers\.(\d+)\."),
            ffn_dim=state[pred + "transformer_ffn_layers.0.linear1.weight"].shape[0],
            dropout=base.transformer.dropout,
            enforce_input_proj=pred + "input_proj.0.weight" in state,
        ),
    )


def _backbone_rules(config: MaskFormerConfig) -> list[Rule]:
    if config.backbone.type == "swin":
        return [
            (r"backbone\.layers\.\d+\.blocks\.\d+\.attn\.relative_position_index", None),
            (r"backbone\.layers\.\d+\.blocks\.\d+\.attn_mask", None),
            # detectron2 merges patches at the end of stage i, timm at the start of stage i + 1.
            (
                r"backbone\.layers\.(\d+)\.downsample\.(.*)",
                lambda m: f"backbone.layers.{int(m[1]) + 1}.downsample.{m[2]}",
            ),
            (r"backbone\.norm(\d)\.(\w+)", r"backbone.norms.\1.\2"),
            (r"backbone\.(patch_embed\..*|layers\..*)", r"backbone.\1"),
        ]
    if config.backbone.timm_kwargs.get("stem_type") == "deep":
        stem: list[Rule] = [
            (r"backbone\.stem\.conv1\.norm\.(\w+)", r"backbone.body.conv1.1.\1"),
            (r"backbone\.stem\.conv1\.weight", "backbone.body.conv1.0.weight"),
            (r"backbone\.stem\.conv2\.norm\.(\w+)", r"backbone.body.conv1.4.\1"),
            (r"backbone\.stem\.conv2\.weight", "backbone.body.conv1.3.weight"),
            (r"backbone\.stem\.conv3\.norm\.(\w+)", r"backbone.body.bn1.\1"),
            (r"backbone\.stem\.conv3\.weight", "backbone.body.conv1.6.weight"),
        ]
    else:
        stem = [
            (r"backbone\.stem\.conv1\.norm\.(\w+)", r"backbone.body.bn1.\1"),
            (r"backbone\.stem\.conv1\.weight", "backbone.body.conv1.weight"),
        ]

    def block(m) -> str:
        return f"backbone.body.layer{int(m[1]) - 1}.{m[2]}."

    return [
        (r".*\.num_batches_tracked", None),
        *stem,
        (r"backbone\.res(\d)\.(\d+)\.conv(\d)\.norm\.(\w+)", lambda m: block(m) + f"bn{m[3]}.{m[4]}"),
        (r"backbone\.res(\d)\.(\d+)\.conv(\d)\.weight", lambda m: block(m) + f"conv{m[3]}.weight"),
        (r"backbone\.res(\d)\.(\d+)\.shortcut\.norm\.(\w+)", lambda m: block(m) + f"downsample.1.{m[3]}"),
        (r"backbone\.res(\d)\.(\d+)\.shortcut\.weight", lambda m: block(m) + "downsample.0.weight"),
    ]


def _head_rules(num_levels: int) -> list[Rule]:
    pd = re.escape(HEAD + "pixel_decoder.")
    pred = re.escape(HEAD + "predictor.")
    # detectron2 numbers FPN convs by input level (layer_1 = res2 ... layer_4 = res5); ours run top-down.
    return [
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


def _mask2former_head_rules() -> list[Rule]:
    pd = re.escape(HEAD + "pixel_decoder.")
    pred = re.escape(HEAD + "predictor.")
    return [
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


def convert_detectron2_state_dict(state: Mapping[str, Tensor], config: MaskFormerConfig) -> Renamed:
    """Rename a detectron2 MaskFormer or Mask2Former state dict to this package's names."""
    head = _mask2former_head_rules() if config.family == "mask2former" else _head_rules(num_levels=4)
    return rename_state_dict(state, _backbone_rules(config) + head)
