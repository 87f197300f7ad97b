"""Tile kernels are compiled once and called by address (``jit.TileKernel``), and a kernel
is compiled by one process at a time (``jit._compile_lock``).

Each case runs a small package of kernels in fresh processes over one disk cache, as a
compile, the warm-up process beside it and a later run would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

KERNELS = """\
import numpy as np

from cnnir.backends.numba_cpu.kernels.jit import kernel, prange, tile_kernel


@tile_kernel
def row_sum(x, i, scale):
    total = 0.0
    for j in range(x.shape[1]):
        total += x[i, j] * scale
    return total


@tile_kernel
def checked(x, i):
    if x[i, 0] < 0:
        raise ValueError("negative")
    return x[i, 0]


@kernel
def row_sums(x, out):
    for i in prange(x.shape[0]):
        out[i] = row_sum(x, i, 2.0)


@kernel
def all_checked(x, out):
    for i in prange(x.shape[0]):
        out[i] = checked(x, i)
"""

RUN = """\
import json, sys
import numpy as np
import pkg.kernels as k

x = np.arange(12.0).reshape(4, 3)
out, serial_out = np.zeros(4), np.zeros(4)
k.row_sums.parallel(x, out)
k.row_sums.serial(x, serial_out)
sig = k.row_sums.parallel.signatures[0]
ir = k.row_sums.parallel.inspect_llvm(sig) if sys.argv[1] == "ir" else ""
try:
    k.all_checked.serial(-x, np.zeros(4))  # (in a parallel loop Numba loses the type)
    error = None
except ValueError as e:
    error = str(e)
print(json.dumps({
    "out": out.tolist(),
    "serial_out": serial_out.tolist(),
    "error": error,
    "caller_hits": sum(k.row_sums.parallel.stats.cache_hits.values()),
    "callee_hits": sum(k.row_sum.dispatcher.stats.cache_hits.values()),
    "callee_misses": sum(k.row_sum.dispatcher.stats.cache_misses.values()),
    "declared_tiles": [line for line in ir.splitlines()
                       if line.startswith("declare") and "cnnir_tile_" in line],
}))
"""


SUMS = [2.0 * (9 * i + 3) for i in range(4)]  # 2·Σ_j x[i, j], x = arange(12).reshape(4, 3)


def package(tmp_path: Path) -> tuple[Path, Path]:
    root, cache = tmp_path / "src", tmp_path / "cache"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "kernels.py").write_text(KERNELS)
    return root, cache


def start(root: Path, cache: Path, mode: str) -> subprocess.Popen:
    path = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": os.pathsep.join(path)}
    env.pop("NUMBA_DISABLE_JIT", None)
    return subprocess.Popen([sys.executable, "-c", RUN, mode], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def result(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err
    return json.loads(out)


def test_a_tile_kernel_is_called_not_linked_and_reloads_from_the_cache(tmp_path: Path) -> None:
    root, cache = package(tmp_path)
    first = result(start(root, cache, "ir"))
    assert first["out"] == first["serial_out"] == SUMS
    assert len(first["declared_tiles"]) == 1  # the caller calls the tile by its symbol
    assert first["error"] == "negative"  # the callee's exception reaches Python
    again = result(start(root, cache, "-"))  # the caller loads from the cache, and binds
    assert again["out"] == again["serial_out"] == SUMS and again["error"] == "negative"
    # the tile was compiled on its own (not linked into the caller), and loaded on its own
    assert again["caller_hits"] == 1 and again["callee_hits"] == 1


def test_two_processes_compile_a_kernel_once(tmp_path: Path) -> None:
    root, cache = package(tmp_path)
    runs = [result(p) for p in [start(root, cache, "-"), start(root, cache, "-")]]
    assert all(r["out"] == r["serial_out"] == SUMS for r in runs)
    assert sorted(r["callee_misses"] for r in runs) == [0, 1]  # the other one waited, loaded
    assert sorted(r["callee_hits"] for r in runs) == [0, 1]


def test_the_compile_lock_waits_for_its_holder_and_tolerates_file_systems_without_locks(
        tmp_path: Path, monkeypatch) -> None:
    import fcntl
    import threading
    import time

    from cnnir.backends.numba_cpu.kernels import jit

    holder = os.open(tmp_path / "k-1.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another open file: another process, to flock
    threading.Timer(0.3, os.close, [holder]).start()
    start = time.monotonic()
    with jit._compile_lock(str(tmp_path), "k-1"):
        waited = time.monotonic() - start
        assert "k-1" in jit._held_locks
        with jit._compile_lock(str(tmp_path), "k-1"):  # this process's own: no wait
            pass
    assert waited >= 0.25 and "k-1" not in jit._held_locks

    def no_locks(fd, operation):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with jit._compile_lock(str(tmp_path), "k-2"):
        pass
    with jit._compile_lock(str(tmp_path / "missing" / "deeper"), "k-3"):  # created
        pass
    assert (tmp_path / "missing" / "deeper" / "k-3.lock").exists()
    with jit._compile_lock(str(tmp_path / "k-1.lock" / "under-a-file"), "k-4"):  # no folder
        pass


REFCOUNTS = """\
import json
import numpy as np

from cnnir.backends.numba_cpu.kernels.jit import helper, tile_kernel


@helper
def finish(out, i, channel):  # the arrays of a tuple, one used in a branch of an inlined
    scale, res, has_res = channel  # helper: Numba's refcount pruning leaves the loop counting
    y = out[i] * scale[0]
    if has_res:
        y += res[i]
    out[i] = y


