"""``maskformer demo``: generate data, train a small Mask2Former (or MaskFormer) on the CPU or a CUDA GPU,
evaluate, draw predictions.

Writes ``demo-output/`` with ``metrics.json`` (validation mIoU / PQ, wall time), ``training.png`` (loss and
validation curves), ``predictions.png`` (held-out images, ground truth and predicted panoptic
segmentation with a class legend), ``predictions/`` (what ``maskformer predict`` writes for six held-out
images: panoptic PNGs and JSON, overlays), the run folder (config, logs, checkpoints, model) and the data.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..data.datasets import COCOPanopticDataset, semantic_label
from ..data.synth import write_dataset
from ..model.config import (
    BackboneConfig,
    InferenceConfig,
    LossConfig,
    Mask2FormerConfig,
    MaskFormerConfig,
    PixelDecoderConfig,
    TransformerConfig,
)
from ..predict import LoadedImage, PredictionWriter, Predictor
from ..predict.writers import coco_image_ids
from ..training import DataConfig, RunConfig, TrainConfig, train
from ..visualize import prediction_grid, training_curves

# The family `make demo` trains, and the steps that fit its budget on two CPU cores: about 7 minutes of
# training and validation for either (docs/demo.md compares them).
DEFAULT_FAMILY = "mask2former"
CPU_STEPS = {"maskformer": 1200, "mask2former": 600}
# A CUDA GPU runs several times the steps in the same wall time.
GPU_STEP_FACTOR = 5
FAMILY_NAMES = {"maskformer": "MaskFormer", "mask2former": "Mask2Former"}


def demo_config(data_dir: Path, steps: int, family: str = DEFAULT_FAMILY, workers: int | None = 0) -> RunConfig:
    """A ResNet-18 model of ``family`` (trained from scratch: nothing is downloaded) sized for two CPU cores.

    Two departures from the papers' recipes make a from-scratch model learn on this budget, in both
    families: the class term weighs 5 (loss and matching cost, against MaskFormer's 1 and Mask2Former's 2)
    so that the backbone learns shapes and textures and not only the colour edges the mask losses need, and
    scale augmentation stays within 0.75-1.5 so that textures keep periods the features can resolve.
    Mask2Former keeps the paper's 9 masked-attention layers (three rounds over strides 32, 16, 8) and point
    loss, on 1024 points (one per stride-4 pixel of a 128 crop; the paper's 12544 are for 1024 crops), with
    one deformable encoder layer of width 128, and trains at twice MaskFormer's learning rate.
    """
    if family == "maskformer":
        model: MaskFormerConfig = MaskFormerConfig(
            num_classes=6,
            backbone=BackboneConfig(type="timm", name="resnet18", norm="bn"),
            pixel_decoder=PixelDecoderConfig(conv_dim=128, mask_dim=128),
            transformer=TransformerConfig(
                hidden_dim=128, num_queries=20, num_heads=4, ffn_dim=512, num_layers=3, dropout=0.0
            ),
            loss=LossConfig(class_weight=5.0, cost_class=5.0),
        )
    elif family == "mask2former":
        base = Mask2FormerConfig()
        model = Mask2FormerConfig(
            num_classes=6,
            backbone=BackboneConfig(type="timm", name="resnet18", norm="bn"),
            pixel_decoder=replace(
                base.pixel_decoder, conv_dim=128, mask_dim=128, encoder_layers=1, encoder_heads=4, encoder_ffn_dim=512
            ),
            transformer=replace(base.transformer, hidden_dim=128, num_queries=20, num_heads=4, ffn_dim=512),
            loss=replace(base.loss, class_weight=5.0, cost_class=5.0, num_points=1024),
        )
    else:
        raise ValueError(f"unknown family {family!r}: choose maskformer or mask2former")
    model.inference = InferenceConfig(
        object_mask_threshold=0.5, overlap_threshold=0.8, test_shortest_edge=128, test_max_size=512
    )
    data = DataConfig(
        format="panoptic",
        root=str(data_dir),
        crop_size=(128, 128),
        min_scale=0.75,
        max_scale=1.5,
        num_workers=workers,
    )
    train_cfg = TrainConfig(
        max_steps=steps,
        batch_size=8,
        lr=3e-4 if family == "maskformer" else 6e-4,
        weight_decay=1e-4,
        backbone_lr_multiplier=1.0,
        warmup_steps=50 if family == "maskformer" else 100,
        warmup_factor=0.01,
        val_every=max(1, steps // 4),
        checkpoint_every=steps,
        log_every=10,
        accelerator="cpu",
        devices=1,
        num_val_images=4,
        precision="bf16-mixed",  # 1.4x faster steps on this CPU; matching and losses stay float32
    )
    return RunConfig(model=model, data=data, train=train_cfg)


def demo_device(device: str = "auto") -> str:
    """ "cuda" or "cpu": ``device``, where "auto" takes a CUDA GPU when there is one."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA GPU is available to PyTorch here")
    return device


