"""ONNX import: ``load(path) -> Graph`` for the op set cnnir exports, from opsets 7-28.

    g = cnnir.load_onnx("model.onnx")      # weights included; no code from the file runs
    cnnir.analyze(g); cnnir.compile(g)

Loading is safe for untrusted files (external-data paths, sizes, node count, depth and
cycles are checked; see ``safety`` and ``order``). Unsupported ops are listed in one
ModelFormatError; unsupported attribute values are refused with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cnnir.ir import Graph

from .importer import import_model, supported_ops
from .order import MAX_DEPTH, MAX_NODES
from .safety import parse_model, read_model_file


def load(path: str | os.PathLike, *, input_shapes: Sequence[Sequence[int | str]] | None = None,
         max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> Graph:
    """Import the ONNX model at ``path`` as a verified cnnir graph.

    ``input_shapes`` gives concrete sizes to symbolic input dims (one shape per input).

    >>> g = load("resnet18.onnx")
    >>> g = load("resnet18.onnx", input_shapes=[(1, 3, 224, 224)])
    """
    return import_model(read_model_file(path), input_shapes=input_shapes, max_nodes=max_nodes,
                        max_depth=max_depth)


def loads(data: bytes, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> Graph:
    """Import a serialized ONNX model (no external data)."""
    return import_model(parse_model(data, "the ONNX bytes"), max_nodes=max_nodes,
                        max_depth=max_depth)


__all__ = ["MAX_DEPTH", "MAX_NODES", "import_model", "load", "loads", "supported_ops"]
