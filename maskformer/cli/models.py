"""``maskformer presets``, ``info``, ``convert`` and ``models``: what the package knows of configurations
and checkpoints."""

from __future__ import annotations

import argparse

import torch

from ..model import PRESETS, ModelConfig, family_of, preset


def _count_parameters(config: ModelConfig) -> int:
    # Building on the meta device allocates nothing, so even Swin-L counts instantly (and fetches no weights).
    config = ModelConfig.from_dict(config.to_dict())
    config.backbone.pretrained, config.backbone.weights = False, ""
    with torch.device("meta"):
        return family_of(config).network(config).num_parameters


def _matching_presets(patterns: list[str]) -> list[str]:
    """Presets whose name contains one of ``patterns`` or whose family is one; all without patterns."""
    names = [n for n in PRESETS if not patterns or any(p in n or p == preset(n).family for p in patterns)]
    if not names:
        raise ValueError(f"no preset matches {' or '.join(map(repr, patterns))} (`maskformer presets` lists them all)")
    return names


def cmd_presets(args: argparse.Namespace) -> int:
    from ..training.config import paper_model

    names = _matching_presets(args.patterns)
    width = max(map(len, PRESETS)) + 1
    print(f"{'preset':<{width}} {'family':<12} {'starts from':<50} {'parts':<20} {'classes':>7} {'params':>8}")
    for name in names:
        cfg = paper_model(name)
        pretraining = family_of(cfg).pretraining(cfg)
        weights = f"{pretraining}: {cfg.backbone.name}" if cfg.backbone.pretrained else "scratch (no timm weights)"
        params = f"{_count_parameters(cfg) / 1e6:.1f}M" if args.count else "-"
        parts = family_of(cfg).describe(cfg)
        print(f"{name:<{width}} {cfg.family:<12} {weights:<50} {parts:<20} {cfg.num_classes:>7} {params:>8}")
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

    model = load_model(args.model, strict=args.strict, delta_base=args.delta_base)
    out = model.save_pretrained(args.out)
    print(f"{model.load_report}")
    print(f"wrote {out}/config.yaml and {out}/model.safetensors")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ..model.families.family import NON_COMMERCIAL
    from ..predict import KNOWN_MODELS

    print(f"{'name':<50} {'family':<12} {'task':<9} {'dataset':<26} {'score':>11}  {'licence':<22} source")
    for m in KNOWN_MODELS.values():
        score = f"{m.metric:>5} {m.score:5.1f}"
        print(f"{m.name:<50} {m.family:<12} {m.task:<9} {m.dataset:<26} {score}  {m.licence:<22} {m.source}")
    licences = sorted({m.licence for m in KNOWN_MODELS.values()})
    notes = [f"{lic} (non-commercial use only)" if lic == NON_COMMERCIAL else lic for lic in licences]
    print(f"{len(KNOWN_MODELS)} models. Their weights' licences, each model's in its row: {'; '.join(notes)}.")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """This group's commands on the ``maskformer`` parser."""
    p = sub.add_parser("presets", help="list the papers' model configurations")
    patterns = "only presets whose name contains PATTERN (swin_t, coco, ...) or of the family PATTERN"
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help=patterns)
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
    p.add_argument(
        "--delta-base",
        metavar="FILE",
        help="the model holds differences from these backbone weights (a timm-format file), as the official "
        "checkpoints trained from DINOv3 do from DINOv3's (README)",
    )
    p.add_argument("--strict", action="store_true", help="fail when any weight is missing or unused")
    p.set_defaults(func=cmd_convert)
    p = sub.add_parser("models", help="list known pretrained checkpoints with their published scores")
    p.set_defaults(func=cmd_models)
