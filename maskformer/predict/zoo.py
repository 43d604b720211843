"""Known pretrained checkpoints of both families (hub ids and the official model zoos) and loading any
model source with its dataset metadata filled in."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..data.catalog import DATASETS
from ..data.metadata import BUILTIN, builtin_metadata
from ..model import MaskFormer
from ..model.config import MaskFormerConfig

log = logging.getLogger("maskformer")
ZOO = "https://dl.fbaipublicfiles.com/maskformer"
# The official weights of both papers, and the hub copies converted from them.
LICENCE = "CC BY-NC 4.0"


@dataclass(frozen=True)
class KnownModel:
    """A published checkpoint: ``source`` is a hub id or a model-zoo URL; ``score`` the published
    single-scale ``metric`` on ``dataset``'s validation set; ``metadata`` a built-in metadata name;
    ``licence`` the weights' licence (non-commercial for every official checkpoint)."""

    name: str
    source: str
    task: str
    dataset: str
    metric: str
    score: float
    metadata: str = ""
    licence: str = LICENCE

    @property
    def family(self) -> str:
        return "mask2former" if "mask2former" in self.source else "maskformer"


def _known(name: str, source: str, dataset: str, metric: str, score: float, meta: str) -> KnownModel:
    """A checkpoint of the catalog's ``dataset`` (its key): the task and the title are the record's."""
    record = DATASETS[dataset]
    return KnownModel(name, source, record.task, record.title, metric, score, meta)


def _zoo(name: str, path: str, dataset: str, metric: str, score: float, meta: str = "") -> KnownModel:
    return _known(name, f"{ZOO}/{path}", dataset, metric, score, meta)


def _m2f(name: str, path: str, dataset: str, metric: str, score: float, meta: str = "") -> KnownModel:
    return _known(name, f"{ZOO}/mask2former/{path}", dataset, metric, score, meta)


def _hub(name: str, dataset: str, metric: str, score: float, meta: str = "") -> KnownModel:
    return _known(name, f"facebook/{name}", dataset, metric, score, meta)


