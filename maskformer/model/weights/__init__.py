"""Weight import and export: transformers and official model-zoo formats, and this package's own."""

from .loading import (
    LoadReport,
    load_lightning_checkpoint,
    load_pretrained,
    read_checkpoint,
    resolve_source,
    save_pretrained,
)
from .safe_pickle import UnsafePickleError, load_pickle

__all__ = [
    "LoadReport",
    "UnsafePickleError",
    "load_lightning_checkpoint",
    "load_pickle",
    "load_pretrained",
    "read_checkpoint",
    "resolve_source",
    "save_pretrained",
]
