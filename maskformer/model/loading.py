"""``from_pretrained`` / ``save_pretrained``: finding a checkpoint and loading it whatever its format.

Sources: a folder written by ``save_pretrained`` (config.yaml + model.safetensors); a training run folder
(its final ``model/``, or its last checkpoint while it has none) or one of its Lightning ``.ckpt`` files; a
transformers folder or hub id of any family (config.json + model.safetensors or pytorch_model.bin); an official
model-zoo checkpoint (.pkl, or .pth from detectron2 training) or its URL. Pickles are read by a restricted
unpickler and torch files with ``weights_only=True``, so loading never runs code from the file.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from .atomic import atomic_path
from .config import ModelConfig
from .weights import detectron2_format
from .weights.files import read_tensors, read_torch
from .weights.renaming import Renamed, rename_state_dict
from .weights.safe_pickle import load_pickle

M = TypeVar("M", bound=nn.Module)
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass
class LoadReport:
    """Keys of the source that found no place in the model, model keys the source did not fill, and keys
    whose shapes differ (left at their initialisation, e.g. a class head loaded for another class count)."""

    source: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected and not self.mismatched

    def __str__(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} model weights not in the checkpoint: {', '.join(self.missing[:20])}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} checkpoint entries unused: {', '.join(self.unexpected[:20])}")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} shapes differ, kept initialised: {', '.join(self.mismatched[:20])}")
        return f"{self.source}: " + ("; ".join(parts) if parts else "all weights loaded")


def cache_dir() -> Path:
    return Path(os.environ.get("MASKFORMER_CACHE", Path(torch.hub.get_dir()) / "maskformer"))


def resolve_source(source: str | Path) -> Path:
    """Local path for ``source``: an existing path, a downloaded URL, or a hub snapshot."""
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if urlparse(text).scheme in ("http", "https"):
        return _download(text)
    if _HUB_ID.match(text) and not text.startswith((".", "/")):
        from huggingface_hub import snapshot_download

        try:
            return Path(
                snapshot_download(
                    text,
                    allow_patterns=["config.json", "preprocessor_config.json", "*.safetensors", "*.bin", CONFIG_FILE],
                )
            )
        except Exception as err:
            raise FileNotFoundError(f"{text}: not a local path, and the hub could not provide it ({err})") from err
    raise FileNotFoundError(f"{text}: no such file or folder, and not a URL or hub id")


# Official model-zoo files carry the first hex digits of their md5 in the name (model_final_d8dbeb.pkl).
_HASH_IN_NAME = re.compile(r"^model_final_([0-9a-f]{6})\.(pkl|pth)$")


def _download(url: str) -> Path:
    """Download ``url`` once into :func:`cache_dir`; a checksum prefix in the file name is verified before
    the file enters the cache."""
    name = Path(urlparse(url).path).name
    target = cache_dir() / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(target.suffix + ".part")
        try:
            torch.hub.download_url_to_file(url, str(partial), progress=True)
        except OSError as err:  # URLError included
            partial.unlink(missing_ok=True)
            raise OSError(f"{url}: download failed ({getattr(err, 'reason', err)}); check the network") from None
        if match := _HASH_IN_NAME.search(name):
            digest = _md5(partial)
            if not digest.startswith(match[1]):
                partial.unlink()
                raise ValueError(f"{url}: downloaded file has md5 {digest}, its name says {match[1]}...; not cached")
        partial.replace(target)
    return target


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(source: str | Path, config: ModelConfig | None = None) -> tuple[ModelConfig, Renamed]:
    """Config and renamed state dict for any supported ``source``; ``config`` overrides the stored one."""
    path = resolve_source(source)
    if path.is_dir() and _is_run_folder(path):
        path = _run_weights(path)
    if path.is_dir():
        if (path / CONFIG_FILE).exists():
            cfg = config or ModelConfig.from_yaml(path / CONFIG_FILE)
            return cfg, Renamed(read_tensors(path / WEIGHTS_FILE))
        if (path / "config.json").exists():
            data = json.loads((path / "config.json").read_text())
            if config is None:
                config = config_from_transformers(data, str(path / "config.json"))
                _read_preprocessor(path, config)
            cfg = config
            weights = _first_existing(path, ["model.safetensors", "pytorch_model.bin"])
            return cfg, convert_transformers_state_dict(read_tensors(weights), cfg, str(path / "config.json"))
        raise ValueError(f"{path}: folder holds neither {CONFIG_FILE} (maskformer) nor config.json (transformers)")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        state = detectron2_format.model_state_from_checkpoint(load_pickle(path), str(path))
    elif suffix in (".pth", ".pt", ".bin"):
        state = detectron2_format.model_state_from_checkpoint(read_torch(path), str(path))
    elif suffix == ".ckpt":
        return _read_lightning_checkpoint(path, config)
    elif suffix == ".safetensors":
        if config is None:
            raise ValueError(f"{path}: a bare .safetensors file needs a config (pass config=...)")
        return config, Renamed(read_tensors(path))
    else:
        raise ValueError(f"{path}: unknown checkpoint format {suffix!r} (expected .pkl, .pth, .ckpt or a folder)")
    cfg = config or config_from_official(state, str(path))
    return cfg, convert_official_state_dict(state, cfg, str(path))


def _titles() -> str:
    return " or ".join(f.title for f in ModelConfig.families())


def config_from_transformers(data: Mapping[str, Any], source: str = "config.json") -> ModelConfig:
    """The model config of a transformers ``config.json`` of any family's model_type."""
    model_type = data.get("model_type")
    found = [f for f in ModelConfig.families() if f.transformers and model_type in f.transformers.model_types]
    if not found:
        raise ValueError(f"{source}: model_type is {model_type!r}, not a {_titles()} model")
    return found[0].transformers.config(data, source)


