"""EoMT's semantic segmentation by square windows (model/windows.py): the official layout of the windows,
and the whole pipeline (``Segmenter.predict`` and the Predictor) against the windows computed by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from maskformer.cli.main import main
from maskformer.data.synth import write_dataset
from maskformer.model import Segmenter
from maskformer.model.windows import window_starts, windowed_size
from maskformer.predict import Predictor
from tests.helpers import small_config


def _official_starts(longer: int, side: int) -> list[int]:
    """The official window_imgs_semantic (training/lightning_module.py), restated."""
    num_crops = math.ceil(longer / side)
    overlap = num_crops * side - longer
    overlap_per_crop = (overlap / (num_crops - 1)) if overlap > 0 else 0
    return [int(j * (side - overlap_per_crop)) for j in range(num_crops)]


def test_windows_start_where_the_official_code_and_transformers_put_them():
    transformers = pytest.importorskip("transformers")
    from transformers.image_utils import SizeDict

    processor = transformers.EomtImageProcessor()
    for side in (16, 512, 640):
        for longer in [side, side + 1, 2 * side - 1, 2 * side, 2 * side + 1, 3 * side + 7, 1333, 4032]:
            starts = window_starts(longer, side)
            assert starts == _official_starts(longer, side), (longer, side)
            assert starts[0] == 0 and starts[-1] + side == longer and len(starts) == math.ceil(longer / side)
            if longer <= 1400:
                _, offsets = processor._split_image(torch.zeros(1, 3, side, longer), SizeDict(shortest_edge=side), [0])
                assert [start for _, start, _ in offsets] == starts


def _model(num_classes: int = 5) -> Segmenter:
    """A random small EoMT segmenting semantics by 64-pixel windows, with confident classes."""
    torch.manual_seed(0)
    config = small_config("eomt", num_classes=num_classes, queries=8)
    config.inference.semantic_window = 64
    model = Segmenter.from_config(config).eval()
    with torch.no_grad():
        model.class_head.weight.mul_(10)
    return model


def test_semantic_windows_by_hand_equal_predict_and_the_predictor():
    """A 100 x 230 image: resized to 64 x 147, three 64-pixel windows (at 0, 41, 83); each forwarded alone,
    its probabilities (the official einsum of sigmoid masks and softmax classes at the window's size) averaged
    where windows overlap, resized to the image and the argmax taken."""
    model = _model()
    image = (torch.rand(3, 100, 230, generator=torch.Generator().manual_seed(1)) * 255).round()
    h, w = windowed_size(100, 230, 64)
    assert (h, w) == (64, 147) and window_starts(w, 64) == [0, 41, 83]
    resized = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
    total, count = torch.zeros(5, h, w), torch.zeros(1, h, w)
    for start in window_starts(w, 64):
        with torch.no_grad():
            out = model(model.normalize(resized[:, :, start : start + 64])[None], with_aux=False)
        masks = F.interpolate(out.masks, size=(64, 64), mode="bilinear", align_corners=False).sigmoid()
        total[:, :, start : start + 64] += torch.einsum("bqc,bqhw->bchw", out.logits.softmax(-1)[..., :-1], masks)[0]
        count[:, :, start : start + 64] += 1
    expected = F.interpolate((total / count)[None], size=(100, 230), mode="bilinear", align_corners=False)[0].argmax(0)
    (predicted,) = model.predict([image], "semantic")
    assert torch.equal(predicted, expected)
    assert len(expected.unique()) > 1  # a map that depends on the pixels
    (result,) = Predictor(model, copy_model=False)(image.to(torch.uint8), task="semantic")
    assert torch.equal(result.label_map, expected)


def test_eval_scores_the_windows_predict_writes(tmp_path, capsys):
    """`eval` of a windowed model scores exactly the label maps `predict` writes (validation reads the images
    as they are and windows them itself), as the independent file scorer counts them; panoptic results come
    from the same validation."""
    data = write_dataset(tmp_path / "data", 2, 3, seed=2, size_range=(60, 130))
    source = str(_model(num_classes=6).save_pretrained(tmp_path / "model"))
    out = tmp_path / "pred"
    images, gt = str(data / "images" / "val"), str(data / "semantic" / "val")
    assert main(["predict", images, "--model", source, "--outputs", "label", "--out", str(out)]) == 0
    capsys.readouterr()
    argv = ["eval-files", "semantic", "--pred", str(out / "labels"), "--gt", gt, "--num-classes", "6", "--json"]
    assert main(argv) == 0
    from_files = json.loads(capsys.readouterr().out)
    assert main(["eval", "--model", source, "--data", str(data), "--out", str(tmp_path / "eval.json")]) == 0
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert scores["mIoU"] == from_files["mIoU"] and scores["pACC"] == from_files["pACC"] and "PQ" in scores
