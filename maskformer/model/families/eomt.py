"""EoMT (Kerssies et al., CVPR 2025, "Your ViT is Secretly an Image Segmentation Model"): no pixel decoder and
no transformer decoder. Learned queries join the tokens of a plain DINOv2 ViT (with registers, patch 16)
before its last ``num_blocks`` blocks, which then process queries and patch tokens together; a final norm,
a class head and a mask MLP on the queries, and the patch tokens upscaled x4 by ScaleBlocks, predict the
classes and stride-4 masks (eomt-facts.md). The same with a DINOv3 ViT (timm's Eva: rotary position
embeddings, which the queries do not get, and no absolute ones), the official code's and transformers'
"eomt_dinov3".

During training each of those blocks restricts the queries' attention to the patches inside their previous
prediction's masks, with a per-block probability annealed from 1 to 0 (``attn_mask_probs``, a buffer saved
with the model): a finished model runs unmasked and predicts once, at the end.

Presets (the official configs, configs/dinov2/): ``eomt_<size>_<dataset>[_<image size>][_2x]`` for COCO
panoptic (small and base 2x, large and giant at 640 and 1280), COCO instance (large, 640 and 1280), ADE20K
panoptic (large and giant, 640 and 1280), ADE20K semantic (large, 512) and Cityscapes semantic (large, 1024);
from configs/dinov3/, the same names ending ``_dinov3`` for COCO panoptic (small and base 2x, large at 640 and
1280), COCO instance (large, 640 and 1280) and ADE20K semantic (large, 512).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

from ..backbone import build_vit
from ..config import AT_LEAST_1, BackboneConfig, Bounds, InferenceConfig, LossConfig, MetadataConfig, ModelConfig
from ..prediction import Prediction
from ..segmenter import Segmenter
from ..weights.detectron2_format import count_indices
from ..weights.renaming import Rule
from ..weights.transformers_format import point_loss
from .family import Checkpoint, Family, OfficialFormat, Recipe, TransformersFormat


@dataclass
class EoMTSection:
    """EoMT's own settings: ``num_queries`` learned queries joined before the last ``num_blocks`` ViT blocks;
    ``num_upscale_blocks`` ScaleBlocks (x2 each) from the patch grid to stride 4; ``image_size`` the square
    training and test size (of transformers' models, the only input size they take)."""

    BOUNDS: ClassVar[Bounds] = {
        "num_queries": AT_LEAST_1, "num_blocks": AT_LEAST_1, "num_upscale_blocks": AT_LEAST_1, "image_size": AT_LEAST_1,
    }  # fmt: skip

    num_queries: int = 200
    num_blocks: int = 4
    num_upscale_blocks: int = 2
    image_size: int = 640
    # Masked-attention annealing, per block: its mask probability falls from 1 at step anneal_start[i] to 0 at
    # anneal_end[i] as (1 - progress) ** anneal_power (the official configs'); empty: no annealing.
    anneal_start: tuple[int, ...] = ()
    anneal_end: tuple[int, ...] = ()
    anneal_power: float = 0.9
    # Layer-wise learning-rate decay over the ViT's blocks (the official llrd); decay_query_blocks false: the
    # blocks the queries run through learn at the full rate (the official DINOv3 configs' llrd_l2_enabled false).
    layer_decay: float = 0.8
    decay_query_blocks: bool = True


def _vit_large() -> BackboneConfig:
    return BackboneConfig(
        type="timm",
        name="vit_large_patch14_reg4_dinov2",
        timm_kwargs={"patch_size": 16, "init_values": 1.0},
    )


@dataclass
class EoMTConfig(ModelConfig):
    """A whole EoMT model: a DINOv2 ViT-L with registers at patch 16, 200 queries in its last 4 blocks, and
    Mask2Former's point-sampled loss (class 2, BCE 5, dice 5 on 12544 points)."""

    family: str = field(default="eomt", init=False)
    backbone: BackboneConfig = field(default_factory=_vit_large)
    loss: LossConfig = field(
        default_factory=lambda: LossConfig(
            class_weight=2.0, mask_weight=5.0, dice_weight=5.0, cost_class=2.0, cost_mask=5.0, cost_dice=5.0,
            mask_loss="bce", num_points=12544, point_padding="zeros", final_last=True,
        )
    )  # fmt: skip
    eomt: EoMTSection = field(default_factory=EoMTSection)


def mask_probability(start: int, step: int, end: int, power: float) -> Tensor:
    """A block's masked-attention probability after ``step`` steps: 1 before ``start``, 0 from ``end`` on,
    ``(1 - progress) ** power`` between (the official training's ``mask_annealing``, in float32)."""
    if step < start:
        return torch.ones(())
    if step >= end:
        return torch.zeros(())
    return (1.0 - torch.tensor((step - start) / (end - start))).pow(power)


def anneal(model: nn.Module, step: int, max_steps: int) -> None:
    """The family's ``on_train_step``: every block's mask probability for the step about to run, from the
    config's annealing steps (the official code sets them after each step, from the steps done: the same)."""
    e = model.config.eomt
    for i, (start, end) in enumerate(zip(e.anneal_start, e.anneal_end)):
        model.attn_mask_probs[i] = mask_probability(start, step, end, e.anneal_power)


# Blocks of the DINOv2 ViTs by size, for configs that do not set ``depth`` in the backbone's timm arguments.
_DEPTHS = {"small": 12, "base": 12, "large": 24, "giant": 40}


def vit_depth(config: EoMTConfig) -> int:
    """The number of blocks of the config's ViT."""
    kwargs = config.backbone.timm_kwargs
    if "depth" in kwargs:
        return int(kwargs["depth"])
    return next(d for size, d in _DEPTHS.items() if f"vit_{size}_" in config.backbone.name)


def layer_decay(config: EoMTConfig, name: str, backbone_multiplier: float) -> float:
    """The family's ``lr_factor``, the official layer-wise decay: the ViT's block i of B learns at
    ``layer_decay ** (B - 1 - i)``, its embeddings (patch, position, class and register tokens) as block 0, its
    final norm and everything outside the ViT at 1; the ViT's factors times the run's backbone multiplier (1
    in EoMT's recipes); with ``decay_query_blocks`` false the blocks the queries run through at 1."""
    if not name.startswith("backbone.") or name.startswith("backbone.norm."):
        return 1.0
    depth = vit_depth(config)
    parts = name.split(".")
    block = int(parts[2]) if parts[1] == "blocks" else 0
    if not config.eomt.decay_query_blocks and parts[1] == "blocks" and block >= depth - config.eomt.num_blocks:
        return 1.0
    return backbone_multiplier * config.eomt.layer_decay ** (depth - 1 - block)


def _rotary_table(rope: nn.Module, h: int, w: int) -> Tensor:
    """timm's DINOv3 rotary table of an h x w grid without training-time augmentation (RotaryEmbeddingDinoV3:
    patch centres in [-1, 1] along each axis, angles 2 pi coordinate / period, [sin, cos] each in the
    rotate-half layout), computed from tensors only: timm's takes ``float()`` of the grid's size, which fixes
    it in an exported program to the example's."""
    # Each axis's size divides as a float tensor (its last index + 1): ONNX divides no floats by integers.
    steps = [torch.arange(n, dtype=torch.float32, device=rope.periods.device) for n in (h, w)]
    axes = [(t + 0.5) / (t[-1] + 1) for t in steps]
    coords = (2.0 * torch.stack(torch.meshgrid(axes, indexing="ij"), dim=-1) - 1.0).flatten(0, 1)
    angles = (2 * math.pi * coords[:, :, None].to(rope.periods.dtype) / rope.periods).flatten(1)
    return torch.cat([angles.sin(), angles.sin(), angles.cos(), angles.cos()], dim=-1)


# Bytes of upscaled tokens per band of rows when masks are predicted without autograd (EoMT._masks), and the
# fewest input rows per band: each band recomputes one input row on either side, 3x the work at one row.
BAND_BYTES = 4 * 2**20
MIN_BAND_ROWS = 8


class ConvTranspose2x2(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)`` (its parameters, initialisation and state dict)
    computed as the matrix product it is: its output pixels do not overlap, so each input pixel's channels
    times the weight as a [C_in, 2 * 2 * C_out] matrix are its 2 x 2 output pixels, which one copy puts in place
    (channels-last). The same values up to rounding; forward and backward together ran 1.4x (NCHW input) to 3x
    (channels-last) faster than oneDNN's transposed convolution on a CPU (benchmarks/RESULTS.md)."""

    def __init__(self, dim: int):
        super().__init__(dim, dim, kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        out = self.out_channels
        weight = self.weight.permute(0, 2, 3, 1).reshape(c, 4 * out)  # [C_in, (row, column, C_out)]
        y = torch.addmm(self.bias.repeat(4), x.permute(0, 2, 3, 1).reshape(-1, c), weight)
        y = y.view(b, h, w, 2, 2, out).permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, out)
        return y.permute(0, 3, 1, 2)


class ScaleBlock(nn.Module):
    """x2 upscaling of a [B, C, h, w] map: transposed conv (k2 s2), GELU, depthwise 3x3 conv, LayerNorm over
    channels."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = ConvTranspose2x2(dim)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv2(self.act(self.conv1(x)))
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def rows(self, x: Tensor, start: int, stop: int) -> Tensor:
        """Output rows ``2 * start`` to ``2 * stop`` of ``forward(x)``, from input rows ``start - 1`` to ``stop
        + 1`` only: the transposed convolution maps each input row to two output rows, and the 3x3 convolution
        reads one output row on either side, which the extra input rows give (its zero padding where they are
        beyond the map's edge, as in ``forward``)."""
        lo, hi = max(start - 1, 0), min(stop + 1, x.shape[2])
        y = self.conv2(self.act(self.conv1(x[:, :, lo:hi])))[:, :, 2 * (start - lo) : 2 * (stop - lo)]
        return self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class EoMT(Segmenter):
    """images [B, 3, H, W] (H, W multiples of the patch size) -> :class:`Prediction` with logits [B, N, K+1]
    and masks [B, N, H/4, W/4]; ``aux`` the predictions made before each of the last ``num_blocks`` blocks
    (in training, or with ``with_aux``)."""

    def __init__(self, config: EoMTConfig):
        super().__init__(config)
        e = config.eomt
        self.backbone = build_vit(config.backbone, e.image_size)
        dim = self.backbone.embed_dim
        self.num_prefix = self.backbone.num_prefix_tokens
        self.patch = self.backbone.patch_embed.patch_size[0]
        self.query = nn.Embedding(e.num_queries, dim)
        self.upscale = nn.Sequential(*[ScaleBlock(dim) for _ in range(e.num_upscale_blocks)])
        self.mask_head = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)
        )
        self.class_predictor = nn.Linear(dim, config.num_classes + 1)
        # The probability that each of the last num_blocks blocks masks a query's attention; annealed to 0 in
        # training, saved with the model.
        self.register_buffer("attn_mask_probs", torch.ones(e.num_blocks))
        if getattr(self.backbone, "rope", None) is not None:
            # timm's rotary attention leaves its first num_prefix_tokens tokens unrotated; in the blocks the
            # queries join, the queries come first and have no position either.
            for block in self.backbone.blocks[len(self.backbone.blocks) - e.num_blocks :]:
                block.attn.num_prefix_tokens = e.num_queries + self.num_prefix

    @property
    def class_head(self) -> nn.Linear:
        return self.class_predictor

    def _tokens(self, images: Tensor) -> tuple[Tensor, tuple[int, int], Tensor | None]:
        """The ViT's input tokens [B, P + h * w, C] (class and register tokens first), the patch grid (h, w), and
        the grid's rotary embeddings for a ViT with them (DINOv3; None for absolute ones only, DINOv2)."""
        vit = self.backbone
        x = vit.patch_embed(images)  # [B, h, w, C]
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        if vit.pos_embed is not None:
            x = x + resample_abs_pos_embed(
                vit.pos_embed, new_size=(h, w), old_size=vit.patch_embed.grid_size, num_prefix_tokens=0
            )
        rope = None
        if getattr(vit, "rope", None) is not None:
            rope = _rotary_table(vit.rope, h, w) if torch.compiler.is_exporting() else vit.rope.get_embed(shape=(h, w))
        prefix = [t.expand(b, -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
        return vit.norm_pre(torch.cat([*prefix, x], dim=1)), (h, w), rope

    def _predict(self, x: Tensor, grid: tuple[int, int]) -> Prediction:
        x = self.backbone.norm(x)
        n = self.config.eomt.num_queries
        queries = x[:, :n]
        tokens = x[:, n + self.num_prefix :].transpose(1, 2).reshape(x.shape[0], -1, *grid)
        return Prediction(self.class_predictor(queries), self._masks(self.mask_head(queries), tokens))

    def _masks(self, embeddings: Tensor, tokens: Tensor) -> Tensor:
        """Mask logits [B, N, 4h, 4w]: each query's embedding [B, N, C] dotted with the upscaled patch tokens
        [B, C, h, w]. Without autograd (and outside export and compile, which trace the plain form), the last
        ScaleBlock and the products run in bands of rows, so that the largest maps (C channels at stride 4,
        37.5 MiB for ViT-S at 640) are never held whole: the same values in less memory."""
        *earlier, last = self.upscale
        if torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return torch.einsum("bqc,bchw->bqhw", embeddings, self.upscale(tokens))
        for block in earlier:
            tokens = block(tokens)
        b, c, h, w = tokens.shape
        # Input rows per band: its upscaled rows (2 per input row) take about BAND_BYTES.
        rows = max(MIN_BAND_ROWS, BAND_BYTES // (4 * w * c * b * tokens.element_size()))
        if rows >= h:  # one band: the whole map, without the bands' copies
            return torch.einsum("bqc,bchw->bqhw", embeddings, last(tokens))
        masks = embeddings.new_empty(b, embeddings.shape[1], 2 * h, 2 * w)
        for start in range(0, h, rows):
            stop = min(start + rows, h)
            band = last.rows(tokens, start, stop)
            masks[:, :, 2 * start : 2 * stop] = torch.einsum("bqc,bchw->bqhw", embeddings, band)
        return masks

    def _attention_mask(self, prediction: Prediction, grid: tuple[int, int], tokens: int, prob: Tensor) -> Tensor:
        """True where a token may attend: everywhere, except queries to patches outside their predicted mask
        (mask logits resized to the grid, > 0), each query masked with probability ``prob``."""
        b, n = prediction.logits.shape[:2]
        inside = F.interpolate(prediction.masks, size=grid, mode="bilinear", align_corners=False).flatten(2) > 0
        start = n + self.num_prefix
        keep = (
            torch.rand(b, n, device=inside.device) > prob
            if bool(prob < 1)
            else torch.zeros(b, n, dtype=torch.bool, device=inside.device)
        )
        mask = torch.ones(b, tokens, tokens, dtype=torch.bool, device=inside.device)
        mask[:, :n, start:] = inside | keep[..., None]
        return mask[:, None]

    def check_exportable(self) -> None:
        """A program is traced without the buffers' values, so it cannot choose per block whether to mask: only
        a finished model (every mask probability 0, as training leaves it) exports, unmasked."""
        if bool(self.attn_mask_probs.any()):
            raise ValueError(
                f"this EoMT still masks its queries' attention (attn_mask_probs {self.attn_mask_probs.tolist()}): "
                "only a model trained to the end of its mask annealing (all 0) can be exported"
            )

    def forward(self, images: Tensor, with_aux: bool | None = None) -> Prediction:
        with_aux = self.training if with_aux is None else with_aux
        x, grid, rope = self._tokens(images)
        position = {} if rope is None else {"rope": rope}
        blocks = self.backbone.blocks
        first = len(blocks) - self.config.eomt.num_blocks
        # An exported program never masks (check_exportable): tracing cannot read the probabilities.
        exporting = torch.compiler.is_exporting()
        earlier: list[Prediction] = []
        for i, block in enumerate(blocks):
            mask = None
            if i == first:
                x = torch.cat([self.query.weight[None].expand(x.shape[0], -1, -1), x], dim=1)
            if i >= first and not exporting:
                prob = self.attn_mask_probs[i - first]
                if self.training or bool(prob > 0):
                    prediction = self._predict(x, grid)
                    earlier.append(prediction)
                    mask = self._attention_mask(prediction, grid, x.shape[1], prob)
            x = block(x, attn_mask=mask, **position)
        final = self._predict(x, grid)
        return Prediction(final.logits, final.masks, earlier if with_aux else [])


def config_from_transformers(data: Mapping[str, Any], source: str = "config.json") -> EoMTConfig:
    """An EoMT config of a transformers ``config.json``: model_type "eomt" (a DINOv2 ViT) or "eomt_dinov3"."""
    dinov3 = data.get("model_type") == "eomt_dinov3"
    backbone = _dinov3_from_transformers(data, source) if dinov3 else _dinov2_from_transformers(data, source)
    id2label = data.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)]
    num_classes = int(data.get("num_labels", len(names)))
    base = EoMTConfig()
    image_size = data.get("image_size", 640)
    return EoMTConfig(
        num_classes=num_classes,
        backbone=backbone,
        eomt=EoMTSection(
            num_queries=data.get("num_queries", 200),
            num_blocks=data.get("num_blocks", 4),
            num_upscale_blocks=data.get("num_upscale_blocks", 2),
            image_size=image_size,
        ),
        loss=point_loss(data, base.loss),
        inference=inference_at(int(image_size)),
        metadata=MetadataConfig(class_names=names if len(names) == num_classes else []),
    )


def _dinov2_from_transformers(data: Mapping[str, Any], source: str) -> BackboneConfig:
    """The DINOv2 ViT of a transformers "eomt" config, as timm's ViT."""
    if data.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{source}: hidden_act {data.get('hidden_act')!r} (only gelu is supported)")
    dim = data.get("hidden_size", 1024)
    kwargs = {
        "patch_size": data.get("patch_size", 16),
        "embed_dim": dim,
        "depth": data.get("num_hidden_layers", 24),
        "num_heads": data.get("num_attention_heads", 16),
        "mlp_ratio": data.get("mlp_ratio", 4),
        "init_values": data.get("layerscale_value", 1.0),
        "reg_tokens": data.get("num_register_tokens", 4),
    }
    if data.get("use_swiglu_ffn", False):
        # DINOv2's SwiGLU keeps two thirds of the MLP width, rounded up to a multiple of 8; timm's packed SwiGLU
        # takes both halves' width as a ratio (half a unit above, against float rounding).
        hidden = (int(dim * kwargs["mlp_ratio"] * 2 / 3) + 7) // 8 * 8
        kwargs.update(swiglu=True, mlp_ratio=(2 * hidden + 0.5) / dim)
    return BackboneConfig(type="timm", name="vit_large_patch14_reg4_dinov2", timm_kwargs=kwargs)


# The DINOv3 ViTs by width (timm's vit_<size>_patch16_dinov3[_qkvb]).
_DINOV3_BY_WIDTH = {384: "small", 768: "base", 1024: "large", 1280: "huge_plus"}


def _dinov3_from_transformers(data: Mapping[str, Any], source: str) -> BackboneConfig:
    """The DINOv3 ViT of a transformers "eomt_dinov3" config, as timm's Eva: rotary position embeddings of
    period base ``rope_theta`` (their training-time shift, jitter and rescaling too), LayerNorms of
    ``layer_norm_eps``, a GELU MLP of ``intermediate_size``, query and value biases (timm's ``_qkvb``
    models; the key's is always zero) or none."""
    dim = data.get("hidden_size", 1024)
    rope = data.get("rope_parameters") or {}
    bias = data.get("query_bias", True)
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"{source}: rope_type {rope.get('rope_type')!r} (only the default rotary embeddings)")
    if data.get("key_bias", False) or data.get("value_bias", True) != bias:
        biases = (bias, data.get("key_bias", False), data.get("value_bias", True))
        raise ValueError(f"{source}: query, key and value biases {biases} (DINOv3 ViTs have q and v biases or none)")
    if not (data.get("proj_bias", True) and data.get("mlp_bias", True)):
        raise ValueError(f"{source}: proj_bias and mlp_bias false (DINOv3 ViTs have both)")
    if data.get("use_gated_mlp", False) or data.get("hidden_act", "gelu") != "gelu":
        # transformers' model would run its mask head and upscaler with the gated MLP's activation too, where the
        # official EoMT keeps GELU; no published EoMT has a gated MLP (the DINOv3 ViTs of S, B and L have none).
        raise ValueError(f"{source}: use_gated_mlp or a hidden_act other than gelu (only plain GELU MLPs, as "
                         "every published EoMT-DINOv3 has)")  # fmt: skip
    kwargs: dict[str, Any] = {
        "patch_size": data.get("patch_size", 16),
        "embed_dim": dim,
        "depth": data.get("num_hidden_layers", 24),
        "num_heads": data.get("num_attention_heads", 16),
        # Half a unit above the width, against float rounding (timm takes int(dim * ratio)).
        "mlp_ratio": (data.get("intermediate_size", 4 * dim) + 0.5) / dim,
        "init_values": data.get("layerscale_value", 1.0),
        "num_reg_tokens": data.get("num_register_tokens", 4),
        "rope_temperature": rope.get("rope_theta", 100.0),
        "norm_eps": data.get("layer_norm_eps", 1e-6),
    }
    for augmentation in ("shift", "jitter", "rescale"):
        if data.get(f"pos_embed_{augmentation}") is not None:
            kwargs[f"rope_{augmentation}_coords"] = data[f"pos_embed_{augmentation}"]
    name = f"vit_{_DINOV3_BY_WIDTH.get(dim, 'large')}_patch16_dinov3{'_qkvb' if bias else ''}"
    return BackboneConfig(type="timm", name=name, timm_kwargs=kwargs)


