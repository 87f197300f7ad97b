"""The builder every ``OpDef.onnx`` mapping receives: plain data in, ONNX node specs out.

An op's ONNX mapping lives in its family file (``cnnir/ops/<family>.py``) as
``mapping(b, node) -> [one ONNX name per node output]``. It imports nothing from onnx; it
only describes nodes through ``b``:

    b.input(i)                          ONNX name of node input i ("" when absent)
    b.op(op_type, inputs, n_out=1, **attrs)
                                        one ONNX node; returns its output name
                                        (a list of n_out names when n_out > 1)
    b.const(array, hint)                a new initializer holding a numpy array
    b.scalar(value, dtype)              a 0-d constant
    b.apply(opdef, attrs, inputs, in_types, out_types)
                                        another op's mapping on the given names
    b.opset                             the target opset
    b.fail(message, hint=None)          LoweringError naming the node

Names: the node that produces a cnnir value is named like the cnnir node (the module path,
``layer1.0.conv1``) and its output keeps the value's name; helper nodes of a decomposition
are ``<node>/<OpType>`` and their values ``<node>/<OpType>:<k>``. Only this module and the
exporter turn the specs into protobuf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, NoReturn

import numpy as np

from cnnir.errors import LoweringError
from cnnir.ir import Graph, Node, TensorType, Value

# Small generated constants (shapes, axes, scalars) are shared between nodes.
SHARED_CONST_MAX_ELEMENTS = 64


@dataclass
class NodeSpec:
    """One ONNX node as plain data; ``origin`` names the cnnir node it comes from, ``domain``
    is "" (ONNX's) or "cnnir" for an op ONNX has no name for (``OnnxBuilder(lenient=True)``)."""

    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    name: str
    origin: str = ""
    domain: str = ""


@dataclass
class ConstSpec:
    """One initializer: its array and what it was in cnnir (parameter, buffer, literal)."""

    array: np.ndarray
    kind: str


@dataclass
class _TypeOnly:
    type: TensorType | None


@dataclass
class NodeView:
    """What a mapping reads of a node, for ``b.apply`` on values that are not cnnir values."""

    op: Any
    attrs: Any
    inputs: list[_TypeOnly | None]
    outputs: list[_TypeOnly]
    name: str
    origin: Node = field(repr=False)

    @property
    def output(self) -> _TypeOnly:
        return self.outputs[0]

    def describe(self) -> str:
        return self.origin.describe()


class OnnxBuilder:
    """Collects ONNX node and initializer specs while cnnir nodes are lowered in order."""

    def __init__(self, graph: Graph, opset: int, lenient: bool = False) -> None:
        self.graph = graph
        self.opset = opset
        self.lenient = lenient  # an op with no ONNX form becomes a "cnnir"-domain node
        self.nodes: list[NodeSpec] = []
        self.initializers: dict[str, ConstSpec] = {}
        self.names: dict[int, str] = {}
        self._used: set[str] = set()
        self._node_names: set[str] = set()
        self._shared: dict[tuple, str] = {}
        self._node: Node | NodeView | None = None
        self._inputs: list[str] = []
        self._temps: set[str] = set()
        self._first_spec = 0
        self._reserve_graph_names()

    def _reserve_graph_names(self) -> None:
        values = [*self.graph.inputs, *self.graph.constants.values()]
        values += [v for n in self.graph.nodes for v in n.outputs]
        for v in values:
            self.names[id(v)] = v.name
            self._used.add(v.name)

    @staticmethod
    def _unused(base: str, taken: set[str], sep: str) -> str:
        """``base``, or ``base<sep>1``, ``base<sep>2``... whichever is free; claimed."""
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}{sep}{k}"
        taken.add(name)
        return name

    def _fresh(self, base: str) -> str:
        return self._unused(base, self._used, ":")

    def _fresh_node_name(self, base: str) -> str:
        return self._unused(base, self._node_names, "_")

    # -- what mappings call ------------------------------------------------------------

    def input(self, i: int) -> str:
        return self._inputs[i] if i < len(self._inputs) else ""

    def op(self, op_type: str, inputs: Sequence[str], *, n_out: int = 1,
           **attrs: Any) -> str | list[str]:
        while inputs and not inputs[-1]:
            inputs = inputs[:-1]
        outputs = [self._fresh(f"{self._node.name}/{op_type}") for _ in range(n_out)]
        self._temps.update(outputs)
        self.nodes.append(NodeSpec(op_type, list(inputs), outputs, attrs, ""))
        return outputs[0] if n_out == 1 else outputs

    def const(self, array: np.ndarray, hint: str = "const") -> str:
        array = np.asarray(array)
        key = None
        if array.size <= SHARED_CONST_MAX_ELEMENTS:
            key = (array.dtype.str, array.shape, array.tobytes())
            if key in self._shared:
                return self._shared[key]
        name = self._fresh(f"{self._node.name}/{hint}")
        self.initializers[name] = ConstSpec(array, "literal")
        if key is not None:
            self._shared[key] = name
        return name

    def scalar(self, value: float | int | bool, dtype: str) -> str:
        return self.const(np.asarray(value, dtype=dtype), "scalar")

    def apply(self, op: Any, attrs: Any, inputs: Sequence[str],
              in_types: Sequence[TensorType | None], out_types: Sequence[TensorType]) -> list[str]:
        origin = self._node.origin if isinstance(self._node, NodeView) else self._node
        view = NodeView(op, attrs, [_TypeOnly(t) if t is not None else None for t in in_types],
                        [_TypeOnly(t) for t in out_types], self._node.name, origin)
        saved = self._node, self._inputs
        self._node, self._inputs = view, list(inputs)
        try:
            return self._mapping(op)(self, view)
        finally:
            self._node, self._inputs = saved

    def fail(self, message: str, hint: str | None = None) -> NoReturn:
        raise LoweringError(f"{self._node.describe()} {message}", hint=hint)

    # -- driving the mappings ----------------------------------------------------------

    def _mapping(self, op: Any) -> Any:
        if op.onnx is None and self.lenient:
            return _custom_node
        if op.onnx is None:
            raise LoweringError(f"{self._node.describe()} cannot be exported to ONNX: the op "
                                f"{op.name} has no ONNX mapping",
                                hint="run an inference graph (training-only or fused backend "
                                     "ops have no ONNX form)")
        return op.onnx

    def name_of(self, value: Value) -> str:
        if value.is_constant and value.name not in self.initializers:
            self.initializers[value.name] = ConstSpec(value.const.array, value.const.kind)
        return self.names[id(value)]

    def lower(self, node: Node) -> None:
        """Run ``node.op.onnx`` and give its final ONNX values the cnnir value names."""
        self._node, self._temps, self._first_spec = node, set(), len(self.nodes)
        self._inputs = [self.name_of(v) if v is not None else "" for v in node.inputs]
        try:
            results = self._mapping(node.op)(self, node)
        except LoweringError:
            if not self.lenient:
                raise
            del self.nodes[self._first_spec:]  # what the mapping wrote before it gave up
            results = _custom_node(self, node)
        if len(results) != len(node.outputs):
            raise LoweringError(f"{node.describe()}: its ONNX mapping gave {len(results)} "
                                f"outputs for {len(node.outputs)}")
        for result, value in zip(results, node.outputs):
            self._bind(result, value.name)
        for spec in self.nodes[self._first_spec:]:
            if not spec.name:
                spec.name = self._fresh_node_name(f"{node.name}/{spec.op_type}")
            spec.origin = node.name
        self._node = None

    def identity(self, src: str, dst: str, node_name: str) -> None:
        """An ``Identity`` node copying ``src`` to the (already reserved) name ``dst``."""
        self.nodes.append(NodeSpec("Identity", [src], [dst], {},
                                   self._fresh_node_name(node_name)))

    def fresh(self, base: str) -> str:
        """A value name not used yet (``base``, ``base:1``, ...)."""
        return self._fresh(base)

    def _bind(self, result: str, final: str) -> None:
        """Rename the temp ``result`` to ``final`` (or copy it there with an Identity)."""
        if result not in self._temps:
            self.identity(result, final, self._node.name)
            return
        self._temps.discard(result)
        for spec in self.nodes[self._first_spec:]:
            spec.inputs = [final if n == result else n for n in spec.inputs]
            if result in spec.outputs:
                spec.outputs = [final if n == result else n for n in spec.outputs]
                if not spec.name:
                    spec.name = self._fresh_node_name(self._node.name)


def _custom_node(b: OnnxBuilder, node: Node) -> list[str]:
    """A node of the "cnnir" domain named like the op, its attributes as text: what a viewer
    shows of an op that ONNX has no standard name for (``lenient`` builders only)."""
    attrs = ({f.name: _text(getattr(node.attrs, f.name)) for f in fields(node.attrs)}
             if is_dataclass(node.attrs) else {})
    inputs = [b.input(i) for i in range(len(node.inputs))]
    outputs = b.op(node.op.name, inputs, n_out=len(node.outputs), **attrs)
    b.nodes[-1].domain = "cnnir"
    return outputs if isinstance(outputs, list) else [outputs]


def _text(value: Any) -> str:
    """An attribute as a viewer shows it: an op by its name, anything else as ``str``."""
    return value.name if hasattr(value, "infer") and hasattr(value, "name") else str(value)
