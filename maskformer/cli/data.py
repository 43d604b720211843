"""``maskformer data``: generate, prepare, check and show datasets; the dataset options other commands share."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.messages import plural
from ..data.prepare import PREPARATIONS

FORMATS = ["semantic", "panoptic", "ade20k", "cityscapes", "coco_panoptic", "coco_instance"]


def cmd_synth(args: argparse.Namespace) -> int:
    from ..data.synth import write_dataset

    out = write_dataset(args.out, args.train, args.val, seed=args.seed)
    print(f"wrote {args.train} training and {args.val} validation samples to {out}")
    return 0


def found_layout(data: str, configured: str | None = None) -> str:
    """The layout found in ``data``, said on the console. Against a ``configured`` format (a preset's or a
    config's): said only where it differs, and a folder of no known layout keeps ``configured``, left to the
    reader's own error."""
    from ..training.datamodule import detect_format

    try:
        found = detect_format(data)
    except ValueError:
        if configured is None:
            raise
        return configured
    if configured is None:
        print(f"{data}: {found} layout (give --format to choose another)", file=sys.stderr)
    elif found != configured:
        print(f"{data}: {found} layout, used instead of the configuration's {configured} (give --format to choose)",
              file=sys.stderr)  # fmt: skip
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


def data_config(args: argparse.Namespace):
    """The DataConfig of a command's --data, --format (found from the folder when not given), --class-file,
    --label-dir and --ignore-value (default: the class file's, else 255)."""
    from ..training import DataConfig
    from ..training.datamodule import default_ignore_value

    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"{args.data}: data folder not found")
    data_format = args.format or found_layout(args.data)
    ignore = args.ignore_value
    if ignore is None:
        ignore = default_ignore_value(data_format, args.data, args.class_file or "")
    return DataConfig(format=data_format, root=args.data, class_file=args.class_file or "", label_dir=args.label_dir,
                      ignore_value=ignore)  # fmt: skip


def cmd_check(args: argparse.Namespace) -> int:
    return 1 if check_data(data_config(args), args.split, args.sample) else 0


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

    cfg = data_config(args)
    split = args.split or list(default_splits(cfg.format, cfg.root))[-1]
    shown = show_dataset(build_reader(cfg, split), args.out, args.count, args.columns, args.seed)
    print(f"drew {plural(shown, 'image')} of {cfg.root} ({split}) with their labels: {args.out}")
    return 0


def data_options(parser: argparse.ArgumentParser) -> None:
    """The options of a dataset on disk that :func:`data_config` reads."""
    parser.add_argument("--data", required=True, help="dataset root folder")
    parser.add_argument("--format", choices=FORMATS, help="dataset layout (default: found from the folder)")
    parser.add_argument("--class-file", help="semantic format: class list (default root/classes.json|txt)")
    parser.add_argument("--label-dir", default="labels", help="semantic format: label folder name")
    parser.add_argument("--ignore-value", type=int, help="semantic: ignore label (default: the class file's, else 255)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """This group's commands on the ``maskformer`` parser."""
    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True, parser_class=type(p))
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
    data_options(s)
    s.add_argument("--split", action="append", help="split to check (repeatable; default: train and val)")
    s.add_argument("--sample", type=int, help="check only this many samples per split (default: all)")
    s.set_defaults(func=cmd_check)

    s = data_sub.add_parser("show", help="draw images of a dataset with their labels, in a grid (a PNG)")
    data_options(s)
    s.add_argument("--split", help="split to draw (default: the validation split)")
    s.add_argument("--count", type=int, default=8, help="images to draw, chosen at random (default 8)")
    s.add_argument("--columns", type=int, default=4, help="images per row (default 4)")
    s.add_argument("--seed", type=int, default=0, help="which images are chosen")
    s.add_argument("--out", default="data-show.png", help="the PNG to write (default data-show.png)")
    s.set_defaults(func=cmd_show)