def rotary(config: EoMTConfig) -> bool:
    """Whether the config's ViT is a DINOv3 (rotary position embeddings, timm's Eva) rather than a DINOv2."""
    return "_dinov3" in config.backbone.name


def inference_at(image_size: int) -> InferenceConfig:
    """EoMT's inference for a model trained at ``image_size`` (the official evaluation's, transformers'
    default): thresholds 0.8 / 0.8; panoptic and instance on the image with its longer side at the image size,
    padded to a square of that side with black pixels; semantic by square windows of that side."""
    return InferenceConfig(
        object_mask_threshold=0.8,
        overlap_threshold=0.8,
        test_shortest_edge=image_size,
        test_max_size=image_size,
        semantic_window=image_size,
        pad_square=image_size,
    )


def transformers_rules(config: EoMTConfig | None = None) -> list[Rule]:
    """transformers' EoMT names -> this package's (timm's ViT or Eva names under ``backbone.``); a DINOv3
    config's ("eomt_dinov3") by :func:`rotary`."""
    if config is not None and rotary(config):
        vit = [
            (r"embeddings\.cls_token", "backbone.cls_token"),
            (r"embeddings\.register_tokens", "backbone.reg_token"),
            (r"embeddings\.patch_embeddings\.(\w+)", r"backbone.patch_embed.proj.\1"),
            *_dinov3_block_rules(r"layers\.(\d+)\."),
        ]
    else:
        vit = _dinov2_transformers_rules()
    return [
        *vit,
        (r"layernorm\.(\w+)", r"backbone.norm.\1"),
        (r"query\.weight", "query.weight"),
        (r"upscale_block\.block\.(\d+)\.conv([12])\.(\w+)", r"upscale.\1.conv\2.\3"),
        (r"upscale_block\.block\.(\d+)\.layernorm2d\.(\w+)", r"upscale.\1.norm.\2"),
        (r"mask_head\.fc1\.(\w+)", r"mask_head.0.\1"),
        (r"mask_head\.fc2\.(\w+)", r"mask_head.2.\1"),
        (r"mask_head\.fc3\.(\w+)", r"mask_head.4.\1"),
        (r"class_predictor\.(\w+)", r"class_predictor.\1"),
        (r"attn_mask_probs", "attn_mask_probs"),
        (r"criterion\..*", None),
    ]


