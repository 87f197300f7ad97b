"""The CPU backend's Numba kernels, one module per kind of work (``activation``, ``conv``,
``conv_grad``, ``gemm``, ``norm``, ``stencil``, ``pool``, ``winograd``), on the micro-kernel
intrinsics of ``simd``.

Every kernel is compiled through ``jit``, whose disk cache is keyed on the sources of this
package: kernels inline constants and helpers from their siblings, so any edit here
invalidates them all, and an edit to a lowering module outside it invalidates none.
"""
