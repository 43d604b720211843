"""``maskformer demo``: the papers' recipe in miniature on generated data."""

from __future__ import annotations

import argparse

from ..model.families import DEMO_FAMILY, demo_names


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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """This group's commands on the ``maskformer`` parser."""
    p = sub.add_parser(
        "demo",
        help="pretrain a backbone, train and evaluate a small model on generated data (5-10 minutes on 2 CPU cores)",
    )
    p.add_argument("--out", default="demo-output")
    p.add_argument(
        "--family",
        choices=demo_names(),
        help=f"model family (default: {DEMO_FAMILY.name}, the one that does best here)",
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
