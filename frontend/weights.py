"""Saving and loading weights as ``.npz`` (never pickle).

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so a
crash never leaves a half-written checkpoint. They are read by ``read_npz``: without pickle,
and with every array's header checked against the bytes the archive stores before anything
is allocated, so a damaged or hostile file is refused with a ``ModelFormatError``.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import NoReturn

import numpy as np

from cnnir.errors import ModelFormatError, check_output_dir
from cnnir.frontend.module import Module

MAX_NPZ_BYTES = 8 << 30  # all arrays of one file together, as declared
MAX_DEFLATE_RATIO = 1100  # deflate cannot compress better than about 1032:1
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error,
                NotImplementedError, RuntimeError, OverflowError)


def save(model: Module, path: str | os.PathLike) -> None:
    write_npz(path, model.state_dict())


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to a temporary file beside ``path``, flushed to disk, then rename it
    over ``path``: a crash leaves the previous file whole, never a torn one. Arrays of
    Python objects (which only pickle could store) are refused."""
    check_output_dir(path)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name, array in arrays.items():  # np.savez(**arrays) would take a key
                    # named "file" or "allow_pickle" for its own argument
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asanyarray(array),
                                                  allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except ValueError as e:  # an object array
        Path(tmp).unlink(missing_ok=True)
        raise ModelFormatError(f"cannot save {path}: {e}",
                               hint="weights must be arrays of numbers") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_npz(path: str | os.PathLike, what: str = "weights",
             hint: str = "weights are .npz files written by cnnir.save; pickled arrays are "
                          "refused") -> dict[str, np.ndarray]:
    """The named arrays of the ``.npz`` at ``path``. Before reading an array, its header
    (dtype and shape) must agree with the number of bytes the archive stores for it, and all
    of them together stay under ``MAX_NPZ_BYTES``: a file that declares a 10¹²-element
    array is refused before anything is allocated. Anything else wrong (not a file, not a
    zip archive, a damaged member, an object array, which needs pickle) is a
    ``ModelFormatError`` naming the file."""
    def fail(reason: str) -> NoReturn:
        raise ModelFormatError(f"cannot read {what} from {path}: {reason}", hint=hint)

    if not Path(path).is_file():
        fail("no such file" if not Path(path).exists() else "it is not a regular file")
    try:
        if not zipfile.is_zipfile(path):
            fail("it is not an .npz archive (a single .npy array, a pickle or another format)")
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            declared = sum(_check_member(archive, info, fail) for info in members)
            if declared > MAX_NPZ_BYTES:
                fail(f"its arrays declare {declared} bytes, more than the {MAX_NPZ_BYTES} "
                     f"allowed")
            arrays: dict[str, np.ndarray] = {}
            for info in members:
                name = info.filename[:-len(".npy")]
                if name in arrays:
                    fail(f"it holds the array {name!r} twice")
                with archive.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
            return arrays
    except _READ_ERRORS as e:
        fail(f"{type(e).__name__}: {e}")


def _check_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, fail) -> int:
    """The bytes a member's array declares, after checking them against what is stored."""
    if not info.filename.endswith(".npy"):
        fail(f"the archive member {info.filename!r} is not an .npy array")
    stored, deflated = (info.compress_type == t for t in (zipfile.ZIP_STORED,
                                                           zipfile.ZIP_DEFLATED))
    if stored and info.file_size != info.compress_size or deflated and \
            info.file_size > MAX_DEFLATE_RATIO * info.compress_size + (1 << 20):
        fail(f"the member {info.filename!r} claims {info.file_size} bytes from "
             f"{info.compress_size} stored ones")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            fail(f"the member {info.filename!r} has .npy format version {version}")
        header = member.tell()
    if dtype.hasobject:
        fail(f"the array {info.filename[:-4]!r} holds Python objects, which only pickle "
             f"could load, and pickle is never used")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != info.file_size - header:
        fail(f"the array {info.filename[:-4]!r} declares shape {list(shape)} of {dtype} "
             f"({nbytes} bytes) but the file stores {info.file_size - header} bytes for it")
    return nbytes


def load(model: Module, path: str | os.PathLike, strict: bool = True) -> Module:
    """Load the weights at ``path`` (written by ``save``) into ``model``: every key, shape
    and dtype is checked (``Module.load_state_dict``; complex values are refused, as a real
    parameter would silently drop their imaginary part)."""
    state = read_npz(path)
    complex_ = [k for k, v in state.items() if v.dtype.kind == "c"]
    if complex_:
        raise ModelFormatError(f"cannot load weights from {path}: {', '.join(complex_)} "
                               f"hold complex numbers", hint="weights are real arrays")
    try:
        model.load_state_dict(state, strict=strict)
    except ModelFormatError as e:
        raise e.with_context(f"{path}:") from None
    return model
