"""ONNX (under onnxruntime) and torch.export programs of both families agree with eager PyTorch at several
input sizes, and the README's onnxruntime example gives what ``model.predict`` gives."""

from __future__ import annotations

import pytest
import torch

from maskformer.cli.main import main
from maskformer.model import MaskFormer
from tests.helpers import tiny_config, tiny_m2f_config

# The ONNX graph takes any size and pads as MaskFormer.preprocess does; torch programs take multiples of 32.
SIZES = [(1, 70, 97), (2, 160, 128), (3, 224, 50)]
SIZES_32 = [(1, 64, 96), (2, 160, 128), (3, 224, 64)]


@pytest.fixture(scope="module", params=["maskformer", "mask2former"])
def model(request):
    torch.manual_seed(0)
    if request.param == "maskformer":
        return MaskFormer(tiny_config(num_classes=5, backbone="resnet18", queries=8)).eval()
    # Mask2Former: deformable sampling (grid_sample) and boolean attention masks in the graph.
    config = tiny_m2f_config(queries=8)
    config.backbone = tiny_config(backbone="resnet18").backbone
    return MaskFormer(config).eval()


def _eager(model, images):
    with torch.no_grad():
        batch, _ = model.preprocess(list(images))
        out = model(batch, with_aux=False)
    return out.logits, out.masks


def test_onnx_matches_pytorch_at_several_sizes(model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    path = tmp_path / "model.onnx"
    folder = model.save_pretrained(tmp_path / "m")
    assert main(["export", "--model", str(folder), "--format", "onnx", "--out", str(path)]) == 0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    for b, h, w in SIZES:
        images = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(h)) * 255
        logits, masks = session.run(None, {"images": images.numpy()})
        ref_logits, ref_masks = _eager(model, images)
        assert logits.shape == tuple(ref_logits.shape) and masks.shape == tuple(ref_masks.shape)
        assert abs(logits - ref_logits.numpy()).max() <= 1e-4
        assert abs(masks - ref_masks.numpy()).max() <= 1e-4


def test_torch_export_matches_pytorch_at_several_sizes(model, tmp_path):
    path = tmp_path / "model.pt2"
    folder = model.save_pretrained(tmp_path / "m")
    assert main(["export", "--model", str(folder), "--format", "torch", "--out", str(path)]) == 0
    program = torch.export.load(str(path)).module()
    for b, h, w in SIZES_32:
        images = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(w)) * 255
        with torch.no_grad():
            logits, masks = program(images)
        ref_logits, ref_masks = _eager(model, images)
        assert (logits - ref_logits).abs().max() <= 1e-4
        assert (masks - ref_masks).abs().max() <= 1e-4


def test_export_rejects_example_sizes_that_are_not_multiples_of_32(tmp_path):
    model = MaskFormer(tiny_config(num_classes=5, backbone="resnet18", queries=8))
    folder = model.save_pretrained(tmp_path / "m")
    assert main(["export", "--model", str(folder), "--out", str(tmp_path / "x.onnx"), "--height", "100"]) == 2


def test_readme_onnxruntime_example_equals_model_predict(tmp_path, monkeypatch):
    """The README's example, run as written on files of the names it uses, gives model.predict's labels."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = MaskFormer(tiny_config(num_classes=5, backbone="resnet18", queries=8)).eval()
    import re
    from pathlib import Path

    from PIL import Image

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"<!-- onnx-example -->\s*```python\n(.*?)```", readme, re.S)
    assert code, "README.md has no onnxruntime example"
    monkeypatch.chdir(tmp_path)
    model.save_pretrained("my-model")
    assert main(["export", "--model", "my-model", "--out", "model.onnx"]) == 0
    pixels = torch.randint(0, 256, (83, 121, 3), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    Image.fromarray(pixels.numpy()).save("photo.png")
    namespace: dict = {}
    exec(compile(code[1], "README.md", "exec"), namespace)
    (expected,) = model.predict([pixels.permute(2, 0, 1)], task="semantic")
    assert torch.equal(namespace["labels"], expected)


@pytest.mark.slow
def test_swin_onnx_matches_pytorch(tmp_path):
    """Swin pads to whole windows with shape arithmetic that must survive export (about 30 s here)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from maskformer.export import export_onnx

    torch.manual_seed(0)
    swin = MaskFormer(tiny_config(num_classes=5, backbone="swin", queries=8)).eval()
    session = ort.InferenceSession(str(export_onnx(swin, tmp_path / "swin.onnx")), providers=["CPUExecutionProvider"])
    for b, h, w in SIZES:
        images = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(b)) * 255
        logits, masks = session.run(None, {"images": images.numpy()})
        ref_logits, ref_masks = _eager(swin, images)
        assert abs(logits - ref_logits.numpy()).max() <= 1e-4
        assert abs(masks - ref_masks.numpy()).max() <= 1e-4
