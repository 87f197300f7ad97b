"""The one place that configures Numba for cnnir's CPU kernels.

Kernels live in importable modules and are compiled with ``cache=True``, so a second process
loads machine code from ``__pycache__`` instead of compiling. fastmath allows contraction and
reassociation (vectorized reductions) but not ``nnan``/``ninf``: NaN must propagate as in
PyTorch.

Numba's OpenMP workers keep libgomp's default wait policy: they spin briefly after a parallel
loop, then sleep. A model runs dozens of short parallel kernels back to back, and waking a
sleeping worker costs about 46 µs on this machine against 1.5 µs for a spinning one, which is
most of a small layer (``OMP_WAIT_POLICY=PASSIVE``, the earlier setting, cost MobileNetV2 about
3 ms per call). The spinning is safe because the float32 hot path runs no BLAS: GEMMs are
cnnir's own micro-kernel, so no OpenBLAS threads compete for the cores (SEMANTICS §10's
clash). The float64 path still calls BLAS, single-threaded (``gemm.single_threaded_blas``).
"""

from __future__ import annotations

import types

import numba

# Start Numba's thread pool now: cached kernels that call numba.get_thread_id() crash if the
# first one to run in a process is a serial build loaded from the cache.
numba.get_num_threads()

FASTMATH = {"contract", "arcp", "reassoc", "nsz", "afn"}


PARALLEL_MIN_ELEMENTS = 1 << 16  # below this, starting Numba's threads costs more


class Kernel:
    """A shape-generic, cached kernel in two builds: parallel (its ``prange`` loops spread
    over Numba's threads) and serial (the same loops on the calling thread). Small tensors
    run ``serial``, where starting the threads would cost more than the work they share:
    ``kernel.sized(n)(...)``."""

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

    def over(self, jobs: int):
        """The build for a kernel whose ``prange`` runs ``jobs`` independent blocks, already
        sized for the threads: serial when there is only one."""
        return self.parallel if jobs > 1 else self.serial


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