def convert_transformers_state_dict(state: Mapping[str, Tensor], config: ModelConfig, source: str = "") -> Renamed:
    """Rename a transformers state dict of ``config``'s family to this package's names."""
    fmt = type(config).FAMILY.transformers
    if fmt is None:
        raise ValueError(f"{source}: {type(config).FAMILY.title} models have no transformers format")
    return _renamed(state, config, fmt)


def config_from_official(state: Mapping[str, Tensor], source: str = "checkpoint") -> ModelConfig:
    """The model config of a state dict written by a paper's own code (a model-zoo file), read off its names
    and shapes by the family that recognises it."""
    found = [f for f in ModelConfig.families() if f.official and f.official.recognises(state)]
    if not found:
        raise ValueError(f"{source}: not a {_titles()} checkpoint (keys start {sorted(state)[:3]})")
    return found[0].official.config(state, source)


def convert_official_state_dict(state: Mapping[str, Tensor], config: ModelConfig, source: str = "") -> Renamed:
    """Rename a state dict of ``config``'s family written by its paper's code to this package's names."""
    fmt = type(config).FAMILY.official
    if fmt is None:
        raise ValueError(f"{source}: {type(config).FAMILY.title} models have no official checkpoint format")
    return _renamed(state, config, fmt)


def _renamed(state: Mapping[str, Tensor], config: ModelConfig, fmt: Any) -> Renamed:
    """``state`` renamed by a format's rules, then adapted where renaming cannot (the format's ``adapt``)."""
    renamed = rename_state_dict(state, fmt.rules(config))
    if fmt.adapt is not None:
        renamed.state_dict = fmt.adapt(renamed.state_dict)
    return renamed


def load_pretrained(
    cls: type[M],
    source: str | Path,
    config: ModelConfig | None = None,
    strict: bool = False,
    delta_base: str | Path | None = None,
) -> M:
    """Build the model described by ``source`` as its family's network and load its weights (see module
    docstring); ``cls`` (the class ``from_pretrained`` was called on) must be that network or a base of it.
    ``delta_base``: ``source`` holds differences from the model training started from, whose backbone had
    these weights (a timm-format file); see :func:`add_to_start`."""
    cfg, renamed = read_checkpoint(source, config)
    # Every weight comes from the checkpoint: building must not fetch ImageNet weights or read a backbone file.
    cfg = copy.deepcopy(cfg)
    cfg.backbone.pretrained, cfg.backbone.weights = False, ""
    network = type(cfg).FAMILY.network
    if not issubclass(network, cls):
        raise ValueError(
            f"{source}: {type(cfg).FAMILY.a_title} model, built as {network.__name__}, not {cls.__name__}: load it "
            f"with {network.__name__}.from_pretrained or Segmenter.from_pretrained"
        )
    model = network(cfg)
    own = model.state_dict()
    state = dict(renamed.state_dict)
    if delta_base is not None:
        state = add_to_start(state, cfg, str(delta_base))
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    for key in mismatched:
        del state[key]
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in mismatched]
    report = LoadReport(str(source), missing, list(result.unexpected_keys) + renamed.unmatched, mismatched)
    model.load_report = report
    if not report.ok:
        if strict:
            raise RuntimeError(str(report))
        warnings.warn(str(report), stacklevel=2)
    return model


