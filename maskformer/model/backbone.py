"""Backbones: any timm model through its multi-scale feature API, or the original's Swin.

Every backbone returns ``[res2, res3, res4, res5]`` as [B, C_i, H_i, W_i], at strides 4, 8, 16, 32 (or, for a
dilated timm model made with ``output_stride``, e.g. 4, 8, 16, 16), and exposes ``channels`` (C_i) and
``strides``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import timm
from timm.layers import freeze_batch_norm_2d
from torch import Tensor, nn

from .config import BackboneConfig
from .swin import SwinBackbone

STRIDES = (4, 8, 16, 32)


class TimmBackbone(nn.Module):
    """A timm model in ``features_only`` mode, reduced to the stride 4..32 outputs."""

    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        norm: str = "frozen_bn",
        stride_in_1x1: bool = False,
        drop_path_rate: float = 0.0,
        **timm_kwargs,
    ):
        super().__init__()
        if drop_path_rate > 0:
            timm_kwargs["drop_path_rate"] = drop_path_rate
        with imagenet_weights(name, pretrained):
            self.body = timm.create_model(name, pretrained=pretrained, features_only=True, **timm_kwargs)
        reductions = list(self.body.feature_info.reduction())
        if all(s in reductions for s in STRIDES):
            # The last output at each stride is the deepest one (e.g. after a stage's final block).
            self.indices = [len(reductions) - 1 - reductions[::-1].index(s) for s in STRIDES]
        else:
            # Dilated models (timm's output_stride=8/16) repeat their last stride: take the four deepest maps.
            self.indices = [i for i, r in enumerate(reductions) if r >= 4][-4:]
        if len(self.indices) < 4 or reductions[self.indices[0]] != 4:
            raise ValueError(
                f"timm model {name!r} gives features at strides {reductions}; MaskFormer needs four levels "
                f"from stride 4 down (normally {list(STRIDES)})"
            )
        self.channels = [self.body.feature_info.channels()[i] for i in self.indices]
        self.strides = [reductions[i] for i in self.indices]
        if stride_in_1x1:
            _move_stride_to_1x1(self.body)
        if norm == "frozen_bn":
            self.body = freeze_batch_norm_2d(self.body)
        elif norm == "syncbn":
            self.body = nn.SyncBatchNorm.convert_sync_batchnorm(self.body)

    def forward(self, x: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> [res2, res3, res4, res5]."""
        outs = self.body(x)
        feats = [outs[i] for i in self.indices]
        # Some timm models (e.g. ConvNeXt-V2 variants, MaxViT) emit channels-last maps.
        return [
            f.permute(0, 3, 1, 2) if f.shape[1] != c and f.shape[-1] == c else f for f, c in zip(feats, self.channels)
        ]


def _move_stride_to_1x1(body: nn.Module) -> None:
    """detectron2 MSRA ResNets stride the first 1x1 conv of each downsampling bottleneck."""
    for stage in ("layer2", "layer3", "layer4"):
        block = getattr(body, stage)[0]
        if not (hasattr(block, "conv1") and hasattr(block, "conv2")):
            raise ValueError("stride_in_1x1 applies to timm ResNet bottleneck models only")
        block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)


@contextlib.contextmanager
def imagenet_weights(name: str, pretrained: bool) -> Iterator[None]:
    """Fetching a backbone's ImageNet weights (timm, through the Hugging Face hub cache): a failure, offline
    for one, becomes one line that names the weights and how to do without them."""
    if not pretrained:
        yield
        return
    try:
        yield
    except (OSError, RuntimeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RuntimeError(
            f"{name}: the ImageNet weights this backbone starts from could not be loaded ({reason}); connect "
            "once to cache them, or train from scratch with model.backbone.pretrained=false"
        ) from err


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    if cfg.type == "swin":
        backbone = SwinBackbone(
            embed_dim=cfg.embed_dim,
            depths=tuple(cfg.depths),
            num_heads=tuple(cfg.num_heads),
            window_size=cfg.window_size,
            patch_size=cfg.patch_size,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            drop_path_rate=cfg.drop_path_rate,
        )
        if cfg.pretrained:
            load_timm_swin_weights(backbone, cfg.name)
        return backbone
    if cfg.type == "timm":
        return TimmBackbone(
            cfg.name,
            pretrained=cfg.pretrained,
            norm=cfg.norm,
            stride_in_1x1=cfg.stride_in_1x1,
            drop_path_rate=cfg.drop_path_rate,
            **cfg.timm_kwargs,
        )
    raise ValueError(f"unknown backbone type {cfg.type!r} (expected 'timm' or 'swin')")


def load_timm_swin_weights(backbone: SwinBackbone, timm_name: str) -> None:
    """Copy the ImageNet weights of timm's ``timm_name`` into ``backbone`` (downloads when not cached).

    timm's Swin uses the same parameter names; its classifier head and final norm have no counterpart, and
    the per-stage output norms are new (they keep their LayerNorm initialisation, as in the original).
    """
    with imagenet_weights(timm_name, True):
        source = timm.create_model(timm_name, pretrained=True)
    state = {
        k: v
        for k, v in source.state_dict().items()
        if not k.startswith(("head.", "norm.")) and "attn_mask" not in k and "relative_position_index" not in k
    }
    result = backbone.load_state_dict(state, strict=False)
    unexpected = list(result.unexpected_keys)
    missing = [k for k in result.missing_keys if not k.startswith("norms.")]
    if unexpected or missing:
        raise RuntimeError(
            f"timm weights {timm_name!r} do not fit this Swin: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
