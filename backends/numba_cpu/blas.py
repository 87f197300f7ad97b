"""GEMM on numpy's BLAS without the thread-pool clash: the float64 path, transposed and
deformable convolutions, and linear layers with many rows (float32 convolutions run on
cnnir's own micro-kernel instead, ``kernels.gemm``).

Numba's OpenMP workers keep spinning for a while after a parallel loop, and a multi-threaded
BLAS call made right then oversubscribes the cores (a GEMM measured 1.06 ms alone, 7.7 ms right
after a prange). So while a step calls BLAS, BLAS is limited to one thread (``parallel_tiles``,
through which every step's GEMM goes; the batched matmul op takes the limit itself), and
cnnir splits each large GEMM into column (or row) blocks that run on a small pool of Python
threads; numpy releases the GIL inside BLAS, so the blocks run in parallel, and idle pool
threads sleep. The limit is taken per BLAS step, not per call of a model: reading and
setting the thread count through threadpoolctl costs about 6 µs, half the fixed cost of a
call, which a model with no BLAS step (a float32 CNN up to batch 16) no longer pays.

OpenBLAS's own workers spin for about 0.1 s after each multi-threaded call the user makes,
and on few cores they starve the kernels' threads (SmallCIFAR at batch 1 ran 0.17 ms alone,
2.8 ms right after a 512² sgemm). So a call first stops those workers when they exist
(``stop_blas_workers``; OpenBLAS starts them again at its next multi-threaded call).
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# the kernels' thread count when set (several MPI ranks on one machine share its cores)
WORKERS = int(os.environ.get("NUMBA_NUM_THREADS", "0").strip() or 0) or max(
    1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
MIN_PARALLEL_FLOPS = 2_000_000  # below this a split costs more than it saves
POOL_THREAD_PREFIX = "cnnir-gemm"


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, WORKERS - 1),
                              thread_name_prefix=POOL_THREAD_PREFIX)


@functools.cache
def _blas_libraries() -> list:
    """threadpoolctl's handles on the loaded BLAS libraries, found once: a fresh
    ``ThreadpoolController().limit`` scans every library and costs about 12 µs a call."""
    from threadpoolctl import ThreadpoolController

    return list(ThreadpoolController().select(user_api="blas").lib_controllers)


class _SingleThreadedBlas:
    """BLAS's thread count is one setting for the whole process: it is set to 1 when the first
    compiled model starts running and restored when the last one running finishes, under a
    lock, so calls from several Python threads (or nested calls) never restore it early and
    never leave it at 1. While a model runs, other BLAS calls in the process run on one
    thread too. (OpenBLAS 0.3.31 ignores a count set from a second thread once the main
    thread has set one: a float64 model first called off the main thread may then run BLAS
    on several threads, slower but with the same results.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._saved: list[int] = []

    def __enter__(self) -> None:
        with self._lock:
            if self._running == 0:
                libraries = _blas_libraries()
                self._saved = [lib.num_threads for lib in libraries]
                for lib in libraries:
                    lib.set_num_threads(1)
            self._running += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0:
                for lib, threads in zip(_blas_libraries(), self._saved):
                    lib.set_num_threads(threads)


_SINGLE_THREADED_BLAS = _SingleThreadedBlas()

QUIET_VARIABLE = "CNNIR_STOP_BLAS_WORKERS"


@functools.cache
def _openblas_servers() -> tuple[tuple[ctypes.c_int, object], ...]:
    """``(blas_server_avail, blas_thread_shutdown_)`` of each loaded OpenBLAS that runs its
    own pthreads pool (none with ``CNNIR_STOP_BLAS_WORKERS=0``, or where a build does not
    export them)."""
    if os.environ.get(QUIET_VARIABLE, "1").strip() == "0":
        return ()
    servers = []
    for lib in _blas_libraries():
        if (getattr(lib, "internal_api", None), getattr(lib, "threading_layer", None)) != (
                "openblas", "pthreads"):
            continue
        try:
            servers.append((ctypes.c_int.in_dll(lib.dynlib, "blas_server_avail"),
                            lib.dynlib.blas_thread_shutdown_))
        except (AttributeError, ValueError):
            continue
    return tuple(servers)


def _no_other_python_thread() -> bool:
    """Whether this thread is the only Python thread that could be inside a BLAS call: an
    idle worker of cnnir's own GEMM pool runs BLAS only within a model's step."""
    if threading.active_count() == 1:
        return True
    this = threading.current_thread()
    return all(t is this or t.name.startswith(POOL_THREAD_PREFIX)
               for t in threading.enumerate())


def stop_blas_workers() -> None:
    """Stop OpenBLAS's worker threads, if it has started them, before a model runs: after the
    user's own multi-threaded BLAS call they spin for about 0.1 s and take the cores from the
    kernels' threads. Costs 30-80 µs when there are workers to stop (OpenBLAS starts them
    again, about as fast, at its next multi-threaded call) and a flag read otherwise. Only
    when no other Python thread runs: OpenBLAS's shutdown must not meet a BLAS call in
    flight."""
    for running, shutdown in _openblas_servers():
        if running.value and _no_other_python_thread():
            shutdown()


def single_threaded_blas() -> _SingleThreadedBlas:
    """``with single_threaded_blas(): ...`` runs the block with BLAS on one thread."""
    return _SINGLE_THREADED_BLAS


def parallel_tiles(count: int, run_range, flops: int = MIN_PARALLEL_FLOPS) -> None:
    """Call ``run_range(worker, lo, hi)`` on contiguous ranges of ``count`` tiles, one range
    per worker thread (the caller is worker 0), with BLAS on one thread; small jobs stay on
    the calling thread, where they cost less than waking a worker (about 20 µs)."""
    parts = min(WORKERS, count) if flops >= MIN_PARALLEL_FLOPS else 1
    bounds = [count * i // parts for i in range(parts + 1)]
    with _SINGLE_THREADED_BLAS:
        futures = [_pool().submit(run_range, i, bounds[i], bounds[i + 1])
                   for i in range(1, parts)]
        run_range(0, bounds[0], bounds[1])
        for f in futures:
            f.result()


def batched_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out[k] = a[k] @ b[k]`` for 3-D arrays, the batch split over the worker threads."""

    def run_range(worker: int, lo: int, hi: int) -> None:
        np.matmul(a[lo:hi], b[lo:hi], out=out[lo:hi])

    parallel_tiles(a.shape[0], run_range, 2 * a.size * b.shape[-1])


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a @ b`` for 2-D arrays, split by columns (or rows) over the worker threads."""
    m, n = a.shape[0], b.shape[1]

    def columns(worker: int, lo: int, hi: int) -> None:
        np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])

    def rows(worker: int, lo: int, hi: int) -> None:
        np.matmul(a[lo:hi], b, out=out[lo:hi])

    parallel_tiles(n if n >= m else m, columns if n >= m else rows, 2 * a.size * n)