def _dinov2_transformers_rules() -> list[Rule]:
    layer = r"layers\.(\d+)\."
    out = r"backbone.blocks.\1."
    qkv = {"q": 0, "k": 1, "v": 2}
    return [
        (r"embeddings\.cls_token", "backbone.cls_token"),
        (r"embeddings\.register_tokens", "backbone.reg_token"),
        (r"embeddings\.patch_embeddings\.projection\.(\w+)", r"backbone.patch_embed.proj.\1"),
        (r"embeddings\.position_embeddings\.weight", "backbone.pos_embed"),
        (layer + r"norm([12])\.(\w+)", out + r"norm\2.\3"),
        (layer + r"attention\.([qkv])_proj\.(\w+)", lambda m: f"backbone.blocks.{m[1]}.attn.qkv.{m[3]}#{qkv[m[2]]}"),
        (layer + r"attention\.out_proj\.(\w+)", out + r"attn.proj.\2"),
        (layer + r"layer_scale([12])\.lambda1", out + r"ls\2.gamma"),
        (layer + r"mlp\.fc([12])\.(\w+)", out + r"mlp.fc\2.\3"),
        (layer + r"mlp\.gate_proj\.(\w+)", lambda m: f"backbone.blocks.{m[1]}.mlp.fc1.{m[2]}#0"),
        (layer + r"mlp\.up_proj\.(\w+)", lambda m: f"backbone.blocks.{m[1]}.mlp.fc1.{m[2]}#1"),
        (layer + r"mlp\.down_proj\.(\w+)", out + r"mlp.fc2.\2"),
    ]


