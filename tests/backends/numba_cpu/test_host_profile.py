"""The host profile the CPU kernels are generated for (``kernels.host``): detection, the
``CNNIR_ISA`` override and its errors, the micro-kernel's register budget on each path, and
the disk cache keyed on the profile. Every conv algorithm runs on both paths in
``test_conv_algorithms.py`` (CI runs it a second time with ``CNNIR_ISA=avx2``)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from cnnir.backends.numba_cpu.kernels import host, jit, simd
from cnnir.errors import CnnirError


def test_unknown_isa_is_a_clear_error() -> None:
    with pytest.raises(CnnirError, match="CNNIR_ISA='sse9' is not a known") as err:
        host.detect("sse9")
    assert err.value.hint == "use one of avx512, avx2 or auto"


def test_avx512_on_a_cpu_without_it_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(host, "_cpu_has_avx512", lambda: False)
    with pytest.raises(CnnirError, match="no AVX-512"):
        host.detect("avx512")
    assert host.detect("auto").isa == "avx2" and not host.detect("auto").forced


def test_forcing_avx2_on_an_avx512_cpu(monkeypatch) -> None:
    monkeypatch.setattr(host, "_cpu_has_avx512", lambda: True)
    wide, narrow = host.detect("auto"), host.detect("avx2")
    assert (wide.isa, wide.lanes, wide.registers, wide.forced) == ("avx512", 16, 32, False)
    assert (narrow.isa, narrow.lanes, narrow.registers, narrow.forced) == ("avx2", 8, 16, True)
    assert wide.key != narrow.key


@pytest.mark.parametrize("lanes,registers", [(16, 32), (8, 16)])
def test_the_micro_kernel_tile_fits_the_registers(lanes: int, registers: int) -> None:
    """Accumulators + the B vectors of a step + one broadcast: no spill in the K loop."""
    profile = dataclasses.replace(host.HOST, lanes=lanes, registers=registers)
    rows, vectors = simd.tile_shape(profile)
    assert rows * vectors + vectors + 1 <= registers
    assert rows * vectors >= 12  # enough independent FMAs to cover their latency


def test_cache_sizes_are_read_from_sysfs_or_defaulted(tmp_path) -> None:
    """Linux lists each cache as index*/ with its level, type and size ("48K", "2048K")."""
    for name, level, kind, size in (("index0", 1, "Data", "48K"),
                                    ("index1", 1, "Instruction", "32K"),
                                    ("index2", 2, "Unified", "2048K")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "level").write_text(f"{level}\n")
        (folder / "type").write_text(f"{kind}\n")
        (folder / "size").write_text(f"{size}\n")
    assert host._cache_bytes(1, 0, tmp_path) == 48 * 1024
    assert host._cache_bytes(2, 0, tmp_path) == 2048 * 1024
    assert host._cache_bytes(3, 7, tmp_path) == 7  # no such cache: the default
    assert host._cache_bytes(1, 5, tmp_path / "missing") == 5


def test_this_process_kernels_follow_the_profile() -> None:
    assert simd.LANES == host.HOST.lanes
    assert (simd.MR, simd.TILE_VECTORS) == simd.tile_shape(host.HOST)


def test_cache_folder_is_salted_with_the_profile(monkeypatch) -> None:
    """The same sources on another path must not load this path's machine code."""
    folder = os.path.dirname(jit.__file__)
    here = jit._source_digest(folder)
    jit._source_digest.cache_clear()
    other = dataclasses.replace(host.HOST, isa="other", l1_bytes=host.HOST.l1_bytes + 1)
    monkeypatch.setattr(jit, "HOST", other)
    try:
        assert jit._source_digest(folder) != here
    finally:
        jit._source_digest.cache_clear()


def test_forced_avx2_generates_code_for_an_avx2_cpu() -> None:
    """Under CNNIR_ISA=avx2, Numba targets a plain AVX2 CPU and the kernels use 8 lanes."""
    code = ("from cnnir.backends.numba_cpu.kernels import jit, simd, host; "
            "from numba.core.registry import cpu_target; "
            "print(host.HOST.isa, simd.LANES, cpu_target.target_context.codegen()"
            ".magic_tuple()[1])")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "CNNIR_ISA": "avx2"},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["avx2", "8"]
    import llvmlite.binding as llvm

    assert out[2] == (host.AVX2_CPU if host._cpu_has_avx512() else llvm.get_host_cpu_name())
