"""CUDA kernels and lowerings: the loss family (being written)."""