def _dinov3_block_rules(layer: str) -> list[Rule]:
    """transformers' DINOv3 layer names (``layer`` the pattern of a layer's prefix, its index the first group)
    -> timm's Eva blocks: q, k and v packed into one weight, the query and value biases apart (the key has
    none), layer scales as ``gamma_1`` and ``gamma_2``."""
    out = r"backbone.blocks.\1."
    qkv = {"q": 0, "k": 1, "v": 2}
    return [
        (layer + r"norm([12])\.(\w+)", out + r"norm\2.\3"),
        (layer + r"attention\.([qkv])_proj\.weight", lambda m: f"backbone.blocks.{m[1]}.attn.qkv.weight#{qkv[m[2]]}"),
        (layer + r"attention\.([qv])_proj\.bias", out + r"attn.\2_bias"),
        (layer + r"attention\.o_proj\.(\w+)", out + r"attn.proj.\2"),
        (layer + r"layer_scale([12])\.lambda1", out + r"gamma_\2"),
        (layer + r"mlp\.up_proj\.(\w+)", out + r"mlp.fc1.\2"),
        (layer + r"mlp\.down_proj\.(\w+)", out + r"mlp.fc2.\2"),
    ]


def adapt_transformers_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """transformers keeps the position embeddings as an embedding table [N, C] (timm: [1, N, C]) and an empty
    register table for a ViT without registers (timm: none)."""
    out = dict(state)
    if "backbone.pos_embed" in out and out["backbone.pos_embed"].dim() == 2:
        out["backbone.pos_embed"] = out["backbone.pos_embed"][None]
    if "backbone.reg_token" in out and out["backbone.reg_token"].numel() == 0:
        del out["backbone.reg_token"]
    return out


