"""The tuner's choices remembered on disk (``numba_cpu.tuning``): a second compile of a node
like one already tuned builds and times nothing, follows the file, survives a corrupt file
and merges with what another process wrote; ``CNNIR_TUNING_CACHE=0`` turns it off."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cnnir
from cnnir import nn
from cnnir.backends.numba_cpu import tuning
from cnnir.backends.numba_cpu.program import CpuBuilder

SHAPE = (1, 8, 10, 10)


def model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.ReLU()).eval()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> tuning.TuningCache:
    monkeypatch.delenv(tuning.VARIABLE, raising=False)
    fresh = tuning.TuningCache(tmp_path)
    monkeypatch.setattr(tuning, "_cache", fresh)
    return fresh


def timings(monkeypatch) -> list[int]:
    """Counts the tuner's timed runs."""
    calls: list[int] = []
    original = CpuBuilder.elapsed

    def counted(self, step):
        calls.append(1)
        return original(self, step)

    monkeypatch.setattr(CpuBuilder, "elapsed", counted)
    return calls


def test_a_choice_is_remembered_then_recalled_without_timing(cache, monkeypatch) -> None:
    calls = timings(monkeypatch)
    net = model()
    first = cnnir.compile(net, SHAPE)
    assert calls, "the first compile times the candidates"
    (chosen,) = first.choices.values()
    stored = json.loads(cache.path.read_text())
    assert list(stored.values()) == [chosen]
    (key,) = stored
    assert key.startswith("conv2d") and "float32[1, 8, 10, 10]" in key and "threads=" in key

    calls.clear()
    second = cnnir.compile(net, SHAPE)
    assert calls == [] and list(second.choices.values()) == [chosen]
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    np.testing.assert_allclose(second(x), first(x), rtol=1e-5, atol=1e-5)


def test_the_file_decides_and_another_shape_is_tuned_anew(cache, monkeypatch) -> None:
    cnnir.compile(model(), SHAPE)
    (key,) = json.loads(cache.path.read_text())
    cache.path.write_text(json.dumps({key: "im2col-microkernel"}))
    monkeypatch.setattr(tuning, "_cache", tuning.TuningCache(cache.path.parent))
    calls = timings(monkeypatch)
    assert list(cnnir.compile(model(), SHAPE).choices.values()) == ["im2col-microkernel"]
    assert calls == []
    cnnir.compile(model(), (2, 8, 10, 10))  # another input shape: another node signature
    assert calls and len(json.loads(cache.path.read_text())) == 2


def test_a_corrupt_file_counts_as_empty_and_is_rewritten(cache, monkeypatch) -> None:
    cache.path.write_text("{not json")
    fresh = tuning.TuningCache(cache.path.parent)
    assert fresh.choices == {}
    monkeypatch.setattr(tuning, "_cache", fresh)
    cnnir.compile(model(), SHAPE)
    assert len(json.loads(cache.path.read_text())) == 1


def test_writes_merge_with_another_process_and_leave_no_temporary_files(cache) -> None:
    cache.put("a", "x")
    cache.path.write_text(json.dumps({**json.loads(cache.path.read_text()),
                                      tuning.TuningCache.key("b"): "y"}))  # another process
    cache.put("c", "z")
    assert sorted(json.loads(cache.path.read_text()).values()) == ["x", "y", "z"]
    assert [p.name for p in cache.path.parent.iterdir()] == [tuning.FILE]


def test_turned_off_every_compile_times_the_candidates(cache, monkeypatch) -> None:
    monkeypatch.setenv(tuning.VARIABLE, "0")
    calls = timings(monkeypatch)
    cnnir.compile(model(), SHAPE)
    once = len(calls)
    cnnir.compile(model(), SHAPE)
    assert once > 0 and len(calls) == 2 * once
    assert tuning.cache() is None and not cache.path.exists()
