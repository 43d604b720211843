"""Reading images and label maps, with errors that name the file."""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from ..model.atomic import atomic_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Decoding is refused above this many pixels (a decompression bomb is a few KB that decodes to many GB).
DEFAULT_MAX_PIXELS = 150_000_000


def max_image_pixels() -> int:
    """The pixel-count limit: ``MASKFORMER_MAX_IMAGE_PIXELS`` if set, else 150 million."""
    value = os.environ.get("MASKFORMER_MAX_IMAGE_PIXELS", "")
    return int(value) if value.strip() else DEFAULT_MAX_PIXELS


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than :func:`max_image_pixels` allows."""


@contextmanager
def open_image(source: Path | BinaryIO) -> Iterator[Image.Image]:
    """``Image.open`` of a file or file object with the pixel-count limit checked on the header, before
    anything is decoded (raises :class:`ImageTooLarge`)."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        # The limit below replaces Pillow's own (which a user could not raise through ours).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        Image.MAX_IMAGE_PIXELS = None
        try:
            img = Image.open(source)
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit
    with img:
        limit = max_image_pixels()
        if img.width * img.height > limit:
            raise ImageTooLarge(
                f"image of {img.width}x{img.height} = {img.width * img.height:,} pixels exceeds the limit of "
                f"{limit:,} (a decompression bomb?); set MASKFORMER_MAX_IMAGE_PIXELS to allow it"
            )
        yield img


def read_image(path: str | Path) -> Tensor:
    """RGB uint8 [3, H, W] (see :func:`pil_to_tensor`)."""
    path = Path(path)
    try:
        with open_image(path) as img:
            return pil_to_tensor(img)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found") from None
    except ImageTooLarge as err:
        raise ImageTooLarge(f"{path}: {err}") from None
    except Exception as err:
        raise ValueError(f"{path}: cannot read image ({_reason(err)})") from err