@tile_kernel
def borrowing(out, channel):
    for i in range(out.shape[0]):
        finish(out, i, channel)
    return 0


@tile_kernel(allocates=True)
def allocating(out, channel):
    for i in range(out.shape[0]):
        finish(out, i, channel)
    return 0


results = {}
for name, tile in (("borrowing", borrowing), ("allocating", allocating)):
    out, scale, res = np.arange(4.0), np.full(1, 2.0), np.full(4, 0.5)
    tile(out, (scale, res, True))
    tile(out, (scale, res, False))
    ir = tile.dispatcher.inspect_llvm(tile.dispatcher.signatures[0])
    results[name] = {"out": out.tolist(),
                     "refcount_calls": ir.count("@NRT_incref(") + ir.count("@NRT_decref(")}
print(json.dumps(results))
"""


def test_kernels_leave_borrowed_arrays_uncounted_unless_they_allocate(tmp_path: Path) -> None:
    """Reference counting of array arguments is compiled out of a kernel (its inner loops
    paid an atomic increment and decrement per element); ``allocates=True`` keeps it."""
    root, cache = package(tmp_path)
    (root / "pkg" / "refcounts.py").write_text(REFCOUNTS)
    path = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": os.pathsep.join(path)}
    env.pop("NUMBA_DISABLE_JIT", None)
    done = subprocess.run([sys.executable, "-m", "pkg.refcounts"], env=env, text=True,
                          capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)
    for run in runs.values():
        assert run["out"] == [2 * (2 * i + 0.5) for i in range(4)]  # (2x + 0.5)·2
    assert runs["borrowing"]["refcount_calls"] == 0
    assert runs["allocating"]["refcount_calls"] > 0  # the case the test exists for


def test_a_bound_step_reads_its_arrays_at_each_call() -> None:
    """``jit.bound`` resolves a kernel's build once, when the step is made; the arrays it
    holds are read at each call, so values written into them in place between calls count,
    as they do for a lambda calling the kernel."""
    import numpy as np

    from cnnir.backends.numba_cpu.kernels import activation as ak
    from cnnir.backends.numba_cpu.kernels.jit import bound

    x = np.array([-2.0, 0.5, 3.0], np.float32)
    out = np.zeros(3, np.float32)
    step = bound(ak.activation.serial, x, out, int(ak.Act.RELU), 0.0)
    step()
    np.testing.assert_array_equal(out, [0.0, 0.5, 3.0])
    x[:] = [4.0, -1.0, -0.25]
    step()
    np.testing.assert_array_equal(out, [4.0, 0.0, 0.0])


JOBS = """\
import json

import numba
import numpy as np

from cnnir.backends.numba_cpu.kernels.jit import kernel, run_jobs, tile_kernel
from pkg.kernels import checked, row_sum


@tile_kernel
def sum_job(i, args):
    x, out, threads, scale = args
    out[i] = row_sum(x, i, scale)
    threads[i] = numba.get_thread_id()


@kernel
def job_sums(x, out, threads):
    run_jobs(sum_job, x.shape[0], (x, out, threads, 2.0))


@tile_kernel
def checked_job(i, args):
    x, out = args
    out[i] = checked(x, i)


@kernel
def all_checked_jobs(x, out):
    run_jobs(checked_job, x.shape[0], (x, out))


x = np.arange(192.0).reshape(64, 3)  # more jobs than threads
results = {}
for build in ("parallel", "serial"):
    out, threads = np.zeros(64), np.full(64, -1, np.int64)
    getattr(job_sums, build)(x, out, threads)
    try:
        getattr(all_checked_jobs, build)(-x, np.zeros(64))
        error = None
    except Exception as e:  # noqa: BLE001 (the type is what is checked)
        error = [type(e).__name__, str(e)]
    results[build] = {"out": out.tolist(), "threads": sorted(set(threads.tolist())),
                      "error": error,
                      "hits": sum(job_sums.parallel.stats.cache_hits.values())
                      + sum(job_sums.serial.stats.cache_hits.values())}
results["threads"] = numba.get_num_threads()
print(json.dumps(results))
"""


def test_run_jobs_spreads_a_tile_kernel_over_the_threads_and_reloads(tmp_path: Path) -> None:
    """``jit.run_jobs`` runs job t of a tile kernel for every t: over the threads in a
    parallel build (each job on the thread whose id it sees), in order on the caller's in a
    serial one, where a job's exception propagates as it is; from a worker thread it becomes
    RuntimeError. A second process loads the kernels and still finds the jobs' tile kernel
    and the launcher."""
    root, cache = package(tmp_path)
    (root / "pkg" / "jobs.py").write_text(JOBS)
    path = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": os.pathsep.join(path)}
    env.pop("NUMBA_DISABLE_JIT", None)
    sums = [2.0 * (9 * i + 3) for i in range(64)]
    for run in range(2):
        done = subprocess.run([sys.executable, "-m", "pkg.jobs"], env=env, text=True,
                              capture_output=True, timeout=180)
        assert done.returncode == 0, done.stderr
        results = json.loads(done.stdout)
        parallel, serial = results["parallel"], results["serial"]
        assert parallel["out"] == serial["out"] == sums
        assert serial["threads"] == [0]
        assert set(parallel["threads"]) <= set(range(results["threads"]))
        if results["threads"] > 1:  # a static schedule gives every thread jobs
            assert len(parallel["threads"]) > 1
        assert serial["error"] == ["ValueError", "negative"]
        assert parallel["error"][0] == "RuntimeError"
        assert serial["hits"] == (0 if run == 0 else 2)  # the second process loaded both
