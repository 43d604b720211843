"""Typed configuration of a mask-classification model, with YAML in and out.

The sections every model is made of (backbone, pixel decoder, transformer decoder, loss, inference
thresholds, dataset metadata) and :class:`ModelConfig`, what every family's whole-model config has. Each
family's config class (:mod:`maskformer.model.families`) composes these sections with its own defaults;
reading a file picks the class by its ``family`` value. Presets named after the papers' configurations live
in :mod:`maskformer.model.presets`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")
C = TypeVar("C", bound="YamlConfig")

ADE_MEAN = (123.675, 116.28, 103.53)
ADE_STD = (58.395, 57.12, 57.375)

# Allowed ranges of numeric fields, (lowest, highest) with None open; checked on every config read.
Size = tuple[int, int]  # (height, width) in pixels
Bounds = dict[str, tuple[float | None, float | None]]
AT_LEAST_1 = (1, None)
NON_NEGATIVE = (0, None)
FRACTION = (0, 1)


@dataclass
class BackboneConfig:
    """Backbone producing res2..res5 at strides 4, 8, 16, 32.

    ``type="swin"`` builds the Swin Transformer of the original (padding to whole windows, one LayerNorm
    per output stage); ``name`` then names the timm model whose ImageNet weights ``pretrained`` loads, and
    whose format ``weights`` files have. ``type="timm"`` wraps any timm model through its multi-scale feature
    API.
    """

    BOUNDS: ClassVar[Bounds] = {
        "drop_path_rate": FRACTION, "embed_dim": AT_LEAST_1, "depths": AT_LEAST_1, "num_heads": AT_LEAST_1,
        "window_size": AT_LEAST_1, "patch_size": AT_LEAST_1, "mlp_ratio": NON_NEGATIVE,
    }  # fmt: skip

    type: Literal["timm", "swin"] = "timm"
    name: str = "resnet50"
    pretrained: bool = False
    # A backbone state dict to start from instead of ``pretrained``'s download: a .safetensors file or a torch
    # file (.pth, .pt, .bin; read weights-only) in timm's format for timm's model ``name`` (what
    # ``timm.create_model(name).state_dict()`` holds; its classifier is left out), loaded strictly.
    weights: str = ""
    # CNN options: "frozen_bn" like the original (detectron2 FrozenBatchNorm), "bn" or "syncbn".
    norm: Literal["frozen_bn", "bn", "syncbn"] = "frozen_bn"
    # detectron2 MSRA-style ResNets put the stride in the first 1x1 conv of a bottleneck.
    stride_in_1x1: bool = False
    drop_path_rate: float = 0.0
    # Swin geometry (ignored for timm backbones).
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    # Extra keyword arguments for timm.create_model (e.g. stem_type="deep" for R101c).
    timm_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class PixelDecoderConfig:
    """The pixel decoder: per-pixel mask features at stride 4 and the multi-scale maps the transformer
    decoder attends to.

    ``type``: "fpn" (MaskFormer's), "transformer_encoder" (MaskFormer's "+6 Enc": a DETR encoder on res5
    before the FPN) or "msdeformattn" (Mask2Former's: a multi-scale deformable-attention encoder over
    res3..res5, then res2 fused FPN-style). The ``encoder_*`` fields size either encoder.
    """

    BOUNDS: ClassVar[Bounds] = {
        "conv_dim": AT_LEAST_1, "mask_dim": AT_LEAST_1, "num_groups": AT_LEAST_1, "encoder_layers": NON_NEGATIVE,
        "encoder_heads": AT_LEAST_1, "encoder_ffn_dim": AT_LEAST_1, "encoder_dropout": FRACTION,
        "encoder_points": AT_LEAST_1,
    }  # fmt: skip

    type: Literal["fpn", "transformer_encoder", "msdeformattn"] = "fpn"
    conv_dim: int = 256
    mask_dim: int = 256
    num_groups: int = 32
    encoder_layers: int = 6
    encoder_heads: int = 8
    encoder_ffn_dim: int = 2048
    encoder_dropout: float = 0.1
    # Deformable attention: sampling points per head and level.
    encoder_points: int = 4


@dataclass
class TransformerConfig:
    """The transformer decoder: ``type="detr"`` is MaskFormer's (DETR decoder layers over one feature map),
    ``"masked_attention"`` Mask2Former's (masked cross-attention, self-attention, FFN; round robin over the
    pixel decoder's stride-32/16/8 maps, a prediction from the queries before the first layer)."""

    BOUNDS: ClassVar[Bounds] = {
        "hidden_dim": AT_LEAST_1, "num_queries": AT_LEAST_1, "num_heads": AT_LEAST_1, "ffn_dim": AT_LEAST_1,
        "num_layers": AT_LEAST_1, "dropout": FRACTION,
    }  # fmt: skip

    type: Literal["detr", "masked_attention"] = "detr"
    hidden_dim: int = 256
    num_queries: int = 100
    num_heads: int = 8
    ffn_dim: int = 2048
    num_layers: int = 6
    dropout: float = 0.1
    # Project the decoder input with a 1x1 conv even when its width already equals hidden_dim.
    enforce_input_proj: bool = False
    # Mask2Former's masked cross-attention in the DETR decoder (not in the paper's MaskFormer; no extra
    # parameters). The "masked_attention" decoder always masks.
    masked_attention: bool = False
    # What a "detr" decoder attends to (the original's TRANSFORMER_IN_FEATURE): a backbone level "res2".."res5"
    # or "transformer_encoder" (the "+6 Enc" output). None: the encoder output when the pixel decoder has
    # one, else res5, as in the paper.
    in_feature: Literal["res2", "res3", "res4", "res5", "transformer_encoder"] | None = None


