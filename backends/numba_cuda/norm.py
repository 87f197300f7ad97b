"""CUDA kernels and lowerings: the norm family (being written)."""
