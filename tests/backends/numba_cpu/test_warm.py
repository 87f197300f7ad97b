"""The compile warm-up process (``backends/numba_cpu/warm.py``): started once per cold cache
folder, never when turned off or when the cache already holds the GEMM kernel; its layers are
valid networks."""

from __future__ import annotations

import os
import time

import pytest

import cnnir
from cnnir.backends.numba_cpu import tuning, warm


@pytest.fixture
def spawned(monkeypatch, tmp_path):
    """Record instead of starting processes; the cache folder is a fresh temporary one."""
    calls = []
    monkeypatch.setattr(warm.subprocess, "Popen", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(warm, "kernel_cache_folder", lambda: tmp_path)
    monkeypatch.setattr(warm, "_started", [])
    monkeypatch.delenv(warm.WARM_VARIABLE, raising=False)
    return calls


def test_a_cold_cache_starts_one_warm_up(spawned, tmp_path) -> None:
    warm.start_if_cold()
    warm.start_if_cold()
    assert len(spawned) == 1 and (tmp_path / warm.MARKER).exists()
    args, kwargs = spawned[0]
    assert kwargs["env"][warm.WARM_VARIABLE] == "0"  # the warm-up starts no warm-up itself
    assert kwargs["env"][tuning.VARIABLE] == "0"  # nor remembers its disturbed timings
    assert kwargs["stdin"] == warm.subprocess.DEVNULL
    assert not kwargs.get("start_new_session")  # a new session would escape its low priority


def test_another_process_of_the_same_cache_starts_none(spawned, tmp_path) -> None:
    (tmp_path / warm.MARKER).touch()
    warm.start_if_cold()
    assert spawned == []


def test_a_stale_marker_is_replaced(spawned, tmp_path) -> None:
    marker = tmp_path / warm.MARKER
    marker.touch()
    old = time.time() - warm.MARKER_MAX_AGE_S - 5
    os.utime(marker, (old, old))
    warm.start_if_cold()
    assert len(spawned) == 1


def test_a_warm_cache_or_the_setting_starts_none(spawned, tmp_path, monkeypatch) -> None:
    (tmp_path / "gemm.gemm_block-42.nbi").touch()
    warm.start_if_cold()
    monkeypatch.setenv(warm.WARM_VARIABLE, "0")
    (tmp_path / "gemm.gemm_block-42.nbi").unlink()
    warm.start_if_cold()
    assert spawned == []


def test_the_warm_up_layers_compile_with_the_algorithms_they_force() -> None:
    """Each layer traces; one that forces an algorithm gets it on its 3x3 convolutions (a
    misspelt name would silently fall back to the first candidate and warm the wrong
    kernels)."""
    for module, shape, tune in warm._layers():
        assert cnnir.trace(module.eval(), shape).nodes
        if tune is not True:
            run = cnnir.compile(module.eval(), shape, tune=tune)
            assert tune in run.choices.values(), run.choices


def test_a_finished_warm_up_says_so(spawned, tmp_path, monkeypatch) -> None:
    """The file benchmarks wait for before timing a warm start; not before every layer ran."""
    ran = []
    monkeypatch.setattr(warm.os, "nice", lambda increment: 0)
    monkeypatch.setattr(warm, "_layers", lambda: [(cnnir.nn.ReLU(), (1, 2), True)])
    done = tmp_path / warm.DONE
    monkeypatch.setattr(cnnir, "compile", lambda *a, **k: lambda x: ran.append(done.exists()))
    warm.main()
    assert ran == [False]
    assert (tmp_path / warm.DONE).exists()
