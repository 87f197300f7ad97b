"""The one place that configures Numba for cnnir's CPU kernels.

Kernels live in importable modules and are compiled with ``cache=True``, so a second process
loads machine code from ``__pycache__`` instead of compiling. ``OMP_WAIT_POLICY=PASSIVE`` must
be set before numba's OpenMP layer starts: otherwise its idle workers spin after every
``prange`` and starve the OpenBLAS threads behind ``np.matmul`` (SEMANTICS §10: 7.7 ms instead of
1.06 ms for one GEMM). fastmath allows contraction and reassociation (vectorized reductions) but
not ``nnan``/``ninf``: NaN must propagate as in PyTorch.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402

FASTMATH = {"contract", "arcp", "reassoc", "nsz", "afn"}


def kernel(fn):
    """A parallel, cached, shape-generic kernel."""
    return numba.njit(parallel=True, cache=True, fastmath=FASTMATH, nogil=True)(fn)


def tile_kernel(fn):
    """A serial, cached kernel that releases the GIL: several run at once on cnnir's worker
    threads, each on its own tile (no Numba thread pool involved)."""
    return numba.njit(cache=True, fastmath=FASTMATH, nogil=True)(fn)


def helper(fn):
    """A small serial function inlined into kernels."""
    return numba.njit(cache=True, fastmath=FASTMATH, inline="always", nogil=True)(fn)


prange = numba.prange
