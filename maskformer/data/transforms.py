"""Joint image + label-map augmentation on torchvision transforms v2 (paper section 4 recipes).

Transforms act on a sample dict (``image`` uint8 [3, H, W], ``label`` int64 [H, W] and, for instance data,
``masks`` uint8 [N, H, W]) and draw every random number from an explicit ``torch.Generator``, so a
sample's augmentation is a pure function of its seed (exact resumption, equal results with any number of
loader workers). Geometric work goes through ``torchvision.transforms.v2.functional``; label maps and
instance masks go through the same geometry with nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Generator, Tensor
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode

from ..model.test_resize import resized_size
from .datasets import has_targets

Sample = dict


def _uniform(g: Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _choice(g: Generator, options: Sequence):
    return options[int(torch.randint(len(options), (), generator=g))]


def label_pad_value(sample: Sample, ignore_value: int) -> int:
    """Padding for label maps: ignore for semantic labels, void (0) for panoptic ids and for the image area
    map of instance data."""
    return ignore_value if sample["kind"] == "semantic" else 0


def _geometric(sample: Sample, image_fn, label_fn) -> Sample:
    """``sample`` with ``image_fn`` applied to the image and ``label_fn`` to the label map and, when there,
    the instance masks (so that they stay aligned pixel for pixel)."""
    out = {**sample, "image": image_fn(sample["image"]), "label": label_fn(sample["label"])}
    if "masks" in sample:
        out["masks"] = label_fn(sample["masks"])
    return out


def _resize_label(label: Tensor, size: list[int]) -> Tensor:
    if label.numel() == 0:  # no instances: torchvision cannot resize an empty stack
        return label.new_zeros((*label.shape[:-2], *size))
    return TF.resize(tv_tensors.Mask(label), size, InterpolationMode.NEAREST_EXACT).as_subclass(Tensor)


def _resize(sample: Sample, size: list[int]) -> Sample:
    def image(x: Tensor) -> Tensor:
        return TF.resize(tv_tensors.Image(x), size, InterpolationMode.BILINEAR, antialias=True).as_subclass(Tensor)

    return _geometric(sample, image, lambda label: _resize_label(label, size))


class Compose:
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, g: Generator) -> Sample:
        for t in self.transforms:
            sample = t(sample, g)
        return sample


class ResizeShortestEdge:
    """Resize so the shorter side is a random choice of ``short_edges``, the longer at most ``max_size``."""

    def __init__(self, short_edges: Sequence[int], max_size: int):
        self.short_edges = list(short_edges)
        self.max_size = max_size

    def target_size(self, h: int, w: int, short: int) -> tuple[int, int]:
        return resized_size(h, w, short, self.max_size)

    def __call__(self, sample: Sample, g: Generator) -> Sample:
        h, w = sample["image"].shape[-2:]
        return _resize(sample, list(self.target_size(h, w, _choice(g, self.short_edges))))


class ResizeScale:
    """Large-scale jitter's resize (detectron2's ResizeScale): scale ``target`` by a factor drawn from
    [min_scale, max_scale], then resize the image, keeping its aspect ratio, to fit inside that box."""

    def __init__(self, min_scale: float, max_scale: float, target: tuple[int, int]):
        self.min_scale, self.max_scale, self.target = min_scale, max_scale, target

    def __call__(self, sample: Sample, g: Generator) -> Sample:
        h, w = sample["image"].shape[-2:]
        scale = _uniform(g, self.min_scale, self.max_scale)
        factor = min(self.target[0] * scale / h, self.target[1] * scale / w)
        return _resize(sample, [max(1, round(h * factor)), max(1, round(w * factor))])


class RandomCrop:
    """Random crop of at most ``size``; for semantic labels up to 10 tries keep the largest class under
    ``single_category_max_area`` of the crop (detectron2's RandomCrop_CategoryAreaConstraint)."""

    def __init__(self, size: tuple[int, int], single_category_max_area: float = 1.0, ignore_value: int = 255):
        self.size = size
        self.max_area = single_category_max_area
        self.ignore_value = ignore_value

    def _window(self, h: int, w: int, g: Generator) -> tuple[int, int, int, int]:
        ch, cw = min(self.size[0], h), min(self.size[1], w)
        top = int(torch.randint(h - ch + 1, (), generator=g))
        left = int(torch.randint(w - cw + 1, (), generator=g))
        return top, left, ch, cw

    def __call__(self, sample: Sample, g: Generator) -> Sample:
        h, w = sample["image"].shape[-2:]
        window = self._window(h, w, g)
        if self.max_area < 1.0 and sample["kind"] == "semantic":
            for _ in range(10):
                crop = TF.crop(sample["label"], *window)
                _, counts = torch.unique(crop[crop != self.ignore_value], return_counts=True)
                if len(counts) > 1 and counts.max() < self.max_area * counts.sum():
                    break
                window = self._window(h, w, g)
        return _geometric(sample, lambda x: TF.crop(x, *window), lambda x: TF.crop(x, *window))


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, sample: Sample, g: Generator) -> Sample:
        if float(torch.rand((), generator=g)) >= self.p:
            return sample
        return _geometric(sample, TF.horizontal_flip, TF.horizontal_flip)


