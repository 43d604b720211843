"""The datasets (with their task) the papers train and publish on, one record each under every name it
goes by, so that no name is derived from another: the key in preset names and recipes, the title in tables,
the built-in class list and the ``maskformer data prepare`` name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dataset:
    """``key``: the dataset in preset names (``r50_ade_full``, ``m2f_swin_t_coco_instance``) and recipes;
    ``title``: its name in tables (``maskformer models``); ``task``: semantic, panoptic or instance;
    ``metadata``: its built-in class list (:mod:`maskformer.data.metadata`), "" when the package has none;
    ``preparation``: the ``maskformer data prepare`` name that writes it from its raw download, "" when it is
    read as downloaded."""

    key: str
    title: str
    task: str
    metadata: str = ""
    preparation: str = ""


DATASETS: dict[str, Dataset] = {
    d.key: d
    for d in [
        Dataset("ade", "ADE20K-150", "semantic", "ade20k_150"),
        Dataset("ade_panoptic", "ADE20K-150 panoptic", "panoptic", "ade20k_150", "ade20k-panoptic"),
        Dataset("ade_instance", "ADE20K-100 instance", "instance", "", "ade20k-instance"),
        Dataset("ade_full", "ADE20K-Full-847", "semantic", "ade20k_full_847", "ade20k-full"),
        Dataset("coco", "COCO panoptic", "panoptic", "coco_panoptic_133"),
        Dataset("coco_instance", "COCO instance", "instance"),
        Dataset("coco_stuff", "COCO-Stuff-10K", "semantic", "coco_stuff_171", "coco-stuff-10k"),
        Dataset("cityscapes", "Cityscapes", "semantic", "cityscapes_19"),
        Dataset("cityscapes_panoptic", "Cityscapes panoptic", "panoptic", "cityscapes_19", "cityscapes-panoptic"),
        Dataset("cityscapes_instance", "Cityscapes instance", "instance", "", "cityscapes-instance"),
        Dataset("vistas", "Mapillary Vistas", "semantic", "mapillary_vistas_65", "mapillary-vistas"),
        Dataset("vistas_panoptic", "Mapillary Vistas panoptic", "panoptic", "mapillary_vistas_65", "mapillary-vistas"),
        Dataset("pascal_context_59", "Pascal Context-59", "semantic", "", "pascal-context-59"),
        Dataset("pascal_context_459", "Pascal Context-459", "semantic", "", "pascal-context-459"),
    ]
}
