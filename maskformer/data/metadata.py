"""Dataset metadata: class names, thing/stuff, colours. Built-in for ADE20K-150, COCO panoptic and
Cityscapes; custom datasets bring a class file (one name per line, or JSON in the built-in schema)."""

from __future__ import annotations

import colorsys
import json
from functools import cache
from pathlib import Path

from ..model.config import MetadataConfig

BUILTIN_DIR = Path(__file__).parent / "metadata"
BUILTIN = (
    "ade20k_150",
    "coco_panoptic_133",
    "cityscapes_19",
    "mapillary_vistas_65",
    "coco_stuff_171",
    "ade20k_full_847",
)


@cache
def _builtin_json(name: str) -> dict:
    if name not in BUILTIN:
        raise KeyError(f"unknown built-in dataset {name!r}; known: {', '.join(BUILTIN)}")
    return json.loads((BUILTIN_DIR / f"{name}.json").read_text())


def builtin_metadata(name: str) -> MetadataConfig:
    """Metadata of a built-in dataset ("ade20k_150", "coco_panoptic_133", "cityscapes_19")."""
    return metadata_from_json(_builtin_json(name), name)


def category_ids(name: str) -> list[int]:
    """The dataset's own category ids, by contiguous index (e.g. COCO's 1..200 with gaps)."""
    return [c["id"] for c in _builtin_json(name)["classes"]]


def cityscapes_label_id_to_train_id() -> dict[int, int]:
    return {int(k): v for k, v in _builtin_json("cityscapes_19")["label_id_to_train_id"].items()}


def metadata_from_json(data: dict, source: str) -> MetadataConfig:
    classes = data.get("classes")
    if not isinstance(classes, list) or not classes:
        raise ValueError(f"{source}: expected a non-empty 'classes' list")
    try:
        names = [str(c["name"]) for c in classes]
        things = [i for i, c in enumerate(classes) if c.get("isthing", False)]
        colors = [tuple(int(v) for v in c["color"]) for c in classes] if all("color" in c for c in classes) else []
        ids = [int(c["id"]) for c in classes] if all("id" in c for c in classes) else []
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{source}: malformed class entry ({err})") from err
    return MetadataConfig(
        dataset=str(data.get("dataset", "")),
        class_names=names,
        thing_classes=things,
        colors=colors or default_colors(len(names)),
        category_ids=ids if len(set(ids)) == len(ids) else [],
    )


def _read_class_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with a 'classes' list")
    return data


def class_file_ignore_value(path: str | Path) -> int | None:
    """The ``"ignore_value"`` a JSON class file names (``data prepare`` writes it), None when it names none."""
    path = Path(path)
    if path.suffix.lower() != ".json" or not path.exists():
        return None
    value = _read_class_json(path).get("ignore_value")
    if value is not None and (not isinstance(value, int) or not 0 <= value <= 65535):
        raise ValueError(f"{path}: ignore_value must be an integer 0-65535, got {value!r}")
    return value


def load_class_file(path: str | Path) -> MetadataConfig:
    """A class list: ``.json`` in the built-in schema, or text with one class name per line (``#`` comments
    and blank lines skipped; a trailing ``:thing`` or ``:stuff`` marks the kind)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: class file not found")
    if path.suffix.lower() == ".json":
        return metadata_from_json(_read_class_json(path), str(path))
    names, things, marked = [], [], False
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, kind = line.rpartition(":") if line.endswith((":thing", ":stuff")) else (line, "", "")
        marked |= bool(kind)
        if kind == "thing":
            things.append(len(names))
        names.append(name.strip())
    if not names:
        raise ValueError(f"{path}: no class names found")
    return MetadataConfig(
        dataset=path.stem,
        class_names=names,
        thing_classes=things if marked else None,
        colors=default_colors(len(names)),
    )


def default_colors(n: int) -> list[tuple[int, int, int]]:
    """n distinct, deterministic colours (golden-ratio hue steps)."""
    colors = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65 + 0.35 * (i % 2), 0.95 - 0.25 * (i // 2 % 2))
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors
