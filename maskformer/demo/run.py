"""``maskformer demo``: generate data, pretrain the backbone on it (stage 1, the demo's ImageNet), train a small
Mask2Former (or MaskFormer) from that backbone (stage 2) on the CPU or a CUDA GPU, evaluate, draw predictions.

Writes ``demo-output/`` with ``metrics.json`` (validation mIoU / PQ, wall time), ``training.png`` (loss and
validation curves), ``predictions.png`` (held-out images, ground truth and predicted panoptic
segmentation, each thing named with its score, a class legend), ``confusion.png`` (which shape was called
what), ``predictions/`` (what ``maskformer predict`` writes for six held-out images: panoptic PNGs and
JSON, overlays), ``backbone/`` (stage 1's weights), the run folder (config, logs, checkpoints, model) and
the data.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..data.datasets import COCOPanopticDataset, semantic_label
from ..data.synth import write_dataset
from ..evaluation import PanopticEvaluator
from ..model.config import InferenceConfig
from ..model.families import DEMO_FAMILY, demo_names
from ..model.families import family as family_named
from ..model.families.family import DemoRecipe
from ..precision import bf16_speed
from ..predict import LoadedImage, PredictionWriter, Predictor
from ..predict.checks import check_device
from ..predict.writers import coco_image_ids
from ..training import DataConfig, RunConfig, TrainConfig, train
from ..visualize import GridRow, confusion_plot, prediction_grid, segment_labels, training_curves
from .backbone import pretrain_backbone

# Stage 1's classifier steps that fit the demo's budget on two CPU cores (about 100 s; docs/demo.md); stage 2's
# are each family's (``Family.demo``).
BACKBONE_STEPS = 300
# A CUDA GPU runs several times the steps of both stages in the same wall time.
GPU_STEP_FACTOR = 5
# Held-out images drawn in predictions.png and written to predictions/.
GRID_IMAGES = 6


def demo_recipe(family: str) -> DemoRecipe:
    """The demo configuration of ``family`` (``Family.demo``); a family without one is refused."""
    recipe = family_named(family).demo
    if recipe is None:
        raise ValueError(f"family {family!r}: not in the demo (choose one of {', '.join(demo_names())})")
    return recipe


def demo_config(
    data_dir: Path, steps: int, family: str = DEMO_FAMILY.name, workers: int | None = 0, bf16: bool = False
) -> RunConfig:
    """The demo model of ``family`` (``Family.demo``: a ResNet-18 model sized for two CPU cores; its backbone
    starts from random weights, nothing is downloaded, unless ``model.backbone.weights`` is set, as
    :func:`run_demo` does with stage 1's), and its training on the demo's data. Besides the family's class
    weight of 5, scale augmentation stays within 0.75-1.5 so that textures keep periods the features can
    resolve: the departures from the papers' recipes made for a model that learns from few steps. ``bf16``
    trains under bfloat16 autocast (:func:`run_demo` sets it where bfloat16 is faster, :func:`bf16_speed`)."""
    recipe = demo_recipe(family)
    model = recipe.model()
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
        lr=recipe.lr,
        weight_decay=1e-4,
        backbone_lr_multiplier=1.0,
        warmup_steps=recipe.warmup_steps,
        warmup_factor=0.01,
        val_every=max(1, steps // 4),
        checkpoint_every=steps,
        log_every=10,
        accelerator="cpu",
        devices=1,
        num_val_images=4,
        precision="bf16-mixed" if bf16 else "32-true",  # matching and losses stay float32 under bf16-mixed
    )
    return RunConfig(model=model, data=data, train=train_cfg)


def demo_device(device: str = "auto") -> str:
    """ "cuda" or "cpu": ``device``, where "auto" takes a CUDA GPU when there is one."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return check_device(device).type


def run_demo(
    out: str | Path = "demo-output",
    steps: int | None = None,
    train_images: int = 800,
    val_images: int = 100,
    seed: int = 0,
    family: str = DEMO_FAMILY.name,
    device: str = "auto",
    backbone_steps: int | None = None,
) -> dict:
    """Generate the data, pretrain the backbone (``backbone_steps``: by default BACKBONE_STEPS; 0 skips stage
    1 and trains from scratch), train ``family`` from it (``steps``: by default the family's demo steps), both
    GPU_STEP_FACTOR times longer on a CUDA GPU, evaluate and draw; returns the metrics."""
    start = time.time()
    device = demo_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    factor = GPU_STEP_FACTOR if device == "cuda" else 1
    if steps is None:
        steps = demo_recipe(family).cpu_steps * factor
    backbone_steps = BACKBONE_STEPS * factor if backbone_steps is None else backbone_steps
    data_dir = write_dataset(out / "data", train_images, val_images, seed=seed)
    print(f"[demo] wrote {train_images} training and {val_images} validation images to {data_dir}", flush=True)
    where = (
        f"CUDA GPU ({torch.cuda.get_device_name()})" if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    )
    more = f" ({factor}x the CPU's steps)" if factor > 1 else ""
    # bfloat16 autocast only where it is faster: its steps were slightly faster on an Intel Xeon with AMX and
    # 11x slower on an AMD EPYC that emulates bfloat16 (docs/demo.md).
    speed = bf16_speed(device)
    precision = "bfloat16 autocast" if speed.fast else "float32"
    print(f"[demo] precision: {precision} ({speed.describe()})", flush=True)
    # On two CPU cores a loader process slows the steps; a GPU machine's spare cores feed the GPU.
    config = demo_config(data_dir, steps, family, workers=None if device == "cuda" else 0, bf16=speed.fast)
    config.train.seed = seed
    config.train.accelerator = "gpu" if device == "cuda" else "cpu"
    backbone = config.model.backbone
    stage1 = None
    if backbone_steps:
        print(f"[demo] stage 1: the papers' models start from a backbone trained on ImageNet; the demo's "
              f"{backbone.name} learns to name crops of the training images' shapes and textures first, "
              f"for {backbone_steps} steps on the {where}{more}", flush=True)  # fmt: skip
        stage1 = pretrain_backbone(
            data_dir, out / "backbone" / f"{backbone.name}.safetensors", backbone.name, config.model.pixel_mean,
            config.model.pixel_std, steps=backbone_steps, seed=seed, device=device, bf16=speed.fast,
        )  # fmt: skip
        print(f"[demo] stage 1: {stage1.accuracy:.2f} of {stage1.held_out_crops} held-out crops named right "
              f"({stage1.thing_accuracy:.2f} of the shapes) in {stage1.seconds:.0f} s", flush=True)  # fmt: skip
        backbone.weights = str(stage1.path)
    start_from = "that backbone (model.backbone.weights)" if stage1 else "scratch"
    title = family_named(family).title
    print(f"[demo] stage 2: training a {title} from {start_from} for {steps} steps on the {where}{more}", flush=True)
    summary = train(config, out / "run")
    history = json.loads((out / "run" / "history.json").read_text())
    training_curves(history, out / "training.png")

    confusion = draw_results(out, data_dir)
    metrics = dict(summary["metrics"])
    metrics.update(
        {
            "steps": summary["steps"],
            "backbone_steps": backbone_steps,
            "backbone_accuracy": round(stage1.accuracy, 4) if stage1 else None,
            "backbone_seconds": stage1.seconds if stage1 else None,
            "train_images": train_images,
            "val_images": val_images,
            "wall_time_s": round(time.time() - start, 1),
            "family": family,
            "device": device,
            "precision": config.train.precision,
            "threads": torch.get_num_threads(),
            "thing_confusion": confusion,
        }
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(
        f"[demo] mIoU {metrics.get('mIoU', 0):.3f}  PQ {metrics.get('PQ', 0):.3f}  "
        f"PQ things {metrics.get('PQ_th', 0):.3f}  AP {metrics.get('AP', 0):.3f}  "
        f"in {metrics['wall_time_s']:.0f} s; results in {out}/ (look at predictions.png and confusion.png)",
        flush=True,
    )
    return metrics


def draw_results(out: Path, data_dir: Path) -> dict[str, dict[str, int]]:
    """Predict every validation image of ``data_dir`` with the model of ``out``/run through the path users take
    (a Predictor on the run folder); write the first GRID_IMAGES as ``maskformer predict`` does and draw them
    in ``predictions.png``; draw ``confusion.png`` from all of them. Returns the confusion matrix of things as
    {shape: {what it was called: count}}."""
    predictor = Predictor.from_pretrained(out / "run")
    meta = predictor.metadata
    val = COCOPanopticDataset(
        data_dir / "images" / "val", data_dir / "panoptic_val.json", data_dir / "panoptic" / "val"
    )
    # The ground truth's image ids: panopticapi scores predictions/panoptic.json against it as written.
    writer = PredictionWriter(out / "predictions", "panoptic", image_ids=coco_image_ids(data_dir / "panoptic_val.json"))
    things = meta.thing_classes or []
    matching = PanopticEvaluator({i: {"isthing": int(i in things), "name": n} for i, n in enumerate(meta.class_names)})
    rows = []
    for index in range(len(val)):
        sample = val.load(index)
        item = LoadedImage(sample["image"], Path(sample["file"]).stem, Path(sample["file"]))
        ((_, result),) = predictor.predict_loaded([item], task="panoptic")
        if index < GRID_IMAGES:
            writer.add(sample["image"], result)
            labels = segment_labels(result.segmentation, result.segments_info)
            rows.append(
                GridRow(sample["image"], semantic_label(sample), result.class_map(), result.segmentation, labels)
            )
        matching.update(
            sample["label"].numpy(),
            [{"id": i, "category_id": s.category, "iscrowd": int(s.iscrowd)} for i, s in sample["segments"].items()],
            result.segmentation.numpy(),
            [{"id": s.id, "category_id": s.class_id} for s in result.segments_info],
            image=sample["file"],
        )
    writer.close()
    prediction_grid(rows, meta, out / "predictions.png", titles=("image", "ground truth", "prediction (panoptic)"))
    columns = [*meta.class_names, "no segment"]
    confusion = matching.confusion[things]
    confusion_plot(
        confusion, [meta.class_names[t] for t in things], columns, out / "confusion.png",
        title=f"what each shape of the {len(val)} validation images was called\n(the predicted segment covering it, "
        "IoU > 0.5, any class)",
    )  # fmt: skip
    return {meta.class_names[t]: dict(zip(columns, map(int, row))) for t, row in zip(things, confusion)}
