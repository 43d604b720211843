"""The base of every family's network: what turns raw images into segmentations, whatever the network in
between (normalising, padding, forwarding images alone or in groups, post-processing), and loading and saving.
A network subclass builds its parts from its family's config and defines ``forward`` (normalised images ->
:class:`~maskformer.model.prediction.Prediction`) and ``class_head``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .config import MetadataConfig, ModelConfig
from .inference import postprocess, resize_argmax, semantic_probabilities
from .padding import pad_batch, padded_groups
from .prediction import Prediction
from .test_resize import resize_for_test
from .windows import windowed_semantic_probabilities


@dataclass
class Group:
    """The final predictions for the images ``indices`` of a list, forwarded together: ``logits`` [G, N, K+1],
    ``masks`` [G, N, h, w] for the ``padded`` input size, and each image's un-padded ``sizes``."""

    indices: list[int]
    logits: Tensor
    masks: Tensor
    sizes: list[tuple[int, int]]
    padded: tuple[int, int]

    def image(self, j: int) -> Group:
        """The group of the ``j``-th image alone, its predictions in float32."""
        return Group([self.indices[j]], self.logits[j : j + 1].float(), self.masks[j : j + 1].float(),
                     self.sizes[j : j + 1], self.padded)  # fmt: skip

    def semantic_probabilities(self) -> Tensor:
        """Class probabilities [K, h, w] of the group's first image at its un-padded size (test-time
        augmentation sums them over views)."""
        return semantic_probabilities(
            self.logits[:1], self.masks[:1], self.sizes[:1], self.padded, self.sizes[:1], channels_last=False
        )[0]


