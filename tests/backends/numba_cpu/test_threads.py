"""Compiled models called from several Python threads at once: every output stays right, and
the process-wide BLAS thread setting is restored once the last call ends."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import cnnir
from cnnir import nn
from cnnir.backends.numba_cpu import blas

CALLS = 40


def blas_threads() -> list[int]:
    """Threads of each BLAS library the guard limits (numpy's, which the float64 path calls;
    one loaded later, e.g. SciPy's, is outside it)."""
    return [lib.num_threads for lib in blas._blas_libraries()]


def net(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, width, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, 10)).eval()


def hammer(jobs: list[tuple]) -> list[bool]:
    """Call each (model, input, expected) CALLS times, all jobs at once; True per exact call."""
    def calls(model, x, expected) -> bool:
        return all(np.array_equal(model(x), expected) for _ in range(CALLS))

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(lambda job: calls(*job), jobs))


def test_models_in_several_threads() -> None:
    """float32 models (micro-kernel) beside float64 ones (BLAS under the thread limit)."""
    rng = np.random.default_rng(0)
    jobs = []
    for dtype in ("float32", "float32", "float64", "float64"):
        model = cnnir.compile(net(16), (4, 3, 16, 16), dtype=dtype)
        x = rng.standard_normal((4, 3, 16, 16)).astype(dtype)
        jobs.append((model, x, model(x)))
    before = blas_threads()  # every BLAS library the models use is loaded by now
    assert hammer(jobs) == [True] * len(jobs)
    assert blas_threads() == before


def test_one_model_in_two_threads_takes_turns() -> None:
    """Its buffers are shared by its calls: concurrent calls run one at a time."""
    model = cnnir.compile(net(16), (2, 3, 16, 16))
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((2, 3, 16, 16)).astype(np.float32) for _ in range(2)]
    assert hammer([(model, x, model(x)) for x in xs]) == [True, True]


class FakeBlas:
    """A BLAS library's thread setting, as threadpoolctl's controllers expose it."""

    def __init__(self) -> None:
        self.num_threads = 2

    def set_num_threads(self, n: int) -> None:
        self.num_threads = n


def test_blas_stays_limited_until_the_last_running_call_ends(monkeypatch) -> None:
    """Call A starts, call B starts, A ends while B still runs, then B ends: BLAS must stay
    on one thread until B ends, then get its setting back (a save-and-restore per call gives
    B multi-threaded BLAS, then leaves the process at one thread). The library is a stand-in:
    OpenBLAS 0.3.31 ignores a count set from a second thread once the main thread has set
    one, which would hide the bookkeeping this test checks."""
    library = FakeBlas()
    monkeypatch.setattr(blas, "_blas_libraries", lambda: [library])
    guard = blas.single_threaded_blas()
    a_running, b_running, a_done = (threading.Event() for _ in range(3))
    seen: dict[str, int] = {}

    def call_a() -> None:
        with guard:
            a_running.set()
            b_running.wait()
        a_done.set()

    def call_b() -> None:
        a_running.wait()
        with guard:
            b_running.set()
            a_done.wait()
            seen["while B runs alone"] = library.num_threads

    threads = [threading.Thread(target=call_a), threading.Thread(target=call_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"while B runs alone": 1}
    assert library.num_threads == 2


def test_blas_runs_on_one_thread_inside_a_blas_step_only(monkeypatch) -> None:
    """A float64 model's GEMMs (its BLAS steps) see BLAS on one thread, and the setting is
    back after the call; a float32 CNN's call, which runs no BLAS, never touches it (reading
    and setting it costs about 6 µs a call)."""
    library, settings = FakeBlas(), []
    monkeypatch.setattr(blas, "_blas_libraries", lambda: [library])
    monkeypatch.setattr(library, "set_num_threads",
                        lambda n: (settings.append(n), setattr(library, "num_threads", n)))
    seen: list[int] = []
    real = np.matmul

    def spy(*args, **kwargs):
        seen.append(library.num_threads)
        return real(*args, **kwargs)

    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16))
    float32 = cnnir.compile(net(16), x.shape)
    float64 = cnnir.compile(net(16), x.shape, dtype="float64")
    monkeypatch.setattr(np, "matmul", spy)
    settings.clear()  # compiling tunes under the limit
    float32(x.astype(np.float32))
    assert seen == [] and settings == []
    float64(x)
    assert seen and set(seen) == {1}
    assert settings[0] == 1 and settings[-1] == 2 and library.num_threads == 2


