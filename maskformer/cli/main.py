"""``maskformer`` command: inspect presets and checkpoints, convert checkpoints, run the demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from ..model import PRESETS, MaskFormer, MaskFormerConfig, preset


def _count_parameters(config: MaskFormerConfig) -> int:
    # Building on the meta device allocates nothing, so even Swin-L counts instantly.
    with torch.device("meta"):
        return MaskFormer(config).num_parameters


def cmd_presets(args: argparse.Namespace) -> int:
    print(f"{'preset':<12} {'backbone':<40} {'pixel decoder':<20} {'classes':>7} {'params':>8}")
    for name in PRESETS:
        cfg = preset(name)
        params = f"{_count_parameters(cfg) / 1e6:.1f}M" if args.count else "-"
        print(f"{name:<12} {cfg.backbone.name:<40} {cfg.pixel_decoder.type:<20} {cfg.num_classes:>7} {params:>8}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    if args.preset:
        config = preset(args.preset)
        print(config.to_yaml(), end="")
        print(f"# parameters: {_count_parameters(config):,}")
        return 0
    model = MaskFormer.from_pretrained(args.model)
    print(model.config.to_yaml(), end="")
    print(f"# parameters: {model.num_parameters:,}")
    print(f"# {model.load_report}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    model = MaskFormer.from_pretrained(args.model, strict=args.strict)
    out = model.save_pretrained(args.out)
    print(f"{model.load_report}")
    print(f"wrote {out}/config.yaml and {out}/model.safetensors")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    print("maskformer demo: not built yet (it arrives with the data and training work).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskformer", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser("demo", help="train and evaluate a small model on generated data")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"maskformer: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
