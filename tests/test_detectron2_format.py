"""Official model-zoo checkpoints: detectron2 names in a pickle of numpy arrays.

The checkpoints are built here from transformers' weights with a name mapping written independently of
the package's reader, then loaded with ``MaskFormer.from_pretrained`` and compared with transformers.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from maskformer import MaskFormer
from maskformer.model.weights import UnsafePickleError, load_pickle
from tests.helpers import PD, PRED, hf_to_detectron2, write_zoo_pickle


@pytest.mark.parametrize("backbone", ["swin", "r50"])
def test_official_checkpoint_equals_transformers(hf_checkpoints, tmp_path, backbone):
    _, hf = hf_checkpoints[backbone]
    path = tmp_path / "model_final.pkl"
    write_zoo_pickle(hf_to_detectron2(hf.state_dict()), path)
    model = MaskFormer.from_pretrained(path, strict=True).eval()
    assert model.config.num_classes == 150
    assert model.config.backbone.type == ("swin" if backbone == "swin" else "timm")
    x = torch.randn(2, 3, 97, 131, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hf(pixel_values=x)
        out = model(x)
    assert (out.logits - ref.class_queries_logits).abs().max() <= 1e-4
    assert (out.masks - ref.masks_queries_logits).abs().max() <= 1e-4


def test_six_encoder_checkpoint(hf_checkpoints, tmp_path):
    """ "+6 Enc" checkpoints: the encoder layers, input projection and the narrower res5 conv land in place."""
    _, hf = hf_checkpoints["r50"]
    state = hf_to_detectron2(hf.state_dict())
    gen = torch.Generator().manual_seed(4)
    state[PD + "layer_4.weight"] = torch.randn(256, 256, 3, 3, generator=gen) * 0.02
    state[PD + "input_proj.weight"] = torch.randn(256, 2048, 1, 1, generator=gen) * 0.02
    state[PD + "input_proj.bias"] = torch.randn(256, generator=gen)
    for i in range(6):
        enc = PD + f"transformer.encoder.layers.{i}."
        shapes = {
            "self_attn.in_proj_weight": (768, 256),
            "self_attn.in_proj_bias": (768,),
            "self_attn.out_proj.weight": (256, 256),
            "self_attn.out_proj.bias": (256,),
            "linear1.weight": (2048, 256),
            "linear1.bias": (2048,),
            "linear2.weight": (256, 2048),
            "linear2.bias": (256,),
            "norm1.weight": (256,),
            "norm1.bias": (256,),
            "norm2.weight": (256,),
            "norm2.bias": (256,),
        }
        for name, shape in shapes.items():
            state[enc + name] = torch.randn(shape, generator=gen)
    # The decoder then reads the 256-channel encoder output directly: no input projection.
    del state[PRED + "input_proj.weight"], state[PRED + "input_proj.bias"]
    path = tmp_path / "r50_6enc.pkl"
    write_zoo_pickle(state, path)
    model = MaskFormer.from_pretrained(path, strict=True).eval()
    assert model.config.pixel_decoder.type == "transformer_encoder"
    assert model.config.pixel_decoder.encoder_layers == 6
    layer = model.pixel_decoder.encoder.layers[5]
    assert torch.equal(
        layer.self_attn.in_proj_weight, state[PD + "transformer.encoder.layers.5.self_attn.in_proj_weight"]
    )
    assert torch.equal(layer.linear2.bias, state[PD + "transformer.encoder.layers.5.linear2.bias"])
    assert torch.equal(model.pixel_decoder.input_proj.bias, state[PD + "input_proj.bias"])
    assert torch.equal(model.pixel_decoder.output_convs[0].conv.weight, state[PD + "layer_4.weight"])
    assert isinstance(model.predictor.input_proj, torch.nn.Identity)
    out = model(torch.randn(1, 3, 64, 96))
    assert out.masks.shape == (1, 100, 16, 24)
    assert torch.isfinite(out.masks).all()


def test_torch_pth_checkpoint(hf_checkpoints, tmp_path):
    """detectron2 training output (model_final.pth) holds tensors; it loads with weights_only."""
    _, hf = hf_checkpoints["r50"]
    path = tmp_path / "model_final.pth"
    torch.save({"model": hf_to_detectron2(hf.state_dict()), "iteration": 10}, path)
    model = MaskFormer.from_pretrained(path, strict=True)
    assert model.load_report.ok


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"x": np.zeros(2)}, "payload": _RunsCommand(marker)}, f)
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*refusing to load (posix|os|nt)\.system"):
        load_pickle(path)
    with pytest.raises(UnsafePickleError):
        MaskFormer.from_pretrained(path)
    assert not marker.exists()