def decode_image(data: bytes, name: str) -> Tensor:
    """The bytes of an image file (any format Pillow reads) -> RGB uint8 [3, H, W] as :func:`read_image`
    gives; errors name ``name``: empty data, not an image, truncated, or over the pixel limit
    (:class:`ImageTooLarge`)."""
    if not data:
        raise ValueError(f"{name}: empty (0 bytes), expected an image file")
    try:
        with open_image(io.BytesIO(data)) as img:
            return pil_to_tensor(img)
    except ImageTooLarge as err:
        raise ImageTooLarge(f"{name}: {err}") from None
    except Exception as err:
        raise ValueError(f"{name}: cannot read image ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    """Why Pillow could not read an image, without the file object's repr Pillow puts in its message."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image, or in a format Pillow does not read"
    return str(err) or type(err).__name__


def pil_to_tensor(img: Image.Image) -> Tensor:
    """Any PIL mode -> RGB uint8 [3, H, W]: EXIF rotation applied, alpha dropped, 16/32-bit rescaled."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return array_to_tensor(np.asarray(img))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
    return torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)


def array_to_tensor(array: np.ndarray | Tensor) -> Tensor:
    """Numpy [H, W] or [H, W, C], tensors [H, W] or [C, H, W], C in 1/3/4, of bool, integer or float values
    -> RGB uint8 [3, H, W]. Floats in [0, 1] are scaled by 255; integers by their bit depth (16-bit values
    divided by 257, see :func:`_integer_scale`), so a 16-bit copy of an 8-bit image gives the same pixels."""
    if isinstance(array, Tensor):
        t = array.detach().cpu()
        if t.dtype == torch.uint8 and t.shape[0] == 3 and t.ndim == 3:
            # Already RGB uint8 [3, H, W]: a copy in its own layout (through numpy's [H, W, C] a photo's pixels
            # were transposed twice: 74 against 10 ms at 12 MP).
            return t.clone()
        t = t.float() if t.dtype in (torch.bfloat16, torch.float16) else t
        if t.ndim == 3 and t.shape[0] in (1, 3, 4):
            t = t.permute(1, 2, 0)
        array = t.numpy()
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        kind = "[H, W] or [C, H, W] tensor" if isinstance(array, Tensor) else "[H, W] or [H, W, C] array"
        raise ValueError(f"expected an image as a {kind} with C in 1, 3, 4; got shape {tuple(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"image has an empty side: {a.shape}")
    a = a[..., :3] if a.shape[-1] == 4 else a
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.dtype == np.uint8:
        out = a
    elif a.dtype == np.bool_:
        out = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float64))
        scale = 255.0 if a.max(initial=0.0) <= 1.0 else 1.0
        out = np.clip(a * scale, 0, 255).round().astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        out = np.clip(a.astype(np.float64) / _integer_scale(a), 0, 255).round().astype(np.uint8)
    else:
        raise ValueError(f"unsupported image dtype {a.dtype}")
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)


def _integer_scale(a: np.ndarray) -> float:
    """What divides integer pixel values into 0-255, by bit depth as readers of 16-bit photos scale (not by
    the image's own peak, which would brighten a dim image and make a 16-bit copy of an 8-bit image differ):
    16-bit types by 257 (65535 -> 255); wider types by their values' depth (8, 16 or 32 bits)."""
    if a.dtype.itemsize == 2:
        return 257.0
    peak = int(a.max(initial=0))
    return 1.0 if peak <= 255 else 257.0 if peak <= 65535 else 16843009.0  # (2^32 - 1) / 255


def read_label(path: str | Path) -> Tensor:
    """Single-channel label PNG -> int64 [H, W] (palette PNGs give their indices, not colours)."""
    path = Path(path)
    try:
        with open_image(path) as img:
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
        with open_image(path) as img:
            rgb = np.asarray(img.convert("RGB")).astype(np.int64)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: panoptic PNG not found") from None
    except Exception as err:
        raise ValueError(f"{path}: cannot read panoptic PNG ({err})") from err
    return torch.from_numpy(rgb_to_id(rgb))


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic RGB encoding [H, W, 3] -> segment ids [H, W] int64 (id = R + 256 G + 256^2 B)."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def encode_png(array: np.ndarray) -> bytes:
    """A uint8 [H, W] / [H, W, 3] or uint16 [H, W] array as PNG bytes; every PNG this package writes goes
    through here, so that files and HTTP answers hold the same bytes."""
    buffer = io.BytesIO()
    # Level 1: a 6000x4000 label map or overlay compresses in well under a second, at a modest size cost.
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def write_png(array: np.ndarray, path: str | Path) -> None:
    """``encode_png`` written atomically: an interrupted run never leaves a truncated PNG."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(encode_png(array))


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids [H, W] -> COCO panoptic RGB encoding [H, W, 3] uint8: (id % 256, id // 256 % 256,
    id // 65536 % 256), which are the id's three low bytes in two's complement. They are read from its
    little-endian bytes rather than computed: 0.2-0.4 s for a 6000 x 4000 map against 3.4 s."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu" or ids.dtype.itemsize < 4:
        ids = ids.astype(np.int64)  # three bytes needed; floats truncated, as astype does
    wide = np.ascontiguousarray(ids, dtype=ids.dtype.newbyteorder("<"))
    return np.ascontiguousarray(wide.view(np.uint8).reshape(*wide.shape, wide.itemsize)[..., :3])


def encode_rle(mask: np.ndarray) -> dict:
    """A binary mask [H, W] in COCO's compressed RLE ({"size": [H, W], "counts": str}), JSON-ready."""
    from pycocotools import mask as mask_utils

    # pycocotools reads column-major masks; torch transposes a large mask 2-3x faster than NumPy's copy.
    column_major = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8)).t().contiguous().numpy().T
    rle = mask_utils.encode(column_major)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_segmentation(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons [[x1, y1, x2, y2, ...], ...], uncompressed RLE with a list of
    ``counts`` or compressed RLE with a string) -> binary mask uint8 [H, W]. Raises ValueError saying
    what is wrong with it."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        polygons = [list(map(float, poly)) for poly in segmentation]
        if not polygons or any(len(poly) < 6 or len(poly) % 2 for poly in polygons):
            raise ValueError("a polygon needs an even number of coordinates, at least 3 points")
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if [int(v) for v in segmentation["size"]] != [height, width]:
            raise ValueError(f"RLE size {segmentation['size']} differs from the image's [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if sum(counts) != height * width:
                raise ValueError(f"RLE counts add up to {sum(counts)} pixels, the image has {height * width}")
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    else:
        raise ValueError("segmentation is neither a list of polygons nor an RLE dict with size and counts")
    return mask_utils.decode(rle)


def mask_box(mask: np.ndarray) -> list[int]:
    """COCO box [x, y, width, height] around a binary mask [H, W]; zeros for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))  # not every pixel's coordinates
    if len(rows) == 0:
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def write_json(data: object, path: str | Path) -> None:
    """``data`` as a JSON file, written atomically (parent folders made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data))


def coco_panoptic_json(images: list[dict], annotations: list[dict], categories: list[dict]) -> dict:
    """A COCO panoptic JSON: ``images`` (id, file_name, width, height), one annotation per image
    (image_id, file_name of its PNG, segments_info) and the ``categories``."""
    return {"images": images, "annotations": annotations, "categories": categories}