# The DINOv2 ViTs by width: timm's name (heads are width / 64).
_VIT_BY_WIDTH = {384: "small", 768: "base", 1024: "large", 1536: "giant"}


def official_recognises(state: Mapping[str, Tensor]) -> bool:
    """The official code's checkpoints: the network's weights under ``network.`` (its ViT under
    ``network.encoder.backbone.``, the queries as ``network.q``)."""
    return "network.q.weight" in state and any(k.startswith("network.encoder.backbone.") for k in state)


def official_config(state: Mapping[str, Tensor], source: str = "checkpoint") -> EoMTConfig:
    """An EoMT config read off an official checkpoint's names and shapes: width, depth, registers, patch and
    grid from the ViT; queries and classes from their tables; the masked blocks from ``attn_mask_probs``. Heads
    are not visible in weights: DINOv2's 64 channels per head are assumed."""
    vit = "network.encoder.backbone."
    if vit + "blocks.0.attention.q_proj.weight" in state:
        return _official_dinov3_config(state, source)
    for key in (vit + "pos_embed", vit + "patch_embed.proj.weight", "network.class_head.weight"):
        if key not in state:
            raise ValueError(f"{source}: missing {key}; not an official EoMT checkpoint")
    dim = state[vit + "pos_embed"].shape[-1]
    patch = state[vit + "patch_embed.proj.weight"].shape[-1]
    grid = math.isqrt(state[vit + "pos_embed"].shape[1])
    hidden = state[vit + "blocks.0.mlp.fc1.weight"].shape[0]
    kwargs = {
        "patch_size": patch, "embed_dim": dim, "depth": count_indices(state, re.escape(vit) + r"blocks\.(\d+)\."),
        "num_heads": dim // 64, "init_values": 1.0,
        "reg_tokens": state[vit + "reg_token"].shape[1] if vit + "reg_token" in state else 0,
    }  # fmt: skip
    if hidden == 4 * dim:
        kwargs["mlp_ratio"] = 4.0
    else:  # SwiGLU: fc1 packs both halves
        kwargs.update(swiglu=True, mlp_ratio=(hidden + 0.5) / dim)
    size = _VIT_BY_WIDTH.get(dim, "large")
    backbone = BackboneConfig(type="timm", name=f"vit_{size}_patch14_reg4_dinov2", timm_kwargs=kwargs)
    return _official_heads(state, backbone, grid * patch)


