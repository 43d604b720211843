"""Reading images and label maps, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str | Path) -> Tensor:
    """RGB uint8 [3, H, W]; EXIF orientation applied, alpha dropped, grayscale/palette/16-bit converted."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(img, dtype=np.float64)
                peak = array.max() if array.max() > 255 else 255
                img = Image.fromarray((array * (255.0 / peak)).astype(np.uint8))
            array = np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found") from None
    except Exception as err:
        raise ValueError(f"{path}: cannot read image ({err})") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def read_label(path: str | Path) -> Tensor:
    """Single-channel label PNG -> int64 [H, W] (palette PNGs give their indices, not colours)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16", "1"):
                raise ValueError(f"label images must be single-channel, got mode {img.mode}")
            array = np.asarray(img).astype(np.int64)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: label file not found") from None
    except Exception as err:
        raise ValueError(f"{path}: cannot read label map ({err})") from err
    return torch.from_numpy(array)


def read_panoptic_png(path: str | Path) -> Tensor:
    """COCO panoptic PNG (id = R + 256 G + 256^2 B) -> int64 [H, W] segment ids."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB")).astype(np.int64)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: panoptic PNG not found") from None
    except Exception as err:
        raise ValueError(f"{path}: cannot read panoptic PNG ({err})") from err
    return torch.from_numpy(rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2])


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids [H, W] -> COCO panoptic RGB encoding [H, W, 3] uint8."""
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