@dataclass
class LossConfig:
    """Matching costs and loss weights. The defaults are MaskFormer's (paper sections 3.2 / 4.1); each
    family's config sets its own."""

    BOUNDS: ClassVar[Bounds] = {
        **dict.fromkeys(["class_weight", "mask_weight", "dice_weight", "cost_class", "cost_mask", "cost_dice"],
                        NON_NEGATIVE),
        "no_object_weight": NON_NEGATIVE, "focal_alpha": FRACTION, "focal_gamma": NON_NEGATIVE,
        "num_points": NON_NEGATIVE, "oversample_ratio": AT_LEAST_1, "importance_sample_ratio": FRACTION,
    }  # fmt: skip

    class_weight: float = 1.0
    mask_weight: float = 20.0
    dice_weight: float = 1.0
    no_object_weight: float = 0.1
    cost_class: float = 1.0
    cost_mask: float = 20.0
    cost_dice: float = 1.0
    # The mask loss and mask matching cost besides dice: MaskFormer's sigmoid focal loss, or Mask2Former's
    # sigmoid binary cross-entropy.
    mask_loss: Literal["focal", "bce"] = "focal"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    deep_supervision: bool = True
    # The original counts padding and ignore pixels as background; True drops them from the mask losses.
    exclude_invalid_pixels: bool = False
    # 0: the paper's full-resolution mask losses. > 0: Mask2Former's point-sampled losses and matching
    # costs (12544 points, 3x oversampling, 75% by uncertainty), far less memory at large crops.
    num_points: int = 0
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    # Point values within half a pixel of a mask's edge: "border" clamps as bilinear upsampling does (this
    # package's MaskFormer option), "zeros" blends towards 0 as Mask2Former's official point_sample does.
    point_padding: Literal["border", "zeros"] = "border"
    # The order in which the predictions' losses draw their random points: Mask2Former's official code takes
    # the final prediction first, then the intermediate ones; EoMT's goes through its blocks in order, the
    # final last. Only the draws differ (equal in expectation); the order makes one seed give the same points.
    final_last: bool = False


@dataclass
class InferenceConfig:
    """Post-processing thresholds and test-time resizing."""

    BOUNDS: ClassVar[Bounds] = {
        "object_mask_threshold": FRACTION, "overlap_threshold": FRACTION, "instance_topk": AT_LEAST_1,
        "size_divisibility": AT_LEAST_1, "test_shortest_edge": AT_LEAST_1, "test_max_size": AT_LEAST_1,
        "semantic_window": NON_NEGATIVE, "pad_square": NON_NEGATIVE,
    }  # fmt: skip

    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8
    instance_topk: int = 100
    size_divisibility: int = 32
    test_shortest_edge: int = 512
    test_max_size: int = 2048
    # How a list of images is forwarded. True: one image at a time, so that every result is bit-equal to the
    # image's result alone. False: one batch per group of images that pad to the same size (faster where
    # batches pay, e.g. GPUs): padding never mixes, results differ from one at a time only by float rounding
    # of batched kernels (about 1e-6), which can still flip a pixel at a threshold.
    batch_invariant: bool = True
    # > 0: semantic segmentation by square windows of this side (model/windows.py; EoMT's way), instead of
    # the whole image at the test size; panoptic and instance segmentation are unaffected.
    semantic_window: int = 0
    # > 0: every input is padded bottom/right to at least a square of this side, with black pixels (zero before
    # normalising), as EoMT's official evaluation and transformers' EoMT processor (`do_pad`) pad: a ViT attends
    # to every token, so what the padding holds and how many tokens it adds change the outputs. 0: zeros after
    # normalising (the pixel mean), to the size divisibility only, as detectron2 pads.
    pad_square: int = 0


