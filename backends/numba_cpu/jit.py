"""The one place that configures Numba for cnnir's CPU kernels.

Kernels live in importable modules and are compiled with ``cache=True``, so a second process
loads machine code from ``__pycache__`` instead of compiling. ``OMP_WAIT_POLICY=PASSIVE`` must
be set before numba's OpenMP layer starts: otherwise its idle workers spin after every
``prange`` and starve the OpenBLAS threads behind ``np.matmul`` (SEMANTICS §10: 7.7 ms instead of
1.06 ms for one GEMM). fastmath allows contraction and reassociation (vectorized reductions) but
not ``nnan``/``ninf``: NaN must propagate as in PyTorch.
"""

from __future__ import annotations

import types

import numba

# Start Numba's thread pool now: cached kernels that call numba.get_thread_id() crash if the
# first one to run in a process is a serial build loaded from the cache.
numba.get_num_threads()

FASTMATH = {"contract", "arcp", "reassoc", "nsz", "afn"}


PARALLEL_MIN_ELEMENTS = 1 << 16  # below this, waking Numba's sleeping threads costs more


class Kernel:
    """A shape-generic, cached kernel in two builds: parallel (its ``prange`` loops spread
    over Numba's threads) and serial (the same loops on the calling thread). With
    ``OMP_WAIT_POLICY=PASSIVE`` the pool's threads sleep between kernels and take tens of
    microseconds to wake, so small tensors run ``serial``: ``kernel.sized(n)(...)``."""

    def __init__(self, fn) -> None:
        self.parallel = numba.njit(parallel=True, cache=True, fastmath=FASTMATH, nogil=True)(fn)
        serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                    fn.__defaults__, fn.__closure__)
        serial.__qualname__ = fn.__qualname__ + "_serial"  # its own on-disk cache entry
        self.serial = numba.njit(cache=True, fastmath=FASTMATH, nogil=True)(serial)
        self.__doc__ = fn.__doc__

    def __call__(self, *args):
        return self.parallel(*args)

    def sized(self, elements: int):
        """The build to use for a call touching about ``elements`` output values."""
        return self.parallel if elements >= PARALLEL_MIN_ELEMENTS else self.serial


def kernel(fn) -> Kernel:
    """A parallel/serial pair of cached, shape-generic kernels (see ``Kernel``)."""
    return Kernel(fn)


def tile_kernel(fn):
    """A serial, cached kernel that releases the GIL: several run at once on cnnir's worker
    threads, each on its own tile (no Numba thread pool involved)."""
    return numba.njit(cache=True, fastmath=FASTMATH, nogil=True)(fn)


def helper(fn):
    """A small serial function inlined into kernels."""
    return numba.njit(cache=True, fastmath=FASTMATH, inline="always", nogil=True)(fn)


prange = numba.prange
