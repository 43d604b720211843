"""Foreign and own weight formats: reading files, renaming state dicts, and what every family's files share
(each family's module reads the rest; :mod:`maskformer.model.loading` puts them together)."""

from .safe_pickle import UnsafePickleError, load_pickle

__all__ = ["UnsafePickleError", "load_pickle"]
