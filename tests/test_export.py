"""ONNX (under onnxruntime) and torch.export programs of both families agree with eager PyTorch at several
input sizes, and the README's ONNX workflow gives what ``model.predict`` gives."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from maskformer.cli.main import main
from maskformer.model import MaskFormer, Segmenter
from tests.helpers import FAMILIES, small_config, tiny_config

# The ONNX graph takes any size and pads as MaskFormer.preprocess does; torch programs take multiples of 32.
# 288 x 320: every stage of the tiny Swin (window 7) has two windows a side, as at the papers' sizes.
SIZES = [(1, 70, 97), (2, 160, 128), (3, 224, 50), (1, 288, 320)]
SIZES_32 = [(1, 64, 96), (2, 160, 128), (3, 224, 64)]


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    torch.manual_seed(0)
    # MaskFormer on the tiny Swin: its padding to whole windows is shape arithmetic that must survive export.
    # Mask2Former: deformable sampling (grid_sample) and boolean attention masks in the graph (one encoder
    # layer and two decoder layers show them as well as the paper's six and nine, at half the export time);
    # EoMT: position embeddings resampled to the input's patch grid.
    config = tiny_config(num_classes=5, backbone="swin", queries=8)
    if request.param == "mask2former":
        config = small_config("mask2former", "resnet18", 5, queries=8, encoder_layers=1, layers=2)
    if request.param == "eomt":
        config = small_config("eomt", num_classes=5, queries=8)
    config.inference.test_shortest_edge, config.inference.test_max_size = 96, 160  # for the README's example
    if request.param == "eomt":  # padded to a square with black pixels, as EoMT's official evaluation pads
        config.inference.pad_square = 128
    model = Segmenter.from_config(config).eval()
    if request.param == "eomt":
        model.attn_mask_probs.zero_()  # a finished model: masks annealed away
    return model


def _eager(model, images):
    with torch.no_grad():
        batch, _ = model.preprocess(list(images))
        out = model(batch, with_aux=False)
    return out.logits, out.masks


def test_the_readmes_onnx_workflow(model, tmp_path, monkeypatch):
    """As the README says, for each family: save the model as "my-model", export it by the README's command (in
    a process of its own, as a user runs it: a clean console); the graph agrees with eager PyTorch at sizes
    that need padding, and the README's onnxruntime example gives ``model.predict``'s labels."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"<!-- onnx-example -->\s*```python\n(.*?)```", readme, re.S)
    assert code, "README.md has no onnxruntime example"
    (command,) = re.findall(r"^maskformer (export --model my-model --format onnx .*?)\s*(?:#.*)?$", readme, re.M)
    monkeypatch.chdir(tmp_path)
    model.save_pretrained("my-model")
    result = subprocess.run(
        [sys.executable, "-m", "maskformer.cli.main", *shlex.split(command)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
    )  # fmt: skip
    assert Path("model.onnx").exists()
    assert result.returncode == 0, result.stderr[-2000:]
    console = result.stdout + result.stderr
    assert "Skipping constant folding" not in console and "[torch.onnx]" not in console, console[-2000:]

    session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    for b, h, w in SIZES:
        images = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(h)) * 255
        logits, masks = session.run(None, {"images": images.numpy()})
        ref_logits, ref_masks = _eager(model, images)
        assert logits.shape == tuple(ref_logits.shape) and masks.shape == tuple(ref_masks.shape)
        assert abs(logits - ref_logits.numpy()).max() <= 1e-4
        assert abs(masks - ref_masks.numpy()).max() <= 1e-4

    pixels = torch.randint(0, 256, (83, 121, 3), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    Image.fromarray(pixels.numpy()).save("photo.png")
    namespace: dict = {}
    exec(compile(code[1], "README.md", "exec"), namespace)
    (expected,) = model.predict([pixels.permute(2, 0, 1)], task="semantic")
    assert torch.equal(namespace["labels"], expected)


def test_torch_export_matches_pytorch_at_several_sizes(model, tmp_path, capsys):
    """The program takes every size from ``min_program_side`` up (for the tiny Swin, window 7: 256, where its
    last stage has two windows a side; the exporter's default example is that large) and agrees with eager
    PyTorch; an example below it is refused in one line."""
    path = tmp_path / "model.pt2"
    folder = model.save_pretrained(tmp_path / "m")
    assert main(["export", "--model", str(folder), "--format", "torch", "--out", str(path)]) == 0
    side = model.min_program_side()
    assert f"multiples of 32 from {side}" in capsys.readouterr().out
    program = torch.export.load(str(path)).module()
    square = model.config.inference.pad_square
    for b, h, w in [(b, h + side - 64, w + side - 64) for b, h, w in SIZES_32]:
        images = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(w)) * 255
        # The program takes the padded input: here black pixels up to the model's square, as Segmenter.pad.
        images = F.pad(images, (0, max(0, square - w), 0, max(0, square - h)))
        with torch.no_grad():
            logits, masks = program(images)
        ref_logits, ref_masks = _eager(model, images)
        assert (logits - ref_logits).abs().max() <= 1e-4
        assert (masks - ref_masks).abs().max() <= 1e-4
    if side > 64:
        small = ["--height", str(side - 32), "--width", str(side)]
        assert (
            main(["export", "--model", str(folder), "--format", "torch", "--out", str(tmp_path / "x.pt2"), *small]) == 2
        )
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"traced below {side} a side" in err


def test_a_dinov3_eomt_exports_at_any_size(tmp_path):
    """A DINOv3 ViT's rotary table is computed from tensors when exporting (timm's takes float() of the grid's
    size, which would fix the program to the example's): the torch.export program and the ONNX graph agree
    with eager PyTorch at other sizes."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from maskformer.export import export_onnx, export_program

    torch.manual_seed(0)
    model = Segmenter.from_config(small_config("eomt", num_classes=5, queries=8, rotary=True)).eval()
    model.attn_mask_probs.zero_()
    program = export_program(model, (64, 96), max_side=512).module()
    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "m.onnx", (64, 96), 512)))
    for b, h, w in [(1, 64, 96), (2, 128, 64), (1, 70, 50)]:
        images = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(w)) * 255
        ref_logits, ref_masks = _eager(model, images)
        logits, masks = session.run(None, {"images": images.numpy()})
        assert abs(logits - ref_logits.numpy()).max() <= 1e-4 and abs(masks - ref_masks.numpy()).max() <= 1e-4
        if h % 32 == 0 and w % 32 == 0:  # torch programs take multiples of 32
            with torch.no_grad():
                logits, masks = program(images)
            assert (logits - ref_logits).abs().max() <= 1e-4 and (masks - ref_masks).abs().max() <= 1e-4


def test_an_eomt_that_still_masks_is_refused_in_one_line(tmp_path, capsys):
    model = Segmenter.from_config(small_config("eomt", num_classes=5, queries=8))  # probabilities 1: untrained
    folder = model.save_pretrained(tmp_path / "m")
    assert main(["export", "--model", str(folder), "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "still masks its queries' attention (attn_mask_probs [1.0, 1.0, 1.0])" in err
    assert not (tmp_path / "x.onnx").exists()


def test_export_rejects_example_sizes_that_are_not_multiples_of_32(tmp_path):
    model = MaskFormer(tiny_config(num_classes=5, backbone="resnet18", queries=8))
    folder = model.save_pretrained(tmp_path / "m")
    assert main(["export", "--model", str(folder), "--out", str(tmp_path / "x.onnx"), "--height", "100"]) == 2
