"""The meta-architecture of both families: backbone -> pixel decoder -> transformer decoder -> class and mask
heads. MaskFormer (FPN or "+6 Enc" pixel decoder, DETR decoder) and Mask2Former (MSDeformAttn pixel decoder,
masked-attention decoder) are choices of these parts in the config, not separate models."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .backbone import build_backbone
from .config import MetadataConfig, ModelConfig
from .heads import MaskFormerHead
from .inference import postprocess, semantic_probabilities
from .masked_decoder import MaskedAttentionDecoder
from .msdeformattn import MSDeformAttnPixelDecoder
from .padding import pad_batch, padded_groups
from .pixel_decoder import FPNPixelDecoder, PixelDecoderOutput, TransformerEncoderPixelDecoder
from .prediction import Prediction
from .test_resize import resize_for_test

LEVELS = ("res2", "res3", "res4", "res5")


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


def build_pixel_decoder(config: ModelConfig, in_channels: list[int]) -> nn.Module:
    pd = config.pixel_decoder
    if pd.type == "fpn":
        return FPNPixelDecoder(in_channels, pd.conv_dim, pd.mask_dim, pd.num_groups)
    encoder = {
        "num_layers": pd.encoder_layers, "num_heads": pd.encoder_heads, "ffn_dim": pd.encoder_ffn_dim,
        "dropout": pd.encoder_dropout,
    }  # fmt: skip
    if pd.type == "transformer_encoder":
        return TransformerEncoderPixelDecoder(in_channels, pd.conv_dim, pd.mask_dim, pd.num_groups, **encoder)
    if pd.type == "msdeformattn":
        return MSDeformAttnPixelDecoder(
            in_channels, conv_dim=pd.conv_dim, mask_dim=pd.mask_dim, num_groups=pd.num_groups,
            num_points=pd.encoder_points, **encoder,
        )  # fmt: skip
    raise ValueError(
        f"unknown pixel decoder type {pd.type!r} (expected 'fpn', 'transformer_encoder' or 'msdeformattn')"
    )


def transformer_in_feature(config: ModelConfig) -> str:
    """What the transformer decoder attends to: "multi_scale" (the pixel decoder's stride-32/16/8 maps) for a
    masked-attention decoder; for a DETR decoder, ``TransformerConfig.in_feature`` resolved."""
    if config.transformer.type == "masked_attention":
        return "multi_scale"
    name = config.transformer.in_feature
    has_encoder = config.pixel_decoder.type == "transformer_encoder"
    if name is None:
        return "transformer_encoder" if has_encoder else "res5"
    if name == "transformer_encoder" and not has_encoder:
        raise ValueError("transformer.in_feature='transformer_encoder' needs pixel_decoder.type='transformer_encoder'")
    if name != "transformer_encoder" and name not in LEVELS:
        raise ValueError(f"transformer.in_feature={name!r}: expected one of {LEVELS} or 'transformer_encoder'")
    return name


def build_transformer_decoder(config: ModelConfig, in_channels: int) -> nn.Module:
    t = config.transformer
    sizes = {
        "hidden_dim": t.hidden_dim, "num_queries": t.num_queries, "num_heads": t.num_heads, "ffn_dim": t.ffn_dim,
        "num_layers": t.num_layers, "dropout": t.dropout, "mask_dim": config.pixel_decoder.mask_dim,
        "enforce_input_proj": t.enforce_input_proj,
    }  # fmt: skip
    if t.type == "detr":
        return MaskFormerHead(in_channels, config.num_classes, masked_attention=t.masked_attention, **sizes)
    if t.type == "masked_attention":
        return MaskedAttentionDecoder(in_channels, config.num_classes, **sizes)
    raise ValueError(f"unknown transformer decoder type {t.type!r} (expected 'detr' or 'masked_attention')")


class MaskFormer(nn.Module):
    """A mask-classification model of either family, for semantic, panoptic and instance segmentation.

    ``forward`` takes a normalised batch [B, 3, H, W] of any H, W and returns a :class:`Prediction`: class
    logits [B, N, K+1], mask logits [B, N, H/4, W/4] and the earlier predictions (every earlier decoder
    layer's; for Mask2Former also the one from the queries before the first layer), filled in training mode or
    when ``with_aux=True``.
    ``predict`` runs the whole pipeline on raw images of mixed sizes.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone)
        self.pixel_decoder = build_pixel_decoder(config, list(self.backbone.channels))
        self.in_feature = transformer_in_feature(config)
        if self.in_feature in ("transformer_encoder", "multi_scale"):
            decoder_in = config.pixel_decoder.conv_dim
        else:
            decoder_in = self.backbone.channels[LEVELS.index(self.in_feature)]
        self.predictor = build_transformer_decoder(config, decoder_in)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(3, 1, 1), persistent=False)

    @classmethod
    def from_preset(cls, name: str, **changes: Any) -> MaskFormer:
        """Build a randomly initialised model from a named preset; ``changes`` set top-level config fields."""
        from .presets import preset

        config = preset(name)
        for key, value in changes.items():
            if not hasattr(config, key):
                raise ValueError(f"{type(config).__name__} has no field {key!r}")
            setattr(config, key, value)
        return cls(config)

    def forward(self, images: Tensor, with_aux: bool | None = None) -> Prediction:
        """images: normalised [B, 3, H, W] -> the final prediction, with the earlier ones as its ``aux``."""
        features = self.backbone(images)
        pixels: PixelDecoderOutput = self.pixel_decoder(features)
        if self.in_feature == "multi_scale":
            decoder_input = pixels.multi_scale
        elif self.in_feature == "transformer_encoder":
            decoder_input = [pixels.encoded]
        else:
            decoder_input = [features[LEVELS.index(self.in_feature)]]
        with_aux = self.training if with_aux is None else with_aux
        predictions = self.predictor(decoder_input, pixels.mask_features, with_aux)
        final = predictions[-1]
        return Prediction(final.logits, final.masks, predictions[:-1] if with_aux else [])

    @property
    def prefers_channels_last(self) -> bool:
        """Whether channels-last weights and activations run this model faster (benchmarks/RESULTS.md): yes for
        CNN backbones and for Mask2Former's parts, whose pixel decoder is convolutions and gathers; not for a
        Swin with MaskFormer's FPN and DETR decoder, whose training step on a CPU was 0.94x transformers' in
        channels-last, 1.18x without."""
        return not (self.config.backbone.type == "swin" and self.config.transformer.type == "detr")

    @property
    def class_head(self) -> nn.Linear:
        """The K+1-way classifier (its last row: no object): the one part that depends on the classes."""
        return self.predictor.class_embed

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def normalize(self, images: Tensor) -> Tensor:
        """RGB 0-255 [..., 3, H, W] -> (x - mean) / std with the config's statistics."""
        return (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std

    def preprocess(self, images: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """RGB 0-255 images [3, h_i, w_i] -> normalised batch padded (with zeros, after normalising, as the
        original) to a multiple of ``inference.size_divisibility``, and the un-padded sizes."""
        device = self.pixel_mean.device
        normalised = [self.normalize(img.to(device)) for img in images]
        return pad_batch(normalised, self.config.inference.size_divisibility)

    @torch.no_grad()
    def forward_groups(self, images: list[Tensor]) -> Iterator[Group]:
        """Normalised images [3, h_i, w_i] -> final predictions, one forward per image or, without
        ``inference.batch_invariant``, per group of images that pad to the same size
        (:func:`~maskformer.model.padding.padded_groups`); an image is never padded beyond its own padded size."""
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        divisibility = self.config.inference.size_divisibility
        dtype = self.pixel_mean.dtype
        if self.config.inference.batch_invariant:
            groups = [[i] for i in range(len(images))]
        else:
            groups = padded_groups(sizes, divisibility)
        for indices in groups:
            batch, group_sizes = pad_batch([images[i].to(dtype) for i in indices], divisibility)
            out = self(batch, with_aux=False)
            yield Group(indices, out.logits, out.masks, group_sizes, (batch.shape[-2], batch.shape[-1]))

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
        ``test_shortest_edge``, longer edge at most ``test_max_size``), as evaluation and the Predictor do.
        ``task`` is "semantic" (label maps [h, w]), "panoptic" (:class:`inference.PanopticResult`) or
        "instance" (:class:`inference.InstanceResult`). Results are at ``output_sizes`` (default: the input
        sizes), and each equals the result of its image alone.
        """
        cfg = self.config.inference
        originals = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        device = self.pixel_mean.device
        resized = [self.normalize(resize_for_test(img.to(device), cfg)) for img in images]
        return self.segment(resized, [task], output_sizes or originals)[task]

    @classmethod
    def from_pretrained(cls, source: str | Path, config: ModelConfig | None = None, strict: bool = False) -> MaskFormer:
        """Load weights from a transformers folder or hub id, an official model-zoo .pkl (or its URL), or a
        folder written by :meth:`save_pretrained`. Missing or unexpected keys are reported by name (an error
        when ``strict``)."""
        from .loading import load_pretrained

        return load_pretrained(cls, source, config=config, strict=strict)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.yaml`` and ``model.safetensors`` into ``directory``."""
        from .loading import save_pretrained

        return save_pretrained(self, directory)