class ColorJitterSSD:
    """SSD's photometric distortion: brightness +-32, contrast and saturation 0.5-1.5, hue +-18 (OpenCV
    degrees, i.e. +-0.1 of the hue circle), each with probability 0.5, contrast before or after the rest."""

    def __init__(
        self,
        brightness: float = 32,
        contrast: tuple = (0.5, 1.5),
        saturation: tuple = (0.5, 1.5),
        hue: float = 18 / 180,
    ):
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, sample: Sample, g: Generator) -> Sample:
        img = sample["image"].float()
        if float(torch.rand((), generator=g)) < 0.5:
            img = img + _uniform(g, -self.brightness, self.brightness)
        contrast_first = float(torch.rand((), generator=g)) < 0.5

        def contrast(x: Tensor) -> Tensor:
            if float(torch.rand((), generator=g)) < 0.5:
                x = x * _uniform(g, *self.contrast)
            return x

        if contrast_first:
            img = contrast(img)
        img = img.clamp(0, 255) / 255
        if float(torch.rand((), generator=g)) < 0.5:
            img = TF.adjust_saturation(img, _uniform(g, *self.saturation))
        if float(torch.rand((), generator=g)) < 0.5:
            img = TF.adjust_hue(img, _uniform(g, -self.hue, self.hue))
        img = img * 255
        if not contrast_first:
            img = contrast(img)
        return {**sample, "image": img.clamp(0, 255).round().to(torch.uint8)}


class PadTo:
    """Pad bottom/right to ``size``: the image with ``image_value`` (128, near the mean), the label with
    ignore (semantic) or void (panoptic, instance), instance masks with 0."""

    def __init__(self, size: tuple[int, int], image_value: int = 128, ignore_value: int = 255):
        self.size = size
        self.image_value = image_value
        self.ignore_value = ignore_value

    def __call__(self, sample: Sample, g: Generator) -> Sample:
        h, w = sample["image"].shape[-2:]
        pad = (0, max(self.size[1] - w, 0), 0, max(self.size[0] - h, 0))
        if pad[1] == 0 and pad[3] == 0:
            return sample
        out = {
            **sample,
            "image": F.pad(sample["image"], pad, value=self.image_value),
            "label": F.pad(sample["label"], pad, value=label_pad_value(sample, self.ignore_value)),
        }
        if "masks" in sample:
            out["masks"] = F.pad(sample["masks"], pad)
        return out


class ColorJitterTorchvision:
    """EoMT's photometric distortion (the official ``datasets/transforms.py``): brightness times 1 +- 32/255,
    then contrast and saturation times 0.5-1.5 and hue +-18/360 of the circle (saturation and hue together,
    before or after contrast), each with probability 0.5, by torchvision's functions on the uint8 image as
    there (each rounds down to uint8). It differs from SSD's (:class:`ColorJitterSSD`): brightness multiplies
    instead of adding, and the hue moves half as far."""

    def __init__(
        self,
        brightness: float = 32 / 255,
        contrast: float = 0.5,
        saturation: float = 0.5,
        hue: float = 18 / 360,
    ):
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    @staticmethod
    def _maybe(g: Generator) -> bool:
        return float(torch.rand((), generator=g)) < 0.5

    def _contrast(self, img: Tensor, g: Generator) -> Tensor:
        if self._maybe(g):
            img = TF.adjust_contrast(img, _uniform(g, 1 - self.contrast, 1 + self.contrast))
        return img

    def _saturation_and_hue(self, img: Tensor, g: Generator) -> Tensor:
        if self._maybe(g):
            img = TF.adjust_saturation(img, _uniform(g, 1 - self.saturation, 1 + self.saturation))
        if self._maybe(g):
            img = TF.adjust_hue(img, _uniform(g, -self.hue, self.hue))
        return img

    def __call__(self, sample: Sample, g: Generator) -> Sample:
        img = sample["image"]
        if self._maybe(g):
            img = TF.adjust_brightness(img, _uniform(g, 1 - self.brightness, 1 + self.brightness))
        if self._maybe(g):
            img = self._saturation_and_hue(self._contrast(img, g), g)
        else:
            img = self._contrast(self._saturation_and_hue(img, g), g)
        return {**sample, "image": img}


