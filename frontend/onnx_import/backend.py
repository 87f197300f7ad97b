"""``onnx.backend.base.Backend`` over cnnir: import the model, run it on a cnnir backend.

Drives ONNX's own node tests (``onnx.backend.test.BackendTest``, docs/semantics.md §7.5)::

    bt = onnx.backend.test.BackendTest(CnnirBackend, __name__)

``CnnirBackend.runtime`` names the cnnir backend that executes the imported graph
("reference" by default). cnnir layers take their sizes, scales, ratios and axes as
attributes, so graph inputs feeding such slots (Resize scales/sizes, Reshape shape,
Dropout ratio, ...) are frozen to the values of the call before importing; the graph is
imported once per distinct set of frozen values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.backend.base import Backend, BackendRep

from .importer import import_model

# (op type, input index) slots that cnnir reads as attributes.
ATTRIBUTE_SLOTS = frozenset({
    ("Resize", 1), ("Resize", 2), ("Resize", 3), ("Upsample", 1), ("Reshape", 1),
    ("Dropout", 1), ("Dropout", 2), ("Clip", 1), ("Clip", 2), ("Split", 1), ("Pad", 1),
    ("Pad", 2), ("Pad", 3), ("Squeeze", 1), ("Unsqueeze", 1), ("ReduceMean", 1),
    ("ReduceSum", 1), ("ReduceMax", 1),
})


def attribute_inputs(model: onnx.ModelProto) -> set[str]:
    """Graph inputs read only through attribute slots."""
    slots: dict[str, set[bool]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            slots.setdefault(name, set()).add((node.op_type, i) in ATTRIBUTE_SLOTS)
    return {v.name for v in model.graph.input if slots.get(v.name) == {True}}


def freeze_inputs(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` where the graph inputs in ``values`` are initializers."""
    frozen = onnx.ModelProto()
    frozen.CopyFrom(model)
    kept = [v for v in frozen.graph.input if v.name not in values]
    del frozen.graph.input[:]
    frozen.graph.input.extend(kept)
    frozen.graph.initializer.extend(numpy_helper.from_array(np.asarray(a), name)
                                    for name, a in values.items())
    return frozen


class CnnirRep(BackendRep):
    """A prepared model: imported (per frozen input values) and compiled on first run."""

    def __init__(self, model: onnx.ModelProto, runtime: str) -> None:
        self.model = model
        self.runtime = runtime
        self.frozen = attribute_inputs(model)
        self.input_names = [v.name for v in model.graph.input
                            if v.name not in {t.name for t in model.graph.initializer}]
        self.output_dtypes = [helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
                              for v in model.graph.output]
        self._programs: dict[bytes, tuple[Any, list[str]]] = {}
        if not self.frozen:
            self._program({})

    def _program(self, feeds: dict[str, np.ndarray]) -> tuple[Any, list[str]]:
        import cnnir

        key = b"".join(name.encode() + feeds[name].tobytes() for name in sorted(feeds))
        if key not in self._programs:
            graph = import_model(freeze_inputs(self.model, feeds) if feeds else self.model)
            run = cnnir.compile(graph, backend=self.runtime)
            self._programs[key] = (run, [v.name for v in graph.inputs])
        return self._programs[key]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        arrays = dict(zip(self.input_names, (np.asarray(x) for x in _as_list(inputs))))
        run, names = self._program({k: arrays[k] for k in self.frozen})
        out = run(*(arrays[name] for name in names))
        outs = out if isinstance(out, tuple) else (out,)
        return tuple(np.asarray(o).astype(dtype, copy=False)
                     for o, dtype in zip(outs, self.output_dtypes))


def _as_list(inputs: Any) -> Sequence[Any]:
    if isinstance(inputs, dict):
        return list(inputs.values())
    return inputs if isinstance(inputs, (list, tuple)) else [inputs]


class CnnirBackend(Backend):
    """cnnir as an ONNX backend (CPU only)."""

    runtime = "numba"

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> CnnirRep:
        super().prepare(model, device, **kwargs)
        return CnnirRep(model, cls.runtime)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU",
                  **kwargs: Any) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)


__all__ = ["ATTRIBUTE_SLOTS", "CnnirBackend", "CnnirRep", "attribute_inputs", "freeze_inputs"]
