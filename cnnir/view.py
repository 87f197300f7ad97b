"""``cnnir view``: a network in Netron, with cnnir's analysis on every node.

    cnnir view examples/resnet.py:resnet50          # opens the browser on the served graph
    cnnir view examples/resnet.py:resnet50 -O       # the optimized graph (fused convs)
    cnnir view model.onnx --no-browser --port 8081  # prints the URL (remote machines)

The graph is written as ONNX with each node's MACs, FLOPs, params, output shape, receptive
field and, for a node a rewrite made of several, the original layers
(``cnnir.backends.onnx_export.annotate``), then served by Netron (the ``cnnir[view]``
extra: ``pip install "cnnir[view]"``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from cnnir.errors import optional_module
from cnnir.ir import Graph

EXTRA = "cnnir[view]"
DEFAULT_PORT = 8080


def write_annotated(graph: Graph, path: str | os.PathLike) -> Any:
    """Write ``graph`` as annotated ONNX to ``path`` (atomically); returns its cost report."""
    import onnx

    from cnnir.backends.onnx_export.annotate import annotated_model
    from cnnir.passes.cost import analyze_graph

    report = analyze_graph(graph)
    model = annotated_model(graph, report)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        onnx.save_model(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return report


def netron() -> Any:
    """The ``netron`` module, or a CnnirError naming the extra that provides it."""
    return optional_module("netron", "cnnir view",
                           f"pip install '{EXTRA}' (or -o FILE.onnx --no-serve to only write "
                           "the annotated model)")


def serve(path: str | os.PathLike, port: int = DEFAULT_PORT, browse: bool = True) -> str:
    """Serve ``path`` with Netron on ``localhost:port`` (0: any free port) and return the
    URL; with ``browse`` also open it in the default browser. The server runs in a thread of
    this process until ``stop()``."""
    server = netron()
    host, port = server.serve(str(path), None, ("localhost", port), browse=browse)
    return f"http://{host}:{port}"


def stop() -> None:
    netron().stop()


def wait() -> None:
    """Block until the user interrupts (Ctrl-C), then stop serving."""
    try:
        netron().wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()


__all__ = ["DEFAULT_PORT", "EXTRA", "serve", "stop", "wait", "write_annotated"]
