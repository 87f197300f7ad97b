"""CUDA kernels and lowerings: the pool family (being written)."""
