"""Saving and loading weights as ``.npz`` (never pickle).

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so a
crash never leaves a half-written checkpoint, and read with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from cnnir.errors import ModelFormatError
from cnnir.frontend.module import Module


def save(model: Module, path: str | os.PathLike) -> None:
    write_npz(path, model.state_dict())


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to a temporary file beside ``path``, flushed to disk, then rename it
    over ``path``: a crash leaves the previous file whole, never a torn one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(model: Module, path: str | os.PathLike, strict: bool = True) -> Module:
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ModelFormatError(f"cannot read weights from {path}: it holds a single array, "
                                   "not a state dict",
                                   hint="save weights with cnnir.save (an .npz of named arrays)")
        with data:
            state = {k: data[k] for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise ModelFormatError(f"cannot read weights from {path}: {e}",
                               hint="weights are .npz files written by cnnir.save; pickled "
                                    "arrays are refused") from e
    model.load_state_dict(state, strict=strict)
    return model
