"""What every lowering of the CUDA backend shares: numba.cuda itself, device memory, the
builder, launch configuration, and the compiled plan.

A plan is the CPU backend's (``cnnir.backends.lowering``): every value gets a view into one
device arena by the shared liveness plan, parameters and derived forms are uploaded once into
the ``ProgramState``, each node becomes a step launching kernels on fixed device arrays. A
call copies the inputs in (host to device, or device to device), runs the steps and hands
the outputs back; nothing is allocated on the device per call but the returned outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from cnnir.backend import KernelTable
from cnnir.backends.lowering import Builder, DeviceMemory, ProgramState, Step, lower_nodes
from cnnir.ir import Graph, Node
from cnnir.passes.shape_inference import bind_types


def numba_cuda() -> Any:
    """``numba.cuda``, imported on first use. numba-cuda 0.30 calls ``np.row_stack``, which
    numpy 2.5 removed, while compiling any kernel (measured on the GPU machine: "module
    'numpy' has no attribute 'row_stack'"); the alias restores the function it expects."""
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
    from numba import cuda

    return cuda


cuda = numba_cuda()

KERNELS = KernelTable("cuda")
Lowering = Callable[[Builder, Node], Step | None]
THREADS = 256  # threads per block of the one-dimensional kernels


def lower(op) -> Callable[[Lowering], Lowering]:
    """Register the lowering of ``op`` (keyed by the OpDef object)."""
    return KERNELS.register(op)


def blocks(count: int, threads: int = THREADS) -> int:
    """Blocks of ``threads`` covering ``count`` work items (at least one)."""
    return max(1, -(-count // threads))


def launch(kernel: Any, count: int, *args: Any) -> Step:
    """A step launching ``kernel`` over ``count`` work items, one per thread (its body reads
    ``cuda.grid(1)`` and returns past ``count``). The launch is configured at each call:
    the simulator's ``kernel[grid, block]`` reconfigures the kernel object itself, so one
    configured at lowering time would run with the last node's grid (and a pre-configured
    dispatcher is no faster on a GPU)."""
    grid = blocks(count)
    return lambda: kernel[grid, THREADS](*args)


def _view(buffer: Any, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> Any:
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return buffer[offset:offset + size].view(dtype).reshape(shape)


def _upload(array: np.ndarray) -> Any:
    """A device copy of ``array``; a 0-d array stays 0-d (``np.ascontiguousarray`` would
    make it 1-d)."""
    return cuda.to_device(np.require(array, requirements="C"))


def _overwrite(target: Any, values: np.ndarray) -> None:
    target.copy_to_device(np.require(values, dtype=target.dtype, requirements="C"))


CUDA_MEMORY = DeviceMemory(allocate=lambda nbytes: cuda.device_array(max(1, nbytes), np.uint8),
                           view=_view, upload=_upload, overwrite=_overwrite)


def unary(b: Builder, node: Node) -> tuple[Any, Any]:
    """The input and output device arrays of a one-input op."""
    return b.array(node.inputs[0]), b.array(node.output)


def flat(array: Any) -> Any:
    """A contiguous device array as one dimension."""
    return array.reshape(array.size) if array.ndim != 1 else array


class CudaBuilder(Builder):
    """The builder on device arrays, tuning by the wall clock around a synchronized step."""

    memory = CUDA_MEMORY

    def elapsed(self, step: Step) -> float:
        cuda.synchronize()
        start = time.perf_counter()
        step()
        cuda.synchronize()
        return time.perf_counter() - start


def is_device_array(x: Any) -> bool:
    """A numba device array, or anything exporting ``__cuda_array_interface__``."""
    return not isinstance(x, np.ndarray) and (hasattr(x, "__cuda_array_interface__")
                                              or hasattr(x, "copy_to_host"))


def as_device_array(x: Any) -> Any:
    """A numba device array viewing ``x`` (no copy)."""
    return x if hasattr(x, "copy_to_host") else cuda.as_cuda_array(x)


class Program:
    """One compiled plan for fixed input shapes, reading its weights from ``state``."""

    def __init__(self, graph: Graph, env: dict[str, int], state: ProgramState, seed: int = 0,
                 tune: bool | str = False,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.builder = b = CudaBuilder(graph, bind_types(graph, env), state, seed, tune)
        self.schedule = lower_nodes(b, KERNELS, progress)
        self.steps = [step for _, step in self.schedule]
        self.inputs = [b.array(v) for v in graph.inputs]
        self.outputs = [b.array(v) for v in graph.outputs]

    @property
    def buffer_bytes(self) -> int:
        return self.builder.plan.total_bytes

    def run(self, arrays: list[Any], on_device: bool) -> list[Any]:
        """Copy the inputs in, run every step, and return the outputs: host arrays, or new
        device arrays when the inputs were on the device."""
        for dst, src in zip(self.inputs, arrays):
            dst.copy_to_device(src)
        for step in self.steps:
            step()
        if not on_device:
            return [out.copy_to_host() for out in self.outputs]
        copies = []
        for out in self.outputs:
            copy = cuda.device_array(out.shape, out.dtype)
            copy.copy_to_device(out)
            copies.append(copy)
        return copies


__all__ = ["CUDA_MEMORY", "KERNELS", "THREADS", "CudaBuilder", "Program", "as_device_array",
           "blocks", "cuda", "flat", "is_device_array", "launch", "lower", "numba_cuda", "unary"]
