"""Overlays of segmentations on images, prediction grids with a class legend, and training curves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .data.metadata import default_colors
from .model.config import MetadataConfig
from .model.inference import InstanceResult


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def image_hwc(image: Tensor | np.ndarray) -> np.ndarray:
    """Tensor [3, H, W] (this package's layout) or numpy [H, W, 3] (PIL's) -> uint8 [H, W, 3]. A numpy
    array is taken as [3, H, W] only when its last axis cannot be channels."""
    channels_first = isinstance(image, Tensor) or image.shape[-1] != 3
    array = _np(image)
    if array.ndim == 3 and array.shape[0] == 3 and channels_first:
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
    mark_void: bool = False,
) -> np.ndarray:
    """Blend class colours over the image; outline regions (segments when given, else classes).
    Pixels of ``ignore_value`` (or negative) stay as in the image, or with ``mark_void`` turn a dim grey
    (:func:`dim_void`), so that no one takes them for a class."""
    img = image_hwc(image)
    cls = _np(classes)
    palette = np.asarray(colors, dtype=np.float32)
    n = len(palette)
    known = (cls >= 0) & (cls < n) & (cls != ignore_value)
    # Every blended value, per class, channel and image value, in a table whose last row (void) keeps the
    # image's value: each pixel is looked up rather than computed, and no pixel is gathered by a mask (a
    # 4032 x 3024 photo took a second the other way).
    table = np.empty((n + 1, 3, 256), dtype=np.uint8)
    blended = (1 - alpha) * np.arange(256, dtype=np.float32) + alpha * palette[:, :, None]
    table[:n] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    table[n] = np.arange(256, dtype=np.uint8)
    row = np.where(known, cls, n).astype(np.int32) * np.int32(3 * 256)  # int32: half of int64's memory traffic
    out = np.empty_like(img)
    for c in range(3):
        out[..., c] = table.ravel().take(row + (c * 256 + img[..., c]))
    if mark_void:
        out = dim_void(out, ~known)
    edges = boundaries(_np(segments) if segments is not None else cls)
    out[edges] = 255
    return out


def panoptic_classes(segmentation: Tensor | np.ndarray, segments: Sequence[dict], void: int = -1) -> np.ndarray:
    """Segment-id map + records -> class-index map (``void`` where no segment)."""
    seg = _np(segmentation).astype(np.int64)
    out = np.full(seg.shape, void, dtype=np.int64)
    for s in segments:
        out[seg == s["id"]] = s["category_id"]
    return out


def instance_classes(result: InstanceResult, score_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Instances scoring at least ``score_threshold`` painted in rising score order (the best on top) ->
    class-index map (-1 elsewhere) and instance-id map (1-based, 0 elsewhere), both [H, W]."""
    masks = _np(result.masks).astype(bool)
    classes = np.full(masks.shape[-2:], -1, dtype=np.int64)
    ids = np.zeros(masks.shape[-2:], dtype=np.int64)
    order = np.argsort(_np(result.scores), kind="stable")
    for k in order:
        if float(result.scores[k]) >= score_threshold:
            classes[masks[k]] = int(result.labels[k])
            ids[masks[k]] = int(k) + 1
    return classes, ids


# Pixels no segment claims (and ground-truth void) are drawn in a dim grey (dim_void), so that they do not show
# the image's own colours, which would read as a prediction; this is their swatch in the legends.
VOID_COLOR = (64, 64, 64)


@dataclass
class Label:
    """Text drawn at pixel (``x``, ``y``) of a panel, e.g. a segment's class name and score."""

    x: int
    y: int
    text: str


@dataclass
class GridRow:
    """One row of :func:`prediction_grid`: the ``image`` [3, H, W] (or [H, W, 3]), the ground truth's and the
    prediction's class maps [H, W] (negative or the ignore value: void), optionally the prediction's segment
    ids [H, W] (outlined) and ``labels`` drawn on the prediction."""

    image: Tensor | np.ndarray
    truth: Tensor | np.ndarray
    prediction: Tensor | np.ndarray
    segments: Tensor | np.ndarray | None = None
    labels: Sequence[Label] = ()


