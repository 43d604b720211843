"""Overlays of segmentations on images, prediction grids with a class legend, and training curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .model.config import MetadataConfig


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def image_hwc(image: Tensor | np.ndarray) -> np.ndarray:
    """[3, H, W] or [H, W, 3] -> uint8 [H, W, 3]."""
    array = _np(image)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    return np.clip(array, 0, 255).astype(np.uint8)


def boundaries(ids: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour belongs to another region."""
    edge = np.zeros(ids.shape, dtype=bool)
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    edge[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return edge


def overlay(
    image: Tensor | np.ndarray,
    classes: Tensor | np.ndarray,
    colors: Sequence[Sequence[int]],
    segments: Tensor | np.ndarray | None = None,
    alpha: float = 0.55,
    ignore_value: int = 255,
) -> np.ndarray:
    """Blend class colours over the image; outline regions (segments when given, else classes).
    Pixels of ``ignore_value`` (or negative) stay as in the image."""
    img = image_hwc(image).astype(np.float64)
    cls = _np(classes).astype(np.int64)
    palette = np.asarray(colors, dtype=np.float64)
    known = (cls >= 0) & (cls < len(palette)) & (cls != ignore_value)
    out = img.copy()
    out[known] = (1 - alpha) * img[known] + alpha * palette[cls[known]]
    edges = boundaries(_np(segments) if segments is not None else cls)
    out[edges] = 255
    return out.astype(np.uint8)


def panoptic_classes(segmentation: Tensor | np.ndarray, segments: Sequence[dict], void: int = -1) -> np.ndarray:
    """Segment-id map + records -> class-index map (``void`` where no segment)."""
    seg = _np(segmentation).astype(np.int64)
    out = np.full(seg.shape, void, dtype=np.int64)
    for s in segments:
        out[seg == s["id"]] = s["category_id"]
    return out


def prediction_grid(
    rows: Sequence[tuple],
    metadata: MetadataConfig,
    path: str | Path,
    titles: Sequence[str] = ("image", "ground truth", "prediction"),
    ignore_value: int = 255,
) -> Path:
    """Save a grid: per row an image and class maps (``(image, gt_classes, pred_classes[, pred_segments])``)
    drawn as overlays, with a legend of the classes that appear."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colors = metadata.colors
    names = metadata.class_names
    n = len(rows)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n + 0.8), squeeze=False)
    present: set[int] = set()
    for r, row in enumerate(rows):
        image, gt, pred = row[:3]
        pred_segments = row[3] if len(row) > 3 else None
        present |= {int(v) for v in np.unique(_np(gt)) if 0 <= v < len(names)}
        present |= {int(v) for v in np.unique(_np(pred)) if 0 <= v < len(names)}
        # Strong colours: on busy images a light tint is hard to tell from the image's own colours.
        panels = [
            image_hwc(image),
            overlay(image, gt, colors, alpha=0.8, ignore_value=ignore_value),
            overlay(image, pred, colors, segments=pred_segments, alpha=0.8, ignore_value=ignore_value),
        ]
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c])
    handles = [Patch(color=np.asarray(colors[i]) / 255, label=names[i]) for i in sorted(present)]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, max(1, len(handles))), frameon=False)
    fig.tight_layout(rect=(0, 0.8 / (3 * n + 0.8), 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curves(history: Sequence[dict], path: str | Path, metrics: Sequence[str] = ("mIoU", "PQ")) -> Path:
    """Plot training loss and validation metrics from ``history`` records ({"step", "loss"} / {"step", metric})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    if losses:
        steps, values = zip(*losses)
        left.plot(steps, values, lw=1, color="tab:blue", alpha=0.4, label="per step")
        if len(values) >= 10:
            k = max(5, len(values) // 30)
            smooth = np.convolve(values, np.ones(k) / k, mode="valid")
            left.plot(steps[k - 1 :], smooth, lw=2, color="tab:blue", label=f"mean of {k}")
        left.set_yscale("log")
    left.set_xlabel("step")
    left.set_title("training loss")
    left.legend()
    for metric in metrics:
        points = [(h["step"], h[metric]) for h in history if metric in h]
        if points:
            steps, values = zip(*points)
            right.plot(steps, values, marker="o", label=metric)
    right.set_ylim(0, 1)
    right.set_xlabel("step")
    right.set_title("validation")
    right.legend()
    right.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def to_tensor_image(array: np.ndarray) -> Tensor:
    """uint8 [H, W, 3] -> [3, H, W] (for TensorBoard)."""
    return torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1)
