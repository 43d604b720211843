"""Reading pickled checkpoints without executing the code a pickle may name.

detectron2 model-zoo files are pickles of ``{"model": {name: numpy array}, ...}``. A plain ``pickle.load``
would import and call whatever the file asks for; this unpickler admits only numpy arrays and plain
containers and refuses everything else with an error naming the file and the offending global.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

_ALLOWED = {
    ("collections", "OrderedDict"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.dtypes", "Float32DType"),
    ("numpy.dtypes", "Float64DType"),
    ("numpy.dtypes", "Float16DType"),
    ("numpy.dtypes", "Int64DType"),
    ("numpy.dtypes", "Int32DType"),
    ("numpy.dtypes", "UInt8DType"),
    ("numpy.dtypes", "BoolDType"),
    ("_codecs", "encode"),
}


class UnsafePickleError(ValueError):
    """A pickle asked for something other than arrays and plain containers."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self.source}: refusing to load {module}.{name}; checkpoints may hold only arrays and plain "
            "containers (this file would run code when unpickled)"
        )


def load_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` admitting only numpy arrays, numbers, strings and containers."""
    path = Path(path)
    with path.open("rb") as f:
        try:
            return _RestrictedUnpickler(f, str(path)).load()
        except UnsafePickleError:
            raise
        except Exception as err:
            raise ValueError(f"{path}: not a readable pickle checkpoint ({err})") from err
