"""The machine the CPU kernels are generated for, described once.

Every size the kernels are cut to comes from ``HOST``: the float32 lanes of a vector
register and how many registers there are (which fix the micro-kernel's tile, ``simd``), the
L1 and L2 data cache sizes (which fix the blocking, ``gemm``), the L3's (beyond which a
GEMM's operands stream from memory) and the worker threads. It is
detected from LLVM's view of this CPU; ``CNNIR_ISA`` overrides the instruction set:

- ``avx512``: 16-lane vectors, 32 registers (AVX-512F with VL);
- ``avx2``: 8-lane vectors, 16 registers. On an AVX-512 machine this also tells Numba to
  generate code for a plain AVX2 CPU (``haswell``), so the path an AVX2-only machine runs
  can be tested and timed here;
- ``auto`` (the default): the widest the CPU has.

The profile's ``key`` salts the kernels' disk cache (``jit``), so code generated for one path
is never loaded on the other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cnnir.errors import CnnirError

ISA_VARIABLE = "CNNIR_ISA"
ISAS = ("avx512", "avx2")
AVX2_CPU = "haswell"  # the LLVM CPU an AVX2-only machine is generated for


@dataclass(frozen=True)
class HostProfile:
    isa: str  # "avx512" or "avx2"
    lanes: int  # float32 lanes per vector register
    registers: int  # vector registers
    l1_bytes: int  # L1 data cache per core
    l2_bytes: int  # L2 cache per core
    l3_bytes: int  # the last-level cache (shared by the cores of a complex)
    forced: bool  # CNNIR_ISA chose a narrower path than the CPU has

    @property
    def key(self) -> str:
        return f"{self.isa}-l1{self.l1_bytes}-l2{self.l2_bytes}-l3{self.l3_bytes}"


SYSFS_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")


def _cache_bytes(level: int, default: int, root: Path = SYSFS_CACHES) -> int:
    """The size of this CPU's level-``level`` data (or unified) cache, from Linux's sysfs."""
    try:
        for index in root.glob("index*"):
            kind = (index / "type").read_text().strip()
            if int((index / "level").read_text()) == level and kind in ("Data", "Unified"):
                text = (index / "size").read_text().strip().upper()
                scale = {"K": 1024, "M": 1024 * 1024}.get(text[-1:], 1)
                return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return default


def _cpu_has_avx512() -> bool:
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    return bool(features.get("avx512f") and features.get("avx512vl"))


def detect(requested: str | None = None) -> HostProfile:
    """This machine's profile, on the ISA ``requested`` (else ``$CNNIR_ISA``, else auto)."""
    requested = (requested or os.environ.get(ISA_VARIABLE) or "auto").strip().lower()
    if requested not in (*ISAS, "auto"):
        raise CnnirError(f"{ISA_VARIABLE}={requested!r} is not a known instruction set",
                         hint=f"use one of {', '.join(ISAS)} or auto")
    wide = _cpu_has_avx512()
    if requested == "avx512" and not wide:
        raise CnnirError(f"{ISA_VARIABLE}=avx512, but this CPU has no AVX-512F/VL",
                         hint="use avx2 or auto")
    isa = "avx512" if wide and requested != "avx2" else "avx2"
    lanes, registers = (16, 32) if isa == "avx512" else (8, 16)
    return HostProfile(isa, lanes, registers, _cache_bytes(1, 32 * 1024),
                       _cache_bytes(2, 1024 * 1024), _cache_bytes(3, 32 * 1024 * 1024),
                       forced=wide and isa == "avx2")


HOST = detect()
