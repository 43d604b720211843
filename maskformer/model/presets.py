"""Named model configurations of the papers (maskformer-facts.md and mask2former-facts.md).

MaskFormer. ADE20K-150 semantic: ``r50``, ``r101``, ``r101c``, ``swin_t``, ``swin_s``, ``swin_b``, ``swin_l``.
COCO panoptic (133 classes): ``r50+6enc``, ``r101+6enc``, ``swin_t_coco``, ``swin_s_coco``, ``swin_b_coco``,
``swin_l_coco``. The other datasets, ``<backbone>_<dataset>`` for each official config (facebookresearch/MaskFormer
``configs/``): ``ade_full`` (847 classes; r50, r101, r101c), ``coco_stuff`` (COCO-Stuff-10K, 171; r50, r101,
r101c), ``cityscapes`` (19; r101, r101c), ``vistas`` (Mapillary Vistas, 65; r50) and ``ade_panoptic`` (ADE20K
panoptic, 150, the "+6 Enc" pixel decoder; r50, r101), and ``pascal_context_59`` / ``pascal_context_459`` (r50;
no paper config, see :mod:`maskformer.training.config`).

Mask2Former: ``m2f_<backbone>_<dataset>`` for backbones r50, r101, swin_t, swin_s, swin_b, swin_b21k (ImageNet-22k
weights), swin_l and datasets ade (ADE20K-150), ade_panoptic (150), ade_instance (100), coco (COCO panoptic, 133),
coco_instance (80), cityscapes (19), cityscapes_panoptic (19), cityscapes_instance (8), vistas (Mapillary Vistas,
65) and vistas_panoptic (65), with the official configs' queries (200 for Swin-L on panoptic and instance
segmentation), test sizes and thresholds (facebookresearch/Mask2Former ``configs/``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable

from .config import (
    BackboneConfig,
    InferenceConfig,
    Mask2FormerConfig,
    MaskFormerConfig,
    PixelDecoderConfig,
    did_you_mean,
)

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


def _swin(size: str) -> BackboneConfig:
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


def _resnet(name: str, **timm_kwargs) -> BackboneConfig:
    return BackboneConfig(type="timm", name=name, norm="frozen_bn", timm_kwargs=timm_kwargs)


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
        backbone=_RESNETS[backbone](),
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


_RESNETS: dict[str, Callable[[], BackboneConfig]] = {
    "r50": lambda: _resnet("resnet50.tv_in1k"),
    "r101": lambda: _resnet("resnet101.tv_in1k"),
    # detectron2's "deeplab" stem: three 3x3 convs, 64-64-128 channels.
    "r101c": lambda: _resnet("resnet101.tv_in1k", stem_type="deep", stem_width=64),
}
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
    "r50": lambda: _ade(_RESNETS["r50"]()),
    "r101": lambda: _ade(_RESNETS["r101"]()),
    "r101c": lambda: _ade(_RESNETS["r101c"]()),
    "swin_t": lambda: _ade(_swin("t")),
    "swin_s": lambda: _ade(_swin("s")),
    "swin_b": lambda: _ade(_swin("b"), crop=640),
    "swin_l": lambda: _ade(_swin("l"), crop=640),
    "r50+6enc": lambda: _coco(_resnet("resnet50.tv_in1k"), six_enc=True),
    "r101+6enc": lambda: _coco(_resnet("resnet101.tv_in1k"), six_enc=True),
    "swin_t_coco": lambda: _coco(_swin("t")),
    "swin_s_coco": lambda: _coco(_swin("s")),
    "swin_b_coco": lambda: _coco(_swin("b")),
    "swin_l_coco": lambda: _coco(_swin("l")),
    "r50_ade_panoptic": lambda: _ade_panoptic(_RESNETS["r50"]()),
    "r101_ade_panoptic": lambda: _ade_panoptic(_RESNETS["r101"]()),
}
PRESETS.update(
    {
        f"{backbone}_{dataset}": functools.partial(_semantic, backbone, classes, short, long)
        for dataset, (classes, short, long, backbones) in _MF_SEMANTIC.items()
        for backbone in backbones
    }
)


# Mask2Former's backbones: (Swin size or ResNet timm weights, Swin weights override).
_M2F_BACKBONES: dict[str, Callable[[], BackboneConfig]] = {
    "r50": _RESNETS["r50"],
    "r101": _RESNETS["r101"],
    "swin_t": lambda: _swin("t"),
    "swin_s": lambda: _swin("s"),
    "swin_b": lambda: dataclasses.replace(_swin("b"), name="swin_base_patch4_window12_384.ms_in1k"),
    "swin_b21k": lambda: _swin("b"),
    "swin_l": lambda: _swin("l"),
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


def preset_dataset(name: str) -> str:
    """The dataset key of preset ``name`` (:data:`PRESET_DATASETS`), "" for an unknown name."""
    return PRESET_DATASETS.get(name, "")


PRESETS.update(
    {
        f"m2f_{backbone}_{dataset}": functools.partial(_mask2former, backbone, dataset)
        for backbone in _M2F_BACKBONES
        for dataset in _M2F_DATASETS
    }
)
# The dataset each preset is configured for, by its key in maskformer.data.catalog.DATASETS: recorded where
# the presets are made, not parsed back from their names.
PRESET_DATASETS: dict[str, str] = {
    **dict.fromkeys(["r50", "r101", "r101c", "swin_t", "swin_s", "swin_b", "swin_l"], "ade"),
    **dict.fromkeys(["r50+6enc", "r101+6enc", "swin_t_coco", "swin_s_coco", "swin_b_coco", "swin_l_coco"], "coco"),
    **dict.fromkeys(["r50_ade_panoptic", "r101_ade_panoptic"], "ade_panoptic"),
    **{f"{b}_{dataset}": dataset for dataset, (*_, backbones) in _MF_SEMANTIC.items() for b in backbones},
    **{f"m2f_{b}_{dataset}": dataset for b in _M2F_BACKBONES for dataset in _M2F_DATASETS},
}


def check_preset(name: str) -> None:
    """Refuse a name that is not in :data:`PRESETS`, suggesting the closest."""
    if name not in PRESETS:
        raise KeyError(
            f"unknown preset {name!r}{did_you_mean(name, PRESETS)}; `maskformer presets` lists the known presets"
        )


def preset(name: str) -> MaskFormerConfig:
    """Return a fresh config for a named preset (see :data:`PRESETS`)."""
    check_preset(name)
    return copy.deepcopy(PRESETS[name]())
