"""Own format, transformers folders and hub ids, URLs, load reports and bad sources."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from maskformer import MaskFormer
from maskformer.model import loading


def test_save_and_load_round_trip(tiny_model, tmp_path):
    tiny_model.config.metadata.class_names = [f"c{i}" for i in range(5)]
    tiny_model.config.metadata.thing_classes = [0, 2]
    tiny_model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.yaml", "model.safetensors"}
    loaded = MaskFormer.from_pretrained(tmp_path / "m", strict=True).eval()
    assert loaded.config == tiny_model.config
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        assert torch.equal(loaded(x).masks, tiny_model(x).masks)


def test_transformers_metadata_is_restored(hf_checkpoints):
    folder, _ = hf_checkpoints["swin"]
    model = MaskFormer.from_pretrained(folder)
    assert model.config.metadata.class_names[:2] == ["class_0", "class_1"]
    assert len(model.config.metadata.class_names) == 150


def test_missing_and_unexpected_keys_are_named(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "m")
    state = load_file(str(folder / "model.safetensors"))
    del state["predictor.class_embed.bias"]
    state["predictor.extra_head.weight"] = torch.zeros(2)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.warns(
        UserWarning,
        match=r"not in the checkpoint: predictor\.class_embed\.bias.*unused: "
        r"predictor\.extra_head\.weight",
    ):
        model = MaskFormer.from_pretrained(folder)
    assert model.load_report.missing == ["predictor.class_embed.bias"]
    with pytest.raises(RuntimeError, match="predictor.class_embed.bias"):
        MaskFormer.from_pretrained(folder, strict=True)


def test_hub_id_resolves_through_huggingface_hub(hf_checkpoints, monkeypatch):
    folder, _ = hf_checkpoints["r50"]
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns=None):
        calls.append((repo_id, allow_patterns))
        return str(folder)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = MaskFormer.from_pretrained("facebook/maskformer-resnet50-ade", strict=True)
    assert calls[0][0] == "facebook/maskformer-resnet50-ade" and "config.json" in calls[0][1]
    assert model.config.backbone.name == "resnet50.tv_in1k"


def test_url_downloads_once_into_the_cache(tiny_model, tmp_path, monkeypatch):
    folder = tiny_model.save_pretrained(tmp_path / "m")
    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "cache"))
    downloads = []

    def fake_download(url, dst, progress=True):
        downloads.append(url)
        shutil.copy(folder / "model.safetensors", dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    url = "https://example.org/zoo/weights.safetensors"
    for _ in range(2):
        model = MaskFormer.from_pretrained(url, config=tiny_model.config, strict=True)
    assert downloads == [url]
    assert (tmp_path / "cache" / "weights.safetensors").exists()
    assert torch.equal(model.predictor.class_embed.weight, tiny_model.predictor.class_embed.weight)


def test_bad_sources_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-dir.*no such file"):
        MaskFormer.from_pretrained(tmp_path / "no-such-dir")
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"config\.json: model_type is 'bert', not a MaskFormer"):
        MaskFormer.from_pretrained(other)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="neither config.yaml"):
        MaskFormer.from_pretrained(empty)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"junk\.pkl: not a readable pickle"):
        MaskFormer.from_pretrained(junk)
    text = tmp_path / "weights.txt"
    text.write_text("x")
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        MaskFormer.from_pretrained(text)


def test_cache_dir_default_is_under_torch_hub(monkeypatch):
    monkeypatch.delenv("MASKFORMER_CACHE", raising=False)
    assert loading.cache_dir().name == "maskformer"


def test_transformers_pytorch_bin(hf_checkpoints, tmp_path):
    folder, hf = hf_checkpoints["r50"]
    copy = tmp_path / "bin"
    copy.mkdir()
    shutil.copy(folder / "config.json", copy / "config.json")
    torch.save(load_file(str(folder / "model.safetensors")), copy / "pytorch_model.bin")
    model = MaskFormer.from_pretrained(copy, strict=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(x).logits - hf(pixel_values=x).class_queries_logits).abs().max() <= 1e-4


def test_loading_for_another_class_count_keeps_the_rest(tiny_model, tmp_path):
    """Fine-tuning from a checkpoint with other classes: the class head is reported and left initialised."""
    folder = tiny_model.save_pretrained(tmp_path / "m")
    config = tiny_model.config.override(["num_classes=3"])
    with pytest.warns(UserWarning, match=r"2 shapes differ, kept initialised: predictor\.class_embed\."):
        model = MaskFormer.from_pretrained(folder, config=config)
    assert sorted(model.load_report.mismatched) == ["predictor.class_embed.bias", "predictor.class_embed.weight"]
    assert model.load_report.missing == []
    assert torch.equal(model.predictor.mask_embed.layers[0].weight, tiny_model.predictor.mask_embed.layers[0].weight)
