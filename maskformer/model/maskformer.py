"""The MaskFormer model: backbone -> pixel decoder -> transformer module -> segmentation module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import inference
from .backbone import build_backbone
from .config import MaskFormerConfig
from .heads import MaskFormerHead
from .pixel_decoder import FPNPixelDecoder, TransformerEncoderPixelDecoder


def build_pixel_decoder(config: MaskFormerConfig, in_channels: list[int]) -> FPNPixelDecoder:
    pd = config.pixel_decoder
    if pd.type == "fpn":
        return FPNPixelDecoder(in_channels, pd.conv_dim, pd.mask_dim, pd.num_groups)
    if pd.type == "transformer_encoder":
        return TransformerEncoderPixelDecoder(
            in_channels,
            pd.conv_dim,
            pd.mask_dim,
            pd.num_groups,
            num_layers=pd.encoder_layers,
            num_heads=pd.encoder_heads,
            ffn_dim=pd.encoder_ffn_dim,
            dropout=pd.encoder_dropout,
        )
    raise ValueError(f"unknown pixel decoder type {pd.type!r} (expected 'fpn' or 'transformer_encoder')")


LEVELS = ("res2", "res3", "res4", "res5")


def transformer_in_feature(config: MaskFormerConfig) -> str:
    """The feature map the transformer decoder attends to (see ``TransformerConfig.in_feature``)."""
    name = config.transformer.in_feature
    has_encoder = config.pixel_decoder.type == "transformer_encoder"
    if name is None:
        return "transformer_encoder" if has_encoder else "res5"
    if name == "transformer_encoder" and not has_encoder:
        raise ValueError("transformer.in_feature='transformer_encoder' needs pixel_decoder.type='transformer_encoder'")
    if name != "transformer_encoder" and name not in LEVELS:
        raise ValueError(f"transformer.in_feature={name!r}: expected one of {LEVELS} or 'transformer_encoder'")
    return name


class MaskFormer(nn.Module):
    """MaskFormer for semantic, panoptic and instance segmentation.

    ``forward`` takes a normalised batch [B, 3, H, W] of any H, W and returns a dict with
    ``pred_logits`` [B, N, K+1], ``pred_masks`` [B, N, H/4, W/4] (mask logits) and ``aux_outputs``, one
    such dict per earlier decoder layer (filled in training mode, or when ``with_aux=True``).
    ``predict`` runs the whole pipeline on raw images of mixed sizes.
    """

    def __init__(self, config: MaskFormerConfig):
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone)
        self.pixel_decoder = build_pixel_decoder(config, list(self.backbone.channels))
        t = config.transformer
        self.in_feature = transformer_in_feature(config)
        decoder_in = (
            config.pixel_decoder.conv_dim
            if self.in_feature == "transformer_encoder"
            else self.backbone.channels[LEVELS.index(self.in_feature)]
        )
        self.predictor = MaskFormerHead(
            decoder_in,
            config.num_classes,
            hidden_dim=t.hidden_dim,
            num_queries=t.num_queries,
            num_heads=t.num_heads,
            ffn_dim=t.ffn_dim,
            num_layers=t.num_layers,
            dropout=t.dropout,
            mask_dim=config.pixel_decoder.mask_dim,
            enforce_input_proj=t.enforce_input_proj,
            masked_attention=t.masked_attention,
        )
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(3, 1, 1), persistent=False)

    @classmethod
    def from_preset(cls, name: str, **changes: Any) -> MaskFormer:
        """Build a randomly initialised model from a named preset; ``changes`` set top-level config fields."""
        from .presets import preset

        config = preset(name)
        for key, value in changes.items():
            if not hasattr(config, key):
                raise ValueError(f"MaskFormerConfig has no field {key!r}")
            setattr(config, key, value)
        return cls(config)

    def forward(self, images: Tensor, with_aux: bool | None = None) -> dict[str, Any]:
        """images: normalised [B, 3, H, W] -> {pred_logits, pred_masks, aux_outputs}."""
        features = self.backbone(images)
        mask_features, encoded = self.pixel_decoder(features)
        if self.in_feature == "transformer_encoder":
            decoder_input = encoded
        else:
            decoder_input = features[LEVELS.index(self.in_feature)]
        logits, mask_embed = self.predictor(decoder_input, mask_features)
        with_aux = self.training if with_aux is None else with_aux
        if with_aux:
            masks = torch.einsum("lbqc,bchw->lbqhw", mask_embed, mask_features)
            aux = [{"pred_logits": a, "pred_masks": m} for a, m in zip(logits[:-1], masks[:-1])]
            return {"pred_logits": logits[-1], "pred_masks": masks[-1], "aux_outputs": aux}
        masks = torch.einsum("bqc,bchw->bqhw", mask_embed[-1], mask_features)
        return {"pred_logits": logits[-1], "pred_masks": masks, "aux_outputs": []}

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
        return inference.pad_batch(normalised, self.config.inference.size_divisibility)

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
        sizes).
        """
        cfg = self.config.inference
        originals = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        resized = [inference.resize_for_test(img.to(self.pixel_mean.device), cfg) for img in images]
        batch, sizes = self.preprocess(resized)
        outputs = self(batch, with_aux=False)
        return inference.postprocess(
            task,
            outputs["pred_logits"],
            outputs["pred_masks"],
            sizes,
            tuple(batch.shape[-2:]),
            output_sizes or originals,
            cfg,
            self.config.metadata.thing_classes,
        )

    @classmethod
    def from_pretrained(
        cls, source: str | Path, config: MaskFormerConfig | None = None, strict: bool = False
    ) -> MaskFormer:
        """Load weights from a transformers folder or hub id, an official model-zoo .pkl (or its URL), or a
        folder written by :meth:`save_pretrained`. Missing or unexpected keys are reported by name (an error
        when ``strict``)."""
        from .weights import load_pretrained

        return load_pretrained(cls, source, config=config, strict=strict)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.yaml`` and ``model.safetensors`` into ``directory``."""
        from .weights import save_pretrained

        return save_pretrained(self, directory)