@dataclass
class MetadataConfig:
    """Dataset metadata carried with the weights.

    ``thing_classes`` lists the contiguous class indices that are things; None means unknown, and panoptic
    inference then treats every class as a thing. ``category_ids`` gives the dataset's own id of each class
    (e.g. COCO's 1..200 with gaps) for files written in its format; empty means the contiguous index.
    """

    dataset: str = ""
    class_names: list[str] = field(default_factory=list)
    thing_classes: list[int] | None = None
    colors: list[tuple[int, int, int]] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)


class YamlConfig:
    """Plain-dict, YAML and ``key=value`` override round trips for a dataclass config tree."""

    def to_dict(self) -> dict[str, Any]:
        return to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        return config_from_dict(cls, data, path=cls.__name__)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls: type[C], path: str | Path) -> C:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from err

    def override(self: C, assignments: list[str]) -> C:
        """Apply ``key.sub=value`` overrides (values parsed as YAML), returning a new config."""
        return type(self).from_dict(apply_overrides(self.to_dict(), assignments))


@dataclass
class ModelConfig(YamlConfig):
    """What every family's whole-model config has: the sections below, which each family composes with its
    own parts and defaults (:mod:`maskformer.model.families`). ``family`` names the family; it is set by the
    family's config class, not by an argument, and picks that class when a file is read (absent: the class
    marked ``FILE_DEFAULT``, MaskFormer's, as files written before the other families)."""

    BOUNDS: ClassVar[Bounds] = {"num_classes": AT_LEAST_1}
    # The family of a config file that names none (files written before there were several).
    FILE_DEFAULT: ClassVar[bool] = False
    # The family's record (maskformer.model.families.family.Family), set by the family's module: what reads a
    # config (or a checkpoint of the family) finds the family through its class, without the registry.
    FAMILY: ClassVar[Any]

    family: str = field(default="", init=False)
    num_classes: int = 150
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    metadata: MetadataConfig = field(default_factory=MetadataConfig)
    pixel_mean: tuple[float, float, float] = ADE_MEAN
    pixel_std: tuple[float, float, float] = ADE_STD
    # The trained model a run starts from (any model source: a name from `maskformer models`, a hub id, a
    # model-zoo URL or .pkl, a transformers or save_pretrained folder, a run folder or .ckpt); its class head
    # is adapted to num_classes by class name. Read by training (maskformer.training.finetune), not by
    # building the network; "" starts from the backbone's weights alone.
    weights: str = ""

    @staticmethod
    def family_class(name: Any, path: str) -> type[ModelConfig]:
        """The config class of the family ``name`` (a config file's ``family`` value): the family modules'
        classes, known once :mod:`maskformer.model.families` is imported, as the package does."""
        by_name = {c.__dataclass_fields__["family"].default: c for c in ModelConfig.__subclasses__()}
        return by_name[_scalar(name, Literal[tuple(by_name)], f"{path}.family")]

    @staticmethod
    def families() -> list[Any]:
        """Every family's record, in the order they were published, through its config class: for what sits
        below the registry (the loader and the presets, which the networks call)."""
        return sorted((c.FAMILY for c in ModelConfig.__subclasses__()), key=lambda f: f.year)

    @staticmethod
    def default_class() -> type[ModelConfig]:
        """The class of a config file without ``family`` (its ``FILE_DEFAULT``)."""
        return next(c for c in ModelConfig.__subclasses__() if c.FILE_DEFAULT)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" naming the choices closest to a mistyped ``name``, or "" when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def apply_overrides(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Set ``section.key=value`` entries (values parsed as YAML) in nested plain ``data``, in place."""
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                sections = [k for k, v in node.items() if isinstance(v, dict)]
                raise ValueError(f"override {item!r}: unknown section {part!r}{did_you_mean(part, sections)}")
            node = node[part]
        if parts[-1] not in node:
            prefix = key.strip()[: -len(parts[-1])]
            hint = did_you_mean(key.strip(), [prefix + name for name in node])
            raise ValueError(f"override {item!r}: unknown key {key!r}{hint}")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: value is not valid YAML ({err})") from err
    return data