def segment_labels(segmentation: Tensor | np.ndarray, segments: Sequence, things_only: bool = True) -> list[Label]:
    """A :class:`Label` "name score" near the centre of each segment of a panoptic result (records with
    ``id``, ``name``, ``score`` and ``isthing``, as :class:`maskformer.predict.Segment`)."""
    wanted = [s for s in segments if s.isthing or not things_only]
    points = _label_points(_np(segmentation).astype(np.int64), [s.id for s in wanted])
    return [Label(*points[s.id], f"{s.name} {s.score:.2f}") for s in wanted if s.id in points]


def prediction_grid(
    rows: Sequence[GridRow],
    metadata: MetadataConfig,
    path: str | Path,
    titles: Sequence[str] = ("image", "ground truth", "prediction"),
    ignore_value: int = 255,
) -> Path:
    """Save a grid: per row the image, the ground truth and the prediction drawn as class colours over it
    (void in a dim grey), with the rows' labels and a legend of the classes that appear."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patheffects as effects
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colors = metadata.colors
    names = metadata.class_names
    n = len(rows)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n + 0.8), squeeze=False)
    present: set[int] = set()
    void = False
    for r, row in enumerate(rows):
        truth, pred = _np(row.truth).astype(np.int64), _np(row.prediction).astype(np.int64)
        present |= {int(v) for v in np.unique(truth) if 0 <= v < len(names) and v != ignore_value}
        present |= {int(v) for v in np.unique(pred) if 0 <= v < len(names) and v != ignore_value}
        void |= bool(((truth < 0) | (truth == ignore_value)).any() or ((pred < 0) | (pred == ignore_value)).any())
        # Strong colours: on busy images a light tint is hard to tell from the image's own colours.
        panels = [
            image_hwc(row.image),
            overlay(row.image, truth, colors, alpha=0.8, ignore_value=ignore_value, mark_void=True),
            overlay(row.image, pred, colors, segments=row.segments, alpha=0.8, ignore_value=ignore_value,
                    mark_void=True),
        ]  # fmt: skip
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c])
        for label in row.labels:
            axes[r][2].text(label.x, label.y, label.text, fontsize=7, color="white", ha="center", va="center",
                            path_effects=[effects.withStroke(linewidth=2, foreground="black")])  # fmt: skip
    handles = [Patch(color=np.asarray(colors[i]) / 255, label=names[i]) for i in sorted(present)]
    if void:
        handles.append(Patch(color=np.asarray(VOID_COLOR) / 255, label="void (no segment)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(7, max(1, len(handles))), frameon=False)
    fig.tight_layout(rect=(0, 0.8 / (3 * n + 0.8), 1, 1))
    return _save(fig, path)


def confusion_plot(counts: np.ndarray, rows: Sequence[str], columns: Sequence[str], path: str | Path,
                   title: str) -> Path:  # fmt: skip
    """Save a confusion matrix: ``counts`` [len(rows), len(columns)], each cell's count written in it and
    coloured by its share of its row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(counts)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 2, 0.7 * len(rows) + 1.8))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(rows)):
        for j in range(len(columns)):
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center",
                    color="white" if shares[i, j] > 0.6 else "black")  # fmt: skip
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [f"{name} ({int(n)})" for name, n in zip(rows, counts.sum(1))])
    ax.set_xlabel("predicted as")
    ax.set_ylabel("ground truth (count)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    """Write a matplotlib figure to ``path`` (folders created) and free it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curves(
    history: Sequence[dict], path: str | Path, metrics: Sequence[str] = ("mIoU", "PQ", "PQ_th", "AP")
) -> Path:
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
    return _save(fig, path)


def to_tensor_image(array: np.ndarray) -> Tensor:
    """uint8 [H, W, 3] -> [3, H, W] (for TensorBoard)."""
    return torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1)


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _label_points(ids: np.ndarray, wanted: Sequence[int]) -> dict[int, tuple[int, int]]:
    """For each id, a pixel of that region near its centroid, found on a copy at most 512 pixels a side
    (cheap on 6000x4000 images); ids too small to survive the subsampling get no label."""
    step = max(1, -(-max(ids.shape) // 512))
    small = ids[::step, ::step]
    points = {}
    for i in wanted:
        ys, xs = np.nonzero(small == i)
        if len(ys) == 0:
            continue
        k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
        points[i] = (int(xs[k]) * step, int(ys[k]) * step)
    return points


# 1000 x the Rec. 601 luma of each channel value, and the dim grey (40 + 0.3 x luma, rounded) of each sum:
# dim_void looks both up.
_LUMA_1000 = np.array([299, 587, 114], dtype=np.int32)[:, None] * np.arange(256, dtype=np.int32)
_DIM_GREY = ((400_000 + 3 * np.arange(255_001) + 5_000) // 10_000).astype(np.uint8)


def dim_void(image: np.ndarray, void: np.ndarray) -> np.ndarray:
    """``image`` with the ``void`` pixels in a dim grey of their own brightness: still readable as the
    photo, but no class colour (the blended colours are saturated; these are neutral and dark). Table
    look-ups on whole rows, no pixel gathered by the mask (a 4032 x 3024 photo in a tenth of a second)."""
    luma = _LUMA_1000[0].take(image[..., 0]) + _LUMA_1000[1].take(image[..., 1]) + _LUMA_1000[2].take(image[..., 2])
    grey = _DIM_GREY.take(luma)
    out = image.copy()
    for c in range(3):
        np.copyto(out[..., c], grey, where=void)
    return out


def place_labels(
    points: Sequence[tuple[int, int]], sizes: Sequence[tuple[int, int]], bounds: tuple[int, int]
) -> list[tuple[int, int] | None]:
    """Centres for labels of ``sizes`` (width, height) near ``points``, in order (the first are placed
    first): each at its point or moved up or down by whole label heights, inside ``bounds`` (width, height)
    and clear of the labels placed before it; None where no such place is found (the legend still names
    the class)."""
    placed: list[tuple[float, float, float, float]] = []
    out: list[tuple[int, int] | None] = []
    for (x, y), (w, h) in zip(points, sizes):
        found = None
        for shift in (0, 1, -1, 2, -2, 3, -3):
            cx = min(max(x, w / 2), bounds[0] - w / 2)
            cy = min(max(y + shift * h, h / 2), bounds[1] - h / 2)
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in placed):
                found = (round(cx), round(cy))
                placed.append(box)
                break
        out.append(found)
    return out


def draw_segmentation(
    image: Tensor | np.ndarray,
    classes: np.ndarray,
    ids: np.ndarray,
    segments: dict,
    metadata: MetadataConfig,
    alpha: float = 0.5,
    min_side: int = 384,
):
    """A PIL image: class colours blended over ``image``, pixels of no segment in a dim grey
    (:func:`dim_void`), white segment boundaries, each segment's class name (and score when below 1) near
    its centre without overlapping another (largest segments first), and below the image a legend of the
    classes shown (and of void, where there is any), its text scaled with the image. Images with a side
    under ``min_side`` are enlarged by a whole factor first.

    ``classes`` [H, W] class index per pixel (negative = none), ``ids`` [H, W] segment ids, ``segments`` maps
    an id to a record with ``class_id``, ``name``, ``score`` and ``area``.
    """
    from PIL import Image, ImageDraw

    # Small images are enlarged (nearest) so that names and outlines stay legible.
    factor = -(-min_side // min(classes.shape)) if min(classes.shape) < min_side else 1
    if factor > 1:
        image = image_hwc(image).repeat(factor, 0).repeat(factor, 1)
        classes = classes.repeat(factor, 0).repeat(factor, 1)
        ids = ids.repeat(factor, 0).repeat(factor, 1)
    colors = metadata.colors or default_colors(int(classes.max(initial=0)) + 1)
    if int(classes.max(initial=-1)) >= len(colors):
        colors = list(colors) + default_colors(int(classes.max()) + 1)[len(colors) :]
    void = classes < 0
    drawn = Image.fromarray(overlay(image, classes, colors, segments=ids, alpha=alpha, ignore_value=-1, mark_void=True))
    h, w = classes.shape
    font_size = max(12, min(h, w) // 30)
    font = _font(font_size)
    draw = ImageDraw.Draw(drawn)
    points = _label_points(ids, list(segments))
    if min(h, w) >= 32:
        order = sorted(points, key=lambda sid: -segments[sid].area)
        texts = [segments[sid].name if segments[sid].score >= 1.0 else f"{segments[sid].name} {segments[sid].score:.2f}"
                 for sid in order]  # fmt: skip
        boxes = [draw.textbbox((0, 0), text, font=font, anchor="mm", stroke_width=2) for text in texts]
        gap = font_size // 3  # between neighbouring labels
        sizes = [(b[2] - b[0] + gap, b[3] - b[1] + gap) for b in boxes]
        for text, place in zip(texts, place_labels([points[sid] for sid in order], sizes, (w, h))):
            if place is not None:
                draw.text(place, text, fill=(255, 255, 255), font=font, anchor="mm", stroke_width=2,
                          stroke_fill=(0, 0, 0))  # fmt: skip
    # The legend lists the classes of the segments that are visible (not wholly covered by others).
    shown = [(tuple(int(v) for v in colors[c]), _class_name(metadata, c))
             for c in sorted({segments[sid].class_id for sid in points})]  # fmt: skip
    if void.any():
        shown.append((VOID_COLOR, "void (no segment)"))
    if not shown:
        return drawn
    # Legend text in proportion to the image (14 px at 512 px a side and below).
    scale = max(1.0, min(h, w) / 512)
    legend_font = _font(round(14 * scale))
    row_h, item_w, swatch = round(20 * scale), round(170 * scale), round(14 * scale)
    width = max(w, item_w)
    per_row = max(1, width // item_w)
    rows = -(-len(shown) // per_row)
    canvas = Image.new("RGB", (width, h + rows * row_h + round(6 * scale)), (255, 255, 255))
    canvas.paste(drawn, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, (color, name) in enumerate(shown):
        x, y = (k % per_row) * item_w + round(4 * scale), h + round(4 * scale) + (k // per_row) * row_h
        pad = round(2 * scale)
        draw.rectangle((x, y + pad, x + swatch, y + pad + swatch), fill=color, outline=(0, 0, 0))
        draw.text((x + swatch + round(6 * scale), y + pad // 2), name[:22], fill=(0, 0, 0), font=legend_font)
    return canvas


def image_grid(images: Sequence, columns: int, path: str | Path, cell_width: int = 480) -> Path:
    """PIL ``images`` scaled to ``cell_width`` pixels wide, in rows of ``columns`` on white, saved as a PNG."""
    from PIL import Image

    cells = [im.resize((cell_width, max(1, round(im.height * cell_width / im.width)))) for im in images]
    rows = [cells[i : i + columns] for i in range(0, len(cells), columns)]
    heights = [max(c.height for c in row) for row in rows]
    gap = 8
    grid = Image.new("RGB", (columns * (cell_width + gap) - gap, sum(heights) + gap * (len(rows) - 1)), "white")
    y = 0
    for row, height in zip(rows, heights):
        for k, cell in enumerate(row):
            grid.paste(cell, (k * (cell_width + gap), y))
        y += height + gap
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def _class_name(metadata: MetadataConfig, c: int) -> str:
    return metadata.class_names[c] if c < len(metadata.class_names) else f"class {c}"
