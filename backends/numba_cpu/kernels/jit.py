"""The one place that configures Numba for cnnir's CPU kernels.

Kernels live in importable modules and are cached on disk, so a second process loads machine
code instead of compiling. Numba's own ``cache=True`` is not enough: it invalidates a kernel
only when the kernel's own file changes, yet kernels bake in constants and inlined helpers from
sibling modules (``simd.LANES``, ``activation.act_row``), so editing or upgrading only those
would run stale code. Every kernel made here is therefore cached under a folder salted with a
hash of all the ``*.py`` files of its package directory (plus this file and Numba's version),
and that hash also stamps each cache index, so a stale entry is never loaded.

fastmath allows contraction and reassociation (vectorized reductions) but not
``nnan``/``ninf``: NaN must propagate as in PyTorch.

Numba's OpenMP workers keep libgomp's default wait policy: they spin briefly after a parallel
loop, then sleep. A model runs dozens of short parallel kernels back to back, and waking a
sleeping worker costs about 46 µs on this machine against 1.5 µs for a spinning one, which is
most of a small layer (``OMP_WAIT_POLICY=PASSIVE``, the earlier setting, cost MobileNetV2 about
3 ms per call). The spinning is safe because the float32 hot path runs no BLAS: GEMMs are
cnnir's own micro-kernel, so no OpenBLAS threads compete for the cores (the thread-pool
clash). The float64 path still calls BLAS, single-threaded (``blas.single_threaded_blas``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import types
from collections.abc import Callable
from pathlib import Path

import numba
from numba.core import caching
from numba.core.dispatcher import Dispatcher

from cnnir.backends.numba_cpu.kernels.host import AVX2_CPU, HOST

if HOST.forced:  # generate for an AVX2-only CPU: set before Numba's CPU target first compiles
    numba.config.CPU_NAME, numba.config.CPU_FEATURES = AVX2_CPU, ""

# Start Numba's thread pool now: cached kernels that call numba.get_thread_id() crash if the
# first one to run in a process is a serial build loaded from the cache.
numba.get_num_threads()

FASTMATH = {"contract", "arcp", "reassoc", "nsz", "afn"}


PARALLEL_MIN_ELEMENTS = 1 << 16  # below this, starting Numba's threads costs more


# --- the package-keyed disk cache -------------------------------------------------------------
# Numba has no public hook for this. We rely on its caching internals: FunctionCache and its
# `_impl_class`, CompileResultCacheImpl and its `_locator_classes`, the locators'
# get_cache_path/get_source_stamp, and the dispatcher's private `_cache` attribute (what
# Dispatcher.enable_caching() sets). Older Numba versions spell the locators with a leading
# underscore.


@functools.cache
def _source_digest(directory: str) -> str:
    """sha256 (hex) of Numba's version, the host profile (the kernels are generated for it),
    this file (its options shape every kernel) and every ``*.py`` file in ``directory`` (a
    dangling link is skipped). Computed once per directory and process."""
    here = Path(__file__).resolve()
    files = sorted({p for p in Path(directory).resolve().glob("*.py") if p.is_file()} | {here})
    digest = hashlib.sha256(f"{numba.__version__}\0{HOST.key}".encode())
    for path in files:
        source = path.read_bytes()
        digest.update(f"\0{path.name}\0{len(source)}\0".encode())
        digest.update(source)
    return digest.hexdigest()


class _SaltedLocator:
    """Mixin over one of Numba's source-file locators: caches in a sub-folder named after the
    package's source digest, and stamps the index with that digest."""

    _digest: str

    def __init__(self, py_func: Callable, py_file: str) -> None:
        super().__init__(py_func, py_file)
        self._digest = _source_digest(os.path.dirname(os.path.abspath(py_file)))

    def get_cache_path(self) -> str:
        return os.path.join(super().get_cache_path(), "cnnir-" + self._digest[:16])

    def get_source_stamp(self) -> object:
        return (super().get_source_stamp(), self._digest)


def _numba_locator(name: str) -> type:
    """Numba's locator class ``name`` (``_name`` in older versions)."""
    return getattr(caching, name, None) or getattr(caching, "_" + name)