@pytest.fixture
def openblas_servers(monkeypatch):
    """numpy's OpenBLAS worker pools, as ``blas.stop_blas_workers`` finds them (looked up
    afresh: another test may have swapped the BLAS libraries for a stand-in)."""
    monkeypatch.delenv(blas.QUIET_VARIABLE, raising=False)
    lookup = blas._openblas_servers  # a test may replace it
    lookup.cache_clear()
    servers = lookup()
    if not servers:
        pytest.skip("numpy's BLAS here is not OpenBLAS with its own pthreads pool")
    yield servers
    lookup.cache_clear()


def running(servers) -> bool:
    return any(flag.value for flag, _ in servers)


def sgemm_and_reference(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A float32 product large enough for OpenBLAS to run it on its workers, and its float64
    value."""
    a = np.random.default_rng(seed).standard_normal((384, 384)).astype(np.float32)
    return a, a.astype(np.float64) @ a.astype(np.float64)


def test_a_call_stops_the_openblas_workers_a_user_sgemm_left_spinning(openblas_servers):
    """After the user's own multi-threaded sgemm, OpenBLAS's workers spin and starve the
    kernels' threads: a call stops them, and the user's next sgemm starts them again and is
    right."""
    model = cnnir.compile(net(8), (1, 3, 16, 16))
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    expected = model(x)
    a, product = sgemm_and_reference(4)
    np.testing.assert_allclose(a @ a, product, rtol=1e-4, atol=1e-3)
    assert running(openblas_servers)
    assert np.array_equal(model(x), expected)
    assert not running(openblas_servers)
    np.testing.assert_allclose(a @ a, product, rtol=1e-4, atol=1e-3)
    assert running(openblas_servers)


def test_the_workers_are_left_alone_while_another_python_thread_runs(openblas_servers,
                                                                     monkeypatch):
    """OpenBLAS's shutdown must not meet a BLAS call in flight: with a user thread computing
    sgemms all along, calls never shut the workers down (the user's sgemms would restart
    them, so the shutdowns are counted, not the workers), and both sides stay right."""
    shutdowns = []
    recording = tuple((flag, lambda: shutdowns.append(1)) for flag, _ in openblas_servers)
    monkeypatch.setattr(blas, "_openblas_servers", lambda: recording)
    model = cnnir.compile(net(8), (1, 3, 16, 16))
    x = np.random.default_rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32)
    expected = model(x)
    a, product = sgemm_and_reference(6)
    started, done = threading.Event(), threading.Event()

    def user_sgemms() -> bool:
        right = True
        while not done.is_set():
            right &= np.allclose(a @ a, product, rtol=1e-4, atol=1e-3)
            started.set()
        return right

    with ThreadPoolExecutor(1) as pool:
        user = pool.submit(user_sgemms)
        try:
            assert started.wait(60)
            assert not blas._no_other_python_thread()
            shutdowns.clear()  # the first call's, before the user thread started
            calls = [np.array_equal(model(x), expected) for _ in range(CALLS)]
            assert running(openblas_servers) and shutdowns == []
        finally:
            done.set()
        assert user.result(timeout=60)
    assert calls == [True] * CALLS


def test_cnnirs_own_idle_gemm_pool_does_not_count_as_another_thread(openblas_servers):
    """cnnir's GEMM pool (started by BLAS steps) runs BLAS only within a step: its idle
    workers leave the next call free to stop OpenBLAS's."""
    blas._pool().submit(lambda: None).result()
    assert any(t.name.startswith(blas.POOL_THREAD_PREFIX) for t in threading.enumerate())
    model = cnnir.compile(net(8), (1, 3, 16, 16))
    x = np.random.default_rng(8).standard_normal((1, 3, 16, 16)).astype(np.float32)
    expected = model(x)
    a, _ = sgemm_and_reference(9)
    a @ a
    assert running(openblas_servers)
    assert np.array_equal(model(x), expected)
    assert not running(openblas_servers)


def test_stopping_the_workers_can_be_turned_off(openblas_servers, monkeypatch):
    monkeypatch.setenv(blas.QUIET_VARIABLE, "0")
    blas._openblas_servers.cache_clear()
    model = cnnir.compile(net(8), (1, 3, 16, 16))
    a, _ = sgemm_and_reference(7)
    a @ a
    model(np.zeros((1, 3, 16, 16), np.float32))
    assert running(openblas_servers)
