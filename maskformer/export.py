"""Exporting the MaskFormer forward pass to ONNX and to a ``torch.export`` program.

The exported graph takes RGB images with values 0-255, float32 [B, 3, H, W] of any batch, height and width
above 32 pixels, normalises them with the model's statistics, pads bottom and right to multiples of 32 as
``MaskFormer.preprocess`` does (zeros after normalising, i.e. the pixel mean) and returns ``pred_logits`` [B,
N, K+1] and ``pred_masks`` [B, N, ceil(H/32)*8, ceil(W/32)*8] (mask logits of the padded image). Post-
processing stays in Python: :func:`maskformer.model.inference.postprocess` with the padded size.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import MaskFormer

INPUT_NAMES = ["images"]
OUTPUT_NAMES = ["pred_logits", "pred_masks"]


class ExportableMaskFormer(nn.Module):
    """Normalisation, padding to the size divisibility and the forward without auxiliary outputs, returning
    a plain tuple."""

    def __init__(self, model: MaskFormer):
        super().__init__()
        self.model = model.eval()
        self.divisor = max(1, model.config.inference.size_divisibility)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images RGB 0-255 [B, 3, H, W] -> (pred_logits [B, N, K+1], pred_masks [B, N, H'/4, W'/4]) with H', W'
        the padded size."""
        x = self.model.normalize(images)
        h, w = x.shape[-2:]
        d = self.divisor
        x = F.pad(x, (0, (d - w % d) % d, 0, (d - h % d) % d))
        out = self.model(x, with_aux=False)
        return out["pred_logits"], out["pred_masks"]


def _dynamic_shapes(max_side: int) -> dict:
    batch = torch.export.Dim("batch", min=1, max=1024)
    # At most 32 pixels a side the stride-32 map is 1 x 1, a shape the exporter specialises on; sizes from
    # 33 up share one graph.
    height = torch.export.Dim("height", min=33, max=max_side)
    width = torch.export.Dim("width", min=33, max=max_side)
    return {"images": {0: batch, 2: height, 3: width}}


def _example(model: MaskFormer, size: tuple[int, int]) -> Tensor:
    return torch.rand(2, 3, *size, device=model.pixel_mean.device) * 255


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
    with torch.no_grad(), warnings.catch_warnings(), _quiet("onnxscript", "onnx_ir"):
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
            verbose=False,
        )
    program.save(str(path))
    return path


@contextlib.contextmanager
def _quiet(*loggers: str):
    """Silence the ONNX optimiser's per-node notes ("Skipping constant folding ...") for one export."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)
