"""Exporting the MaskFormer forward pass to ONNX and to a ``torch.export`` program.

The exported graph takes RGB images with values 0-255, float32 [B, 3, H, W], normalises them with the
model's statistics and returns ``pred_logits`` [B, N, K+1] and ``pred_masks`` [B, N, H/4, W/4] (mask
logits). Batch, height and width are dynamic; H and W must be multiples of 32, as ``MaskFormer.preprocess``
pads them (post-processing stays in Python: see :mod:`maskformer.model.inference`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .model import MaskFormer

INPUT_NAMES = ["images"]
OUTPUT_NAMES = ["pred_logits", "pred_masks"]


class ExportableMaskFormer(nn.Module):
    """Normalisation + forward without auxiliary outputs, returning a plain tuple."""

    def __init__(self, model: MaskFormer):
        super().__init__()
        self.model = model.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images RGB 0-255 [B, 3, H, W] -> (pred_logits [B, N, K+1], pred_masks [B, N, H/4, W/4])."""
        out = self.model(self.model.normalize(images), with_aux=False)
        return out["pred_logits"], out["pred_masks"]


def _dynamic_shapes(max_side: int) -> dict:
    # H and W are 32 x an integer, which lets the exporter prove every stride-2 stage divides evenly.
    batch = torch.export.Dim("batch", min=1, max=1024)
    h32 = torch.export.Dim("h32", min=1, max=max_side // 32)
    w32 = torch.export.Dim("w32", min=1, max=max_side // 32)
    return {"images": {0: batch, 2: 32 * h32, 3: 32 * w32}}


def _example(model: MaskFormer, size: tuple[int, int]) -> Tensor:
    h, w = size
    if h % 32 or w % 32:
        raise ValueError(f"example size {size}: height and width must be multiples of 32")
    return torch.rand(2, 3, h, w, device=model.pixel_mean.device) * 255


def export_program(
    model: MaskFormer, example_size: tuple[int, int] = (128, 160), max_side: int = 4096
) -> torch.export.ExportedProgram:
    """``torch.export`` program of the forward with dynamic batch, height and width."""
    wrapper = ExportableMaskFormer(model)
    with torch.no_grad():
        return torch.export.export(
            wrapper, (_example(model, example_size),), dynamic_shapes=_dynamic_shapes(max_side), strict=False
        )


def save_program(
    model: MaskFormer, path: str | Path, example_size: tuple[int, int] = (128, 160), max_side: int = 4096
) -> Path:
    """Write the ``torch.export`` program (``torch.export.load`` reads it back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(export_program(model, example_size, max_side), str(path))
    return path


def export_onnx(
    model: MaskFormer,
    path: str | Path,
    example_size: tuple[int, int] = (128, 160),
    max_side: int = 4096,
    opset: int = 18,
) -> Path:
    """Write an ONNX graph of the forward with dynamic batch, height and width (needs ``onnx`` and
    ``onnxscript``: ``pip install maskformer[export]``)."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise RuntimeError("ONNX export needs onnx and onnxscript: pip install 'maskformer[export]'") from err
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportableMaskFormer(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper,
            (_example(model, example_size),),
            dynamo=True,
            dynamic_shapes=_dynamic_shapes(max_side),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            opset_version=opset,
            external_data=False,
        )
    program.save(str(path))
    return path