# The built-in class lists the hub and zoo checkpoints are given (their own configs carry none).
_ADE, _COCO, _CITY = (DATASETS[key].metadata for key in ("ade", "coco", "cityscapes"))
KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in [
        _hub("maskformer-swin-tiny-ade", "ade", "mIoU", 46.7, _ADE),
        _hub("maskformer-swin-small-ade", "ade", "mIoU", 49.8, _ADE),
        _hub("maskformer-swin-base-ade", "ade", "mIoU", 52.7, _ADE),
        _hub("maskformer-swin-large-ade", "ade", "mIoU", 54.1, _ADE),
        _hub("maskformer-resnet50-ade", "ade", "mIoU", 44.5, _ADE),
        _hub("maskformer-resnet101-ade", "ade", "mIoU", 45.5, _ADE),
        _hub("maskformer-resnet50-coco-stuff", "coco_stuff", "mIoU", 37.1),
        _hub("maskformer-resnet101-coco-stuff", "coco_stuff", "mIoU", 38.1),
        _hub("maskformer-resnet50-ade20k-full", "ade_full", "mIoU", 16.0),
        _hub("maskformer-resnet101-ade20k-full", "ade_full", "mIoU", 16.8),
        _hub("maskformer-resnet101-cityscapes", "cityscapes", "mIoU", 78.5, _CITY),
        _hub("maskformer-resnet50-vistas", "vistas", "mIoU", 53.1),
        _hub("maskformer-swin-tiny-coco", "coco", "PQ", 47.7, _COCO),
        _hub("maskformer-swin-small-coco", "coco", "PQ", 49.7, _COCO),
        _hub("maskformer-swin-base-coco", "coco", "PQ", 51.8, _COCO),
        _hub("maskformer-swin-large-coco", "coco", "PQ", 52.7, _COCO),
        _zoo("zoo-ade20k-r50", "semantic-ade20k/maskformer_R50_bs16_160k/model_final_d8dbeb.pkl",
             "ade", "mIoU", 44.5, _ADE),
        _zoo("zoo-ade20k-r101", "semantic-ade20k/maskformer_R101_bs16_160k/model_final_1aeb94.pkl",
             "ade", "mIoU", 45.5, _ADE),
        _zoo("zoo-ade20k-r101c", "semantic-ade20k/maskformer_R101c_bs16_160k/model_final_b432ea.pkl",
             "ade", "mIoU", 46.0, _ADE),
        _zoo("zoo-ade20k-swin-t", "semantic-ade20k/maskformer_swin_tiny_bs16_160k/model_final_8657a5.pkl",
             "ade", "mIoU", 46.7, _ADE),
        _zoo("zoo-ade20k-swin-s", "semantic-ade20k/maskformer_swin_small_bs16_160k/model_final_528157.pkl",
             "ade", "mIoU", 49.8, _ADE),
        _zoo("zoo-ade20k-swin-b",
             "semantic-ade20k/maskformer_swin_base_IN21k_384_bs16_160k_res640/model_final_45388b.pkl",
             "ade", "mIoU", 52.7, _ADE),
        _zoo("zoo-ade20k-swin-l",
             "semantic-ade20k/maskformer_swin_large_IN21k_384_bs16_160k_res640/model_final_aefa3b.pkl",
             "ade", "mIoU", 54.1, _ADE),
        _zoo("zoo-cityscapes-r101", "semantic-cityscapes/maskformer_R101_bs16_90k/model_final_38c00c.pkl",
             "cityscapes", "mIoU", 78.5, _CITY),
        _zoo("zoo-cityscapes-r101c", "semantic-cityscapes/maskformer_R101c_bs16_90k/model_final_4f8ff9.pkl",
             "cityscapes", "mIoU", 79.7, _CITY),
        _zoo("zoo-coco-panoptic-r50", "panoptic-coco/maskformer_panoptic_R50_bs64_554k/model_final_6f60dc.pkl",
             "coco", "PQ", 46.5, _COCO),
        _zoo("zoo-coco-panoptic-r101", "panoptic-coco/maskformer_panoptic_R101_bs64_554k/model_final_57b049.pkl",
             "coco", "PQ", 47.6, _COCO),
        _zoo("zoo-coco-panoptic-swin-t", "panoptic-coco/model_final_539394.pkl",
             "coco", "PQ", 47.7, _COCO),
        _zoo("zoo-coco-panoptic-swin-s", "panoptic-coco/model_final_5bf6b1.pkl",
             "coco", "PQ", 49.7, _COCO),
        _zoo("zoo-coco-panoptic-swin-b", "panoptic-coco/model_final_4b7f49.pkl",
             "coco", "PQ", 51.8, _COCO),
        _zoo("zoo-coco-panoptic-swin-l", "panoptic-coco/model_final_7505c4.pkl",
             "coco", "PQ", 52.7, _COCO),
        _zoo("zoo-ade20k-panoptic-r50", "panoptic-ade20k/maskformer_panoptic_R50_bs16_720k/model_final_7aa977.pkl",
             "ade_panoptic", "PQ", 34.7, _ADE),
        _zoo("zoo-ade20k-panoptic-r101", "panoptic-ade20k/maskformer_panoptic_R101_bs16_720k/model_final_0b3cc8.pkl",
             "ade_panoptic", "PQ", 35.7, _ADE),
        # Mask2Former (hub copies converted from the official zoo by transformers; Swin backbones only). Only
        # ids with evidence of a hub page or of being loaded are listed: swin-base-IN21k-coco-panoptic and
        # swin-large-ade-instance had none (issue 24), so those models are known by their zoo URLs alone
        # (zoo-m2f-coco-panoptic-swin-b-in21k, zoo-m2f-ade-instance-swin-l below). swin-base-IN21k-cityscapes-
        # panoptic stays: published benchmark reports load it with transformers.
        _hub("mask2former-swin-tiny-coco-panoptic", "coco", "PQ", 53.2, _COCO),
        _hub("mask2former-swin-small-coco-panoptic", "coco", "PQ", 54.6, _COCO),
        _hub("mask2former-swin-base-coco-panoptic", "coco", "PQ", 55.1, _COCO),
        _hub("mask2former-swin-large-coco-panoptic", "coco", "PQ", 57.8, _COCO),
        _hub("mask2former-swin-tiny-coco-instance", "coco_instance", "AP", 45.0, ""),
        _hub("mask2former-swin-small-coco-instance", "coco_instance", "AP", 46.3, ""),
        _hub("mask2former-swin-base-coco-instance", "coco_instance", "AP", 46.7, ""),
        _hub("mask2former-swin-base-IN21k-coco-instance", "coco_instance", "AP", 48.1, ""),
        _hub("mask2former-swin-large-coco-instance", "coco_instance", "AP", 50.1, ""),
        _hub("mask2former-swin-tiny-cityscapes-panoptic", "cityscapes_panoptic", "PQ", 63.9, _CITY),
        _hub("mask2former-swin-small-cityscapes-panoptic", "cityscapes_panoptic", "PQ", 64.8, _CITY),
        _hub("mask2former-swin-base-IN21k-cityscapes-panoptic", "cityscapes_panoptic", "PQ", 66.1, _CITY),
        _hub("mask2former-swin-large-cityscapes-panoptic", "cityscapes_panoptic", "PQ", 66.6, _CITY),
        _hub("mask2former-swin-tiny-cityscapes-instance", "cityscapes_instance", "AP", 39.7, ""),
        _hub("mask2former-swin-small-cityscapes-instance", "cityscapes_instance", "AP", 41.8, ""),
        _hub("mask2former-swin-base-IN21k-cityscapes-instance", "cityscapes_instance", "AP", 42.0, ""),
        _hub("mask2former-swin-large-cityscapes-instance", "cityscapes_instance", "AP", 43.7, ""),
        _hub("mask2former-swin-tiny-cityscapes-semantic", "cityscapes", "mIoU", 82.1, _CITY),
        _hub("mask2former-swin-small-cityscapes-semantic", "cityscapes", "mIoU", 82.6, _CITY),
        _hub("mask2former-swin-base-IN21k-cityscapes-semantic", "cityscapes", "mIoU", 83.3, _CITY),
        _hub("mask2former-swin-large-cityscapes-semantic", "cityscapes", "mIoU", 83.3, _CITY),
        _hub("mask2former-swin-large-ade-panoptic", "ade_panoptic", "PQ", 48.1, _ADE),
        _hub("mask2former-swin-tiny-ade-semantic", "ade", "mIoU", 47.7, _ADE),
        _hub("mask2former-swin-small-ade-semantic", "ade", "mIoU", 51.3, _ADE),
        _hub("mask2former-swin-base-ade-semantic", "ade", "mIoU", 52.4, _ADE),
        _hub("mask2former-swin-base-IN21k-ade-semantic", "ade", "mIoU", 53.9, _ADE),
        _hub("mask2former-swin-large-ade-semantic", "ade", "mIoU", 56.1, _ADE),
        _hub("mask2former-swin-large-mapillary-vistas-panoptic", "vistas_panoptic", "PQ", 45.5),
        _hub("mask2former-swin-large-mapillary-vistas-semantic", "vistas", "mIoU", 63.2, ""),
        # Mask2Former's official model zoo (MODEL_ZOO.md), all backbones.
        _m2f("zoo-m2f-coco-panoptic-r50",
             "coco/panoptic/maskformer2_R50_bs16_50ep/model_final_94dc52.pkl",
             "coco", "PQ", 51.9, _COCO),
        _m2f("zoo-m2f-coco-panoptic-r101",
             "coco/panoptic/maskformer2_R101_bs16_50ep/model_final_b807bd.pkl",
             "coco", "PQ", 52.6, _COCO),
        _m2f("zoo-m2f-coco-panoptic-swin-t",
             "coco/panoptic/maskformer2_swin_tiny_bs16_50ep/model_final_9fd0ae.pkl",
             "coco", "PQ", 53.2, _COCO),
        _m2f("zoo-m2f-coco-panoptic-swin-s",
             "coco/panoptic/maskformer2_swin_small_bs16_50ep/model_final_a407fd.pkl",
             "coco", "PQ", 54.6, _COCO),
        _m2f("zoo-m2f-coco-panoptic-swin-b",
             "coco/panoptic/maskformer2_swin_base_384_bs16_50ep/model_final_9d7f02.pkl",
             "coco", "PQ", 55.1, _COCO),
        _m2f("zoo-m2f-coco-panoptic-swin-b-in21k",
             "coco/panoptic/maskformer2_swin_base_IN21k_384_bs16_50ep/model_final_54b88a.pkl",
             "coco", "PQ", 56.4, _COCO),
        _m2f("zoo-m2f-coco-panoptic-swin-l",
             "coco/panoptic/maskformer2_swin_large_IN21k_384_bs16_100ep/model_final_f07440.pkl",
             "coco", "PQ", 57.8, _COCO),
        _m2f("zoo-m2f-coco-instance-r50",
             "coco/instance/maskformer2_R50_bs16_50ep/model_final_3c8ec9.pkl",
             "coco_instance", "AP", 43.7, ""),
        _m2f("zoo-m2f-coco-instance-r101",
             "coco/instance/maskformer2_R101_bs16_50ep/model_final_eba159.pkl",
             "coco_instance", "AP", 44.2, ""),
        _m2f("zoo-m2f-coco-instance-swin-t",
             "coco/instance/maskformer2_swin_tiny_bs16_50ep/model_final_86143f.pkl",
             "coco_instance", "AP", 45.0, ""),
        _m2f("zoo-m2f-coco-instance-swin-s",
             "coco/instance/maskformer2_swin_small_bs16_50ep/model_final_1e7f22.pkl",
             "coco_instance", "AP", 46.3, ""),
        _m2f("zoo-m2f-coco-instance-swin-b",
             "coco/instance/maskformer2_swin_base_384_bs16_50ep/model_final_f6e0f6.pkl",
             "coco_instance", "AP", 46.7, ""),
        _m2f("zoo-m2f-coco-instance-swin-b-in21k",
             "coco/instance/maskformer2_swin_base_IN21k_384_bs16_50ep/model_final_83d103.pkl",
             "coco_instance", "AP", 48.1, ""),
        _m2f("zoo-m2f-coco-instance-swin-l",
             "coco/instance/maskformer2_swin_large_IN21k_384_bs16_100ep/model_final_e5f453.pkl",
             "coco_instance", "AP", 50.1, ""),
        _m2f("zoo-m2f-cityscapes-panoptic-r50",
             "cityscapes/panoptic/maskformer2_R50_bs16_90k/model_final_4ab90c.pkl",
             "cityscapes_panoptic", "PQ", 62.1, _CITY),
        _m2f("zoo-m2f-cityscapes-panoptic-r101",
             "cityscapes/panoptic/maskformer2_R101_bs16_90k/model_final_04d286.pkl",
             "cityscapes_panoptic", "PQ", 62.4, _CITY),
        _m2f("zoo-m2f-cityscapes-panoptic-swin-t",
             "cityscapes/panoptic/maskformer2_swin_tiny_bs16_90k/model_final_ceba0f.pkl",
             "cityscapes_panoptic", "PQ", 63.9, _CITY),
        _m2f("zoo-m2f-cityscapes-panoptic-swin-s",
             "cityscapes/panoptic/maskformer2_swin_small_bs16_90k/model_final_23efb7.pkl",
             "cityscapes_panoptic", "PQ", 64.8, _CITY),
        _m2f("zoo-m2f-cityscapes-panoptic-swin-b-in21k",
             "cityscapes/panoptic/maskformer2_swin_base_IN21k_384_bs16_90k/model_final_fa840f.pkl",
             "cityscapes_panoptic", "PQ", 66.1, _CITY),
        _m2f("zoo-m2f-cityscapes-panoptic-swin-l",
             "cityscapes/panoptic/maskformer2_swin_large_IN21k_384_bs16_90k/model_final_064788.pkl",
             "cityscapes_panoptic", "PQ", 66.6, _CITY),
        _m2f("zoo-m2f-cityscapes-instance-r50",
             "cityscapes/instance/maskformer2_R50_bs16_90k/model_final_01a8ed.pkl",
             "cityscapes_instance", "AP", 37.4, ""),
        _m2f("zoo-m2f-cityscapes-instance-r101",
             "cityscapes/instance/maskformer2_R101_bs16_90k/model_final_c2b8c8.pkl",
             "cityscapes_instance", "AP", 38.5, ""),
        _m2f("zoo-m2f-cityscapes-instance-swin-t",
             "cityscapes/instance/maskformer2_swin_tiny_bs16_90k/model_final_6a63f8.pkl",
             "cityscapes_instance", "AP", 39.7, ""),
        _m2f("zoo-m2f-cityscapes-instance-swin-s",
             "cityscapes/instance/maskformer2_swin_small_bs16_90k/model_final_974824.pkl",
             "cityscapes_instance", "AP", 41.8, ""),
        _m2f("zoo-m2f-cityscapes-instance-swin-b-in21k",
             "cityscapes/instance/maskformer2_swin_base_IN21k_384_bs16_90k/model_final_7a3b6d.pkl",
             "cityscapes_instance", "AP", 42.0, ""),
        _m2f("zoo-m2f-cityscapes-instance-swin-l",
             "cityscapes/instance/maskformer2_swin_large_IN21k_384_bs16_90k/model_final_dfa862.pkl",
             "cityscapes_instance", "AP", 43.7, ""),
        _m2f("zoo-m2f-cityscapes-semantic-r50",
             "cityscapes/semantic/maskformer2_R50_bs16_90k/model_final_cc1b1f.pkl",
             "cityscapes", "mIoU", 79.4, _CITY),
        _m2f("zoo-m2f-cityscapes-semantic-r101",
             "cityscapes/semantic/maskformer2_R101_bs16_90k/model_final_257ce8.pkl",
             "cityscapes", "mIoU", 80.1, _CITY),
        _m2f("zoo-m2f-cityscapes-semantic-swin-t",
             "cityscapes/semantic/maskformer2_swin_tiny_bs16_90k/model_final_2d58d4.pkl",
             "cityscapes", "mIoU", 82.1, _CITY),
        _m2f("zoo-m2f-cityscapes-semantic-swin-s",
             "cityscapes/semantic/maskformer2_swin_small_bs16_90k/model_final_fa26ae.pkl",
             "cityscapes", "mIoU", 82.6, _CITY),
        _m2f("zoo-m2f-cityscapes-semantic-swin-b-in21k",
             "cityscapes/semantic/maskformer2_swin_base_IN21k_384_bs16_90k/model_final_1c6b65.pkl",
             "cityscapes", "mIoU", 83.3, _CITY),
        _m2f("zoo-m2f-cityscapes-semantic-swin-l",
             "cityscapes/semantic/maskformer2_swin_large_IN21k_384_bs16_90k/model_final_17c1ee.pkl",
             "cityscapes", "mIoU", 83.3, _CITY),
        _m2f("zoo-m2f-ade-panoptic-r50",
             "ade20k/panoptic/maskformer2_R50_bs16_160k/model_final_5c90d4.pkl",
             "ade_panoptic", "PQ", 39.7, _ADE),
        _m2f("zoo-m2f-ade-panoptic-swin-l",
             "ade20k/panoptic/maskformer2_swin_large_IN21k_384_bs16_160k/model_final_e0c58e.pkl",
             "ade_panoptic", "PQ", 48.1, _ADE),
        _m2f("zoo-m2f-ade-instance-r50",
             "ade20k/instance/maskformer2_R50_bs16_160k/model_final_67e945.pkl",
             "ade_instance", "AP", 26.4, ""),
        _m2f("zoo-m2f-ade-instance-swin-l",
             "ade20k/instance/maskformer2_swin_large_IN21k_384_bs16_160k/model_final_92dae9.pkl",
             "ade_instance", "AP", 34.9, ""),
        _m2f("zoo-m2f-ade-semantic-r50",
             "ade20k/semantic/maskformer2_R50_bs16_160k/model_final_500878.pkl",
             "ade", "mIoU", 47.2, _ADE),
        _m2f("zoo-m2f-ade-semantic-r101",
             "ade20k/semantic/maskformer2_R101_bs16_90k/model_final_0d68be.pkl",
             "ade", "mIoU", 47.8, _ADE),
        _m2f("zoo-m2f-ade-semantic-swin-t",
             "ade20k/semantic/maskformer2_swin_tiny_bs16_160k/model_final_5274a6.pkl",
             "ade", "mIoU", 47.7, _ADE),
        _m2f("zoo-m2f-ade-semantic-swin-s",
             "ade20k/semantic/maskformer2_swin_small_bs16_160k/model_final_011c6d.pkl",
             "ade", "mIoU", 51.3, _ADE),
        _m2f("zoo-m2f-ade-semantic-swin-b",
             "ade20k/semantic/maskformer2_swin_base_384_bs16_160k_res640/model_final_503e96.pkl",
             "ade", "mIoU", 52.4, _ADE),
        _m2f("zoo-m2f-ade-semantic-swin-b-in21k",
             "ade20k/semantic/maskformer2_swin_base_IN21k_384_bs16_160k_res640/model_final_7e47bf.pkl",
             "ade", "mIoU", 53.9, _ADE),
        _m2f("zoo-m2f-ade-semantic-swin-l",
             "ade20k/semantic/maskformer2_swin_large_IN21k_384_bs16_160k_res640/model_final_6b4a3a.pkl",
             "ade", "mIoU", 56.1, _ADE),
        _m2f("zoo-m2f-mapillary-vistas-panoptic-r50",
             "mapillary_vistas/panoptic/maskformer_R50_bs16_300k/model_final_4e9874.pkl",
             "vistas_panoptic", "PQ", 36.3, ""),
        _m2f("zoo-m2f-mapillary-vistas-panoptic-swin-l",
             "mapillary_vistas/panoptic/maskformer2_swin_large_IN21k_384_bs16_300k/model_final_132c71.pkl",
             "vistas_panoptic", "PQ", 45.5, ""),
        _m2f("zoo-m2f-mapillary-vistas-semantic-r50",
             "mapillary_vistas/semantic/maskformer_R50_bs16_300k/model_final_6c66d0.pkl",
             "vistas", "mIoU", 57.4, ""),
        _m2f("zoo-m2f-mapillary-vistas-semantic-swin-l",
             "mapillary_vistas/semantic/maskformer2_swin_large_IN21k_384_bs16_300k/model_final_90ee2d.pkl",
             "vistas", "mIoU", 63.2, ""),
    ]
}  # fmt: skip


