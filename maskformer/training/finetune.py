"""Starting a run from trained weights (``model.weights``): every weight of the source loaded strictly but
the class head, which is re-initialised for the data's classes while the rows of classes whose names match
keep their trained values (a COCO "person" stays a person).

Any model source ``maskformer models`` and ``--model`` accept works: a known model name, a hub id, a
model-zoo URL or .pkl, a transformers folder, a ``save_pretrained`` folder, a training run folder or a .ckpt.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import torch

from ..model import ModelConfig, Segmenter, family_of
from ..model.weights.fit import StateDiff
from ..predict.zoo import load_model


@dataclass
class Initialisation:
    """What a run took from ``source``: ``loaded`` of the model's ``total`` tensors (the class head counts
    when every row came from the source), whether the classes are the source's own (same names in the same
    order), the classes whose head rows were kept by name and those whose rows were re-initialised."""

    source: str
    loaded: int
    total: int
    same_classes: bool
    kept: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        start = f"starting from {self.source}: {self.loaded} of {self.total} weights loaded"
        if self.same_classes:
            return f"{start}, the class head included (the same classes)"
        kept = ", ".join(self.kept[:8]) + (", ..." if len(self.kept) > 8 else "")
        if not self.new:
            return f"{start}; class head rows of all {len(self.kept)} classes taken by name ({kept})"
        return (
            f"{start}; class head re-initialised for {len(self.new)} of {len(self.new) + len(self.kept)} classes"
            + (f", rows of {len(self.kept)} kept by class name ({kept})" if self.kept else "")
            + ", the no-object row kept"
        )


def _aliases(name: str) -> set[str]:
    """Spellings of a class name that count as the same class: case and separators aside, each of the
    comma- or semicolon-separated synonyms (ADE20K's "person, individual"), with COCO panoptic's "-merged" and
    "-other" suffixes removed."""
    spelled = {re.sub(r"[\s_-]+", " ", part).strip() for part in re.split(r"[,;]", name.lower())}
    spelled |= {re.sub(r"( merged| other)+$", "", s) for s in spelled}
    return {s for s in spelled if s}


def match_classes(source: list[str], target: list[str]) -> dict[int, int]:
    """{target class index: source class index} for the target classes whose name the source also has
    (an exact name first, else a shared synonym)."""
    exact = {n.lower().strip(): i for i, n in reversed(list(enumerate(source)))}
    by_alias: dict[str, int] = {}
    for i, name in reversed(list(enumerate(source))):
        by_alias.update(dict.fromkeys(_aliases(name), i))
    matches = {}
    for j, name in enumerate(target):
        i = exact.get(name.lower().strip())
        if i is None:
            i = next((by_alias[a] for a in sorted(_aliases(name)) if a in by_alias), None)
        if i is not None:
            matches[j] = i
    return matches


def _describe(config: ModelConfig) -> str:
    backbone = config.backbone.name if config.backbone.type == "timm" else f"Swin ({config.backbone.name or 'custom'})"
    return f"{config.family} with a {backbone} backbone"


def initialise_from(model: Segmenter, source: str) -> Initialisation:
    """Load ``source`` into ``model`` (in place, before training starts): see the module docstring. A source
    whose architecture differs from the model's is refused in one line."""
    src = load_model(source)
    if src.load_report.missing:
        raise ValueError(f"{src.load_report}: fine-tuning needs every weight")
    ours, theirs = model.state_dict(), src.state_dict()
    head = {f"{name}.{p}" for name, m in model.named_modules() if m is model.class_head for p in ("weight", "bias")}
    state = {k: v for k, v in theirs.items() if k not in head}
    diff = StateDiff.between({k: v for k, v in ours.items() if k not in head}, state)
    if diff:
        raise ValueError(
            f"{source}: a {_describe(src.config)} does not fit this run's {_describe(model.config)} "
            f"({diff.summary(1)}); leave out --preset and --config to train the source's own architecture"
        )
    src_names, names = src.config.metadata.class_names, model.config.metadata.class_names
    src_k, k = src.config.num_classes, model.config.num_classes
    if src_names and names:
        rows = match_classes(src_names, names)
    else:  # a source without class names: only a head of the same size can be taken as the same classes
        rows = {j: j for j in range(k)} if src_k == k else {}
    weight, bias = src.class_head.weight, src.class_head.bias
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
        own_weight, own_bias = model.class_head.weight, model.class_head.bias
        index: dict[int, int] = {**rows, k: src_k}  # the no-object row is always the last
        targets = torch.tensor(list(index))
        sources = torch.tensor(list(index.values()))
        own_weight[targets] = weight[sources].to(own_weight.dtype)
        own_bias[targets] = bias[sources].to(own_bias.dtype)
    names = names or [f"class {j}" for j in range(k)]
    return Initialisation(
        source=str(source),
        loaded=len(state) + (len(head) if len(rows) == k else 0),
        total=len(ours),
        same_classes=src_k == k and all(j == i for j, i in rows.items()) and len(rows) == k,
        kept=[names[j] for j in sorted(rows)],
        new=[names[j] for j in range(k) if j not in rows],
    )


def starting_model(config: ModelConfig, resume: bool = False) -> tuple[Segmenter, Initialisation | None]:
    """The network a run trains: ``config.weights`` loaded into it when set, else as ``config`` builds it
    (ImageNet or ``backbone.weights`` for the backbone). A resumed run, and a run from ``weights``, build
    without a download or a backbone file: every weight comes from the checkpoint or the source."""
    if not config.weights and not resume:
        return family_of(config).network(config), None
    bare = copy.deepcopy(config)
    bare.backbone.pretrained, bare.backbone.weights = False, ""
    model = family_of(bare).network(bare)
    model.config = config
    return model, None if resume else initialise_from(model, config.weights)
