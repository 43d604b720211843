"""The :class:`Predictor`: pretrained MaskFormer + test-time resizing, batching, precision, test-time
augmentation and sliding windows, returning typed results at each input image's own size."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..data.metadata import default_colors
from ..model import Segmenter
from ..model import inference as post
from ..model.config import InferenceConfig, MetadataConfig, config_from_dict
from ..model.inference import resize_argmax
from ..model.segmenter import Group
from ..model.test_resize import resize_for_test
from ..model.tta import augmented_semantic_probabilities
from ..model.windows import windowed_semantic_probabilities
from ..precision import bf16_speed
from .checks import check_device, check_options
from .inputs import ImageInput, LoadedImage, load_inputs
from .results import InstanceResult, PanopticResult, Result, Segment, SemanticResult, class_name

PRECISIONS = ("fp32", "bf16", "fp16")
log = logging.getLogger("maskformer")


def complete_metadata(meta: MetadataConfig, num_classes: int) -> MetadataConfig:
    """``meta`` with a name and a colour for each of ``num_classes`` classes ("class i" and generated
    colours where the checkpoint carries none)."""
    names = meta.class_names if len(meta.class_names) == num_classes else [f"class {i}" for i in range(num_classes)]
    colors = meta.colors if len(meta.colors) == num_classes else default_colors(num_classes)
    return dataclasses.replace(meta, class_names=names, colors=colors)


def with_thresholds(
    inference: InferenceConfig, score_threshold: float | None = None, overlap_threshold: float | None = None
) -> InferenceConfig:
    """A copy of ``inference`` with the given post-processing thresholds (None keeps the model's), checked
    to lie in [0, 1]: ``score_threshold`` drops queries scoring at most it, ``overlap_threshold`` keeps
    segments with at least that share of their mask visible."""
    changes = {"object_mask_threshold": score_threshold, "overlap_threshold": overlap_threshold}
    given = {k: v for k, v in changes.items() if v is not None}
    return config_from_dict(InferenceConfig, given, "inference", inference)


class Predictor:
    """Segment images with a MaskFormer.

    Images are resized as the model's config says (``inference.test_shortest_edge`` / ``test_max_size``),
    batched ``batch_size`` at a time whatever their sizes, run at ``precision`` ("fp32", "bf16", "fp16"),
    and the results come back at each input's own size and orientation. ``compile``: torch.compile the
    network (inductor): the same results to float rounding, after a compile on the first image of each new
    size (sizes are then traced dynamically).
    """

    def __init__(
        self,
        model: Segmenter,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        batch_size: int = 1,
        metadata: MetadataConfig | None = None,
        copy_model: bool = True,
        compile: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = check_device(device)
        # The predictor moves, lays out and switches to eval mode a model of its own: by default a copy, so
        # that the caller's model stays as it was (``copy_model=False`` hands it over, saving the memory).
        model = copy.deepcopy(model) if copy_model else model
        layout = torch.channels_last if model.prefers_channels_last else torch.contiguous_format
        self.model = model.eval().to(self.device, memory_format=layout)
        self.compile = compile
        if compile:
            self.model.compile()  # the predictor's own model, in place: Segmenter methods call the compiled forward
        self._bf16_model: Segmenter | None = None
        self.precision = precision
        self.batch_size = batch_size
        # The predictor's own metadata: the model's config is not changed.
        self._metadata = complete_metadata(metadata or model.config.metadata, model.config.num_classes)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        batch_size: int = 1,
        compile: bool = False,
    ) -> Predictor:
        """A predictor for anything :meth:`MaskFormer.from_pretrained` reads, a known model name from
        ``maskformer models``, or a training run folder; metadata is filled in for known datasets."""
        from .zoo import load_model

        model = load_model(source)
        return cls(model, device=device, precision=precision, batch_size=batch_size, copy_model=False, compile=compile)

    @property
    def metadata(self) -> MetadataConfig:
        """Class names, colours and thing classes of the results (the model's, completed, or those given)."""
        return self._metadata

    def __call__(
        self,
        inputs: ImageInput | Iterable[ImageInput],
        task: str = "semantic",
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        window: int | None = None,
        window_stride: int | None = None,
    ) -> list[Result]:
        """Segment ``inputs`` (paths, folders, globs, PIL images, arrays or tensors; one or a list).

        ``scales`` / ``flip`` (multi-scale and flip test-time augmentation) and ``window`` (sliding windows
        of ``window`` pixels a side over the resized image, ``window_stride`` apart, default 2/3 of a window)
        average class probabilities and so apply to the semantic task.
        """
        images = load_inputs(inputs)
        return [r for _, r in self.predict_loaded(images, task, scales, flip, window, window_stride)]

    def predict_loaded(
        self,
        images: Sequence[LoadedImage],
        task: str = "semantic",
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        window: int | None = None,
        window_stride: int | None = None,
        inference: InferenceConfig | None = None,
    ) -> Iterator[tuple[LoadedImage, Result]]:
        """Like ``__call__`` on already loaded images, yielding results one image at a time.

        ``inference`` replaces the model's post-processing thresholds (``object_mask_threshold``,
        ``overlap_threshold``, ``instance_topk``) for this call; the model's config is not changed."""
        augmented = check_options(task, scales, flip, window, window_stride)
        if augmented:
            for item in images:
                yield item, self._semantic_augmented(item, scales, flip, window, window_stride)
            return
        side = self.model.config.inference.semantic_window
        if task == "semantic" and side:
            for item in images:
                size = tuple(item.image.shape[-2:])
                probabilities = windowed_semantic_probabilities(item.image.to(self.device), side, self._probabilities)
                labels = resize_argmax(probabilities, size).cpu()
                yield item, SemanticResult(item.name, size, self.metadata, labels, path=item.path)
            return
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            yield from zip(chunk, self._predict_batch(chunk, task, inference))

    @property
    def precision(self) -> str:
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in PRECISIONS:
            raise ValueError(f"precision {value!r}: expected one of {', '.join(PRECISIONS)}")
        self._precision = value
        self._bf16_model = None

    def _network(self) -> Segmenter:
        """The network to run. For bf16, a bfloat16 copy of the model: weights cast once instead of at every
        layer as autocast does (copies, mostly autocast's casts, took a fifth of a profiled CPU forward).
        Norms and softmax still accumulate in float32 inside PyTorch's bfloat16 kernels; on a CPU where bfloat16
        is measured slower than float32 (:func:`bf16_speed`: emulated on one without bfloat16 instructions), one
        warning says so. fp16 keeps autocast, whose float32 norms and reductions avoid float16 overflow."""
        if self.precision != "bf16":
            return self.model
        if self._bf16_model is None:
            if self.device.type == "cpu" and not (speed := bf16_speed(self.device)).fast:
                log.warning("precision bf16: %s; fp32 predicts faster on this CPU", speed.describe())
            self._bf16_model = copy.deepcopy(self.model).to(torch.bfloat16)
            if self.compile:  # a deep copy of a compiled module runs eagerly: compile the copy itself
                self._bf16_model.compile()
        return self._bf16_model

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision != "fp16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.float16)

    @torch.no_grad()
    def _forward(self, images: list[Tensor]) -> list[Group]:
        """Float RGB images -> the predictions of each alone (a one-image :class:`Group`, float32), forwarded
        in groups of equal padded size (batch-invariant)."""
        normalised = [self.model.normalize(img) for img in images]  # in float32
        network = self._network()
        outputs: list = [None] * len(images)
        with self._autocast():
            for group in network.forward_groups(normalised):
                for j, i in enumerate(group.indices):
                    outputs[i] = group.image(j)
        return outputs

    def _predict_batch(
        self, items: Sequence[LoadedImage], task: str, inference: InferenceConfig | None = None
    ) -> list[Result]:
        originals = [tuple(item.image.shape[-2:]) for item in items]
        resized = [resize_for_test(it.image.to(self.device), self.model.config.inference) for it in items]
        outputs = self._forward(resized)
        cfg = inference or self.model.config.inference
        return [self._postprocess(task, item, out, size, cfg) for item, out, size in zip(items, outputs, originals)]

    def _postprocess(
        self, task: str, item: LoadedImage, group: Group, out_size: tuple[int, int], cfg: InferenceConfig
    ) -> Result:
        logits, masks, sizes, padded = group.logits, group.masks, group.sizes, group.padded
        meta = self.metadata
        # The one post-processing path (model/inference.py), at the input's own size: it works one mask or class
        # plane at a time, so camera images stay within memory with the result validation would give.
        (res,) = post.postprocess(task, logits, masks, sizes, padded, [out_size], cfg, meta.thing_classes)
        if task == "semantic":
            return SemanticResult(item.name, out_size, meta, res.cpu(), path=item.path)
        if task == "panoptic":
            segments = [
                Segment(s["id"], c, class_name(meta, c), s["score"], s["area"], s["isthing"])
                for s in res.segments
                for c in [s["category_id"]]
            ]
            return PanopticResult(item.name, out_size, meta, res.segmentation.cpu(), segments, path=item.path)
        labels, scores = res.labels.cpu(), res.scores.cpu()
        return InstanceResult(item.name, out_size, meta, res.masks.cpu(), labels, scores, path=item.path)

    def _semantic_augmented(
        self,
        item: LoadedImage,
        scales: Sequence[float],
        flip: bool,
        window: int | None,
        window_stride: int | None,
    ) -> SemanticResult:
        """Class probabilities averaged over scales x flips (optionally over sliding windows), argmax at the
        input's size."""
        probabilities = self._probabilities
        if window is not None:
            probabilities = functools.partial(self._windowed, window=window, stride=window_stride)
        out_size = tuple(item.image.shape[-2:])
        total = augmented_semantic_probabilities(
            item.image.to(self.device), self.model.config.inference, scales, flip, probabilities
        )
        return SemanticResult(item.name, out_size, self.metadata, resize_argmax(total, out_size).cpu(), path=item.path)

    def _probabilities(self, image: Tensor) -> Tensor:
        """Float RGB [3, h, w] -> class probabilities [K, h, w]."""
        return self._forward([image])[0].semantic_probabilities()

    def _windowed(self, image: Tensor, window: int, stride: int | None) -> Tensor:
        """Class probabilities [K, h, w] averaged over ``window``-sized crops ``stride`` apart covering the
        image (crops are clipped to the image; the last row and column of windows end at its edge)."""
        stride = stride or max(1, window * 2 // 3)
        h, w = image.shape[-2:]
        total = count = None
        for y in _starts(h, window, stride):
            for x in _starts(w, window, stride):
                crop = image[:, y : y + window, x : x + window]
                probs = self._probabilities(crop)
                if total is None:
                    total = probs.new_zeros((probs.shape[0], h, w))
                    count = probs.new_zeros((1, h, w))
                total[:, y : y + crop.shape[1], x : x + crop.shape[2]] += probs
                count[:, y : y + crop.shape[1], x : x + crop.shape[2]] += 1
        return total / count


def _starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return [*starts, length - window]
