"""The one way this package writes a file that must never be seen half-written (weights, checkpoints,
predictions): write beside it under a temporary name, flush it to disk, rename it over the target, flush the
folder. The file ends with the mode an ordinary write would give it: the old file's, or for a new file the
one the umask allows (some writers, safetensors among them, create their files private)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends without error it is synced and
    renamed over ``path`` (so a killed process leaves the old file or the new one), otherwise removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        mode = _ordinary_mode(path, tmp)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
            fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        tmp.unlink(missing_ok=True)


def _ordinary_mode(path: Path, tmp: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: the existing file's, else 0o666 less the umask
    (read by creating ``tmp`` as an ordinary write would, since the umask cannot be read without setting it)."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o666)
        os.close(fd)
        return tmp.stat().st_mode & 0o7777
