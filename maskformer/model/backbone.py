"""Backbones: any timm model through its multi-scale feature API, or the original's Swin.

Every backbone returns ``[res2, res3, res4, res5]`` as [B, C_i, H_i, W_i], at strides 4, 8, 16, 32 (or, for a
dilated timm model made with ``output_stride``, e.g. 4, 8, 16, 16), and exposes ``channels`` (C_i) and
``strides``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

import timm
import torch
import torch.nn.functional as F
from timm.layers import SwiGLUPacked, freeze_batch_norm_2d
from torch import Tensor, nn

from .config import BackboneConfig, did_you_mean
from .swin import SwinBackbone
from .weights.files import read_tensors
from .weights.fit import StateDiff

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
        weights: str = "",
        **timm_kwargs,
    ):
        super().__init__()
        if weights:
            # timm maps the file's names into its feature wrapper (and applies the model's own checkpoint
            # filter), as for its downloads; it loads a feature wrapper leniently, so the file is checked first.
            state = timm_state_dict(name, weights, timm_kwargs)
            timm_kwargs = {**timm_kwargs, "pretrained_cfg_overlay": {"state_dict": state}}
            pretrained = True
        if drop_path_rate > 0:
            timm_kwargs["drop_path_rate"] = drop_path_rate
        with imagenet_weights(name, pretrained and not weights), _quiet_timm_loading(bool(weights)):
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
            self.body = freeze_batch_norm(self.body)
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
def _quiet_timm_loading(quiet: bool) -> Iterator[None]:
    """timm logs the layers a feature wrapper leaves out (e.g. EfficientNet's last conv) as unexpected keys
    of every load; a checked file's load has nothing to report."""
    logger = logging.getLogger("timm.models._builder")
    level = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


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


def check_timm_name(name: str) -> None:
    """Refuse a name timm does not know (its own error is "Unknown model (resnet81)"), naming the setting
    and the closest names; hub and local-folder names (``hf-hub:...``) are timm's to resolve."""
    if ":" in name or timm.is_model(name):
        return
    raise ValueError(
        f"model.backbone.name {name!r}: not a timm model{did_you_mean(name.split('.')[0], timm.list_models())}"
    )


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
        if cfg.weights:
            load_swin_state(backbone, read_tensors(cfg.weights), cfg.weights)
        elif cfg.pretrained:
            with imagenet_weights(cfg.name, True):
                source = timm.create_model(cfg.name, pretrained=True)
            load_swin_state(backbone, source.state_dict(), f"timm weights {cfg.name!r}")
        return backbone
    if cfg.type == "timm":
        check_timm_name(cfg.name)
        return TimmBackbone(
            cfg.name,
            pretrained=cfg.pretrained,
            norm=cfg.norm,
            stride_in_1x1=cfg.stride_in_1x1,
            drop_path_rate=cfg.drop_path_rate,
            weights=cfg.weights,
            **cfg.timm_kwargs,
        )
    raise ValueError(f"unknown backbone type {cfg.type!r} (expected 'timm' or 'swin')")


class FrozenBatchNorm2d(nn.Module):
    """detectron2's FrozenBatchNorm: fixed statistics and affine, as buffers (torchvision's names), applied in
    one pass over the input by batch_norm without batch statistics, where torchvision's ``x * scale + bias``
    (what timm's ``freeze_batch_norm_2d`` makes) writes the product first: twice the memory traffic, the
    backbone's largest elementwise cost."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        # A BatchNorm2d's step counter has no use once frozen (torchvision drops it the same way).
        self.register_load_state_dict_pre_hook(
            lambda module, state, prefix, *rest: state.pop(prefix + "num_batches_tracked", None)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` with its BatchNorm2d layers frozen: plain ones as :class:`FrozenBatchNorm2d` with their
    statistics and affine, the rest (timm's norm + activation layers) by timm's ``freeze_batch_norm_2d``."""

    def replace(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if type(child) is nn.BatchNorm2d:
                frozen = FrozenBatchNorm2d(child.num_features, child.eps).to(child.running_mean.device)
                frozen.load_state_dict(child.state_dict())
                setattr(parent, name, frozen)
            else:
                replace(child)

    replace(module)
    return freeze_batch_norm_2d(module)


def build_vit(cfg: BackboneConfig, image_size: int) -> nn.Module:
    """A plain timm ViT, whose blocks a network runs itself (EoMT): timm's model ``cfg.name`` (a
    VisionTransformer, or an Eva with rotary position embeddings such as DINOv3) with ``cfg.timm_kwargs``
    (``swiglu: true`` for DINOv2's SwiGLU MLP, ``norm_eps`` for its LayerNorms' epsilon) at ``image_size``,
    its position embeddings resampled at run time for other sizes, without a classifier. ``pretrained`` loads
    timm's weights and ``weights`` a timm-format file of that ViT; timm resamples both to the configured patch
    and grid sizes (a DINOv2's 14-pixel patches to 16, as the official EoMT does), and a file is checked by its
    names first."""
    check_timm_name(cfg.name)
    kwargs = dict(cfg.timm_kwargs)
    if kwargs.pop("swiglu", False):
        kwargs.update(mlp_layer=SwiGLUPacked, act_layer=nn.SiLU)
    if "norm_eps" in kwargs:  # a config file holds numbers, not the norm layer timm takes
        kwargs["norm_layer"] = functools.partial(nn.LayerNorm, eps=float(kwargs.pop("norm_eps")))
    kwargs.update(img_size=image_size, dynamic_img_size=True, num_classes=0, drop_path_rate=cfg.drop_path_rate)
    pretrained = cfg.pretrained
    if cfg.weights:
        state = read_tensors(cfg.weights)
        with torch.device("meta"):
            reference = timm.create_model(cfg.name, pretrained=False, **kwargs).state_dict()
        missing = sorted(set(reference) - set(state))
        foreign = sorted(k for k in set(state) - set(reference) if not k.startswith("head."))
        problems = [f"{len(keys)} {what}: {', '.join(keys[:5])}" for what, keys in
                    (("weights missing", missing), ("foreign entries", foreign)) if keys]  # fmt: skip
        if problems:
            raise ValueError(
                f"{cfg.weights}: not a state dict of timm's {cfg.name} as configured ({'; '.join(problems)})"
            )
        kwargs["pretrained_cfg_overlay"] = {"state_dict": state}
        pretrained = True
    with imagenet_weights(cfg.name, cfg.pretrained and not cfg.weights), _quiet_timm_loading(bool(cfg.weights)):
        return timm.create_model(cfg.name, pretrained=pretrained, **kwargs)


def load_swin_state(backbone: SwinBackbone, state: dict[str, Tensor], source: str) -> None:
    """Copy a timm-format Swin state dict into ``backbone``, strictly: timm's Swin uses the same parameter
    names; its classifier head and final norm have no counterpart here, and the per-stage output norms are
    new (they keep their LayerNorm initialisation, as in the original)."""
    state = {
        k: v
        for k, v in state.items()
        if not k.startswith(("head.", "norm.")) and "attn_mask" not in k and "relative_position_index" not in k
    }
    diff = StateDiff.between({k: v for k, v in backbone.state_dict().items() if not k.startswith("norms.")}, state)
    if diff:
        raise ValueError(f"{source}: not a backbone state dict for this Swin ({diff.summary()})")
    backbone.load_state_dict(state, strict=False)


def timm_state_dict(name: str, path: str, timm_kwargs: dict) -> dict[str, Tensor]:
    """The state dict in ``path``, checked against timm's model ``name`` built with ``timm_kwargs``: every
    weight present with its shape, none foreign; the classifier (timm's ``pretrained_cfg["classifier"]``)
    may be absent or of any size, and is dropped."""
    state = read_tensors(path)
    # On the meta device the reference model allocates nothing, so even a large model is checked at once.
    with torch.device("meta"):
        reference = timm.create_model(name, pretrained=False, **timm_kwargs)
    heads = reference.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)

    def is_head(key: str) -> bool:
        return any(key.startswith(f"{h}.") for h in heads)

    state = {k: v for k, v in state.items() if not is_head(k)}
    diff = StateDiff.between({k: v for k, v in reference.state_dict().items() if not is_head(k)}, state)
    if diff:
        raise ValueError(f"{path}: not a backbone state dict for timm's {name} ({diff.summary()})")
    return state
