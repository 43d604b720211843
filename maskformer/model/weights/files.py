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


def read_torch(path: str | Path) -> Any:
    """A torch file loaded weights-only (tensors and plain containers)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a loadable weights-only torch file ({reason})") from err
