"""The backbones of the papers' configurations, shared by every family's presets and by the readers of
foreign checkpoints (which recognise them by their shapes)."""

from __future__ import annotations

from collections.abc import Callable

from .config import BackboneConfig

# Architectures recognised in foreign checkpoints, and the timm weights their backbones start from.
RESNET_BY_DEPTHS = {
    (3, 4, 6, 3): "resnet50.tv_in1k",
    (3, 4, 23, 3): "resnet101.tv_in1k",
    (3, 8, 36, 3): "resnet152.tv_in1k",
}
SWIN_WEIGHTS_BY_WIDTH = {
    96: "swin_tiny_patch4_window7_224.ms_in1k",
    128: "swin_base_patch4_window12_384.ms_in22k",
    192: "swin_large_patch4_window12_384.ms_in22k",
}

_SWIN = {
    # name: (embed_dim, depths, heads, window, timm weights)
    "t": (96, (2, 2, 6, 2), (3, 6, 12, 24), 7, "swin_tiny_patch4_window7_224.ms_in1k"),
    "s": (96, (2, 2, 18, 2), (3, 6, 12, 24), 7, "swin_small_patch4_window7_224.ms_in1k"),
    "b": (128, (2, 2, 18, 2), (4, 8, 16, 32), 12, "swin_base_patch4_window12_384.ms_in22k"),
    "l": (192, (2, 2, 18, 2), (6, 12, 24, 48), 12, "swin_large_patch4_window12_384.ms_in22k"),
}


def swin(size: str) -> BackboneConfig:
    """The papers' Swin backbone of ``size`` t, s, b or l (drop-path 0.3), with its timm weights' name."""
    dim, depths, heads, window, timm_name = _SWIN[size]
    return BackboneConfig(
        type="swin",
        name=timm_name,
        embed_dim=dim,
        depths=depths,
        num_heads=heads,
        window_size=window,
        drop_path_rate=0.3,
    )


def resnet(name: str, **timm_kwargs) -> BackboneConfig:
    """A timm ResNet with detectron2's frozen BatchNorm, as the papers train them."""
    return BackboneConfig(type="timm", name=name, norm="frozen_bn", timm_kwargs=timm_kwargs)


RESNETS: dict[str, Callable[[], BackboneConfig]] = {
    "r50": lambda: resnet("resnet50.tv_in1k"),
    "r101": lambda: resnet("resnet101.tv_in1k"),
    # detectron2's "deeplab" stem: three 3x3 convs, 64-64-128 channels.
    "r101c": lambda: resnet("resnet101.tv_in1k", stem_type="deep", stem_width=64),
}
