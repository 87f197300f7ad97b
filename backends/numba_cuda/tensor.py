"""CUDA kernels and lowerings: the tensor family (being written)."""
