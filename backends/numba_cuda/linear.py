"""CUDA kernels and lowerings: the linear family (being written)."""
