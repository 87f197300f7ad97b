"""The one error hierarchy of cnnir.

Every message names what failed (op kind and node name), the shapes and attributes involved,
the broken constraint, the user's ``file:line`` where known, and a hint.
"""

from __future__ import annotations

from typing import Any


class CnnirError(Exception):
    """Base of every error cnnir raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")

    def with_context(self, prefix: str) -> CnnirError:
        """A copy of this error whose message starts with ``prefix`` (node name, location)."""
        err = type(self)(f"{prefix} {self.message}", hint=self.hint)
        err.__cause__ = self.__cause__
        return err


def check_output_dir(path: object) -> None:
    """Refuse a file path whose folder does not exist, before any work is done for it."""
    import os

    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise CnnirError(f"cannot write {os.fspath(path)}: the directory {folder} does not exist",
                         hint=f"create it first (mkdir -p {folder}) or write somewhere else")


def optional_module(name: str, needed_by: str, hint: str) -> Any:
    """``importlib.import_module(name)`` for an optional extra, or a CnnirError saying what
    needs it and, in ``hint``, which extra to install."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise CnnirError(f"{needed_by} needs {name.split('.')[0]}, which is not installed",
                         hint=hint) from e


class ShapeError(CnnirError):
    """Inputs or attributes that break an op's shape rule."""


class VerificationError(CnnirError):
    """A graph that violates an IR invariant (cycle, undefined use, stale type, name clash)."""


class LoweringError(CnnirError):
    """A graph a backend cannot run."""


class BackendUnavailable(LoweringError):
    """A backend that cannot run on this machine (no GPU, a missing optional extra)."""


class PassError(CnnirError):
    """A pass that failed or broke the graph."""


class ModelFormatError(CnnirError):
    """A model file (.py, .onnx, weights) that cannot be loaded."""


class UserCodeError(CnnirError):
    """The user's model code raised while cnnir ran it."""


class OptionError(CnnirError, ValueError):
    """A bad option of an optimizer or scheduler; a ValueError too, as PyTorch raises."""