def to_plain(value: Any) -> Any:
    """Dataclass dicts -> YAML-safe plain values (tuples become lists)."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def config_from_dict(cls: type[T], data: dict[str, Any], path: str, base: T | None = None) -> T:
    """Build dataclass ``cls`` from plain data, recursing into nested dataclasses; unknown keys are errors.

    Keys absent from ``data`` keep their value in ``base`` (default ``cls()``), so that a section of a
    family's config keeps that family's defaults. A model config's class is chosen by ``data["family"]``.
    """
    if not isinstance(data, dict):
        raise TypeError(f"{path}: expected a mapping, got {type(data).__name__}")
    if isinstance(cls, type) and issubclass(cls, ModelConfig):
        data = dict(data)
        family = data.pop("family", None)
        chosen = ModelConfig.family_class(family, path) if family is not None else None
        if chosen is None and cls is ModelConfig:
            chosen = ModelConfig.default_class()
        if chosen is not None and type(base) is not chosen:
            cls, base = chosen, None
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        suggestions = "".join(did_you_mean(key, known) for key in unknown)
        raise ValueError(f"{path}: unknown keys {unknown}{suggestions}")
    kwargs: dict[str, Any] = {}
    defaults = base if base is not None else cls()
    hints = get_type_hints(cls)
    for name, value in data.items():
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = config_from_dict(type(default), value, f"{path}.{name}", default)
        elif isinstance(default, tuple):
            kwargs[name] = _sequence(value, hints[name], f"{path}.{name}")
        elif name == "colors":
            kwargs[name] = [tuple(c) for c in value]
        else:
            kwargs[name] = _scalar(value, hints[name], f"{path}.{name}")
        _check_bounds(kwargs[name], getattr(cls, "BOUNDS", {}).get(name), f"{path}.{name}")
    return dataclasses.replace(defaults, **kwargs)


def _check_bounds(value: Any, bounds: tuple[float | None, float | None] | None, path: str) -> None:
    """Numbers (or each number of a tuple) within ``bounds`` = (lowest, highest), None meaning open."""
    if bounds is None or value is None:
        return
    low, high = bounds
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if low is not None and v < low:
            raise ValueError(f"{path}: must be at least {low}, got {_show(value)}")
        if high is not None and v > high:
            raise ValueError(f"{path}: must be at most {high}, got {_show(value)}")


def _show(value: Any) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def _sequence(value: Any, hint: Any, path: str) -> tuple:
    """A list for a tuple field: ``tuple[int, int]`` needs exactly two integers, ``tuple[int, ...]`` any
    number of them."""
    args = get_args(hint)
    variable = len(args) == 2 and args[1] is Ellipsis
    kind = args[0] if args else Any
    names = {int: "integers", float: "numbers", str: "strings"}
    what = names.get(kind, "values")
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        count = "a list of" if variable else f"a list of {len(args)}"
        raise ValueError(f"{path}: expected {count} {what}, got {value!r}")
    if not variable and args and len(value) != len(args):
        raise ValueError(f"{path}: expected a list of {len(args)} {what}, got {list(value)!r}")
    if kind is Any:
        return tuple(value)
    return tuple(_scalar(v, kind, f"{path}[{i}]") for i, v in enumerate(value))


def _scalar(value: Any, hint: Any, path: str) -> Any:
    """``value`` checked against the field's type ``hint``. YAML reads ``1e-3`` (no dot) as a string, so
    numeric strings become floats where a float is expected. ``null`` passes (several fields use it for
    "off"); unions of several types other than None are not checked."""
    if value is None:
        return None
    options = set(get_args(hint)) if get_origin(hint) in (Union, UnionType) else {hint}
    options.discard(type(None))
    if len(options) != 1:
        return value
    (kind,) = options
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path}: expected true or false, got {value!r}")
    elif kind is float:
        if isinstance(value, bool):
            raise ValueError(f"{path}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: expected a number, got {value!r}") from None
    elif kind is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path}: expected an integer, got {value!r}")
    elif kind is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, str):
            raise ValueError(f"{path}: expected a string, got {value!r}")
    elif get_origin(kind) is Literal and value not in get_args(kind):
        choices = get_args(kind)
        # YAML 1.1 reads off/on/yes/no as booleans; a choice spelled that way is what was meant.
        if isinstance(value, bool):
            spelled = [c for c in choices if isinstance(c, str) and c.lower() in _YAML_BOOLS[value]]
            if len(spelled) == 1:
                return spelled[0]
        raise ValueError(f"{path}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


_YAML_BOOLS = {True: {"on", "yes", "y", "true"}, False: {"off", "no", "n", "false"}}