def run_demo(
    out: str | Path = "demo-output",
    steps: int | None = None,
    train_images: int = 800,
    val_images: int = 100,
    seed: int = 0,
    family: str = DEFAULT_FAMILY,
    device: str = "auto",
) -> dict:
    """Generate the data, train ``family`` (``steps``: by default CPU_STEPS[family] on a CPU,
    GPU_STEP_FACTOR times that on a CUDA GPU), evaluate and draw; returns the metrics."""
    start = time.time()
    device = demo_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if steps is None:
        steps = CPU_STEPS[family] * (GPU_STEP_FACTOR if device == "cuda" else 1)
    data_dir = write_dataset(out / "data", train_images, val_images, seed=seed)
    print(f"[demo] wrote {train_images} training and {val_images} validation images to {data_dir}", flush=True)
    where = (
        f"CUDA GPU ({torch.cuda.get_device_name()})" if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(f"[demo] training a {FAMILY_NAMES[family]} for {steps} steps on the {where}", flush=True)
    # On two CPU cores a loader process slows the steps; a GPU machine's spare cores feed the GPU.
    config = demo_config(data_dir, steps, family, workers=None if device == "cuda" else 0)
    config.train.seed = seed
    config.train.accelerator = "gpu" if device == "cuda" else "cpu"
    summary = train(config, out / "run")
    history = json.loads((out / "run" / "history.json").read_text())
    training_curves(history, out / "training.png")

    # Held-out images through the same path users take: a Predictor on the run folder, files and overlays.
    predictor = Predictor.from_pretrained(out / "run")
    val = COCOPanopticDataset(
        data_dir / "images" / "val", data_dir / "panoptic_val.json", data_dir / "panoptic" / "val"
    )
    # The ground truth's image ids: panopticapi scores predictions/panoptic.json against it as written.
    writer = PredictionWriter(out / "predictions", "panoptic", image_ids=coco_image_ids(data_dir / "panoptic_val.json"))
    rows = []
    for index in range(6):
        sample = val.load(index)
        item = LoadedImage(sample["image"], Path(sample["file"]).stem, Path(sample["file"]))
        ((_, result),) = predictor.predict_loaded([item], task="panoptic")
        writer.add(sample["image"], result)
        rows.append((sample["image"], semantic_label(sample), result.class_map(), result.segmentation))
    writer.close()
    prediction_grid(
        rows, predictor.metadata, out / "predictions.png", titles=("image", "ground truth", "prediction (panoptic)")
    )
    metrics = dict(summary["metrics"])
    metrics.update(
        {
            "steps": summary["steps"],
            "train_images": train_images,
            "val_images": val_images,
            "wall_time_s": round(time.time() - start, 1),
            "family": family,
            "device": device,
            "threads": torch.get_num_threads(),
        }
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(
        f"[demo] mIoU {metrics.get('mIoU', 0):.3f}  PQ {metrics.get('PQ', 0):.3f}  "
        f"PQ things {metrics.get('PQ_th', 0):.3f}  AP {metrics.get('AP', 0):.3f}  "
        f"in {metrics['wall_time_s']:.0f} s; results in {out}/",
        flush=True,
    )
    return metrics
