"""Exporting the MaskFormer forward pass to ONNX and to a ``torch.export`` program.

Both take RGB images with values 0-255, float32 [B, 3, H, W], normalise them with the model's statistics
and return ``pred_logits`` [B, N, K+1] and ``pred_masks`` [B, N, H'/4, W'/4] (mask logits), where H', W' are
H, W padded bottom and right as ``Segmenter.pad`` pads: to multiples of 32, and for EoMT to at least its square
image size with black pixels (``inference.pad_square``). The ONNX graph takes any H and W and pads itself (with
the pixel mean, which is zero after normalising, or black); the torch program takes H and W that are multiples
of 32 and pads nothing (pad the RGB input first: with the pixel mean, or black up to the square). Batch, height
and width are dynamic. Post-processing stays in Python:
:func:`maskformer.model.inference.postprocess` with the padded size.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .model import Segmenter

INPUT_NAMES = ["images"]
OUTPUT_NAMES = ["pred_logits", "pred_masks"]


class ExportableMaskFormer(nn.Module):
    """Normalisation + forward without auxiliary outputs, returning a plain tuple."""

    def __init__(self, model: Segmenter):
        super().__init__()
        model.check_exportable()
        self.model = model.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images RGB 0-255 [B, 3, H, W] -> (pred_logits [B, N, K+1], pred_masks [B, N, H/4, W/4])."""
        out = self.model(self.model.normalize(images), with_aux=False)
        return out.logits, out.masks


def _dynamic_shapes(max_side: int, min_side: int = 32) -> dict:
    # H and W are 32 x an integer, which lets the exporter prove every stride-2 stage divides evenly.
    batch = torch.export.Dim("batch", min=1, max=1024)
    h32 = torch.export.Dim("h32", min=min_side // 32, max=max_side // 32)
    w32 = torch.export.Dim("w32", min=min_side // 32, max=max_side // 32)
    return {"images": {0: batch, 2: 32 * h32, 3: 32 * w32}}


def _example(model: Segmenter, size: tuple[int, int]) -> Tensor:
    h, w = size
    if h % 32 or w % 32:
        raise ValueError(f"example size {size}: height and width must be multiples of 32")
    return torch.rand(2, 3, h, w, device=model.pixel_mean.device) * 255


# The example an export is traced at unless told otherwise (a torch program's may be larger:
# program_example_size).
EXAMPLE_SIZE = (128, 160)


def program_example_size(model: Segmenter, example_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """The example a ``torch.export`` program of ``model`` is traced at: ``example_size``, or by default 128 x
    160 or larger (:meth:`~maskformer.model.Segmenter.min_program_side`), so that the program takes every
    size from ``model.min_program_side()`` up. An example below that is refused: its program would take only
    sizes like it."""
    side = model.min_program_side()
    if example_size is None:
        return max(EXAMPLE_SIZE[0], side), max(EXAMPLE_SIZE[1], side + 32)
    if min(example_size) < side:
        h, w = example_size
        raise ValueError(
            f"example size {h}x{w}: a torch.export program of this model traced below {side} a side takes only "
            f"inputs as small; trace at {side} or more a side (example_size; the CLI's --height and --width)"
        )
    return example_size


def export_program(
    model: Segmenter, example_size: tuple[int, int] | None = None, max_side: int = 4096
) -> torch.export.ExportedProgram:
    """``torch.export`` program of the forward with dynamic batch, height and width, taking every size (multiples
    of 32) from ``model.min_program_side()`` to ``max_side``; traced at :func:`program_example_size`."""
    example_size = program_example_size(model, example_size)
    wrapper = ExportableMaskFormer(model)
    with torch.no_grad():
        return torch.export.export(
            wrapper,
            (_example(model, example_size),),
            # The range the program takes, stated: the exporter checks that nothing specialises within it.
            dynamic_shapes=_dynamic_shapes(max_side, model.min_program_side()),
            strict=False,
        )


def save_program(
    model: Segmenter, path: str | Path, example_size: tuple[int, int] | None = None, max_side: int = 4096
) -> Path:
    """Write the ``torch.export`` program (``torch.export.load`` reads it back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(export_program(model, example_size, max_side), str(path))
    return path


def export_onnx(
    model: Segmenter,
    path: str | Path,
    example_size: tuple[int, int] = EXAMPLE_SIZE,
    max_side: int = 4096,
    opset: int = 18,
) -> Path:
    """Write an ONNX graph of the forward with dynamic batch, height and width (needs ``onnx`` and
    ``onnxscript``: ``pip install maskformer[export]``)."""
    try:
        import onnx
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
    graph = program.model_proto
    _pad_in_graph(graph, model)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    return path


def _pad_in_graph(proto, model: Segmenter) -> None:
    """Prepend to the ONNX graph a padding of the input to the size divisibility (and at least
    ``inference.pad_square`` a side), bottom and right, with the pixel mean (zero after normalising) or black
    pixels, as ``Segmenter.pad`` pads, so that it takes any H and W.

    Done on the ONNX graph rather than in the traced module: traced padding arithmetic makes Swin's window
    shapes too hard for the exporter to keep dynamic."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    image = graph.input[0]
    inner = "images_padded"
    for node in graph.node:
        node.input[:] = [inner if name == image.name else name for name in node.input]
    for index, name in ((2, "height"), (3, "width")):
        dim = image.type.tensor_type.shape.dim[index]
        dim.ClearField("dim_value")
        dim.dim_param = name
    d = max(1, model.config.inference.size_divisibility)
    square = model.config.inference.pad_square
    value = torch.tensor(model.config.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1).numpy()
    if square:
        value = np.zeros_like(value)  # black
    constants = {
        "pad_mean": value,
        "pad_divisor": np.array([d], dtype=np.int64),
        "pad_square": np.array([square, square], dtype=np.int64),
        "pad_zeros": np.zeros(6, dtype=np.int64),
        "pad_hw_start": np.array([2], dtype=np.int64),
        "pad_hw_end": np.array([4], dtype=np.int64),
    }
    graph.initializer.extend(numpy_helper.from_array(v, name=k) for k, v in constants.items())
    nodes = [
        helper.make_node("Shape", [image.name], ["pad_shape"]),
        helper.make_node("Slice", ["pad_shape", "pad_hw_start", "pad_hw_end"], ["pad_hw"]),
        # (d - size % d) % d for H and W
        helper.make_node("Mod", ["pad_hw", "pad_divisor"], ["pad_rem"]),
        helper.make_node("Sub", ["pad_divisor", "pad_rem"], ["pad_short"]),
        helper.make_node("Mod", ["pad_short", "pad_divisor"], ["pad_hw_divisible"]),
        # then up to the square: max(size + that, square) - size
        helper.make_node("Add", ["pad_hw", "pad_hw_divisible"], ["pad_hw_padded"]),
        helper.make_node("Max", ["pad_hw_padded", "pad_square"], ["pad_hw_target"]),
        helper.make_node("Sub", ["pad_hw_target", "pad_hw"], ["pad_hw_amount"]),
        # ONNX pads: begin of N, C, H, W, then end of N, C (0), H, W.
        helper.make_node("Concat", ["pad_zeros", "pad_hw_amount"], ["pad_amounts"], axis=0),
        helper.make_node("Sub", [image.name, "pad_mean"], ["pad_centred"]),
        helper.make_node("Pad", ["pad_centred", "pad_amounts"], ["pad_centred_padded"], mode="constant"),
        helper.make_node("Add", ["pad_centred_padded", "pad_mean"], [inner]),
    ]
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)


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
