"""The maskformer command: presets and checkpoints, data, training, evaluation, prediction, export, demo."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.messages import plural
from ..data.prepare import PREPARATIONS
from ..model import PRESETS, MaskFormer, MaskFormerConfig, preset

FORMATS = ["semantic", "panoptic", "ade20k", "cityscapes", "coco_panoptic", "coco_instance"]
# Exit status after Ctrl-C, as shells report a process stopped by SIGINT.
INTERRUPTED = 130


def _count_parameters(config: MaskFormerConfig) -> int:
    # Building on the meta device allocates nothing, so even Swin-L counts instantly (and fetches no weights).
    config = MaskFormerConfig.from_dict(config.to_dict())
    config.backbone.pretrained, config.backbone.weights = False, ""
    with torch.device("meta"):
        return MaskFormer(config).num_parameters


def cmd_presets(args: argparse.Namespace) -> int:
    from ..training.config import paper_model

    width = max(map(len, PRESETS)) + 1
    print(f"{'preset':<{width}} {'family':<12} {'starts from':<50} {'pixel decoder':<20} {'classes':>7} {'params':>8}")
    for name in PRESETS:
        cfg = paper_model(name)
        weights = f"ImageNet: {cfg.backbone.name}" if cfg.backbone.pretrained else "scratch (no timm weights)"
        params = f"{_count_parameters(cfg) / 1e6:.1f}M" if args.count else "-"
        decoder = cfg.pixel_decoder.type
        print(f"{name:<{width}} {cfg.family:<12} {weights:<50} {decoder:<20} {cfg.num_classes:>7} {params:>8}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    if args.preset:
        config = preset(args.preset)
        print(config.to_yaml(), end="")
        print(f"# parameters: {_count_parameters(config):,}")
        return 0
    from ..predict import load_model

    model = load_model(args.model)
    print(model.config.to_yaml(), end="")
    print(f"# parameters: {model.num_parameters:,}")
    print(f"# {model.load_report}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from ..predict import load_model

    model = load_model(args.model, strict=args.strict)
    out = model.save_pretrained(args.out)
    print(f"{model.load_report}")
    print(f"wrote {out}/config.yaml and {out}/model.safetensors")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    given = {
        "steps": args.steps,
        "train_images": args.train_images,
        "val_images": args.val_images,
        "seed": args.seed,
        "family": args.family,
        "backbone_steps": args.backbone_steps,
    }
    run_demo(args.out, device=args.device, **{k: v for k, v in given.items() if v is not None})
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from ..data.synth import write_dataset

    out = write_dataset(args.out, args.train, args.val, seed=args.seed)
    print(f"wrote {args.train} training and {args.val} validation samples to {out}")
    return 0


def _data_format(args: argparse.Namespace) -> str:
    """--format, or the layout found in --data (said on the console)."""
    from ..training.datamodule import detect_format

    if args.format:
        return args.format
    found = detect_format(args.data)
    print(f"{args.data}: {found} layout (give --format to choose another)", file=sys.stderr)
    return found


def cmd_prepare(args: argparse.Namespace) -> int:
    from ..data.prepare import prepare
    from ..training import DataConfig

    preparation = prepare(args.name, args.raw, args.out, progress=not args.quiet)
    failed = 0
    for data_format in preparation.formats:
        print(f"{args.name}: wrote the {data_format} layout under {args.out}; checking it")
        failed += check_data(DataConfig(format=data_format, root=args.out, ignore_value=preparation.ignore_value))
    return 1 if failed else 0


def _data_config(args: argparse.Namespace):
    """The DataConfig of a command's --data, --format (found from the folder when not given), --class-file,
    --label-dir and --ignore-value (default: the class file's, else 255)."""
    from ..training import DataConfig
    from ..training.datamodule import default_ignore_value

    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"{args.data}: data folder not found")
    data_format = _data_format(args)
    ignore = args.ignore_value
    if ignore is None:
        ignore = default_ignore_value(data_format, args.data, args.class_file or "")
    return DataConfig(format=data_format, root=args.data, class_file=args.class_file or "", label_dir=args.label_dir,
                      ignore_value=ignore)  # fmt: skip


def cmd_check(args: argparse.Namespace) -> int:
    return 1 if check_data(_data_config(args), args.split, args.sample) else 0


def check_data(cfg, splits: list[str] | None = None, sample: int | None = None) -> int:
    """Check ``splits`` (default: the format's train and val) of the DataConfig ``cfg``, printing the
    problems and each split's class statistics; returns the number of problems."""
    from ..data.check import check_reader
    from ..training.datamodule import build_reader, default_splits

    failed = 0
    for split in splits or list(default_splits(cfg.format, cfg.root)):
        try:
            reader = build_reader(cfg, split)
        except (FileNotFoundError, ValueError) as err:
            print(f"[{split}] {err}")
            failed += 1
            continue
        report = check_reader(reader, limit=sample)
        for problem in report.problems:
            print(f"[{split}] {problem}")
        print(f"[{split}] {report.summary()}")
        if report.checked:
            print(report.statistics(reader.metadata.class_names))
        failed += len(report.problems)
    print("OK: no problems found" if not failed else f"FAILED: {plural(failed, 'problem')}")
    return failed


