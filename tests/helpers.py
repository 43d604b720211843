"""Building blocks several test modules share."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from maskformer.data.io import encode_rle, rgb_to_id
from maskformer.model import HungarianMatcher, LossConfig, MaskFormerConfig, SetCriterion
from maskformer.model.config import BackboneConfig, Mask2FormerConfig, PixelDecoderConfig, TransformerConfig


def make_criterion(num_classes: int, **loss: Any) -> SetCriterion:
    """The set criterion of a MaskFormer loss config with ``loss`` changed."""
    return SetCriterion.from_config(MaskFormerConfig(num_classes=num_classes, loss=LossConfig(**loss)))


def make_matcher(**loss: Any) -> HungarianMatcher:
    """The matcher of a MaskFormer loss config with ``loss`` changed."""
    return HungarianMatcher.from_config(LossConfig(**loss))


def official_layouts(synth: Path, out: Path) -> dict[str, Path]:
    """The synthetic dataset (``write_dataset``) rewritten in the official layouts: ADEChallengeData2016
    (labels + 1, 0 = ignore), COCO panoptic and COCO instances (things only, compressed RLE), with COCO's
    split names."""
    layouts = {name: out / name for name in ("ade20k", "coco_panoptic", "coco_instance")}
    classes = json.loads((synth / "classes.json").read_text())["classes"]
    for split, coco_split, ade_split in (("train", "train2017", "training"), ("val", "val2017", "validation")):
        ade = layouts["ade20k"]
        for sub in ("images", "annotations"):
            (ade / sub / ade_split).mkdir(parents=True, exist_ok=True)
        for image in sorted((synth / "images" / split).glob("*.png")):
            shutil.copy(image, ade / "images" / ade_split / image.name)
            label = np.asarray(Image.open(synth / "semantic" / split / image.name)).astype(np.int64)
            Image.fromarray(np.where(label == 255, 0, label + 1).astype(np.uint8)).save(
                ade / "annotations" / ade_split / image.name
            )
        panoptic = json.loads((synth / f"panoptic_{split}.json").read_text())
        coco = layouts["coco_panoptic"]
        (coco / "annotations").mkdir(parents=True, exist_ok=True)
        shutil.copytree(synth / "images" / split, coco / coco_split)
        shutil.copytree(synth / "panoptic" / split, coco / "annotations" / f"panoptic_{coco_split}")
        (coco / "annotations" / f"panoptic_{coco_split}.json").write_text(json.dumps(panoptic))
        inst = layouts["coco_instance"]
        (inst / "annotations").mkdir(parents=True, exist_ok=True)
        shutil.copytree(synth / "images" / split, inst / coco_split)
        things = {c["id"] for c in classes if c["isthing"]}
        annotations = []
        for ann in panoptic["annotations"]:
            ids = rgb_to_id(np.asarray(Image.open(synth / "panoptic" / split / ann["file_name"]).convert("RGB")))
            for seg in ann["segments_info"]:
                if seg["category_id"] in things:
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": ann["image_id"],
                            "category_id": seg["category_id"],
                            "segmentation": encode_rle(ids == seg["id"]),
                            "area": seg["area"],
                            "bbox": seg["bbox"],
                            "iscrowd": 0,
                        }
                    )
        categories = [{"id": c["id"], "name": c["name"]} for c in classes if c["isthing"]]
        (inst / "annotations" / f"instances_{coco_split}.json").write_text(
            json.dumps({"images": panoptic["images"], "annotations": annotations, "categories": categories})
        )
    return layouts


def resnet18_model(
    family: str, width: int, queries: int, layers: int, ffn: int, points: int, dropout: float | None = None
) -> MaskFormerConfig:
    """A small ResNet-18 model of either family for 6 classes: MaskFormer's FPN and DETR decoder, or
    Mask2Former's one-layer deformable encoder, masked-attention decoder and point loss on ``points`` points.
    ``dropout`` None keeps the family's default."""
    backbone = BackboneConfig(type="timm", name="resnet18", norm="bn")
    if family == "maskformer":
        transformer = TransformerConfig(
            hidden_dim=width, num_queries=queries, num_heads=4, ffn_dim=ffn, num_layers=layers
        )
        if dropout is not None:
            transformer.dropout = dropout
        return MaskFormerConfig(
            num_classes=6,
            backbone=backbone,
            pixel_decoder=PixelDecoderConfig(conv_dim=width, mask_dim=width),
            transformer=transformer,
        )
    base = Mask2FormerConfig()
    config = Mask2FormerConfig(
        num_classes=6,
        backbone=backbone,
        pixel_decoder=dataclasses.replace(
            base.pixel_decoder, conv_dim=width, mask_dim=width, encoder_layers=1, encoder_heads=4, encoder_ffn_dim=ffn
        ),
        transformer=dataclasses.replace(
            base.transformer, hidden_dim=width, num_queries=queries, num_heads=4, ffn_dim=ffn, num_layers=layers
        ),
        loss=dataclasses.replace(base.loss, num_points=points),
    )
    if dropout is not None:
        config.transformer.dropout = dropout
    return config


def prepare_dataset(tmp_path_factory, name: str, write_raw) -> tuple[Path, Path]:
    """``write_raw(folder)`` builds a raw dataset, ``maskformer data prepare NAME`` prepares it; returns
    (raw, prepared) folders."""
    from maskformer.cli.main import main

    raw = write_raw(tmp_path_factory.mktemp(f"{name}_raw"))
    out = tmp_path_factory.mktemp(name)
    assert main(["data", "prepare", name, "--raw", str(raw), "--out", str(out), "--quiet"]) == 0
    return raw, out


def train_and_score(data: Path, run: Path, preset: str, capsys) -> dict:
    """``maskformer train --preset PRESET --data DATA`` (the recipe names the layout and the ignore value),
    shrunk to a tiny model of the preset's family and 2 steps, then ``maskformer eval`` on the recipe's layout;
    returns the metrics."""
    from maskformer.cli.main import main
    from maskformer.training.config import recipe
    from tests.test_cli_training import TINY_M2F

    # The tiny sizes; data.base_size 0 scales from the tiny crop (Cityscapes' and Vistas' recipes start from
    # 1024 and 2048), and MaskFormer keeps its full-resolution mask loss.
    tiny = [*TINY_M2F, "data.base_size=0"]
    if not preset.startswith("m2f_"):
        tiny.remove("model.loss.num_points=256")
    assert main(["train", "--preset", preset, "--data", str(data), "--out", str(run), *tiny]) == 0
    capsys.readouterr()
    evaluate = ["eval", "--model", str(run), "--data", str(data), "--format", recipe(preset).data.format]
    assert main(evaluate) == 0
    return json.loads(capsys.readouterr().out)
