"""Building blocks several test modules share."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from filelock import FileLock
from PIL import Image
from torch import nn

from maskformer.data.io import encode_rle, rgb_to_id
from maskformer.model import (
    EoMTConfig,
    HungarianMatcher,
    LossConfig,
    Mask2FormerConfig,
    MaskFormerConfig,
    SetCriterion,
)
from maskformer.model.config import BackboneConfig, PixelDecoderConfig, TransformerConfig
from maskformer.model.families.eomt import EoMTSection
from maskformer.training import DataConfig, RunConfig, TrainConfig

# A tiny Mask2Former (timm's 0.4M-parameter test_resnet) and two steps on 48 x 48 crops, as overrides of a preset.
TINY_M2F = [
    "model.backbone.name=test_resnet",
    "model.backbone.pretrained=false",
    "model.backbone.norm=bn",
    "model.pixel_decoder.conv_dim=32",
    "model.pixel_decoder.mask_dim=32",
    "model.pixel_decoder.encoder_layers=1",
    "model.pixel_decoder.encoder_heads=4",
    "model.pixel_decoder.encoder_ffn_dim=64",
    "model.transformer.hidden_dim=32",
    "model.transformer.num_queries=6",
    "model.transformer.num_layers=3",
    "model.transformer.num_heads=4",
    "model.transformer.ffn_dim=64",
    "model.loss.num_points=256",
    "model.inference.test_shortest_edge=64",
    "model.inference.test_max_size=128",
    "data.crop_size=[48,48]",
    "data.num_workers=0",
    "data.max_val_images=2",
    "train.max_steps=2",
    "train.batch_size=2",
    "train.val_every=2",
    "train.accelerator=cpu",
    "train.devices=1",
]


def resize_mask_logits(masks: torch.Tensor, padded_size, image_size, output_size) -> torch.Tensor:
    """The straightforward formulation the post-processing is tested against: mask logits [N, h/4, w/4] of a
    padded input, all upsampled to the padded size at once, cropped, resized to the output size (bilinear, as
    detectron2's sem_seg_postprocess) -> [N, *output_size]."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *output_size))
    m = F.interpolate(masks[None], size=padded_size, mode="bilinear", align_corners=False)
    m = m[:, :, : image_size[0], : image_size[1]]
    if tuple(output_size) != tuple(image_size):
        m = F.interpolate(m, size=output_size, mode="bilinear", align_corners=False)
    return m[0]


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


def small_config(
    family: str = "maskformer",
    backbone: str = "swin",
    num_classes: int = 5,
    width: int = 64,
    queries: int = 10,
    layers: int = 3,
    ffn: int = 128,
    encoder_layers: int = 2,
    points: int = 256,
    dropout: float | None = None,
    norm: str | None = None,
    rotary: bool = False,
) -> MaskFormerConfig:
    """The tests' one builder of small but complete models of any family: a tiny Swin (embed 32, depths
    1-1-2-1) or timm ``backbone`` (its ``norm``, default timm's frozen BN); MaskFormer's FPN and DETR decoder,
    or Mask2Former's deformable encoder (``encoder_layers``), masked-attention decoder and point loss on
    ``points`` points; ``width`` channels, ``layers`` decoder layers, ``ffn`` feed-forward width. ``dropout``
    None keeps the family's default. EoMT ignores ``backbone``, ``encoder_layers`` and ``dropout``: a DINOv2
    ViT with 4 registers at patch 16, ``width`` wide with 4 heads, whose last ``layers`` of ``layers + 2``
    blocks take the queries, and the point loss on ``points`` points; ``rotary``: a DINOv3 ViT of that size
    instead (timm's Eva, rotary position embeddings)."""
    if family == "eomt":
        name = "vit_small_patch16_dinov3_qkvb" if rotary else "vit_small_patch14_reg4_dinov2"
        vit = BackboneConfig(type="timm", name=name, timm_kwargs={
            "patch_size": 16, "embed_dim": width, "depth": layers + 2, "num_heads": 4, "mlp_ratio": ffn / width,
            "init_values": 1.0})  # fmt: skip
        return EoMTConfig(
            num_classes=num_classes,
            backbone=vit,
            eomt=EoMTSection(num_queries=queries, num_blocks=layers, image_size=64),
            loss=dataclasses.replace(EoMTConfig().loss, num_points=points),
        )
    if backbone == "swin":
        bb = BackboneConfig(type="swin", name="", embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
                            window_size=7, drop_path_rate=0.0)  # fmt: skip
    else:
        bb = BackboneConfig(type="timm", name=backbone, **({"norm": norm} if norm else {}))
    if family == "maskformer":
        transformer = TransformerConfig(
            hidden_dim=width, num_queries=queries, num_heads=4, ffn_dim=ffn, num_layers=layers
        )
        config = MaskFormerConfig(
            num_classes=num_classes,
            backbone=bb,
            pixel_decoder=PixelDecoderConfig(conv_dim=width, mask_dim=width),
            transformer=transformer,
        )
    else:
        base = Mask2FormerConfig()
        config = Mask2FormerConfig(
            num_classes=num_classes,
            backbone=bb,
            pixel_decoder=dataclasses.replace(base.pixel_decoder, conv_dim=width, mask_dim=width,
                                              encoder_layers=encoder_layers, encoder_heads=4, encoder_ffn_dim=ffn),
            transformer=dataclasses.replace(base.transformer, hidden_dim=width, num_queries=queries, num_heads=4,
                                            ffn_dim=ffn, num_layers=layers),
            loss=dataclasses.replace(base.loss, num_points=points),
        )  # fmt: skip
    if dropout is not None:
        config.transformer.dropout = dropout
    return config


def tiny_config(num_classes: int = 5, backbone: str = "swin", queries: int = 10) -> MaskFormerConfig:
    """A small but complete MaskFormer for fast tests."""
    return small_config("maskformer", backbone, num_classes, queries=queries)


def tiny_m2f_config(num_classes: int = 5, queries: int = 10) -> Mask2FormerConfig:
    """A small but complete Mask2Former (MSDeformAttn pixel decoder, masked-attention decoder) for fast tests."""
    return small_config("mask2former", "swin", num_classes, queries=queries)


def resnet18_model(
    family: str, width: int, queries: int, layers: int, ffn: int, points: int, dropout: float | None = None
) -> MaskFormerConfig:
    """A small ResNet-18 model (batch norm) of either family for the synthetic dataset's 6 classes, with one
    deformable encoder layer for Mask2Former."""
    return small_config(family, "resnet18", 6, width, queries, layers, ffn, 1, points, dropout, norm="bn")


def prepare_dataset(tmp_path_factory, name: str, write_raw) -> tuple[Path, Path]:
    """``write_raw(folder)`` builds a raw dataset, ``maskformer data prepare NAME`` prepares it; returns
    (raw, prepared) folders."""
    from maskformer.cli.main import main

    raw = write_raw(tmp_path_factory.mktemp(f"{name}_raw"))
    out = tmp_path_factory.mktemp(name)
    assert main(["data", "prepare", name, "--raw", str(raw), "--out", str(out), "--quiet"]) == 0
    return raw, out


def ground_truth_scores(data: Path, preset: str) -> dict:
    """The validation split's ground truth scored as its own prediction by the package's readers and
    evaluators, with the recipe's layout and ignore value: mIoU for semantic data, PQ for panoptic data, AP
    for instance data (1.0 each when the prepared files are consistent)."""
    from maskformer.evaluation import InstanceEvaluator, PanopticEvaluator, SemanticEvaluator
    from maskformer.training.config import recipe
    from maskformer.training.datamodule import MaskFormerDataModule

    config = recipe(preset)
    config.data.root = str(data)
    reader = MaskFormerDataModule(config).val_reader
    names = reader.metadata.class_names
    semantic = SemanticEvaluator(len(names), config.data.ignore_value)
    panoptic = PanopticEvaluator({i: {"isthing": 1, "name": n} for i, n in enumerate(names)})
    instance = InstanceEvaluator(list(range(len(names))))
    kinds = set()
    for index in range(len(reader)):
        sample = reader.load(index)
        kinds.add(sample["kind"])
        if sample["kind"] == "semantic":
            semantic.update(sample["label"], sample["label"])
            continue
        if sample["kind"] == "instance":
            masks = sample["masks"].numpy().astype(bool)
            classes = [s.category for s in sample["instances"]]
            crowd = [s.iscrowd for s in sample["instances"]]
            kept = [i for i, c in enumerate(crowd) if not c]
            instance.update(list(masks), classes, crowd, masks[kept], [classes[i] for i in kept], [1.0] * len(kept))
            continue
        ids = sample["label"].numpy()
        segments = [
            {"id": i, "category_id": s.category, "iscrowd": int(s.iscrowd)} for i, s in sample["segments"].items()
        ]
        predicted = ids.copy()
        for s in segments:
            if s["iscrowd"]:  # a crowd region is no segment of a prediction
                predicted[ids == s["id"]] = 0
        panoptic.update(ids, segments, predicted, [s for s in segments if not s["iscrowd"]])
    scores = {"mIoU": semantic.compute()["mIoU"]} if "semantic" in kinds else {}
    if "panoptic" in kinds:
        scores["PQ"] = panoptic.compute()["All"]["pq"]
    if "instance" in kinds:
        scores["AP"] = instance.compute()["AP"]
    return scores


def train_and_score(data: Path, run: Path, preset: str, capsys) -> dict:
    """``maskformer train --preset PRESET --data DATA`` (the recipe names the layout and the ignore value),
    shrunk to a tiny model of the preset's family and 2 steps, then ``maskformer eval`` on the recipe's layout;
    returns the metrics, after checking that the data's ground truth scores 1.0 as its own prediction and
    that every metric of the model is a fraction."""
    from maskformer.cli.main import main
    from maskformer.training.config import recipe

    # The tiny sizes; data.base_size 0 scales from the tiny crop (Cityscapes' and Vistas' recipes start from
    # 1024 and 2048), and MaskFormer keeps its full-resolution mask loss.
    tiny = [*TINY_M2F, "data.base_size=0"]
    if not preset.startswith("m2f_"):
        tiny.remove("model.loss.num_points=256")
    assert main(["train", "--preset", preset, "--data", str(data), "--out", str(run), *tiny]) == 0
    capsys.readouterr()
    evaluate = ["eval", "--model", str(run), "--data", str(data), "--format", recipe(preset).data.format, "--json"]
    assert main(evaluate) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert all(v == 1.0 for v in ground_truth_scores(data, preset).values()) and ground_truth_scores(data, preset)
    scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
    assert scalars and all(0.0 <= v <= 1.0 or (k.startswith("AP") and v == -1.0) for k, v in scalars.items())
    return metrics


HEAD = "sem_seg_head."
PD = HEAD + "pixel_decoder."
PRED = HEAD + "predictor."


def hf_to_detectron2(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers MaskFormer names -> the official repository's detectron2 names."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in hf_state.items():
        if key.endswith("num_batches_tracked") or ".model.layernorm." in key:
            continue
        k = key.replace("model.pixel_level_module.encoder.", "ENC.").replace("model.transformer_module.", "TM.")
        k = k.replace("model.pixel_level_module.decoder.", "PXD.")
        new = None
        if m := re.fullmatch(r"ENC\.model\.embeddings\.patch_embeddings\.projection\.(\w+)", k):
            new = f"backbone.patch_embed.proj.{m[1]}"
        elif m := re.fullmatch(r"ENC\.model\.embeddings\.norm\.(\w+)", k):
            new = f"backbone.patch_embed.norm.{m[1]}"
        elif m := re.fullmatch(r"ENC\.model\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.+)", k):
            base = f"backbone.layers.{m[1]}.blocks.{m[2]}."
            rest = m[3]
            if q := re.fullmatch(r"attention\.self\.(query|key|value)\.(\w+)", rest):
                fused.setdefault(base + f"attn.qkv.{q[2]}", {})[["query", "key", "value"].index(q[1])] = value
                continue
            table = {
                "layernorm_before": "norm1",
                "layernorm_after": "norm2",
                "attention.output.dense": "attn.proj",
                "intermediate.dense": "mlp.fc1",
                "output.dense": "mlp.fc2",
                "attention.self.relative_position_bias_table": "attn.relative_position_bias_table",
                "attention.self.relative_position_index": "attn.relative_position_index",
            }
            for src, dst in table.items():
                if rest == src or rest.startswith(src + "."):
                    new = base + dst + rest[len(src) :]
                    break
        elif m := re.fullmatch(r"ENC\.model\.encoder\.layers\.(\d+)\.downsample\.(.+)", k):
            new = f"backbone.layers.{m[1]}.downsample.{m[2]}"  # detectron2: end of stage i, same index
        elif m := re.fullmatch(r"ENC\.hidden_states_norms\.(\d)\.(\w+)", k):
            new = f"backbone.norm{m[1]}.{m[2]}"
        elif m := re.fullmatch(r"ENC\.embedder\.embedder\.convolution\.weight", k):
            new = "backbone.stem.conv1.weight"
        elif m := re.fullmatch(r"ENC\.embedder\.embedder\.normalization\.(\w+)", k):
            new = f"backbone.stem.conv1.norm.{m[1]}"
        elif m := re.fullmatch(r"ENC\.encoder\.stages\.(\d)\.layers\.(\d+)\.(.+)", k):
            base = f"backbone.res{int(m[1]) + 2}.{m[2]}."
            rest = m[3]
            if r := re.fullmatch(r"shortcut\.convolution\.weight", rest):
                new = base + "shortcut.weight"
            elif r := re.fullmatch(r"shortcut\.normalization\.(\w+)", rest):
                new = base + f"shortcut.norm.{r[1]}"
            elif r := re.fullmatch(r"layer\.(\d)\.convolution\.weight", rest):
                new = base + f"conv{int(r[1]) + 1}.weight"
            elif r := re.fullmatch(r"layer\.(\d)\.normalization\.(\w+)", rest):
                new = base + f"conv{int(r[1]) + 1}.norm.{r[2]}"
        elif m := re.fullmatch(r"PXD\.fpn\.stem\.0\.weight", k):
            new = PD + "layer_4.weight"
        elif m := re.fullmatch(r"PXD\.fpn\.stem\.1\.(\w+)", k):
            new = PD + f"layer_4.norm.{m[1]}"
        elif m := re.fullmatch(r"PXD\.fpn\.layers\.(\d)\.(proj|block)\.(\d)\.(\w+)", k):
            level = 3 - int(m[1])
            name = "adapter" if m[2] == "proj" else "layer"
            new = PD + (f"{name}_{level}.{m[4]}" if m[3] == "0" else f"{name}_{level}.norm.{m[4]}")
        elif m := re.fullmatch(r"PXD\.mask_projection\.(\w+)", k):
            new = PD + f"mask_features.{m[1]}"
        elif m := re.fullmatch(r"TM\.queries_embedder\.weight", k):
            new = PRED + "query_embed.weight"
        elif m := re.fullmatch(r"TM\.input_projection\.(\w+)", k):
            new = PRED + f"input_proj.{m[1]}"
        elif m := re.fullmatch(r"TM\.decoder\.layernorm\.(\w+)", k):
            new = PRED + f"transformer.decoder.norm.{m[1]}"
        elif m := re.fullmatch(r"TM\.decoder\.layers\.(\d+)\.(.+)", k):
            base = PRED + f"transformer.decoder.layers.{m[1]}."
            rest = m[2]
            if q := re.fullmatch(r"(self_attn|encoder_attn)\.([qkv])_proj\.(weight|bias)", rest):
                attn = "self_attn" if q[1] == "self_attn" else "multihead_attn"
                fused.setdefault(base + f"{attn}.in_proj_{q[3]}", {})["qkv".index(q[2])] = value
                continue
            table = {
                "self_attn.o_proj": "self_attn.out_proj",
                "encoder_attn.o_proj": "multihead_attn.out_proj",
                "self_attn_layer_norm": "norm1",
                "encoder_attn_layer_norm": "norm2",
                "final_layer_norm": "norm3",
                "mlp.fc1": "linear1",
                "mlp.fc2": "linear2",
            }
            for src, dst in table.items():
                if rest.startswith(src + "."):
                    new = base + dst + rest[len(src) :]
                    break
        elif m := re.fullmatch(r"class_predictor\.(\w+)", k):
            new = PRED + f"class_embed.{m[1]}"
        elif m := re.fullmatch(r"mask_embedder\.(\d)\.0\.(\w+)", k):
            new = PRED + f"mask_embed.layers.{m[1]}.{m[2]}"
        elif k == "criterion.empty_weight":
            new = k
        assert new is not None, f"unmapped transformers key {key}"
        out[new] = value
    for name, parts in fused.items():
        out[name] = torch.cat([parts[i] for i in sorted(parts)])
    return out


def write_zoo_pickle(state: dict[str, torch.Tensor], path) -> None:
    blob = {"model": {k: v.detach().numpy().copy() for k, v in state.items()}, "__author__": "test"}
    with open(path, "wb") as f:
        pickle.dump(blob, f)


def tiny_transformers_model(family: str, class_names: list[str], seed: int = 0, backbone: str = "resnet"):
    """A small randomly initialised transformers MaskFormer or Mask2Former (a basic-block ResNet of widths
    16-128, or a Swin of width 32; 64 channels, 12 queries) whose classes are ``class_names``, in eval mode."""
    import transformers

    stages = ["stage1", "stage2", "stage3", "stage4"]
    if backbone == "swin":
        backbone = transformers.SwinConfig(embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=2,
                                           out_features=stages, drop_path_rate=0.0)  # fmt: skip
    else:
        backbone = transformers.ResNetConfig(embedding_size=64, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                             layer_type="basic", out_features=stages)  # fmt: skip
    labels = {"id2label": dict(enumerate(class_names)), "label2id": {n: i for i, n in enumerate(class_names)}}
    if family == "maskformer":
        decoder = transformers.DetrConfig(d_model=64, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=96,
                                          num_queries=12, dropout=0.0)  # fmt: skip
        config = transformers.MaskFormerConfig(backbone_config=backbone, decoder_config=decoder, fpn_feature_size=64,
                                               mask_feature_size=64, num_labels=len(class_names), **labels)  # fmt: skip
        model_class = transformers.MaskFormerForInstanceSegmentation
    else:
        config = transformers.Mask2FormerConfig(
            backbone_config=backbone, num_labels=len(class_names), num_queries=12, feature_size=64,
            mask_feature_size=64, hidden_dim=64, num_attention_heads=4, encoder_layers=1, encoder_feedforward_dim=96,
            decoder_layers=3, dim_feedforward=96, **labels,
        )  # fmt: skip
        model_class = transformers.Mask2FormerForUniversalSegmentation
    torch.manual_seed(seed)
    return model_class(config).eval()


def relabelled_dataset(synth: Path, out: Path, names: dict[int, str], extra: list[str]) -> Path:
    """The synthetic panoptic dataset (``write_dataset``) with other classes: category id ``i`` renamed
    ``names[i]`` (the others keep their names) and the classes ``extra`` added, as a user's own data would
    differ from a trained model's. The images and annotations are the same files."""
    shutil.copytree(synth, out)
    for split in ("train", "val"):
        file = out / f"panoptic_{split}.json"
        data = json.loads(file.read_text())
        for category in data["categories"]:
            category["name"] = names.get(category["id"], category["name"])
        top = max(c["id"] for c in data["categories"])
        data["categories"] += [
            {"id": top + 1 + i, "name": name, "isthing": 1, "color": [90, 90, 90 + i], "supercategory": "shape"}
            for i, name in enumerate(extra)
        ]
        file.write_text(json.dumps(data))
    return out


FAMILIES = ["maskformer", "mask2former", "eomt"]


def run_config(root, steps: int, family: str = "maskformer", **train_kw) -> RunConfig:
    """A training run of ``steps`` steps on the synthetic data at ``root``: a model of any family (on timm's
    0.4M-parameter ``test_resnet`` with batch norm, whose checkpoints are a few MB, not ResNet-18's 135), batch 2
    of 48 x 48 crops, validation at the last step; ``train_kw`` overrides the training settings. EoMT anneals
    its two blocks' masks away over the second and third quarters of the run, as its recipes do over theirs."""
    layers = {"maskformer": 2, "mask2former": 3, "eomt": 2}[family]
    model = small_config(family, "test_resnet", 6, 32, 8, layers, 64, 1, 512, norm="bn")
    if family == "eomt":
        quarter = steps // 4
        model.eomt.anneal_start, model.eomt.anneal_end = (quarter, 2 * quarter), (2 * quarter, 3 * quarter)
    model.inference.test_shortest_edge = 64
    data = DataConfig(
        format="panoptic", root=str(root), crop_size=(48, 48), num_workers=0, min_scale=0.75, max_scale=1.25
    )
    settings = dict(
        max_steps=steps,
        batch_size=2,
        lr=3e-4,
        backbone_lr_multiplier=1.0,
        val_every=steps,
        checkpoint_every=1000,
        log_every=1,
        accelerator="cpu",
        devices=1,
        num_val_images=2,
        # A given layout: a measured one (train.channels_last=None) could differ between two runs a test compares.
        channels_last=True,
    )
    settings.update(train_kw)
    return RunConfig(model=model, data=data, train=TrainConfig(**settings))


NUM_CLASSES = 150


def randomize_norms(model: nn.Module, generator: torch.Generator) -> None:
    """Give every norm layer non-trivial affine parameters and statistics, so a weight mapped to the wrong
    place changes the outputs."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(0.2 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(1 + 0.5 * torch.rand(module.running_var.shape, generator=generator))
            if isinstance(module, nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))


def build_hf_model(backbone: str, seed: int = 0):
    """A randomly initialised transformers MaskFormerForInstanceSegmentation (Swin-T or ResNet-50)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    if backbone == "swin":
        bb = transformers.SwinConfig(
            embed_dim=96,
            depths=[2, 2, 6, 2],
            num_heads=[3, 6, 12, 24],
            window_size=7,
            drop_path_rate=0.3,
            out_features=["stage1", "stage2", "stage3", "stage4"],
        )
    else:
        bb = transformers.ResNetConfig(
            depths=[3, 4, 6, 3],
            hidden_sizes=[256, 512, 1024, 2048],
            layer_type="bottleneck",
            out_features=["stage1", "stage2", "stage3", "stage4"],
        )
    id2label = {i: f"class_{i}" for i in range(NUM_CLASSES)}
    config = transformers.MaskFormerConfig(
        backbone_config=bb, num_labels=NUM_CLASSES, id2label=id2label, label2id={v: k for k, v in id2label.items()}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.MaskFormerForInstanceSegmentation(config)
    randomize_norms(model, torch.Generator().manual_seed(seed + 1))
    return model.eval()


def hf_to_official(hf_state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """transformers Mask2Former names (Swin or ResNet backbone) -> the official repository's detectron2 names, as its
    image checkpoints store them (query features as ``static_query``). Written from the official source,
    apart from the package's reader."""
    swin = {
        "layernorm_before": "norm1",
        "layernorm_after": "norm2",
        "attention.o_proj": "attn.proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
        "attention.relative_position_bias.relative_position_bias_table": "attn.relative_position_bias_table",
    }
    encoder = {"self_attn_layer_norm": "norm1", "final_layer_norm": "norm2", "fc1": "linear1", "fc2": "linear2"}
    head = {"queries_features.weight": "static_query.weight", "queries_embedder.weight": "query_embed.weight",
            "level_embed.weight": "level_embed.weight", "decoder.layernorm": "decoder_norm"}  # fmt: skip
    out, qkv = {}, {}
    for key, value in hf_state.items():
        new = None
        if key.startswith("criterion.") or ".swin.layernorm." in key:
            continue
        if key.endswith("num_batches_tracked"):
            continue
        if m := re.fullmatch(r"model\.pixel_level_module\.encoder\.embedder\.embedder\.(\w+)\.(\w+)", key):
            new = "backbone.stem.conv1." + ("weight" if m[1] == "convolution" else f"norm.{m[2]}")
        elif m := re.fullmatch(r"model\.pixel_level_module\.encoder\.encoder\.stages\.(\d)\.layers\.(\d+)\.(.+)", key):
            block = f"backbone.res{int(m[1]) + 2}.{m[2]}."
            part = re.sub(r"^layer\.(\d)\.", lambda c: f"conv{int(c[1]) + 1}.", m[3]).replace("shortcut.", "shortcut.")
            new = block + part.replace(".convolution.weight", ".weight").replace(".normalization.", ".norm.")
        elif m := re.fullmatch(r"model\.pixel_level_module\.encoder\.swin\.(.+)", key):
            rest = m[1].replace("embeddings.patch_embeddings.projection", "patch_embed.proj")
            rest = rest.replace("embeddings.norm", "patch_embed.norm").replace("encoder.layers", "layers")
            if q := re.fullmatch(r"(layers\.\d+\.blocks\.\d+)\.attention\.([qkv])_proj\.(\w+)", rest):
                qkv.setdefault(f"backbone.{q[1]}.attn.qkv.{q[3]}", {})["qkv".index(q[2])] = value
                continue
            rest += "."
            for src, dst in swin.items():
                rest = rest.replace(f".{src}.", f".{dst}.")
            new = "backbone." + rest[:-1]
        elif m := re.fullmatch(r"model\.pixel_level_module\.encoder\.hidden_states_norms\.stage(\d)\.(\w+)", key):
            new = f"backbone.norm{int(m[1]) - 1}.{m[2]}"
        elif m := re.fullmatch(r"model\.pixel_level_module\.decoder\.(.+)", key):
            rest = m[1]
            if e := re.fullmatch(r"encoder\.layers\.(\d+)\.(\w+)\.(\w+)(?:\.(\w+))?", rest):
                name = encoder.get(e[2], e[2])
                rest = f"transformer.encoder.layers.{e[1]}.{name}.{e[3]}" + (f".{e[4]}" if e[4] else "")
            rest = rest.replace("input_projections", "input_proj").replace("level_embed", "transformer.level_embed")
            rest = rest.replace("mask_projection", "mask_features")
            rest = re.sub(r"^(adapter_1|layer_1)\.0\.", r"\1.", rest)
            rest = re.sub(r"^(adapter_1|layer_1)\.1\.", r"\1.norm.", rest)
            new = "sem_seg_head.pixel_decoder." + rest
        elif m := re.fullmatch(r"model\.transformer_module\.(.+)", key):
            rest = m[1]
            if d := re.fullmatch(r"decoder\.layers\.(\d+)\.(.+)", rest):
                i, part = d[1], d[2]
                if a := re.fullmatch(r"self_attn\.([qkv])_proj\.(\w+)", part):
                    name = f"transformer_self_attention_layers.{i}.self_attn.in_proj_{a[2]}"
                    qkv.setdefault("sem_seg_head.predictor." + name, {})["qkv".index(a[1])] = value
                    continue
                part = part.replace("self_attn.o_proj", "self_attn.out_proj")
                if part.startswith("self_attn"):
                    rest = f"transformer_self_attention_layers.{i}.{part.replace('self_attn_layer_norm', 'norm')}"
                elif part.startswith("cross_attn"):
                    part = part.replace("cross_attn_layer_norm", "norm").replace("cross_attn.", "multihead_attn.")
                    rest = f"transformer_cross_attention_layers.{i}.{part}"
                else:
                    rest = (
                        f"transformer_ffn_layers.{i}.{part.replace('fc', 'linear').replace('final_layer_norm', 'norm')}"
                    )
            elif p := re.fullmatch(r"decoder\.mask_predictor\.mask_embedder\.(\d)\.0\.(\w+)", rest):
                rest = f"mask_embed.layers.{p[1]}.{p[2]}"
            else:
                for src, dst in head.items():
                    rest = rest.replace(src, dst)
            new = "sem_seg_head.predictor." + rest
        elif m := re.fullmatch(r"class_predictor\.(\w+)", key):
            new = f"sem_seg_head.predictor.class_embed.{m[1]}"
        assert new is not None, key
        out[new] = value
    for name, parts in qkv.items():
        out[name] = torch.cat([parts[i] for i in range(3)])
    return {k: v.detach().numpy().copy() for k, v in out.items()}


def naive_cost(logits, masks, target_labels, target_masks, alpha=0.25, gamma=2.0):
    """The paper's matching cost, one (query, target) pair at a time."""
    prob = logits.softmax(-1)
    t = F.interpolate(target_masks[None], size=masks.shape[-2:], mode="nearest")[0]
    cost = np.zeros((masks.shape[0], t.shape[0]))
    for i in range(masks.shape[0]):
        x = masks[i].flatten()
        p = x.sigmoid()
        for j in range(t.shape[0]):
            y = t[j].flatten()
            ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
            p_t = p * y + (1 - p) * (1 - y)
            focal = (ce * (1 - p_t) ** gamma * (alpha * y + (1 - alpha) * (1 - y))).mean()
            dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
            cost[i, j] = -prob[i, target_labels[j]] + 20 * focal + dice
    return cost


# Colours of the label values of the transform tests' blocky samples.
PALETTE = torch.tensor([[250, 10, 10], [10, 250, 10], [10, 10, 250], [200, 200, 10], [128, 128, 128]])


def colour_index(image):
    """Palette index of every pixel whose colour is exactly a palette colour, else -1."""
    eq = (image.permute(1, 2, 0)[:, :, None, :].long() == PALETTE[None, None]).all(-1)
    return torch.where(eq.any(-1), eq.float().argmax(-1), torch.tensor(-1))


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``name`` made by ``build(folder)`` once per test session: pytest-xdist's processes share it
    (each has a base temp of its own; the folder goes in their common parent), and the first to ask builds it
    while the others wait. For expensive read-only fixtures such as a trained run."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / name
    with FileLock(f"{folder}.lock"):
        if not (root / f"{name}.done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            (root / f"{name}.done").touch()
    return folder


def blob_targets(gen: torch.Generator, counts: tuple[int, ...], num_classes: int, size: tuple[int, int]) -> list[dict]:
    """Random training targets, one per image: ``counts[i]`` overlapping blob masks of ``size`` (noise at 1/8
    of the size, upsampled and thresholded) with random classes below ``num_classes``."""
    targets = []
    for n in counts:
        low = torch.rand(1, n, size[0] // 8, size[1] // 8, generator=gen)
        masks = (F.interpolate(low, size=size)[0] > 0.6).float()
        targets.append({"labels": torch.randint(0, num_classes, (n,), generator=gen), "masks": masks})
    return targets


def straightforward_panoptic(logits, masks, image, padded, out, thing_classes=None, threshold=0.8, overlap=0.8):
    """The paper's general inference on whole tensors, for one image (batch of 1): every kept mask resized at
    once, each mask's sigmoid taken alone (a sigmoid over several masks can differ in its last bit), one
    argmax over queries -> (segmentation [H, W] int32, segments). The reference the one-mask-at-a-time path
    must equal exactly."""
    num_classes = logits.shape[-1] - 1
    things = None if thing_classes is None else set(thing_classes)
    scores, labels = logits[0].float().softmax(-1).max(-1)
    keep = (labels != num_classes) & (scores > threshold)
    segmentation = torch.zeros(out, dtype=torch.int32)
    if not keep.any():
        return segmentation, []
    probs = resize_mask_logits(masks[0][keep], padded, image, out).float().contiguous()
    for mask in probs:
        mask.sigmoid_()
    winner = (scores[keep][:, None, None] * probs).argmax(0)
    segments, stuff = [], {}
    for k, (cls, score) in enumerate(zip(labels[keep].tolist(), scores[keep].tolist())):
        won, own = int((winner == k).sum()), int((probs[k] >= 0.5).sum())
        if won == 0 or own == 0 or won / own < overlap:
            continue
        isthing = things is None or cls in things
        if not isthing and cls in stuff:
            stuff[cls]["area"] += won
            stuff[cls]["score"] = max(stuff[cls]["score"], score)
            segmentation[winner == k] = stuff[cls]["id"]
            continue
        segments.append({"id": len(segments) + 1, "category_id": cls, "isthing": isthing, "score": score, "area": won})
        if not isthing:
            stuff[cls] = segments[-1]
        segmentation[winner == k] = segments[-1]["id"]
    return segmentation, segments


def straightforward_instance(logits, masks, image, padded, out, topk=100):
    """Mask2Former's instance inference on whole tensors, for one image: top-k over queries x classes, the
    chosen queries' masks resized at once, score = class probability x sum(sigmoid x binary) / area (each
    mask's sigmoid and sum taken alone) -> (masks [M, H, W] bool, labels, scores), by descending score.
    A query chosen for several classes has one mask, sum and area: they are computed once per query and
    repeated (at a photo's size the repeats cost 20 s and change nothing)."""
    num_queries, num_classes = logits.shape[1], logits.shape[2] - 1
    probs = logits[0].float().softmax(-1)[:, :-1]
    top, flat = probs.flatten().topk(min(topk, num_queries * num_classes))
    labels, queries = flat % num_classes, flat // num_classes
    chosen, repeat = queries.unique(return_inverse=True)
    m = resize_mask_logits(masks[0][chosen], padded, image, out).float().contiguous()
    binary = m > 0
    inside = torch.stack([(p.sigmoid_() * b).sum() for p, b in zip(m, binary)])
    area = torch.stack([b.sum() for b in binary])
    scores = top * (inside[repeat] / (area[repeat] + 1e-6))  # the official order of operations
    order = scores.argsort(descending=True)
    return binary[repeat[order]], labels[order], scores[order]
