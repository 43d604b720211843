"""Shared fixtures: randomly initialised transformers MaskFormer checkpoints saved locally (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from maskformer.model import MaskFormer
from tests.helpers import build_hf_model, tiny_config


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory) -> dict[str, tuple[Path, nn.Module]]:
    """{"swin": (folder, model), "r50": (folder, model)} saved with transformers' save_pretrained."""
    out = {}
    for name in ("swin", "r50"):
        model = build_hf_model(name)
        folder = tmp_path_factory.mktemp(f"hf_{name}")
        model.save_pretrained(folder)
        out[name] = (folder, model)
    return out


@pytest.fixture
def tiny_model() -> MaskFormer:
    torch.manual_seed(0)
    return MaskFormer(tiny_config()).eval()
