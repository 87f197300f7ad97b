"""GEMM on numpy's BLAS without the thread-pool clash.

After a multi-threaded BLAS call, OpenBLAS's worker threads busy-wait for a while and starve
the Numba kernel that runs next (SEMANTICS §10 measured 1.06 ms alone vs 7.7 ms right after a
prange). So while a compiled model runs, BLAS is limited to one thread and cnnir splits each
large GEMM into column (or row) blocks that run on a small pool of Python threads; numpy
releases the GIL inside BLAS, so the blocks run in parallel, and idle pool threads sleep.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

WORKERS = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
              else os.cpu_count() or 1)
MIN_PARALLEL_FLOPS = 2_000_000  # below this a split costs more than it saves


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, WORKERS - 1), thread_name_prefix="cnnir-gemm")


@functools.cache
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    if os.environ.get("CNNIR_GEMM") == "plain":
        yield
        return
    with _controller().limit(limits=1, user_api="blas"):
        yield


def parallel_tiles(count: int, run_range, flops: int = MIN_PARALLEL_FLOPS) -> None:
    """Call ``run_range(worker, lo, hi)`` on contiguous ranges of ``count`` tiles, one range
    per worker thread (the caller is worker 0); small jobs stay on the calling thread, where
    they cost less than waking a worker (about 20 µs)."""
    parts = min(WORKERS, count) if flops >= MIN_PARALLEL_FLOPS else 1
    bounds = [count * i // parts for i in range(parts + 1)]
    futures = [_pool().submit(run_range, i, bounds[i], bounds[i + 1]) for i in range(1, parts)]
    run_range(0, bounds[0], bounds[1])
    for f in futures:
        f.result()


def batched_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out[k] = a[k] @ b[k]`` for 3-D arrays, the batch split over the worker threads."""
    parts = min(WORKERS, a.shape[0])
    if parts == 1:
        np.matmul(a, b, out=out)
        return
    bounds = np.linspace(0, a.shape[0], parts + 1).astype(int)
    futures = [_pool().submit(np.matmul, a[lo:hi], b[lo:hi], out=out[lo:hi])
               for lo, hi in zip(bounds[1:-1], bounds[2:])]
    np.matmul(a[:bounds[1]], b[:bounds[1]], out=out[:bounds[1]])
    for f in futures:
        f.result()


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a @ b`` for 2-D arrays, split over the worker threads when large."""
    m, k = a.shape
    n = b.shape[1]
    if os.environ.get("CNNIR_GEMM") == "plain":
        np.matmul(a, b, out=out)
        return
    parts = WORKERS if 2 * m * n * k >= MIN_PARALLEL_FLOPS else 1
    if parts == 1:
        np.matmul(a, b, out=out)
        return
    if n >= m:
        bounds = np.linspace(0, n, parts + 1).astype(int)
        blocks = [(a, b[:, lo:hi], out[:, lo:hi]) for lo, hi in zip(bounds, bounds[1:])]
    else:
        bounds = np.linspace(0, m, parts + 1).astype(int)
        blocks = [(a[lo:hi], b, out[lo:hi]) for lo, hi in zip(bounds, bounds[1:])]
    futures = [_pool().submit(np.matmul, x, y, out=z) for x, y, z in blocks[1:]]
    np.matmul(*blocks[0][:2], out=blocks[0][2])
    for f in futures:
        f.result()