# The official configs' test sizes and object-mask thresholds by dataset (mask2former-facts.md; MaskFormer's
# ADE20K panoptic and COCO configs use the same): (shortest edge, longest side, object mask threshold).
TEST_SETTINGS = {
    "ADE20K-150": (512, 2048, None),
    "ADE20K-150 panoptic": (640, 2560, 0.8),
    "ADE20K-100 instance": (640, 2560, 0.8),
    "COCO panoptic": (800, 1333, 0.8),
    "COCO instance": (800, 1333, 0.8),
    "Cityscapes": (1024, 2048, None),
    "Cityscapes panoptic": (1024, 2048, 0.8),
    "Cityscapes instance": (1024, 2048, 0.8),
    "Mapillary Vistas": (2048, 2048, 0.0),
    "Mapillary Vistas panoptic": (2048, 2048, 0.0),
}


def known_model(source: str | Path) -> KnownModel | None:
    """The published checkpoint ``source`` names (by name or by its hub id / URL), or None."""
    text = str(source)
    return KNOWN_MODELS.get(text) or next((m for m in KNOWN_MODELS.values() if m.source == text), None)


def load_model(source: str | Path, config: MaskFormerConfig | None = None, strict: bool = False) -> MaskFormer:
    """Load a MaskFormer from a known model name (``maskformer models``) or anything
    :meth:`MaskFormer.from_pretrained` reads (folders, training runs and their ``.ckpt`` files, hub ids,
    model-zoo files and URLs). Class names, thing/stuff and colours are filled in from the built-in metadata
    when the checkpoint lacks them and its dataset is known. Every command's ``--model`` goes through here."""
    known = known_model(source)
    if known:
        log.warning(f"{known.name}: the published weights are licensed {known.licence} (non-commercial use only)")
    model = MaskFormer.from_pretrained(known.source if known else source, config=config, strict=strict)
    if known and config is None and known.dataset in TEST_SETTINGS:
        # Checkpoints carry no test sizes (zoo pickles) or a converter's (hub): use the official config's.
        short, long, threshold = TEST_SETTINGS[known.dataset]
        inference = model.config.inference
        inference.test_shortest_edge, inference.test_max_size = short, long
        if threshold is not None:
            inference.object_mask_threshold = threshold
    meta = model.config.metadata
    dataset = known.metadata if known else _guess_dataset(model.config)
    if dataset and (not meta.class_names or meta.thing_classes is None or not meta.colors):
        builtin = builtin_metadata(dataset)
        same = not meta.class_names or meta.class_names == builtin.class_names or known is not None
        if same and len(builtin.class_names) == model.config.num_classes:
            builtin.class_names = meta.class_names or builtin.class_names
            model.config.metadata = builtin
    return model


def _guess_dataset(config: MaskFormerConfig) -> str:
    """A built-in dataset whose class count matches a checkpoint without metadata (model-zoo files), or ''."""
    if config.metadata.class_names:
        return ""
    by_count = {len(builtin_metadata(name).class_names): name for name in BUILTIN}
    return by_count.get(config.num_classes, "")
