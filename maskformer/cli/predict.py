"""``maskformer predict``, ``export`` and ``serve``: using a trained model."""

from __future__ import annotations

import argparse
import sys

from ..data.messages import plural


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
        args.model, device=args.device, precision=args.precision, batch_size=args.batch_size, compile=args.compile
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


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import EXAMPLE_SIZE, export_onnx, program_example_size, save_program
    from ..predict import load_model

    model = load_model(args.model)
    default = EXAMPLE_SIZE if args.format == "onnx" else program_example_size(model)
    size = (default[0] if args.height is None else args.height, default[1] if args.width is None else args.width)
    if args.format == "onnx":
        path = export_onnx(model, args.out, example_size=size, opset=args.opset)
        sizes = "any H, W"
    else:
        path = save_program(model, args.out, example_size=size)
        sizes = f"H, W multiples of 32 from {model.min_program_side()}"
    print(f"wrote {path} (input: RGB 0-255 float32 [B, 3, H, W], {sizes}; README.md shows how to run it)")
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
    serve(args.model, config, device=args.device, precision=args.precision, compile=args.compile)
    return 0


def compile_option(parser: argparse.ArgumentParser) -> None:
    """``--compile``, as predict, serve, eval and train take it."""
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network (inductor): same results to float rounding, a compile on first use",
    )


def scale_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """This group's commands on the ``maskformer`` parser."""
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
    compile_option(p)
    p.add_argument(
        "--scales", type=scale_list, help="semantic test-time augmentation scales, e.g. 0.5,0.75,1,1.25,1.5,1.75"
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
    # The defaults are export.EXAMPLE_SIZE's, written out: importing it would import torch for --help.
    example = "example input {} used for tracing (a multiple of 32; default {}, or more where a torch program needs it)"
    p.add_argument("--height", type=int, help=example.format("height", 128))
    p.add_argument("--width", type=int, help=example.format("width", 160))
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (onnx format only)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="a web page and an HTTP API (FastAPI) around a model")
    p.add_argument("--model", required=True, help="known model name, hub id, zoo URL/.pkl, folder, run or .ckpt")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; beyond loopback needs --token)")
    p.add_argument("--port", type=int, help="default 8000")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ...")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    compile_option(p)
    p.add_argument("--max-batch", type=int, help="requests arriving together share one forward (default 8)")
    p.add_argument("--batch-wait-ms", type=float, help="how long a batch waits for more requests (default 5)")
    p.add_argument("--max-queue", type=int, help="waiting requests beyond this get 503 (default 64)")
    p.add_argument("--max-request-mb", type=float, help="largest request body in MiB, 413 beyond (default 32)")
    p.add_argument("--timeout", type=float, help="seconds a request may take, 504 beyond (default 60)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on /predict and /models")
    p.set_defaults(func=cmd_serve)
