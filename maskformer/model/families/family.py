"""The record that makes a model family: everything the rest of the package needs to know about one, so
that no other module spells a family's name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..config import ModelConfig
from ..segmenter import Segmenter
from ..weights.renaming import Rule


@dataclass(frozen=True)
class TransformersFormat:
    """A family's models as Hugging Face transformers saves them: ``model_types`` the values of
    ``model_type`` in their config.json (one per variant of the family in transformers); ``config`` reads a
    config.json (its dict, and the file's name for messages) into the family's config;
    ``rules`` rename the weights to this package's names; ``adapt`` reshapes what renaming cannot (None:
    nothing)."""

    model_types: tuple[str, ...]
    config: Callable[[Mapping[str, Any], str], ModelConfig]
    rules: Callable[[ModelConfig], list[Rule]]
    adapt: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None


@dataclass(frozen=True)
class OfficialFormat:
    """A family's checkpoints as its paper's own code writes them (detectron2's model-zoo pickles for MaskFormer
    and Mask2Former): ``recognises`` a state dict as the family's by its names; ``config`` reads the
    architecture off the names and shapes (these files carry no config); ``rules`` rename the weights to this
    package's names; ``adapt`` reshapes what renaming cannot (None: nothing)."""

    recognises: Callable[[Mapping[str, Tensor]], bool]
    config: Callable[[Mapping[str, Tensor], str], ModelConfig]
    rules: Callable[[ModelConfig], list[Rule]]
    adapt: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None


# The official model zoos' downloads; both papers' weights (and the hub copies converted from them) are
# licensed for non-commercial use.
FAIR_ZOO = "https://dl.fbaipublicfiles.com/maskformer"
NON_COMMERCIAL = "CC BY-NC 4.0"


@dataclass(frozen=True)
class Checkpoint:
    """A published checkpoint of a family: ``name`` in ``maskformer models``; ``source`` a hub id or a
    model-zoo URL; ``dataset`` its key in ``maskformer.data.catalog.DATASETS``; ``score`` the published
    single-scale ``metric`` on that dataset's validation set; ``classes``: give it the dataset's built-in
    class list (its file has none, or one the built-in list names better); ``licence`` of the weights."""

    name: str
    source: str
    dataset: str
    metric: str
    score: float
    classes: bool = False
    licence: str = NON_COMMERCIAL


def hub_checkpoint(name: str, dataset: str, metric: str, score: float, classes: bool = False) -> Checkpoint:
    """A checkpoint on the Hugging Face hub under facebook/, where transformers' conversions of both papers'
    weights are."""
    return Checkpoint(name, f"facebook/{name}", dataset, metric, score, classes)


def zoo_checkpoints(folder: str) -> Callable[..., Checkpoint]:
    """Checkpoints of the official model zoo under ``folder`` (of :data:`FAIR_ZOO`), by their path there."""

    def make(name: str, path: str, dataset: str, metric: str, score: float, classes: bool = False) -> Checkpoint:
        return Checkpoint(name, f"{FAIR_ZOO}/{folder}{path}", dataset, metric, score, classes)

    return make


@dataclass(frozen=True)
class Recipe:
    """A paper's training settings for one preset as plain values of a run config's sections, checked when
    the training layer builds the run config from them: ``train`` sets TrainConfig fields, ``data`` adds to
    the dataset's own data settings (format, crops) what the family's recipe does differently."""

    train: Mapping[str, Any]
    data: Mapping[str, Any]


@dataclass(frozen=True)
class DemoRecipe:
    """The family in ``maskformer demo``: ``model`` its configuration for two CPU cores and the synthetic
    data's six classes (a ResNet-18 from random weights unless the demo's stage 1 gives one), and what the
    demo's training does differently per family: learning rate, warm-up steps and the steps that fit the
    demo's budget on two CPU cores (docs/demo.md)."""

    model: Callable[[], ModelConfig]
    lr: float
    warmup_steps: int
    cpu_steps: int


def backbone_lr_factor(config: ModelConfig, name: str, backbone_multiplier: float) -> float:
    """The papers' rule: the backbone's parameters learn at the run's backbone multiplier, the rest at 1."""
    return backbone_multiplier if name.startswith("backbone.") else 1.0


@dataclass(frozen=True)
class Family:
    """``name``: the ``family`` value of its config files; ``title``: its name in messages; ``year``: its
    paper's (families are listed in that order); ``config``: its
    whole-model config class; ``network``: the network class built from it; ``presets``: its named
    configurations of the papers, by name, and
    ``preset_datasets`` the dataset each is configured for (a key of ``maskformer.data.catalog.DATASETS``);
    ``checkpoints``: its published weights; ``recipe``: the paper's training recipe of a preset (by its name
    and dataset key); ``optimizer``: the family's AdamW settings besides the training defaults, also for
    fine-tuning; ``demo``: its configuration in ``maskformer demo`` (None: not in the demo); ``transformers``
    and ``official``: how its checkpoints in transformers' format and in its paper's code's are read;
    ``describe``: a model's parts in a few words and ``pretraining`` what a config's backbone weights were
    trained on (``maskformer presets``).

    Hooks into training, so that a family's schedule needs no change to the training layer:
    ``lr_factor(config, name, backbone_multiplier)`` gives a parameter's learning-rate factor from the model's
    config, the parameter's name and the run's backbone multiplier (layer-wise decay, for example);
    ``on_train_step(model, step, max_steps)`` runs before every training step's forward (an annealing
    schedule, for example), with ``step`` the number of steps done."""

    name: str
    title: str
    year: int
    config: type[ModelConfig]
    network: type[Segmenter]
    presets: Mapping[str, Callable[[], ModelConfig]]
    preset_datasets: Mapping[str, str]
    checkpoints: tuple[Checkpoint, ...]
    recipe: Callable[[str, str], Recipe]
    optimizer: Mapping[str, Any]
    demo: DemoRecipe | None
    transformers: TransformersFormat | None = None
    official: OfficialFormat | None = None
    describe: Callable[[ModelConfig], str] = lambda config: ""
    pretraining: Callable[[ModelConfig], str] = lambda config: "ImageNet"
    lr_factor: Callable[[ModelConfig, str, float], float] = backbone_lr_factor
    on_train_step: Callable[[nn.Module, int, int], None] | None = None

    @property
    def a_title(self) -> str:
        """The title after its indefinite article, for messages: "a MaskFormer", "an EoMT"."""
        return f"{'an' if self.title[0] in 'AEIOU' else 'a'} {self.title}"
