"""Where in the user's code a layer was created or called.

The location is the innermost stack frame outside cnnir's own packages, Python's standard
library (``runpy``, which runs model files) and the console scripts (``bin/cnnir``), so
errors and printed graphs point at the line of the model file, not at the DSL's internals.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import sysconfig
from dataclasses import dataclass
from types import FrameType


@functools.cache
def _own_dirs() -> tuple[str, ...]:
    """Folders whose frames are cnnir internals: the package and its mapped subpackages."""
    dirs = []
    for name in ("cnnir", "cnnir.frontend", "cnnir.backends"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            dirs.append(os.path.dirname(os.path.abspath(spec.origin)) + os.sep)
    return tuple(dirs)


@functools.cache
def _python_dirs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the standard library and the console scripts' folders, the installed packages'
    folders inside them): frames from the former are never the user's."""
    paths = sysconfig.get_paths()
    skip = tuple(os.path.abspath(paths[k]) + os.sep for k in ("stdlib", "platstdlib", "scripts"))
    keep = tuple(os.path.abspath(paths[k]) + os.sep for k in ("purelib", "platlib"))
    return skip, keep


@dataclass(frozen=True)
class SourceLoc:
    file: str
    line: int

    def __str__(self) -> str:
        path = self.file
        try:
            rel = os.path.relpath(path)
            if not rel.startswith(".."):
                path = rel
        except ValueError:
            pass
        return f"{path}:{self.line}"


@functools.cache
def _is_user_file(filename: str) -> bool:
    path = os.path.abspath(filename)
    skip, keep = _python_dirs()
    if path.startswith(skip) and not path.startswith(keep):
        return False
    return not path.startswith(_own_dirs()) and not filename.startswith("<frozen")


def user_location(stop: FrameType | None = None) -> SourceLoc | None:
    """The innermost frame that belongs to user code, or None; with ``stop``, only frames
    called (directly or not) from that frame count."""
    frame = sys._getframe(1)
    while frame is not None and frame is not stop:
        if _is_user_file(frame.f_code.co_filename):
            return SourceLoc(frame.f_code.co_filename, frame.f_lineno)
        frame = frame.f_back
    return None
