"""Typed prediction results: what a user gets back from :class:`~maskformer.predict.Predictor`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..model.config import MetadataConfig
from ..visualize import draw_segmentation
from .inputs import ImageInput, load_inputs


@dataclass
class Segment:
    """One panoptic segment or instance: ``id`` its value in the segment map, ``class_id`` the contiguous
    class index, ``name`` the class name, ``score`` the class probability (1.0 for semantic regions),
    ``area`` its pixel count."""

    id: int
    class_id: int
    name: str
    score: float
    area: int
    isthing: bool


def class_name(meta: MetadataConfig, class_id: int) -> str:
    names = meta.class_names
    return names[class_id] if 0 <= class_id < len(names) else f"class {class_id}"


def is_thing(meta: MetadataConfig, class_id: int) -> bool:
    """Unknown thing/stuff metadata (None) means every class is a thing, as in panoptic inference."""
    return meta.thing_classes is None or class_id in meta.thing_classes


@dataclass
class _Result:
    name: str
    image_size: tuple[int, int]
    metadata: MetadataConfig
    path: Path | None = field(default=None, kw_only=True)

    def class_name(self, class_id: int) -> str:
        return class_name(self.metadata, class_id)

    def _image(self, image: ImageInput | None) -> Tensor:
        """What the predictor accepts (a path, PIL image, array or tensor of any channel layout), or None
        for the file the result came from -> RGB uint8 [3, H, W] of the result's size."""
        if image is None:
            if self.path is None:
                raise ValueError(f"{self.name}: the result came from no file; pass the image to draw on")
            image = self.path
        loaded = load_inputs(image)
        if len(loaded) != 1:
            raise ValueError(f"draw takes one image, got {len(loaded)}")
        found = tuple(loaded[0].image.shape[-2:])
        if found != tuple(self.image_size):
            raise ValueError(f"{self.name}: the image is {found[0]}x{found[1]}, the result {self.image_size[0]}x"
                             f"{self.image_size[1]}; draw on the image the result came from")  # fmt: skip
        return loaded[0].image


@dataclass
class SemanticResult(_Result):
    """``label_map`` [H, W] int64 class indices at the input image's size."""

    label_map: Tensor

    @property
    def segments(self) -> list[Segment]:
        """One region per class present (id = class index + 1)."""
        counts = torch.bincount(self.label_map.flatten(), minlength=len(self.metadata.class_names)).tolist()
        meta = self.metadata
        return [Segment(c + 1, c, class_name(meta, c), 1.0, n, is_thing(meta, c)) for c, n in enumerate(counts) if n]

    def draw(self, image: ImageInput | None = None, alpha: float = 0.5) -> Image.Image:
        """Overlay with class names and a legend on ``image``: anything the predictor accepts (path, PIL
        image, array or tensor, grayscale and RGBA included); None draws on the file the result came from."""
        labels = self.label_map.cpu().numpy()
        return draw_segmentation(
            self._image(image), labels, labels, {s.class_id: s for s in self.segments}, self.metadata, alpha
        )


@dataclass
class PanopticResult(_Result):
    """``segmentation`` [H, W] int32 segment ids (0 = void) and the ``segments_info`` list."""

    segmentation: Tensor
    segments_info: list[Segment]

    def class_map(self, void: int = -1) -> np.ndarray:
        """[H, W] class index per pixel, ``void`` where no segment."""
        lut = np.full(int(self.segmentation.max()) + 1 if self.segmentation.numel() else 1, void, dtype=np.int64)
        for s in self.segments_info:
            lut[s.id] = s.class_id
        return lut[self.segmentation.cpu().numpy().astype(np.int64)]

    def draw(self, image: ImageInput | None = None, alpha: float = 0.5) -> Image.Image:
        """As :meth:`SemanticResult.draw`, with segment outlines and scores."""
        segs = self.segmentation.cpu().numpy()
        return draw_segmentation(
            self._image(image), self.class_map(), segs, {s.id: s for s in self.segments_info}, self.metadata, alpha
        )


@dataclass
class InstanceResult(_Result):
    """``masks`` [M, H, W] bool, ``class_ids`` [M], ``scores`` [M], sorted by score."""

    masks: Tensor
    class_ids: Tensor
    scores: Tensor

    @property
    def instances(self) -> list[Segment]:
        # One count per mask: a sum over [M, H*W] bools converts every pixel to int64 (40x slower at 24 MP).
        areas = [int(mask.count_nonzero()) for mask in self.masks]
        return [
            Segment(i + 1, int(c), self.class_name(int(c)), float(s), int(a), is_thing(self.metadata, int(c)))
            for i, (c, s, a) in enumerate(zip(self.class_ids.tolist(), self.scores.tolist(), areas))
        ]

    def draw(self, image: ImageInput | None = None, alpha: float = 0.5, score_threshold: float = 0.5) -> Image.Image:
        """As :meth:`SemanticResult.draw`: instances scoring at least ``score_threshold``, higher scores on top."""
        image = self._image(image)
        h, w = self.image_size
        ids = np.zeros((h, w), dtype=np.int64)
        classes = np.full((h, w), -1, dtype=np.int64)
        kept = {}
        for inst, mask in reversed(list(zip(self.instances, self.masks.cpu().numpy()))):
            if inst.score >= score_threshold:
                ids[mask] = inst.id
                classes[mask] = inst.class_id
                kept[inst.id] = inst
        return draw_segmentation(image, classes, ids, kept, self.metadata, alpha)


Result = SemanticResult | PanopticResult | InstanceResult
