"""The on-disk kernel cache of ``cnnir.backends.numba_cpu.kernels.jit`` is keyed on the sources
of the kernel's whole package: editing only a sibling module (a constant, an inlined helper) must
recompile the kernel, while unchanged sources must load it from the cache. Numba's plain
``cache=True`` keys only on the kernel's own file and would return the stale value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONSTS = """\
from cnnir.backends.numba_cpu.kernels.jit import helper

LANES = {lanes}


@helper
def scale(x):
    return {formula}
"""

KERNELS = """\
from cnnir.backends.numba_cpu.kernels.jit import kernel, tile_kernel

from pkg.consts import LANES, scale


@tile_kernel
def lanes_tile(x):
    return LANES + scale(x)


@kernel
def lanes_kernel(x):
    return LANES + scale(x)
"""

RUN = """\
import pkg.kernels as k
tile, serial = k.lanes_tile.dispatcher, k.lanes_kernel.serial
print(tile(3), serial(3), sum(tile.stats.cache_hits.values()),
      sum(serial.stats.cache_hits.values()))
"""


def write_consts(pkg: Path, lanes: int, formula: str) -> None:
    (pkg / "consts.py").write_text(CONSTS.format(lanes=lanes, formula=formula))


def run(root: Path, cache: Path) -> tuple[int, int, int, int]:
    """Import the package in a fresh process: the two kernels' results at x=3, then their
    cache hits."""
    path = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": os.pathsep.join(path)}
    env.pop("NUMBA_DISABLE_JIT", None)
    out = subprocess.run([sys.executable, "-c", RUN], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    tile, serial, tile_hits, serial_hits = map(int, out.stdout.split())
    return tile, serial, tile_hits, serial_hits


def salted_folders(cache: Path) -> list[str]:
    """The package's cache folders: Numba's per-directory one (``pkg_<sha1>``), then one per
    version of the package's sources (``cnnir-<16 hex>``)."""
    return sorted(p.name for p in cache.glob("pkg_*/cnnir-*") if p.is_dir())


def test_cache_follows_sibling_sources(tmp_path: Path) -> None:
    root, cache = tmp_path / "src", tmp_path / "cache"
    pkg = root / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "kernels.py").write_text(KERNELS)
    write_consts(pkg, 8, "x * 2")

    assert run(root, cache) == (14, 14, 0, 0)  # compiled: 8 + 3 * 2
    assert run(root, cache) == (14, 14, 1, 1)  # unchanged sources: loaded from the cache
    (first,) = salted_folders(cache)
    assert len(first) == len("cnnir-") + 16

    write_consts(pkg, 16, "x * 100 + 1")  # only the sibling changes (its size too)
    assert run(root, cache) == (317, 317, 0, 0)  # recompiled: 16 + 3 * 100 + 1
    assert run(root, cache) == (317, 317, 1, 1)
    assert len(salted_folders(cache)) == 2 and first in salted_folders(cache)
