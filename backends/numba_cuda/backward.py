"""CUDA kernels and lowerings: the backward family (being written)."""
