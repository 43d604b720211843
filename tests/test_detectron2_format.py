"""Official model-zoo checkpoints: detectron2 names in a pickle of numpy arrays.

The checkpoints are built here from transformers' weights with a name mapping written independently of
the package's reader, then loaded with ``MaskFormer.from_pretrained`` and compared with transformers.
"""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch

from maskformer import MaskFormer
from maskformer.model.weights import UnsafePickleError, load_pickle

HEAD = "sem_seg_head."
PD = HEAD + "pixel_decoder."
PRED = HEAD + "predictor."


def hf_to_detectron2(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers MaskFormer names -> the official repository's detectron2 names."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in hf_state.items():
        if key.endswith("num_batches_tracked") or ".model.layernorm." in key:
            continue
        k = key.replace("model.pixel_level_module.encoder.", "ENC.").replace("model.transformer_module.", "TM.")
        k = k.replace("model.pixel_level_module.decoder.", "PXD.")
        new = None
        if m := re.fullmatch(r"ENC\.model\.embeddings\.patch_embeddings\.projection\.(\w+)", k):
            new = f"backbone.patch_embed.proj.{m[1]}"
        elif m := re.fullmatch(r"ENC\.model\.embeddings\.norm\.(\w+)", k):
            new = f"backbone.patch_embed.norm.{m[1]}"
        elif m := re.fullmatch(r"ENC\.model\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.+)", k):
            base = f"backbone.layers.{m[1]}.blocks.{m[2]}."
            rest = m[3]
            if q := re.fullmatch(r"attention\.self\.(query|key|value)\.(\w+)", rest):
                fused.setdefault(base + f"attn.qkv.{q[2]}", {})[["query", "key", "value"].index(q[1])] = value
                continue
            table = {
                "layernorm_before": "norm1",
                "layernorm_after": "norm2",
                "attention.output.dense": "attn.proj",
                "intermediate.dense": "mlp.fc1",
                "output.dense": "mlp.fc2",
                "attention.self.relative_position_bias_table": "attn.relative_position_bias_table",
                "attention.self.relative_position_index": "attn.relative_position_index",
            }
            for src, dst in table.items():
                if rest == src or rest.startswith(src + "."):
                    new = base + dst + rest[len(src) :]
                    break
        elif m := re.fullmatch(r"ENC\.model\.encoder\.layers\.(\d+)\.downsample\.(.+)", k):
            new = f"backbone.layers.{m[1]}.downsample.{m[2]}"  # detectron2: end of stage i, same index
        elif m := re.fullmatch(r"ENC\.hidden_states_norms\.(\d)\.(\w+)", k):
            new = f"backbone.norm{m[1]}.{m[2]}"
        elif m := re.fullmatch(r"ENC\.embedder\.embedder\.convolution\.weight", k):
            new = "backbone.stem.conv1.weight"
        elif m := re.fullmatch(r"ENC\.embedder\.embedder\.normalization\.(\w+)", k):
            new = f"backbone.stem.conv1.norm.{m[1]}"
        elif m := re.fullmatch(r"ENC\.encoder\.stages\.(\d)\.layers\.(\d+)\.(.+)", k):
            base = f"backbone.res{int(m[1]) + 2}.{m[2]}."
            rest = m[3]
            if r := re.fullmatch(r"shortcut\.convolution\.weight", rest):
                new = base + "shortcut.weight"
            elif r := re.fullmatch(r"shortcut\.normalization\.(\w+)", rest):
                new = base + f"shortcut.norm.{r[1]}"
            elif r := re.fullmatch(r"layer\.(\d)\.convolution\.weight", rest):
                new = base + f"conv{int(r[1]) + 1}.weight"
            elif r := re.fullmatch(r"layer\.(\d)\.normalization\.(\w+)", rest):
                new = base + f"conv{int(r[1]) + 1}.norm.{r[2]}"
        elif m := re.fullmatch(r"PXD\.fpn\.stem\.0\.weight", k):
            new = PD + "layer_4.weight"
        elif m := re.fullmatch(r"PXD\.fpn\.stem\.1\.(\w+)", k):
            new = PD + f"layer_4.norm.{m[1]}"
        elif m := re.fullmatch(r"PXD\.fpn\.layers\.(\d)\.(proj|block)\.(\d)\.(\w+)", k):
            level = 3 - int(m[1])
            name = "adapter" if m[2] == "proj" else "layer"
            new = PD + (f"{name}_{level}.{m[4]}" if m[3] == "0" else f"{name}_{level}.norm.{m[4]}")
        elif m := re.fullmatch(r"PXD\.mask_projection\.(\w+)", k):
            new = PD + f"mask_features.{m[1]}"
        elif m := re.fullmatch(r"TM\.queries_embedder\.weight", k):
            new = PRED + "query_embed.weight"
        elif m := re.fullmatch(r"TM\.input_projection\.(\w+)", k):
            new = PRED + f"input_proj.{m[1]}"
        elif m := re.fullmatch(r"TM\.decoder\.layernorm\.(\w+)", k):
            new = PRED + f"transformer.decoder.norm.{m[1]}"
        elif m := re.fullmatch(r"TM\.decoder\.layers\.(\d+)\.(.+)", k):
            base = PRED + f"transformer.decoder.layers.{m[1]}."
            rest = m[2]
            if q := re.fullmatch(r"(self_attn|encoder_attn)\.([qkv])_proj\.(weight|bias)", rest):
                attn = "self_attn" if q[1] == "self_attn" else "multihead_attn"
                fused.setdefault(base + f"{attn}.in_proj_{q[3]}", {})["qkv".index(q[2])] = value
                continue
            table = {
                "self_attn.o_proj": "self_attn.out_proj",
                "encoder_attn.o_proj": "multihead_attn.out_proj",
                "self_attn_layer_norm": "norm1",
                "encoder_attn_layer_norm": "norm2",
                "final_layer_norm": "norm3",
                "mlp.fc1": "linear1",
                "mlp.fc2": "linear2",
            }
            for src, dst in table.items():
                if rest.startswith(src + "."):
                    new = base + dst + rest[len(src) :]
                    break
        elif m := re.fullmatch(r"class_predictor\.(\w+)", k):
            new = PRED + f"class_embed.{m[1]}"
        elif m := re.fullmatch(r"mask_embedder\.(\d)\.0\.(\w+)", k):
            new = PRED + f"mask_embed.layers.{m[1]}.{m[2]}"
        elif k == "criterion.empty_weight":
            new = k
        assert new is not None, f"unmapped transformers key {key}"
        out[new] = value
    for name, parts in fused.items():
        out[name] = torch.cat([parts[i] for i in sorted(parts)])
    return out


def write_zoo_pickle(state: dict[str, torch.Tensor], path) -> None:
    blob = {"model": {k: v.detach().numpy().copy() for k, v in state.items()}, "__author__": "test"}
    with open(path, "wb") as f:
        pickle.dump(blob, f)


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
    assert (out["pred_logits"] - ref.class_queries_logits).abs().max() <= 1e-4
    assert (out["pred_masks"] - ref.masks_queries_logits).abs().max() <= 1e-4


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
    assert out["pred_masks"].shape == (1, 100, 16, 24)
    assert torch.isfinite(out["pred_masks"]).all()


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
