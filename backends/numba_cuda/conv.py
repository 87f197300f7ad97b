"""CUDA kernels and lowerings: the conv family (being written)."""
