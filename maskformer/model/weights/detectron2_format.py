"""The official model zoos' format: ``{"model": {detectron2 name: array}}`` pickles. What every family's
files share is here: reading the state dict, and the backbone's config and weight names; each family's module
recognises its own files, reads the rest of its architecture and names its other weights.

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

from ..backbone_presets import RESNET_BY_DEPTHS, SWIN_WEIGHTS_BY_WIDTH
from ..config import BackboneConfig, ModelConfig
from .renaming import Rule

HEAD = "sem_seg_head."


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


def count_indices(state: Mapping[str, Tensor], pattern: str) -> int:
    """How many distinct values the first group of ``pattern`` takes over the keys (layers, stages)."""
    regex = re.compile(pattern)
    return len({m[1] for k in state if (m := regex.match(k))})


def backbone_config(state: Mapping[str, Tensor], source: str) -> BackboneConfig:
    """The backbone of an official checkpoint (Swin geometry or ResNet depths), read off its weights."""
    if "backbone.patch_embed.proj.weight" in state:
        proj = state["backbone.patch_embed.proj.weight"]
        dim = proj.shape[0]
        num_stages = count_indices(state, r"backbone\.layers\.(\d+)\.")
        depths = tuple(count_indices(state, rf"backbone\.layers\.{i}\.blocks\.(\d+)\.") for i in range(num_stages))
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
        depths = tuple(count_indices(state, rf"backbone\.res{s}\.(\d+)\.") for s in range(2, 6))
        if depths not in RESNET_BY_DEPTHS:
            raise ValueError(f"{source}: unsupported ResNet depths {depths}")
        kwargs = {}
        if "backbone.stem.conv2.weight" in state:
            kwargs = {"stem_type": "deep", "stem_width": int(state["backbone.stem.conv1.weight"].shape[0])}
        backbone = BackboneConfig(type="timm", name=RESNET_BY_DEPTHS[depths], norm="frozen_bn", timm_kwargs=kwargs)
    else:
        raise ValueError(f"{source}: no Swin or ResNet backbone weights found (keys start {sorted(state)[:3]})")
    return backbone


def backbone_rules(config: ModelConfig) -> list[Rule]:
    """detectron2's names of the backbone's weights -> timm's (ResNet) or the Swin's, for every family."""
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
