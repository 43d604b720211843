"""Known pretrained MaskFormer checkpoints (hub ids and the official model zoo) and loading any model
source with its dataset metadata filled in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.metadata import BUILTIN, builtin_metadata
from ..model import MaskFormer
from ..model.config import MaskFormerConfig

ZOO = "https://dl.fbaipublicfiles.com/maskformer"


@dataclass(frozen=True)
class KnownModel:
    """A published checkpoint: ``source`` is a hub id or a model-zoo URL; ``score`` the published
    single-scale ``metric`` on ``dataset``'s validation set; ``metadata`` a built-in metadata name."""

    name: str
    source: str
    task: str
    dataset: str
    metric: str
    score: float
    metadata: str = ""


def _zoo(name: str, path: str, task: str, dataset: str, metric: str, score: float, meta: str = "") -> KnownModel:
    return KnownModel(name, f"{ZOO}/{path}", task, dataset, metric, score, meta)


def _hub(name: str, task: str, dataset: str, metric: str, score: float, meta: str = "") -> KnownModel:
    return KnownModel(name, f"facebook/{name}", task, dataset, metric, score, meta)


_ADE, _COCO, _CITY = "ade20k_150", "coco_panoptic_133", "cityscapes_19"
KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in [
        _hub("maskformer-swin-tiny-ade", "semantic", "ADE20K-150", "mIoU", 46.7, _ADE),
        _hub("maskformer-swin-small-ade", "semantic", "ADE20K-150", "mIoU", 49.8, _ADE),
        _hub("maskformer-swin-base-ade", "semantic", "ADE20K-150", "mIoU", 52.7, _ADE),
        _hub("maskformer-swin-large-ade", "semantic", "ADE20K-150", "mIoU", 54.1, _ADE),
        _hub("maskformer-resnet50-ade", "semantic", "ADE20K-150", "mIoU", 44.5, _ADE),
        _hub("maskformer-resnet101-ade", "semantic", "ADE20K-150", "mIoU", 45.5, _ADE),
        _hub("maskformer-resnet50-coco-stuff", "semantic", "COCO-Stuff-10K", "mIoU", 37.1),
        _hub("maskformer-resnet101-coco-stuff", "semantic", "COCO-Stuff-10K", "mIoU", 38.1),
        _hub("maskformer-resnet50-ade20k-full", "semantic", "ADE20K-Full-847", "mIoU", 16.0),
        _hub("maskformer-resnet101-ade20k-full", "semantic", "ADE20K-Full-847", "mIoU", 16.8),
        _hub("maskformer-resnet101-cityscapes", "semantic", "Cityscapes", "mIoU", 78.5, _CITY),
        _hub("maskformer-resnet50-vistas", "semantic", "Mapillary Vistas", "mIoU", 53.1),
        _hub("maskformer-swin-tiny-coco", "panoptic", "COCO panoptic", "PQ", 47.7, _COCO),
        _hub("maskformer-swin-small-coco", "panoptic", "COCO panoptic", "PQ", 49.7, _COCO),
        _hub("maskformer-swin-base-coco", "panoptic", "COCO panoptic", "PQ", 51.8, _COCO),
        _hub("maskformer-swin-large-coco", "panoptic", "COCO panoptic", "PQ", 52.7, _COCO),
        _zoo("zoo-ade20k-r50", "semantic-ade20k/maskformer_R50_bs16_160k/model_final_d8dbeb.pkl",
             "semantic", "ADE20K-150", "mIoU", 44.5, _ADE),
        _zoo("zoo-ade20k-r101", "semantic-ade20k/maskformer_R101_bs16_160k/model_final_1aeb94.pkl",
             "semantic", "ADE20K-150", "mIoU", 45.5, _ADE),
        _zoo("zoo-ade20k-r101c", "semantic-ade20k/maskformer_R101c_bs16_160k/model_final_b432ea.pkl",
             "semantic", "ADE20K-150", "mIoU", 46.0, _ADE),
        _zoo("zoo-ade20k-swin-t", "semantic-ade20k/maskformer_swin_tiny_bs16_160k/model_final_8657a5.pkl",
             "semantic", "ADE20K-150", "mIoU", 46.7, _ADE),
        _zoo("zoo-ade20k-swin-s", "semantic-ade20k/maskformer_swin_small_bs16_160k/model_final_528157.pkl",
             "semantic", "ADE20K-150", "mIoU", 49.8, _ADE),
        _zoo("zoo-ade20k-swin-b",
             "semantic-ade20k/maskformer_swin_base_IN21k_384_bs16_160k_res640/model_final_45388b.pkl",
             "semantic", "ADE20K-150", "mIoU", 52.7, _ADE),
        _zoo("zoo-ade20k-swin-l",
             "semantic-ade20k/maskformer_swin_large_IN21k_384_bs16_160k_res640/model_final_aefa3b.pkl",
             "semantic", "ADE20K-150", "mIoU", 54.1, _ADE),
        _zoo("zoo-cityscapes-r101", "semantic-cityscapes/maskformer_R101_bs16_90k/model_final_38c00c.pkl",
             "semantic", "Cityscapes", "mIoU", 78.5, _CITY),
        _zoo("zoo-cityscapes-r101c", "semantic-cityscapes/maskformer_R101c_bs16_90k/model_final_4f8ff9.pkl",
             "semantic", "Cityscapes", "mIoU", 79.7, _CITY),
        _zoo("zoo-coco-panoptic-r50", "panoptic-coco/maskformer_panoptic_R50_bs64_554k/model_final_6f60dc.pkl",
             "panoptic", "COCO panoptic", "PQ", 46.5, _COCO),
        _zoo("zoo-coco-panoptic-r101", "panoptic-coco/maskformer_panoptic_R101_bs64_554k/model_final_57b049.pkl",
             "panoptic", "COCO panoptic", "PQ", 47.6, _COCO),
        _zoo("zoo-coco-panoptic-swin-t", "panoptic-coco/model_final_539394.pkl",
             "panoptic", "COCO panoptic", "PQ", 47.7, _COCO),
        _zoo("zoo-coco-panoptic-swin-s", "panoptic-coco/model_final_5bf6b1.pkl",
             "panoptic", "COCO panoptic", "PQ", 49.7, _COCO),
        _zoo("zoo-coco-panoptic-swin-b", "panoptic-coco/model_final_4b7f49.pkl",
             "panoptic", "COCO panoptic", "PQ", 51.8, _COCO),
        _zoo("zoo-coco-panoptic-swin-l", "panoptic-coco/model_final_7505c4.pkl",
             "panoptic", "COCO panoptic", "PQ", 52.7, _COCO),
        _zoo("zoo-ade20k-panoptic-r50", "panoptic-ade20k/maskformer_panoptic_R50_bs16_720k/model_final_7aa977.pkl",
             "panoptic", "ADE20K-150 panoptic", "PQ", 34.7, _ADE),
        _zoo("zoo-ade20k-panoptic-r101", "panoptic-ade20k/maskformer_panoptic_R101_bs16_720k/model_final_0b3cc8.pkl",
             "panoptic", "ADE20K-150 panoptic", "PQ", 35.7, _ADE),
    ]
}  # fmt: skip


def load_model(source: str | Path, config: MaskFormerConfig | None = None, strict: bool = False) -> MaskFormer:
    """Load a MaskFormer from a known model name (``maskformer models``) or anything
    :meth:`MaskFormer.from_pretrained` reads (folders, training runs and their ``.ckpt`` files, hub ids,
    model-zoo files and URLs). Class names, thing/stuff and colours are filled in from the built-in metadata
    when the checkpoint lacks them and its dataset is known. Every command's ``--model`` goes through here."""
    text = str(source)
    known = KNOWN_MODELS.get(text) or next((m for m in KNOWN_MODELS.values() if m.source == text), None)
    model = MaskFormer.from_pretrained(known.source if known else source, config=config, strict=strict)
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