def cmd_show(args: argparse.Namespace) -> int:
    from ..training.datamodule import build_reader, default_splits
    from .show import show_dataset

    cfg = _data_config(args)
    split = args.split or list(default_splits(cfg.format, cfg.root))[-1]
    shown = show_dataset(build_reader(cfg, split), args.out, args.count, args.columns, args.seed)
    print(f"drew {plural(shown, 'image')} of {cfg.root} ({split}) with their labels: {args.out}")
    return 0


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
        config.data.format = args.format or _layout_of(args.data, config.data.format)
    elif args.format:
        config.data.format = args.format
    return config.override(args.overrides)


def _layout_of(data: str, configured: str) -> str:
    """The layout found in ``data`` where it differs from the ``configured`` format (said on the console,
    as ``data check`` finds it), else ``configured``; a folder of no known layout is left to the reader's
    own error."""
    from ..training.datamodule import detect_format

    try:
        found = detect_format(data)
    except ValueError:
        return configured
    if found != configured:
        print(f"{data}: {found} layout, used instead of the configuration's {configured} (give --format to choose)",
              file=sys.stderr)  # fmt: skip
    return found


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

    data = dataclasses.replace(_data_config(args), num_workers=args.workers, max_val_images=args.max_images)
    model = load_model(args.model)  # after the data's checks: a mistake costs no download
    scales = args.scales or [1.0]
    metrics = evaluate(model, data, split=args.split or "", batch_size=args.batch_size, scales=scales, flip=args.flip)
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


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.io import read_image
    from ..predict import PredictionWriter, Predictor
    from ..predict.checks import check_device, check_options
    from ..predict.inputs import LoadedImage, expand_paths
    from ..predict.predictor import with_thresholds
    from ..predict.writers import coco_image_ids

    kinds = [k.strip() for k in args.outputs.split(",")] if args.outputs else None
    image_ids = coco_image_ids(args.gt_json) if args.gt_json else None
    # Settings are checked before the model loads: a mistake costs no download.
    writer = PredictionWriter(args.out, args.task, kinds, image_ids=image_ids)
    scales = args.scales or [1.0]
    check_options(args.task, scales, args.flip, args.window, args.window_stride)
    check_device(args.device)
    files = expand_paths(args.inputs)
    predictor = Predictor.from_pretrained(
        args.model, device=args.device, precision=args.precision, batch_size=args.batch_size
    )
    inference = with_thresholds(predictor.model.config.inference, args.score_threshold, args.overlap_threshold)
    skipped = 0
    try:
        with tqdm(total=len(files), unit="img", desc=args.task, disable=args.quiet) as bar:
            for start in range(0, len(files), predictor.batch_size):
                chunk = []
                for path in files[start : start + predictor.batch_size]:
                    try:
                        chunk.append(LoadedImage(read_image(path), path.stem, path))
                    except (OSError, ValueError) as err:  # unreadable, not an image, over the pixel limit
                        if args.on_error == "stop":
                            raise
                        skipped += 1
                        bar.write(f"maskformer: skipped {err}", file=sys.stderr)
                        bar.update(1)
                for item, result in predictor.predict_loaded(
                    chunk, args.task, scales, args.flip, args.window, args.window_stride, inference
                ):
                    writer.add(item.image, result)
                    bar.update(1)
    finally:
        writer.close()  # the images predicted so far get complete outputs, whatever stopped the loop
    done = len(files) - skipped
    print(f"{args.task} predictions for {plural(done, 'image')}: wrote {writer.summary()} under {args.out}")
    if skipped:
        print(f"maskformer: skipped {plural(skipped, 'unreadable file')} (named above)", file=sys.stderr)
        return 1
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ..predict import KNOWN_MODELS

    print(f"{'name':<50} {'family':<12} {'task':<9} {'dataset':<26} {'score':>11}  {'licence':<13} source")
    for m in KNOWN_MODELS.values():
        score = f"{m.metric:>5} {m.score:5.1f}"
        print(f"{m.name:<50} {m.family:<12} {m.task:<9} {m.dataset:<26} {score}  {m.licence:<13} {m.source}")
    print(f"{len(KNOWN_MODELS)} models. The official weights (and their hub copies) are licensed CC BY-NC 4.0: "
          "non-commercial use only.")  # fmt: skip
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..predict.checks import check_device
    from ..serve import ServeConfig, serve

    # Settings are checked before the model loads: a mistake costs no download. Options not given keep
    # ServeConfig's defaults (the one place they are set).
    given = {"host": args.host, "port": args.port, "max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms,
             "max_queue": args.max_queue, "max_request_mb": args.max_request_mb, "timeout_s": args.timeout,
             "token": args.token}  # fmt: skip
    config = ServeConfig(**{k: v for k, v in given.items() if v is not None})
    check_device(args.device)
    serve(args.model, config, device=args.device, precision=args.precision)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_onnx, save_program
    from ..predict import load_model

    model = load_model(args.model)
    size = (args.height, args.width)
    if args.format == "onnx":
        path = export_onnx(model, args.out, example_size=size, opset=args.opset)
    else:
        path = save_program(model, args.out, example_size=size)
    sizes = "any H, W" if args.format == "onnx" else "H, W multiples of 32"
    print(f"wrote {path} (input: RGB 0-255 float32 [B, 3, H, W], {sizes}; README.md shows how to run it)")
    return 0