class Segmenter(nn.Module):
    """A mask-classification network for semantic, panoptic and instance segmentation. ``forward`` takes a
    normalised batch [B, 3, H, W] and returns a :class:`Prediction`; ``predict`` runs the whole pipeline on
    raw images of mixed sizes. ``Segmenter.from_pretrained`` loads any family's model as its family's
    network class."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(3, 1, 1), persistent=False)

    def forward(self, images: Tensor, with_aux: bool | None = None) -> Prediction:
        raise NotImplementedError

    @property
    def class_head(self) -> nn.Linear:
        """The K+1-way classifier (its last row: no object): the one part that depends on the classes."""
        raise NotImplementedError

    @property
    def prefers_channels_last(self) -> bool:
        """Whether channels-last weights and activations run this network's inference faster."""
        return True

    @property
    def trains_channels_last(self) -> bool:
        """Whether channels-last runs this network's training step (forward, loss, backward) faster: by default
        as inference does."""
        return self.prefers_channels_last

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """``nn.Module.compile`` (in place: the state dict keeps its names), with static shapes unless
        ``dynamic`` is given: each new input size compiles anew, up to torch's recompile limit (then eager).
        Dynamic shapes crashed inductor on EoMT's training step (torch 2.14) and gain little where the sizes
        are few (a training crop, a serving size)."""
        kwargs.setdefault("dynamic", False)
        super().compile(*args, **kwargs)

    def min_program_side(self) -> int:
        """The smallest height and width (a multiple of 32) of an example from which a ``torch.export`` program
        takes every larger size. The exporter treats a size of 1 as a special case: a program traced where a size
        inside the network is 1 (a stride-32 map one row high, a windowed stage one window wide) takes only
        inputs where it is 1, and one traced where it is more takes only inputs where it is more."""
        return 64

    def check_exportable(self) -> None:
        """Raise ValueError if this model, as it is, cannot be traced into a program that computes what it
        computes (export calls it first); any network of the base can be."""

    @classmethod
    def from_config(cls, config: ModelConfig) -> Segmenter:
        """A randomly initialised network of ``config``'s family (``Segmenter.from_config`` builds any family's;
        a network class builds only its own family's)."""
        network = type(config).FAMILY.network
        if not issubclass(network, cls):
            raise ValueError(f"{type(config).FAMILY.a_title} config builds {network.__name__}, not {cls.__name__}")
        return network(config)

    @classmethod
    def from_preset(cls, name: str, **changes: Any) -> Segmenter:
        """Build a randomly initialised model from a named preset; ``changes`` set top-level config fields."""
        from .presets import preset

        config = preset(name)
        for key, value in changes.items():
            if not hasattr(config, key):
                raise ValueError(f"{type(config).__name__} has no field {key!r}")
            setattr(config, key, value)
        return cls.from_config(config)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def normalize(self, images: Tensor) -> Tensor:
        """RGB 0-255 [..., 3, H, W] -> (x - mean) / std with the config's statistics."""
        return (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std

    def preprocess(self, images: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """RGB 0-255 images [3, h_i, w_i] -> normalised batch padded as the original pads (:meth:`pad`), and the
        un-padded sizes."""
        device = self.pixel_mean.device
        return self.pad([self.normalize(img.to(device)) for img in images])

    def pad(self, images: Sequence[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Normalised images [3, h_i, w_i] -> one batch padded bottom/right to a multiple of
        ``inference.size_divisibility`` with zeros (detectron2's way); with ``inference.pad_square``, also to at
        least that square, with black pixels (EoMT's official way); and the un-padded sizes."""
        cfg = self.config.inference
        if not cfg.pad_square:
            return pad_batch(images, cfg.size_divisibility)
        black = self.normalize(self.pixel_mean.new_zeros(3, 1, 1)).flatten()
        return pad_batch(images, cfg.size_divisibility, black.to(images[0].dtype), cfg.pad_square)

    @torch.no_grad()
    def forward_groups(self, images: list[Tensor]) -> Iterator[Group]:
        """Normalised images [3, h_i, w_i] -> final predictions, one forward per image or, without
        ``inference.batch_invariant``, per group of images that pad to the same size
        (:func:`~maskformer.model.padding.padded_groups`); an image is never padded beyond its own padded size."""
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        cfg = self.config.inference
        dtype = self.pixel_mean.dtype
        if cfg.batch_invariant:
            groups = [[i] for i in range(len(images))]
        else:
            groups = padded_groups(sizes, cfg.size_divisibility, cfg.pad_square)
        for indices in groups:
            batch, group_sizes = self.pad([images[i].to(dtype) for i in indices])
            out = self(batch, with_aux=False)
            yield Group(indices, out.logits, out.masks, group_sizes, (batch.shape[-2], batch.shape[-1]))

    @torch.no_grad()
    def semantic_probabilities(self, image: Tensor) -> Tensor:
        """RGB 0-255 ``image`` [3, h, w], at the size to forward -> class probabilities [K, h, w] of it alone
        (what test-time augmentation and windows average)."""
        return next(self.forward_groups([self.normalize(image)])).semantic_probabilities()

    @torch.no_grad()
    def segment(
        self,
        images: list[Tensor],
        tasks: Sequence[str],
        output_sizes: Sequence[tuple[int, int]],
        metadata: MetadataConfig | None = None,
    ) -> dict[str, list[Any]]:
        """Normalised images [3, h_i, w_i] (at test size) -> {task: one result per image at its output size},
        through :meth:`forward_groups` and :func:`~maskformer.model.inference.postprocess`: what ``predict``,
        validation and evaluation run, so that they cannot disagree and a batch gives the results of its images alone.
        ``metadata`` (default: the config's) says which classes are things."""
        cfg, things = self.config.inference, (metadata or self.config.metadata).thing_classes
        results: dict[str, list[Any]] = {task: [None] * len(images) for task in tasks}
        for group in self.forward_groups(images):
            outs = [output_sizes[i] for i in group.indices]
            for task in tasks:
                done = postprocess(task, group.logits, group.masks, group.sizes, group.padded, outs, cfg, things)
                for i, result in zip(group.indices, done):
                    results[task][i] = result
        return results

    @torch.no_grad()
    def predict(
        self,
        images: list[Tensor],
        task: str = "semantic",
        output_sizes: list[tuple[int, int]] | None = None,
    ) -> list[Any]:
        """Segment RGB 0-255 images [3, h_i, w_i] of any sizes.

        Each image is first resized as the config's ``inference`` says (shortest edge
        ``test_shortest_edge``, longer edge at most ``test_max_size``), as evaluation and the Predictor do, or
        for semantic segmentation by square windows when ``semantic_window`` is set (EoMT).
        ``task`` is "semantic" (label maps [h, w]), "panoptic" (:class:`inference.PanopticResult`) or
        "instance" (:class:`inference.InstanceResult`). Results are at ``output_sizes`` (default: the input
        sizes), and each equals the result of its image alone.
        """
        originals = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        return self.segment_images(images, [task], output_sizes or originals)[task]

    @torch.no_grad()
    def segment_images(
        self,
        images: list[Tensor],
        tasks: Sequence[str],
        output_sizes: Sequence[tuple[int, int]],
        metadata: MetadataConfig | None = None,
    ) -> dict[str, list[Any]]:
        """RGB 0-255 images [3, h_i, w_i] as read -> {task: one result per image at its output size}: each
        image resized for test and :meth:`segment` ed, or, for the semantic task of a config with
        ``inference.semantic_window``, segmented by square windows (:mod:`~maskformer.model.windows`)."""
        cfg = self.config.inference
        device = self.pixel_mean.device
        results: dict[str, list[Any]] = {}
        if "semantic" in tasks and cfg.semantic_window:
            window, probabilities = cfg.semantic_window, self.semantic_probabilities
            results["semantic"] = [
                resize_argmax(windowed_semantic_probabilities(img.to(device), window, probabilities), out)
                for img, out in zip(images, output_sizes)
            ]
            tasks = [t for t in tasks if t != "semantic"]
        if tasks:
            resized = [self.normalize(resize_for_test(img.to(device), cfg)) for img in images]
            results.update(self.segment(resized, tasks, output_sizes, metadata))
        return results

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        config: ModelConfig | None = None,
        strict: bool = False,
        delta_base: str | Path | None = None,
    ) -> Segmenter:
        """Load weights from a transformers folder or hub id, an official model-zoo .pkl (or its URL), or a
        folder written by :meth:`save_pretrained`. Missing or unexpected keys are reported by name (an error
        when ``strict``). ``delta_base``: the backbone weights (a timm-format file) that a checkpoint of
        differences is relative to, such as the official checkpoints trained from DINOv3 (relative to its)."""
        from .loading import load_pretrained

        return load_pretrained(cls, source, config=config, strict=strict, delta_base=delta_base)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.yaml`` and ``model.safetensors`` into ``directory``."""
        from .loading import save_pretrained

        return save_pretrained(self, directory)