def _official_heads(state: Mapping[str, Tensor], backbone: BackboneConfig, image_size: int) -> EoMTConfig:
    """An official checkpoint's config around its ViT: classes and queries from their tables, the masked
    blocks from ``attn_mask_probs``, the upscaler's blocks."""
    return EoMTConfig(
        num_classes=state["network.class_head.weight"].shape[0] - 1,
        backbone=backbone,
        eomt=EoMTSection(
            num_queries=state["network.q.weight"].shape[0],
            num_blocks=state["network.attn_mask_probs"].shape[0] if "network.attn_mask_probs" in state else 4,
            num_upscale_blocks=count_indices(state, r"network\.upscale\.(\d+)\."),
            image_size=image_size,
        ),
        inference=inference_at(image_size),
    )


# The official code's DINOv3 ViT: transformers' DINOv3ViTModel with its embeddings renamed patch_embed and its
# layers blocks, under network.encoder.backbone.
_DINOV3_OFFICIAL = r"network\.encoder\.backbone\."


def _official_dinov3_config(state: Mapping[str, Tensor], source: str) -> EoMTConfig:
    """An official EoMT-DINOv3 checkpoint's config: the ViT's width, depth, registers, patch and MLP from its
    weights; 64 channels per head, LayerNorm epsilon 1e-5, rotary period base 100 and rescaling 2 in training
    (the DINOv3 ViTs' own settings, which the weights do not show); image size 640 (nor does that: give a
    config for the 512 and 1280 models)."""
    vit = "network.encoder.backbone."
    for key in (vit + "patch_embed.patch_embeddings.weight", "network.class_head.weight"):
        if key not in state:
            raise ValueError(f"{source}: missing {key}; not an official EoMT-DINOv3 checkpoint")
    if vit + "blocks.0.mlp.gate_proj.weight" in state:
        raise ValueError(f"{source}: a gated MLP (only plain MLPs, as every published EoMT-DINOv3 has)")
    dim, _, patch, _ = state[vit + "patch_embed.patch_embeddings.weight"].shape
    registers = vit + "patch_embed.register_tokens"
    bias = vit + "blocks.0.attention.q_proj.bias" in state
    kwargs = {
        "patch_size": patch, "embed_dim": dim, "depth": count_indices(state, _DINOV3_OFFICIAL + r"blocks\.(\d+)\."),
        "num_heads": dim // 64, "mlp_ratio": (state[vit + "blocks.0.mlp.up_proj.weight"].shape[0] + 0.5) / dim,
        "init_values": 1.0, "num_reg_tokens": state[registers].shape[1] if registers in state else 0,
        "rope_temperature": 100.0, "norm_eps": 1e-5, "rope_rescale_coords": 2.0,
    }  # fmt: skip
    name = f"vit_{_DINOV3_BY_WIDTH.get(dim, 'large')}_patch16_dinov3{'_qkvb' if bias else ''}"
    return _official_heads(state, BackboneConfig(type="timm", name=name, timm_kwargs=kwargs), 640)


def official_rules(config: EoMTConfig | None = None) -> list[Rule]:
    """The official code's names -> this package's: its DINOv2 ViT is timm's, its DINOv3 ViT transformers' (renamed
    by :func:`_dinov3_block_rules`), under ``network.encoder.backbone.``."""
    if config is not None and rotary(config):
        vit: list[Rule] = [
            (_DINOV3_OFFICIAL + r"patch_embed\.cls_token", "backbone.cls_token"),
            (_DINOV3_OFFICIAL + r"patch_embed\.register_tokens", "backbone.reg_token"),
            (_DINOV3_OFFICIAL + r"patch_embed\.patch_embeddings\.(\w+)", r"backbone.patch_embed.proj.\1"),
            (_DINOV3_OFFICIAL + r"rope_embeddings\..*", None),  # a function of the config, not a weight
            *_dinov3_block_rules(_DINOV3_OFFICIAL + r"blocks\.(\d+)\."),
            (_DINOV3_OFFICIAL + r"norm\.(\w+)", r"backbone.norm.\1"),
        ]
    else:
        vit = [(r"network\.encoder\.backbone\.(.*)", r"backbone.\1")]
    return [
        *vit,
        (r"network\.encoder\.pixel_(mean|std)", None),  # its normalisation; this package's is the config's
        (r"network\.q\.weight", "query.weight"),
        (r"network\.class_head\.(\w+)", r"class_predictor.\1"),
        (r"network\.(mask_head|upscale)\.(.*)", r"\1.\2"),
        (r"network\.attn_mask_probs", "attn_mask_probs"),
        (r"criterion\..*", None),
    ]