class UntilTargets:
    """``transform`` drawn again while its output has no target left (every segment cropped out) though its
    input had one, at most ``tries`` times in all, as EoMT's training transform does (unbounded there)."""

    def __init__(self, transform, ignore_value: int = 255, tries: int = 10):
        self.transform = transform
        self.ignore_value = ignore_value
        self.tries = tries

    def __call__(self, sample: Sample, g: Generator) -> Sample:
        out = self.transform(sample, g)
        if has_targets(out, self.ignore_value) or not has_targets(sample, self.ignore_value):
            return out
        for _ in range(self.tries - 1):
            out = self.transform(sample, g)
            if has_targets(out, self.ignore_value):
                break
        return out


class RandomChoice:
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, g: Generator) -> Sample:
        return _choice(g, self.transforms)(sample, g)


class RandomSizeCrop:
    """DETR's crop: a window of random height and width in [min_size, max_size] (clipped to the image)."""

    def __init__(self, min_size: int, max_size: int):
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, sample: Sample, g: Generator) -> Sample:
        h, w = sample["image"].shape[-2:]
        ch = int(torch.randint(min(self.min_size, h), min(h, self.max_size) + 1, (), generator=g))
        cw = int(torch.randint(min(self.min_size, w), min(w, self.max_size) + 1, (), generator=g))
        return RandomCrop((ch, cw))(sample, g)


def semantic_train_transform(
    crop_size: int | tuple[int, int],
    base_size: int = 0,
    min_scale: float = 0.5,
    max_scale: float = 2.0,
    num_scales: int = 16,
    single_category_max_area: float = 1.0,
    color_jitter: bool = True,
    ignore_value: int = 255,
) -> Compose:
    """The paper's semantic pipeline: shortest edge among min..max x ``base_size`` (``num_scales`` values; base 0:
    the crop's shorter side), longest side at most 4 x base; category-area-constrained random crop; SSD colour
    jitter; flip; pad to the crop."""
    crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    base = base_size or min(crop)
    step = (max_scale - min_scale) / max(num_scales - 1, 1)
    edges = sorted({int(base * (min_scale + i * step)) for i in range(num_scales)})
    transforms = [
        ResizeShortestEdge(edges, 4 * base),
        RandomCrop(crop, single_category_max_area, ignore_value),
    ]
    if color_jitter:
        transforms.append(ColorJitterSSD())
    transforms += [RandomHorizontalFlip(), PadTo(crop, 128, ignore_value)]
    return Compose(transforms)


def detr_panoptic_train_transform(
    scales: Sequence[int] = tuple(range(480, 801, 32)),
    max_size: int = 1333,
    crop_scales: Sequence[int] = (400, 500, 600),
    crop_range: tuple[int, int] = (384, 600),
) -> Compose:
    """DETR's augmentation for COCO panoptic: flip, then either a multi-scale resize or resize + random
    crop + multi-scale resize."""
    return Compose(
        [
            RandomHorizontalFlip(),
            RandomChoice(
                [
                    ResizeShortestEdge(scales, max_size),
                    Compose(
                        [
                            ResizeShortestEdge(crop_scales, max_size),
                            RandomSizeCrop(*crop_range),
                            ResizeShortestEdge(scales, max_size),
                        ]
                    ),
                ]
            ),
        ]
    )


def large_scale_jitter_transform(
    size: tuple[int, int] = (1024, 1024), min_scale: float = 0.1, max_scale: float = 2.0, ignore_value: int = 255
) -> Compose:
    """Mask2Former's COCO augmentation, large-scale jitter (Ghiasi et al. 2021): flip, resize the image to fit
    ``size`` times a factor in [min_scale, max_scale], crop at most ``size`` at a random place, pad to
    ``size`` (image 128, labels void / ignore)."""
    return Compose(
        [
            RandomHorizontalFlip(),
            ResizeScale(min_scale, max_scale, size),
            RandomCrop(size),
            PadTo(size, 128, ignore_value),
        ]
    )


def scale_jitter_transform(
    size: tuple[int, int],
    min_scale: float = 0.1,
    max_scale: float = 2.0,
    color_jitter: bool = False,
    ignore_value: int = 255,
) -> UntilTargets:
    """EoMT's training augmentation (the official ``datasets/transforms.py``): EoMT's colour jitter where its
    config enables it (ADE20K and Cityscapes), flip, scale jitter (the image fitted to ``size`` times a factor
    in [min_scale, max_scale]), pad to ``size`` with black (torchvision's pad, fill 0: not the grey of the
    detectron2 pipelines, so that training sees the padding that EoMT's inference adds, ``pad_square``), random
    crop; drawn again when no target is left. The official pads before cropping and rounds the scaled size
    down; padding after the crop gives the same windows, and the size is rounded as detectron2's ResizeScale."""
    steps: list = [ColorJitterTorchvision()] if color_jitter else []
    steps += [
        RandomHorizontalFlip(),
        ResizeScale(min_scale, max_scale, size),
        RandomCrop(size),
        PadTo(size, 0, ignore_value),
    ]
    return UntilTargets(Compose(steps), ignore_value)
