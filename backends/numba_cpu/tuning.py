"""The tuner's choices, remembered on disk beside the kernels they ran.

Tuning times every candidate algorithm of a node (``Builder.choose``); a warm start would
otherwise build, load and time the losers again at every compile (about half a second of
ResNet-18's). The choice for a node signature (op, attributes, input and output types,
compute dtype: ``Builder.signature``) and this process's thread count is kept in one JSON
file in the kernel cache folder, which is salted with the host profile and the kernels'
sources (``jit``), so a new machine, ISA path or kernel version tunes afresh, and clearing
the kernel cache clears the choices. The file is rewritten atomically (a temporary file,
then ``os.replace``), merged with what other processes wrote meanwhile; an unreadable file
counts as empty. ``CNNIR_TUNING_CACHE=0`` times every candidate at every compile.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numba

VARIABLE = "CNNIR_TUNING_CACHE"
FILE = "tuning.json"


class TuningCache:
    """Choices by node signature, in ``folder / FILE`` (none without a folder)."""

    def __init__(self, folder: Path | None) -> None:
        self.path = None if folder is None else folder / FILE
        self.choices = self._read()

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text()) if self.path else {}
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def key(signature: str) -> str:
        return f"{signature}|threads={numba.config.NUMBA_NUM_THREADS}"

    def get(self, signature: str) -> str | None:
        choice = self.choices.get(self.key(signature))
        return choice if isinstance(choice, str) else None

    def put(self, signature: str, name: str) -> None:
        self.choices[self.key(signature)] = name
        if self.path is None:
            return
        merged = {**self._read(), **self.choices}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tuning-")
            with os.fdopen(fd, "w") as f:
                json.dump(merged, f, indent=0, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError:  # a read-only cache: remember for this process only
            pass


_cache: TuningCache | None = None


def cache() -> TuningCache | None:
    """This process's tuning cache, or None when ``CNNIR_TUNING_CACHE=0``."""
    global _cache
    if os.environ.get(VARIABLE, "1") == "0":
        return None
    if _cache is None:
        from cnnir.backends.numba_cpu.warm import kernel_cache_folder

        _cache = TuningCache(kernel_cache_folder())
    return _cache