def _vit(size: str) -> BackboneConfig:
    """DINOv2 with registers of ``size`` at patch 16 (the official ViT: timm's, patch embedding resampled
    from 14), layer scale present (its DINOv2 values are loaded)."""
    kwargs: dict[str, Any] = {"patch_size": 16, "init_values": 1.0}
    return BackboneConfig(type="timm", name=f"vit_{size}_patch14_reg4_dinov2", timm_kwargs=kwargs)


# name: (ViT size, dataset key, classes, image size, queries, masked blocks, annealing starts, ends), from
# configs/dinov2/<dataset>/<task>/eomt_<size>_<image size>[_2x].yaml (the annealing's last end is the last step).
_COCO_4 = ((14782, 29564, 44346, 59128), (29564, 44346, 59128, 73910))
_COCO_5 = ((14782, 25869, 36955, 48042, 59128), (29564, 40651, 51737, 62824, 73910))
_ADE_4 = ((6520, 13040, 19560, 26080), (13040, 19560, 26080, 32600))
_ADE_5 = ((6520, 11410, 16300, 21190, 26080), (13040, 17930, 22820, 27710, 32600))
_CITY_4 = ((3317, 6634, 9951, 13268), (6634, 9951, 13268, 16585))
_CONFIGS = {
    "eomt_small_coco_2x": ("small", "coco", 133, 640, 200, 3, ((29564, 73910, 118256), (59128, 103474, 147820))),
    "eomt_base_coco_2x": ("base", "coco", 133, 640, 200, 3, ((29564, 73910, 118256), (59128, 103474, 147820))),
    "eomt_large_coco": ("large", "coco", 133, 640, 200, 4, _COCO_4),
    "eomt_large_coco_1280": ("large", "coco", 133, 1280, 200, 4, _COCO_4),
    "eomt_giant_coco": ("giant", "coco", 133, 640, 200, 5, _COCO_5),
    "eomt_giant_coco_1280": ("giant", "coco", 133, 1280, 200, 5, _COCO_5),
    "eomt_large_coco_instance": ("large", "coco_instance", 80, 640, 200, 4, _COCO_4),
    "eomt_large_coco_instance_1280": ("large", "coco_instance", 80, 1280, 200, 4, _COCO_4),
    "eomt_large_ade_panoptic": ("large", "ade_panoptic", 150, 640, 200, 4, _ADE_4),
    "eomt_large_ade_panoptic_1280": ("large", "ade_panoptic", 150, 1280, 200, 4, _ADE_4),
    "eomt_giant_ade_panoptic": ("giant", "ade_panoptic", 150, 640, 200, 5, _ADE_5),
    "eomt_giant_ade_panoptic_1280": ("giant", "ade_panoptic", 150, 1280, 200, 5, _ADE_5),
    "eomt_large_ade": ("large", "ade", 150, 512, 100, 4, _ADE_4),
    "eomt_large_cityscapes": ("large", "cityscapes", 19, 1024, 100, 4, _CITY_4),
}  # fmt: skip
# The same from configs/dinov3/ (ViT-S, B and L with DINOv3's weights): the first block's masks annealed in the
# first 3000 steps; ADE20K semantic in 16 epochs.
_DINOV3_COCO_3 = ((0, 73910, 118256), (3000, 103474, 147820))
_DINOV3_COCO_4 = ((0, 29564, 44346, 59128), (3000, 44346, 59128, 73910))
_CONFIGS.update({
    "eomt_small_coco_2x_dinov3": ("small", "coco", 133, 640, 200, 3, _DINOV3_COCO_3),
    "eomt_base_coco_2x_dinov3": ("base", "coco", 133, 640, 200, 3, _DINOV3_COCO_3),
    "eomt_large_coco_dinov3": ("large", "coco", 133, 640, 200, 4, _DINOV3_COCO_4),
    "eomt_large_coco_1280_dinov3": ("large", "coco", 133, 1280, 200, 4, _DINOV3_COCO_4),
    "eomt_large_coco_instance_dinov3": ("large", "coco_instance", 80, 640, 200, 4, _COCO_4),
    "eomt_large_coco_instance_1280_dinov3": ("large", "coco_instance", 80, 1280, 200, 4, _COCO_4),
    "eomt_large_ade_dinov3": ("large", "ade", 150, 512, 100, 4, ((0, 6520, 9780, 13040), (3000, 9780, 13040, 16300))),
})  # fmt: skip


def _vit3(size: str) -> BackboneConfig:
    """DINOv3 of ``size`` (timm's, with the query and value biases of the official code's transformers ViT),
    its rotary positions rescaled by up to 2x in training as DINOv3's own config does."""
    kwargs: dict[str, Any] = {"rope_rescale_coords": 2.0}
    return BackboneConfig(type="timm", name=f"vit_{size}_patch16_dinov3_qkvb", timm_kwargs=kwargs)


def _preset(name: str) -> EoMTConfig:
    size, dataset, classes, image, queries, blocks, (starts, ends) = _CONFIGS[name]
    dinov3 = name.endswith("_dinov3")
    return EoMTConfig(
        num_classes=classes,
        backbone=_vit3(size) if dinov3 else _vit(size),
        eomt=EoMTSection(
            num_queries=queries,
            num_blocks=blocks,
            image_size=image,
            anneal_start=starts,
            anneal_end=ends,
            # The DINOv3 configs: the query blocks at the full rate (llrd_l2_enabled false), and for ADE20K
            # semantic no decay at all (llrd 1; its lr_mult 0.1 has no effect in the official code).
            layer_decay=1.0 if dinov3 and dataset == "ade" else 0.8,
            decay_query_blocks=not dinov3,
        ),
        inference=inference_at(image),
    )


