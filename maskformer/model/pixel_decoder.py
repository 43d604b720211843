"""MaskFormer's pixel decoders: the FPN of the original, and its "+6 Enc" variant with a DETR encoder on res5.

Every pixel decoder (these and Mask2Former's in :mod:`.msdeformattn`) returns a :class:`PixelDecoderOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .position_encoding import sine_position_tokens
from .transformer import TransformerEncoder


@dataclass
class PixelDecoderOutput:
    """``mask_features`` [B, mask_dim, H/4, W/4]: the per-pixel embeddings masks are read from;
    ``multi_scale``: the decoder's maps at strides 32, 16, 8 (low resolution first), [B, conv_dim, H/s, W/s],
    what a masked-attention decoder attends to; ``encoded``: the "+6 Enc" encoder output at stride 32
    [B, conv_dim, H/32, W/32] (None without that encoder)."""

    mask_features: Tensor
    multi_scale: list[Tensor]
    encoded: Tensor | None = None


class ConvNorm(nn.Module):
    """Conv (no bias) + GroupNorm, optionally + ReLU: detectron2's Conv2d(norm="GN")."""

    def __init__(self, cin: int, cout: int, kernel_size: int, num_groups: int, relu: bool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.GroupNorm(num_groups, cout)
        self.relu = relu
        nn.init.kaiming_uniform_(self.conv.weight, a=1)  # detectron2's c2_xavier_fill

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.conv(x))
        return F.relu(x) if self.relu else x


class FPNPixelDecoder(nn.Module):
    """Top-down FPN over res5..res2 producing per-pixel embeddings at stride 4 (sizes from
    :class:`~maskformer.model.config.PixelDecoderConfig`).

    res5: 3x3 conv + GN + ReLU. Each finer level: 1x1 lateral conv + GN, plus the nearest-upsampled coarser
    map, then 3x3 conv + GN + ReLU. A final 3x3 conv with bias gives E_pixel.
    """

    def __init__(self, in_channels: list[int], conv_dim: int, mask_dim: int, num_groups: int):
        super().__init__()
        # Top-down order: output_convs[0] acts on res5, lateral_convs[k] / output_convs[k + 1] on the finer ones.
        self.output_convs = nn.ModuleList([ConvNorm(in_channels[-1], conv_dim, 3, num_groups, relu=True)])
        self.lateral_convs = nn.ModuleList()
        for cin in in_channels[-2::-1]:
            self.lateral_convs.append(ConvNorm(cin, conv_dim, 1, num_groups, relu=False))
            self.output_convs.append(ConvNorm(conv_dim, conv_dim, 3, num_groups, relu=True))
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 3, padding=1)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.zeros_(self.mask_features.bias)

    def top_down(self, y: Tensor, features: list[Tensor], encoded: Tensor | None = None) -> PixelDecoderOutput:
        """Fuse the res5 map ``y`` (already through output_convs[0]) with res4..res2."""
        maps = [y]
        for lateral, output, x in zip(self.lateral_convs, self.output_convs[1:], features[-2::-1]):
            lat = lateral(x)
            y = output(lat + F.interpolate(y, size=lat.shape[-2:], mode="nearest"))
            maps.append(y)
        return PixelDecoderOutput(self.mask_features(y), maps[:3], encoded)

    def forward(self, features: list[Tensor]) -> PixelDecoderOutput:
        """features [res2..res5] -> mask features at stride 4 and the FPN maps at strides 32, 16, 8."""
        return self.top_down(self.output_convs[0](features[-1]), features)


class TransformerEncoderPixelDecoder(FPNPixelDecoder):
    """ "+6 Enc": res5 is projected to conv_dim and refined by DETR encoder layers before the FPN.

    The encoder output, not res5, is what the transformer decoder attends to.
    """

    def __init__(
        self,
        in_channels: list[int],
        conv_dim: int,
        mask_dim: int,
        num_groups: int,
        *,
        num_layers: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
    ):
        super().__init__(in_channels, conv_dim, mask_dim, num_groups)
        self.input_proj = nn.Conv2d(in_channels[-1], conv_dim, 1)
        nn.init.kaiming_uniform_(self.input_proj.weight, a=1)
        nn.init.zeros_(self.input_proj.bias)
        self.encoder = TransformerEncoder(conv_dim, num_heads, ffn_dim, num_layers, dropout)
        self.output_convs[0] = ConvNorm(conv_dim, conv_dim, 3, num_groups, relu=True)

    def forward(self, features: list[Tensor]) -> PixelDecoderOutput:
        """features [res2..res5] -> mask features, FPN maps and the encoded res5 [B, conv_dim, H/32, W/32]."""
        src = self.input_proj(features[-1])
        b, c, h, w = src.shape
        pos = sine_position_tokens(b, h, w, c, device=src.device, dtype=src.dtype)
        memory = self.encoder(src.flatten(2).transpose(1, 2), pos)
        memory = memory.transpose(1, 2).reshape(b, c, h, w)
        return self.top_down(self.output_convs[0](memory), features, memory)