def add_to_start(delta: Mapping[str, Tensor], config: ModelConfig, base: str) -> dict[str, Tensor]:
    """Weights from a checkpoint of differences, as a family's official code may read its checkpoints (those
    trained from DINOv3, ``delta_weights``): each entry added to the model training started from, whose
    backbone has the weights of ``base`` (a timm-format file), every other parameter zero and every buffer as
    built. Entries the model does not have are left as they are."""
    start_config = copy.deepcopy(config)
    start_config.backbone.pretrained, start_config.backbone.weights = False, base
    start = type(config).FAMILY.network(start_config)
    params = {name for name, _ in start.named_parameters()}
    init = {
        k: v if k.startswith("backbone.") or k not in params else torch.zeros_like(v)
        for k, v in start.state_dict().items()
    }
    return {k: init[k] + v.to(init[k].dtype) if k in init and init[k].shape == v.shape else v for k, v in delta.items()}


def save_pretrained(model: nn.Module, directory: str | Path) -> Path:
    """Write ``config.yaml`` and ``model.safetensors`` into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # An interrupted save never leaves a truncated file under the real name.
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "library": "maskformer"})
    with atomic_path(directory / CONFIG_FILE) as tmp:
        model.config.to_yaml(tmp)
    return directory


def _is_run_folder(path: Path) -> bool:
    return (path / "model" / CONFIG_FILE).exists() or (path / "checkpoints").is_dir()


def _run_weights(run: Path) -> Path:
    """A training run's final ``model/`` folder or, while it has none, its newest checkpoint."""
    if (run / "model" / CONFIG_FILE).exists():
        return run / "model"
    checkpoints = run / "checkpoints"
    candidates = sorted(checkpoints.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(f"{run}: a training run folder with neither model/ nor a checkpoint yet")
    return candidates[-1]


def load_lightning_checkpoint(path: str | Path) -> dict:
    """A Lightning ``.ckpt`` read without running code from it (``weights_only``)."""
    # Lightning stores a few numpy scalars (e.g. monitored scores); admit those data-only types, nothing else.
    import numpy as np

    scalar = importlib.import_module("numpy._core.multiarray").scalar  # numpy 1.26 has this alias too
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return read_torch(path, [scalar, np.dtype, *dtypes], kind="checkpoint")


def _read_lightning_checkpoint(path: Path, config: ModelConfig | None) -> tuple[ModelConfig, Renamed]:
    """A checkpoint of ``maskformer train``: the run config's model section and the model's weights."""
    checkpoint = load_lightning_checkpoint(path)
    try:
        cfg = config or ModelConfig.from_dict(checkpoint["hyper_parameters"]["config"]["model"])
        state = {k[len("model.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a maskformer training checkpoint ({err})") from err
    return cfg, Renamed(state)


def _first_existing(folder: Path, names: list[str]) -> Path:
    for name in names:
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{folder}: none of {names} found")


def _read_preprocessor(folder: Path, config: ModelConfig) -> None:
    """Take normalisation statistics from a transformers preprocessor_config.json when present."""
    file = folder / "preprocessor_config.json"
    if not file.exists():
        return
    data = json.loads(file.read_text())
    mean, std = data.get("image_mean"), data.get("image_std")
    if mean and std and len(mean) == 3 and len(std) == 3:
        scale = 255.0 if max(mean) <= 1.0 else 1.0
        config.pixel_mean = tuple(round(float(v) * scale, 4) for v in mean)
        config.pixel_std = tuple(round(float(v) * scale, 4) for v in std)