def _scales(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _data_options(parser: argparse.ArgumentParser) -> None:
    """The options of a dataset on disk that :func:`_data_config` reads."""
    parser.add_argument("--data", required=True, help="dataset root folder")
    parser.add_argument("--format", choices=FORMATS, help="dataset layout (default: found from the folder)")
    parser.add_argument("--class-file", help="semantic format: class list (default root/classes.json|txt)")
    parser.add_argument("--label-dir", default="labels", help="semantic format: label folder name")
    parser.add_argument("--ignore-value", type=int, help="semantic: ignore label (default: the class file's, else 255)")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage mistakes get one line (and exit code 2), like every other error of the command."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="maskformer", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("presets", help="list the paper's model configurations")
    p.add_argument("--count", action="store_true", help="also count each preset's parameters")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("info", help="print a model's config and parameter count")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="checkpoint: folder, hub id, .pkl/.pth file or URL")
    src.add_argument("--preset", choices=list(PRESETS))
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("convert", help="convert any supported checkpoint to this package's format")
    p.add_argument("--model", required=True, help="checkpoint: folder, hub id, .pkl/.pth file or URL")
    p.add_argument("--out", required=True, help="output folder (config.yaml + model.safetensors)")
    p.add_argument("--strict", action="store_true", help="fail when any weight is missing or unused")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "demo",
        help="pretrain a backbone, train and evaluate a small model on generated data (about 7 minutes on 2 CPU cores)",
    )
    p.add_argument("--out", default="demo-output")
    p.add_argument(
        "--family", choices=["maskformer", "mask2former"], help="model family (default: the one that does best here)"
    )
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: a CUDA GPU when there is one"
    )
    p.add_argument("--steps", type=int, help="stage 2's training steps (default: the family's, more on a GPU)")
    p.add_argument(
        "--backbone-steps",
        type=int,
        help="stage 1's backbone pretraining steps (default 300, more on a GPU; 0: from scratch)",
    )
    p.add_argument("--train-images", type=int, help="generated training images (default 800)")
    p.add_argument("--val-images", type=int, help="generated validation images (default 100)")
    p.add_argument("--seed", type=int, help="seed of the data and the training (default 0)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    s = data_sub.add_parser("synth", help="write the synthetic shapes-and-textures dataset")
    s.add_argument("--out", required=True)
    s.add_argument("--train", type=int, default=600)
    s.add_argument("--val", type=int, default=100)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_synth)
    datasets = "\n".join(f"  {p.name:<20} {p.summary}" for p in sorted(PREPARATIONS.values(), key=lambda p: p.name))
    s = data_sub.add_parser(
        "prepare",
        help="a paper's dataset from its raw download to a layout to train on",
        epilog=f"datasets:\n{datasets}\n\nREADME's datasets table names each one's raw layout and presets.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("name", choices=sorted(PREPARATIONS), metavar="NAME", help="the dataset (listed below)")
    s.add_argument("--raw", required=True, help="the extracted raw download")
    s.add_argument("--out", required=True, help="where to write (an interrupted run resumes here)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_prepare)
    s = data_sub.add_parser("check", help="check a dataset for problems that would stop training later")
    _data_options(s)
    s.add_argument("--split", action="append", help="split to check (repeatable; default: train and val)")
    s.add_argument("--sample", type=int, help="check only this many samples per split (default: all)")
    s.set_defaults(func=cmd_check)

    s = data_sub.add_parser("show", help="draw images of a dataset with their labels, in a grid (a PNG)")
    _data_options(s)
    s.add_argument("--split", help="split to draw (default: the validation split)")
    s.add_argument("--count", type=int, default=8, help="images to draw, chosen at random (default 8)")
    s.add_argument("--columns", type=int, default=4, help="images per row (default 4)")
    s.add_argument("--seed", type=int, default=0, help="which images are chosen")
    s.add_argument("--out", default="data-show.png", help="the PNG to write (default data-show.png)")
    s.set_defaults(func=cmd_show)

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
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.max_steps=1000 data.crop_size=[640,640]")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a model on a dataset (mIoU; PQ for panoptic data)")
    p.add_argument("--model", required=True, help="checkpoint: folder, hub id, .pkl/.pth file or URL")
    _data_options(p)
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
        type=_scales,
        help="multi-scale mIoU: test sizes times these scales, class probabilities averaged (the papers' "
        "multi-scale: 0.5,0.75,1,1.25,1.5,1.75 with --flip); scores mIoU alone",
    )
    p.add_argument("--flip", action="store_true", help="multi-scale mIoU: also average horizontally flipped views")
    p.add_argument("--out", help="also write the metrics JSON here")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
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
    p.add_argument("--out", help="also write the metrics JSON here")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    p.set_defaults(func=cmd_eval_files)

    p = sub.add_parser("predict", help="segment images with a trained or pretrained model")
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--model", required=True, help="known model name, hub id, zoo URL/.pkl, folder, run or .ckpt")
    p.add_argument("--task", default="semantic", choices=["semantic", "panoptic", "instance"])
    p.add_argument("--out", default="predictions", help="output folder")
    p.add_argument(
        "--outputs",
        help="comma-separated: label,overlay (semantic), panoptic,overlay (panoptic), instances,overlay "
        "(instance); default: both for the task",
    )
    p.add_argument(
        "--gt-json",
        help="COCO JSON of the images' ground truth: write its image ids, so that COCO tools score the files",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ...")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument(
        "--scales", type=_scales, help="semantic test-time augmentation scales, e.g. 0.5,0.75,1,1.25,1.5,1.75"
    )
    p.add_argument("--flip", action="store_true", help="semantic: also average horizontally flipped views")
    p.add_argument("--window", type=int, help="semantic: sliding-window size in pixels (on the resized image)")
    p.add_argument("--window-stride", type=int, help="sliding-window stride (default 2/3 of the window)")
    p.add_argument("--score-threshold", type=_fraction, help="panoptic: drop queries scoring at most this (model's)")
    p.add_argument("--overlap-threshold", type=_fraction, help="panoptic: keep segments with this visible share")
    p.add_argument(
        "--on-error", choices=["skip", "stop"], default="skip",
        help="an unreadable image: skip it, name it and exit 1 at the end (default), or stop there",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export the model forward to ONNX or a torch.export program")
    p.add_argument("--model", required=True, help="known model name, hub id, zoo URL/.pkl, folder, run or .ckpt")
    p.add_argument("--format", default="onnx", choices=["onnx", "torch"], help="torch: a torch.export .pt2 program")
    p.add_argument("--out", required=True, help="output file (.onnx or .pt2)")
    p.add_argument("--height", type=int, default=128, help="example input height used for tracing (multiple of 32)")
    p.add_argument("--width", type=int, default=160, help="example input width used for tracing (multiple of 32)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (onnx format only)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="a web page and an HTTP API (FastAPI) around a model")
    p.add_argument("--model", required=True, help="known model name, hub id, zoo URL/.pkl, folder, run or .ckpt")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; beyond loopback needs --token)")
    p.add_argument("--port", type=int, help="default 8000")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ...")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--max-batch", type=int, help="requests arriving together share one forward (default 8)")
    p.add_argument("--batch-wait-ms", type=float, help="how long a batch waits for more requests (default 5)")
    p.add_argument("--max-queue", type=int, help="waiting requests beyond this get 503 (default 64)")
    p.add_argument("--max-request-mb", type=float, help="largest request body in MiB, 413 beyond (default 32)")
    p.add_argument("--timeout", type=float, help="seconds a request may take, 504 beyond (default 60)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on /predict and /models")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("models", help="list known pretrained checkpoints with their published scores")
    p.set_defaults(func=cmd_models)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Like parse_args, but ``key=value`` overrides may stand anywhere among the options (argparse alone
    takes only the first contiguous group)."""
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):
        args.overrides += [a for a in extra if "=" in a and not a.startswith("-")]
        extra = [a for a in extra if not ("=" in a and not a.startswith("-"))]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


class _StderrHandler(logging.StreamHandler):
    """A handler writing to ``sys.stderr`` as it is when each message comes, not when the handler was made
    (a caller, or a test capturing output, may have replaced it since)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _show_progress_messages() -> None:
    """The package's progress messages (its "maskformer" logger) on stderr, as plain lines."""
    logger = logging.getLogger("maskformer")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    _show_progress_messages()
    try:
        return args.func(args)
    except (OSError, ValueError, KeyError, RuntimeError, FloatingPointError) as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"maskformer: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
