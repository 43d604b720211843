"""The meta-architecture of both families: backbone -> pixel decoder -> transformer decoder -> class and mask
heads. MaskFormer (FPN or "+6 Enc" pixel decoder, DETR decoder) and Mask2Former (MSDeformAttn pixel decoder,
masked-attention decoder) are choices of these parts in the config, not separate models."""

from __future__ import annotations

from torch import Tensor, nn

from .backbone import build_backbone
from .config import ModelConfig
from .heads import MaskFormerHead
from .masked_decoder import MaskedAttentionDecoder
from .msdeformattn import MSDeformAttnPixelDecoder
from .pixel_decoder import FPNPixelDecoder, PixelDecoderOutput, TransformerEncoderPixelDecoder
from .prediction import Prediction
from .segmenter import Segmenter

LEVELS = ("res2", "res3", "res4", "res5")


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


class MaskFormer(Segmenter):
    """The meta-architecture of MaskFormer and Mask2Former: backbone -> pixel decoder -> transformer decoder ->
    class and mask heads, each part chosen by the config.

    ``forward`` takes a normalised batch [B, 3, H, W] of any H, W and returns a :class:`Prediction`: class
    logits [B, N, K+1], mask logits [B, N, H/4, W/4] and the earlier predictions (every earlier decoder
    layer's; for Mask2Former also the one from the queries before the first layer), filled in training mode or
    when ``with_aux=True``. ``predict`` (:class:`Segmenter`) runs the whole pipeline on raw images.
    """

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.backbone)
        self.pixel_decoder = build_pixel_decoder(config, list(self.backbone.channels))
        self.in_feature = transformer_in_feature(config)
        if self.in_feature in ("transformer_encoder", "multi_scale"):
            decoder_in = config.pixel_decoder.conv_dim
        else:
            decoder_in = self.backbone.channels[LEVELS.index(self.in_feature)]
        self.predictor = build_transformer_decoder(config, decoder_in)

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
    def trains_channels_last(self) -> bool:
        """Channels-last for inference, always (:attr:`prefers_channels_last`); for training, not for a Swin with
        MaskFormer's FPN and DETR decoder, whose training step (batch 2, 512 x 512, benchmarks/RESULTS.md) took
        7.64 s channels-last against 5.61 s NCHW on an AMD EPYC and 4.55 against 4.04 s on an Intel Xeon, where
        its forward took 0.70 against 0.76 s and 0.49 against 0.51 s. The other models' training layout that
        pays differs between those CPUs; they keep channels-last."""
        return not (self.config.backbone.type == "swin" and self.config.transformer.type == "detr")

    def min_program_side(self) -> int:
        # A Swin backbone's stages have one window a side below this size (see Segmenter.min_program_side).
        return max(super().min_program_side(), getattr(self.backbone, "min_two_window_side", 0))

    @property
    def class_head(self) -> nn.Linear:
        """The K+1-way classifier (its last row: no object): the one part that depends on the classes."""
        return self.predictor.class_embed
