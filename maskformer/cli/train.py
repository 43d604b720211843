"""``maskformer train``, ``eval`` and ``eval-files``: training runs and their scores."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.messages import plural
from .data import FORMATS, data_config, data_options, found_layout
from .predict import compile_option, scale_list

# Exit status after Ctrl-C, as shells report a process stopped by SIGINT.
INTERRUPTED = 130


def _run_config(args: argparse.Namespace):
    from ..training import RunConfig, recipe

    if args.config:
        config = RunConfig.from_yaml(args.config)
    elif args.preset:
        config = recipe(args.preset)
    elif source := _weights_source(args.overrides):
        from ..predict import load_model
        from ..training.config import finetune_recipe

        # As detectron2's config + weights and transformers' from_pretrained: the architecture is the source's.
        config = finetune_recipe(load_model(source).config, source)
    else:
        raise ValueError("give --preset NAME, --config FILE.yaml, or model.weights=SOURCE to fine-tune a trained model")
    if args.data:
        config.data.root = args.data
        config.data.format = args.format or found_layout(args.data, config.data.format)
    elif args.format:
        config.data.format = args.format
    # --compile is train.compile=true, given as predict, serve and eval take it.
    return config.override([*args.overrides, *(["train.compile=true"] if args.compile else [])])


def _weights_source(overrides: list[str]) -> str:
    """The value of a ``model.weights=SOURCE`` override, or ""."""
    from ..training import RunConfig

    given = [item for item in overrides if item.split("=", 1)[0].strip() == "model.weights"]
    return RunConfig().override(given).model.weights


def cmd_train(args: argparse.Namespace) -> int:
    from ..training import train
    from ..training.console import TrainingInterrupted

    config = _run_config(args)
    name = args.preset or (Path(args.config).stem if args.config else f"{Path(config.model.weights).name}-finetuned")
    out = args.out or str(Path("runs") / name)
    try:
        summary = train(config, out, resume=args.resume)
    except TrainingInterrupted as stop:
        print(f"maskformer: {stop}", file=sys.stderr)
        return INTERRUPTED
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in summary["metrics"].items() if isinstance(v, float))
    skipped = [f"{summary[k]} {k.replace('_', ' ')}" for k in ("skipped_samples", "skipped_steps") if summary[k]]
    trained = plural(summary["steps"], "step")
    print(f"trained {trained} in {summary['seconds']:.0f} s; last validation: {metrics or 'none'}")
    if skipped:
        print(f"left out: {', '.join(skipped)} (counted in {out}/summary.json)")
    print(f"run folder {out}: model in {out}/model, metrics in {out}/metrics.jsonl")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import dataclasses

    from ..predict import load_model
    from ..training.evaluate import evaluate

    data = dataclasses.replace(data_config(args), num_workers=args.workers, max_val_images=args.max_images)
    model = load_model(args.model)  # after the data's checks: a mistake costs no download
    scales = args.scales or [1.0]
    metrics = evaluate(
        model, data, split=args.split or "", batch_size=args.batch_size, scales=scales, flip=args.flip,
        compile=args.compile,
    )  # fmt: skip
    return _print_metrics(metrics, args)


def _print_metrics(metrics: dict, args: argparse.Namespace) -> int:
    """The metrics as a table (as JSON with --json); --out also writes the JSON."""
    import json

    from ..evaluation.report import metrics_report

    text = json.dumps(metrics, indent=1)
    print(text if args.json else metrics_report(metrics))
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def cmd_eval_files(args: argparse.Namespace) -> int:
    from ..evaluation.files import score_panoptic_files, score_semantic_files

    if args.task == "semantic":
        metrics = score_semantic_files(args.pred, args.gt, args.num_classes, args.ignore_value, args.label_offset)
    else:
        metrics = score_panoptic_files(args.pred, args.gt, args.pred_folder, args.gt_folder)
    return _print_metrics(metrics, args)


def _metrics_options(parser: argparse.ArgumentParser) -> None:
    """How :func:`_print_metrics` shows the metrics."""
    parser.add_argument("--out", help="also write the metrics JSON here")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """This group's commands on the ``maskformer`` parser."""
    p = sub.add_parser("train", help="train a model (Lightning; multi-GPU / multi-node through train.* options)")
    p.add_argument("--preset", help="model preset with its paper recipe (see `maskformer presets`)")
    p.add_argument("--config", help="run config YAML (model, data, train sections)")
    p.epilog = (
        "Fine-tune a trained model: model.weights=SOURCE (any --model source) without --preset/--config "
        "trains the source's architecture with the fine-tuning recipe; with them, the weights must fit."
    )
    p.add_argument("--data", help="dataset root folder (data.root)")
    p.add_argument("--format", choices=FORMATS, help="dataset layout (default: the preset's or config's)")
    p.add_argument("--out", help="run folder (default: runs/PRESET or runs/CONFIG-NAME)")
    p.add_argument("--resume", help="'auto' (the run folder's last checkpoint) or a checkpoint path")
    compile_option(p)
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.max_steps=1000 data.crop_size=[640,640]")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a model on a dataset (mIoU; PQ for panoptic data)")
    p.add_argument("--model", required=True, help="checkpoint: folder, hub id, .pkl/.pth file or URL")
    data_options(p)
    p.add_argument("--split", help="split to evaluate (default: the format's validation split)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="images per forward (default 1, as detectron2 tests: padding a batch to its largest image changes "
        "results slightly, so 1 scores what predict writes)",
    )
    p.add_argument("--workers", type=int, help="data-loader processes (default: chosen from the machine)")
    p.add_argument("--max-images", type=int, default=0)
    p.add_argument(
        "--scales",
        type=scale_list,
        help="multi-scale mIoU: test sizes times these scales, class probabilities averaged (the papers' "
        "multi-scale: 0.5,0.75,1,1.25,1.5,1.75 with --flip); scores mIoU alone",
    )
    p.add_argument("--flip", action="store_true", help="multi-scale mIoU: also average horizontally flipped views")
    compile_option(p)
    _metrics_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("eval-files", help="score prediction files against ground truth, no model needed")
    p.add_argument("task", choices=["semantic", "panoptic"])
    p.add_argument("--pred", required=True, help="semantic: prediction PNG folder; panoptic: prediction JSON")
    p.add_argument("--gt", required=True, help="semantic: label PNG folder; panoptic: ground-truth JSON")
    p.add_argument("--pred-folder", help="panoptic: prediction PNG folder (default: JSON path without .json)")
    p.add_argument(
        "--gt-folder",
        help="panoptic: ground-truth PNG folder (default: JSON path without .json, or panoptic/SPLIT beside "
        "panoptic_SPLIT.json)",
    )
    p.add_argument("--num-classes", type=int, help="semantic: number of classes")
    p.add_argument("--ignore-value", type=int, default=255)
    p.add_argument(
        "--label-offset",
        type=int,
        default=0,
        help="semantic: subtract from ground-truth values first (ADE20K: 1, making 0 ignore)",
    )
    _metrics_options(p)
    p.set_defaults(func=cmd_eval_files)
