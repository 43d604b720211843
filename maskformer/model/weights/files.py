"""Reading tensors from weight files without running code from them: safetensors, and torch files loaded
weights-only. Every failure is one line naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor


def read_tensors(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file or of a torch file holding a state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    data = read_torch(path)
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ValueError(f"{path}: holds no state dict (a mapping of names to tensors)")
    return dict(data)


def read_torch(path: str | Path, allowed: list | None = None, kind: str = "torch file") -> Any:
    """A torch file loaded weights-only (tensors and plain containers, and the classes in ``allowed``);
    ``kind`` names what the file should be in the error."""
    try:
        with torch.serialization.safe_globals(allowed or []):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a readable {kind}, truncated or of another kind ({load_error(err)})") from err


def load_error(err: Exception) -> str:
    """What broke, in one line, from ``torch.load``'s error: for the weights-only unpickler its own reason,
    not the paragraph of advice around it."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(err).__name__