PRESETS: dict[str, Callable[[], EoMTConfig]] = {name: functools.partial(_preset, name) for name in _CONFIGS}
# The dataset each preset is configured for (a key of maskformer.data.catalog.DATASETS).
PRESET_DATASETS: dict[str, str] = {name: entry[1] for name, entry in _CONFIGS.items()}
# AdamW 1e-4 with weight decay 0.05 on every parameter (the official code applies it to norms and embeddings
# too), no gradient clipping, 16-bit mixed precision.
OPTIMIZER = {"weight_decay": 0.05, "weight_decay_norm": 0.05, "weight_decay_embed": 0.05}


def _recipe(name: str, dataset: str) -> Recipe:
    """EoMT's recipe for a preset (the official configs): batch 16, as many steps as the annealing's last end
    (12 epochs of COCO, 24 for 2x, 31 of ADE20K, 107 of Cityscapes), the ViT at the base rate (its layer-wise
    decay is the family's ``lr_factor``), the official two-stage warm-up (500 steps for the new parts while the
    ViT waits, then 1000 for the ViT) and poly 0.9, bf16-mixed. The DINOv3 presets: 2e-4, warm-ups of 2000 and
    3000 steps."""
    image = _CONFIGS[name][3]
    steps = _CONFIGS[name][6][1][-1]
    lr, warmup, backbone_warmup = (2e-4, 2000, 3000) if name.endswith("_dinov3") else (1e-4, 500, 1000)
    train = {
        **OPTIMIZER, "lr": lr, "batch_size": 16, "max_steps": steps, "backbone_lr_multiplier": 1.0,
        "clip_grad_norm": 0.0, "schedule": "two_stage_poly", "warmup_steps": warmup,
        "backbone_warmup_steps": backbone_warmup, "precision": "bf16-mixed",
    }  # fmt: skip
    # The official datasets' transform: scale jitter to the image size times 0.1-2.0 (0.5-2.0 for the semantic
    # datasets), black padding, colour jitter for ADE20K (semantic and panoptic) and Cityscapes, not for COCO.
    low = 0.5 if dataset in ("ade", "cityscapes") else 0.1
    data = {
        "crop_size": (image, image), "augmentation": "scale_jitter", "min_scale": low, "max_scale": 2.0,
        "color_jitter": dataset in ("ade", "ade_panoptic", "cityscapes"),
    }  # fmt: skip
    return Recipe(train, data)


# The official checkpoints on the hub (model_zoo/dinov2.md); ADE20K panoptic ones start from COCO panoptic.
_LICENCE = "not stated (code MIT)"


def _hub(name: str, repo: str, dataset: str, metric: str, score: float, classes: bool) -> Checkpoint:
    return Checkpoint(name, f"tue-mps/{repo}", dataset, metric, score, classes, _LICENCE)


CHECKPOINTS: tuple[Checkpoint, ...] = (
    _hub("eomt-small-coco-panoptic-2x", "coco_panoptic_eomt_small_640_2x", "coco", "PQ", 46.7, True),
    _hub("eomt-base-coco-panoptic-2x", "coco_panoptic_eomt_base_640_2x", "coco", "PQ", 51.6, True),
    _hub("eomt-large-coco-panoptic", "coco_panoptic_eomt_large_640", "coco", "PQ", 56.0, True),
    _hub("eomt-giant-coco-panoptic", "coco_panoptic_eomt_giant_640", "coco", "PQ", 57.0, True),
    _hub("eomt-large-coco-panoptic-1280", "coco_panoptic_eomt_large_1280", "coco", "PQ", 58.3, True),
    _hub("eomt-giant-coco-panoptic-1280", "coco_panoptic_eomt_giant_1280", "coco", "PQ", 59.2, True),
    _hub("eomt-large-ade-panoptic", "ade20k_panoptic_eomt_large_640", "ade_panoptic", "PQ", 50.6, True),
    _hub("eomt-giant-ade-panoptic", "ade20k_panoptic_eomt_giant_640", "ade_panoptic", "PQ", 51.3, True),
    _hub("eomt-large-ade-panoptic-1280", "ade20k_panoptic_eomt_large_1280", "ade_panoptic", "PQ", 51.7, True),
    _hub("eomt-giant-ade-panoptic-1280", "ade20k_panoptic_eomt_giant_1280", "ade_panoptic", "PQ", 52.8, True),
    _hub("eomt-large-ade-semantic", "ade20k_semantic_eomt_large_512", "ade", "mIoU", 58.4, True),
    _hub("eomt-large-cityscapes-semantic", "cityscapes_semantic_eomt_large_1024", "cityscapes", "mIoU", 84.2, True),
    _hub("eomt-large-coco-instance", "coco_instance_eomt_large_640", "coco_instance", "AP", 45.2, False),
    _hub("eomt-large-coco-instance-1280", "coco_instance_eomt_large_1280", "coco_instance", "AP", 48.8, False),
)


FAMILY = Family(
    name="eomt",
    title="EoMT",
    year=2025,
    config=EoMTConfig,
    network=EoMT,
    presets=PRESETS,
    preset_datasets=PRESET_DATASETS,
    checkpoints=CHECKPOINTS,
    recipe=_recipe,
    optimizer=OPTIMIZER,
    demo=None,
    transformers=TransformersFormat(
        ("eomt", "eomt_dinov3"), config_from_transformers, transformers_rules, adapt_transformers_state
    ),
    official=OfficialFormat(official_recognises, official_config, official_rules),
    describe=lambda config: f"queries in {config.eomt.num_blocks} blocks",
    pretraining=lambda config: "DINOv3 (LVD-1689M)" if rotary(config) else "DINOv2 (LVD-142M)",
    lr_factor=layer_decay,
    on_train_step=anneal,
)
EoMTConfig.FAMILY = FAMILY