class _UserProvidedLocator(_SaltedLocator, _numba_locator("UserProvidedCacheLocator")):
    """Under ``$NUMBA_CACHE_DIR``, when it is set."""


class _InTreeLocator(_SaltedLocator, _numba_locator("InTreeCacheLocator")):
    """Else in the package's ``__pycache__``, when it is writable."""


class _UserWideLocator(_SaltedLocator, _numba_locator("UserWideCacheLocator")):
    """Else in the user-wide cache directory."""


class _PackageCacheImpl(caching.CompileResultCacheImpl):
    _locator_classes = [_UserProvidedLocator, _InTreeLocator, _UserWideLocator]


class _PackageCache(caching.FunctionCache):
    """Numba's per-function disk cache, located by the salted locators above."""

    _impl_class = _PackageCacheImpl


def _njit(fn: Callable, **options) -> Dispatcher:
    """``numba.njit`` with cnnir's options and the package-keyed disk cache. A function with
    no source file or no writable cache folder compiles without a disk cache."""
    dispatcher = numba.njit(cache=False, fastmath=FASTMATH, nogil=True, **options)(fn)
    if isinstance(dispatcher, Dispatcher):  # not when NUMBA_DISABLE_JIT is set
        try:
            dispatcher._cache = _PackageCache(fn)
        except RuntimeError:  # no locator applies
            pass
    return dispatcher


def cache_folder(dispatcher: Dispatcher) -> str | None:
    """The folder ``dispatcher``'s kernels are cached in, or None without a disk cache."""
    cache = getattr(dispatcher, "_cache", None)
    return getattr(cache, "_cache_path", None)


# --- the decorators ---------------------------------------------------------------------------


def prange_only() -> dict[str, bool]:
    """Numba's parallel options with only ``prange`` loops parallelized: the kernels say
    where to split, and the passes that look for other parallelism (array expressions,
    slice assignments, fusion, reductions of numpy calls) find nothing worth a thread
    launch yet cost compile time (im2col_gemm's parallel build: 6.9 → 6.2 s; ResNet-18
    compiled alone with an empty cache: about 32 → 30 s). A new dict per call: Numba
    consumes it."""
    return dict(prange=True, comprehension=False, reduction=False, inplace_binop=False,
                setitem=False, numpy=False, stencil=False, fusion=False)


class Kernel:
    """A shape-generic, cached kernel in two builds: parallel (its ``prange`` loops spread
    over Numba's threads) and serial (the same loops on the calling thread). Small tensors
    run ``serial``, where starting the threads would cost more than the work they share:
    ``kernel.sized(n)(...)``."""

    def __init__(self, fn: Callable) -> None:
        self.parallel = _njit(fn, parallel=prange_only())
        serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                    fn.__defaults__, fn.__closure__)
        serial.__qualname__ = fn.__qualname__ + "_serial"  # its own on-disk cache entry
        self.serial = _njit(serial)
        self.__doc__ = fn.__doc__

    def __call__(self, *args):
        return self.parallel(*args)

    def sized(self, elements: int) -> Dispatcher:
        """The build to use for a call touching about ``elements`` output values."""
        return self.parallel if elements >= PARALLEL_MIN_ELEMENTS else self.serial

    def over(self, jobs: int) -> Dispatcher:
        """The build for a kernel whose ``prange`` runs ``jobs`` independent blocks, already
        sized for the threads: serial when there is only one."""
        return self.parallel if jobs > 1 else self.serial


def kernel(fn: Callable) -> Kernel:
    """A parallel/serial pair of cached, shape-generic kernels (see ``Kernel``)."""
    return Kernel(fn)


def tile_kernel(fn: Callable) -> Dispatcher:
    """A serial, cached kernel that releases the GIL: several run at once on cnnir's worker
    threads, each on its own tile (no Numba thread pool involved)."""
    return _njit(fn)


def helper(fn: Callable) -> Dispatcher:
    """A small serial function inlined into kernels (cached like them, though only a direct
    call from Python compiles it on its own)."""
    return _njit(fn, inline="always")


prange = numba.prange
