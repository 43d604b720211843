"""Turning whatever the user holds (paths, folders, globs, PIL images, arrays, tensors) into RGB uint8 tensors."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from ..data.io import IMAGE_SUFFIXES, array_to_tensor, pil_to_tensor, read_image

ImageInput = str | Path | Image.Image | np.ndarray | Tensor


@dataclass
class LoadedImage:
    """``image`` RGB uint8 [3, H, W] (EXIF orientation applied); ``name`` a file stem or ``image_<i>``;
    ``path`` the file it came from, if any."""

    image: Tensor
    name: str
    path: Path | None = None


def expand_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """Files, folders (searched recursively for images) and glob patterns -> sorted, de-duplicated files."""
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(text):
            matches = sorted(
                Path(p)
                for p in glob.glob(text, recursive=True)
                if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES
            )
            if not matches:
                raise FileNotFoundError(f"{text}: the pattern matches no image files")
            found.extend(matches)
        else:
            raise FileNotFoundError(f"{text}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise FileNotFoundError(f"no images found in {', '.join(map(str, inputs))}")
    return unique


def load_inputs(inputs: ImageInput | Iterable[ImageInput]) -> list[LoadedImage]:
    """One input or a list of them -> RGB uint8 images with names. Strings and paths may be files, folders
    or glob patterns."""
    if isinstance(inputs, (str, Path, Image.Image, np.ndarray, Tensor)):
        inputs = [inputs]
    loaded: list[LoadedImage] = []
    for index, item in enumerate(inputs):
        loaded.extend(_load_one(item, index))
    if not loaded:
        raise ValueError("no input images")
    return loaded


def _load_one(item: Any, index: int) -> list[LoadedImage]:
    if isinstance(item, (str, Path)):
        return [LoadedImage(read_image(p), p.stem, p) for p in expand_paths([item])]
    if isinstance(item, Image.Image):
        return [LoadedImage(pil_to_tensor(item), f"image_{index}")]
    if isinstance(item, (np.ndarray, Tensor)):
        return [LoadedImage(array_to_tensor(item), f"image_{index}")]
    raise TypeError(f"input {index}: expected a path, PIL image, numpy array or tensor, got {type(item).__name__}")
