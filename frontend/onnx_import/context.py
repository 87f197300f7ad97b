"""What an ONNX converter works with: the parsed node, the import context, the registry.

A converter turns one ONNX node into cnnir nodes (``OpDef`` objects, typed attributes)::

    @converter("LeakyRelu", since=6)
    def leaky_relu(ctx: ImportContext, n: OnnxNode) -> None:
        y = ctx.emit(n, ops.leaky_relu, [ctx.tensor(n.input(0))],
                     LeakyReluAttrs(n.attr("alpha", 0.01)))
        ctx.bind(n.output(0), y)

Converters are chosen by the **largest registered version ≤ the model's opset** (TVM's rule),
never by exact version. Constant inputs (initializers, ``Constant`` nodes, folded shape chains)
are numpy arrays in ``ctx.consts``; ``ctx.tensor`` turns one into a graph constant when an op
needs it as a tensor (a parameter, a buffer or a literal, by the slot it feeds).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import onnx
from onnx import helper, numpy_helper

from cnnir.errors import CnnirError, ModelFormatError
from cnnir.ir import ConstantData, Graph, TensorType, Value
from cnnir.ops import OpDef

Converter = Callable[["ImportContext", "OnnxNode"], None]
CONVERTERS: dict[str, list[tuple[int, Converter]]] = {}

# Initializer doc strings written by cnnir's exporter: what the constant was in cnnir.
CONSTANT_KINDS = ("parameter", "buffer", "literal")


def converter(op_type: str, since: int = 1) -> Callable[[Converter], Converter]:
    """Register ``fn`` for ``op_type`` from opset ``since`` on."""

    def register(fn: Converter) -> Converter:
        entries = CONVERTERS.setdefault(op_type, [])
        if any(v == since for v, _ in entries):
            raise ValueError(f"converter {op_type}-{since} registered twice")
        bisect.insort(entries, (since, fn), key=lambda e: e[0])
        return fn

    return register


def find_converter(op_type: str, opset: int) -> Converter | None:
    """The converter with the largest ``since`` ≤ ``opset`` (None when there is none)."""
    entries = CONVERTERS.get(op_type, [])
    index = bisect.bisect_right([v for v, _ in entries], opset)
    return entries[index - 1][1] if index else None


def shortest_float32(value: float) -> float:
    """A float32 attribute as the shortest decimal that rounds to it (``1e-05``, not
    ``9.99999974e-06``), so torch defaults survive a round trip exactly."""
    return float(str(np.float32(value)))


def _attr_value(a: onnx.AttributeProto) -> Any:
    if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return a  # subgraphs stay protos; no converter accepts them
    if a.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(a.t)
    value = helper.get_attribute_value(a)
    if a.type == onnx.AttributeProto.FLOAT:
        return shortest_float32(value)
    if a.type == onnx.AttributeProto.FLOATS:
        return [shortest_float32(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8", errors="replace") for v in value]
    return value


@dataclass
class OnnxNode:
    """One ONNX node with parsed attributes; ``name`` is the node name or its first output."""

    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    domain: str = ""

    @classmethod
    def from_proto(cls, proto: onnx.NodeProto, index: int) -> OnnxNode:
        name = proto.name or next((o for o in proto.output if o), f"{proto.op_type}_{index}")
        attrs = {a.name: _attr_value(a) for a in proto.attribute}
        return cls(proto.op_type, name, list(proto.input), list(proto.output), attrs,
                   proto.domain)

    def input(self, i: int) -> str:
        return self.inputs[i] if i < len(self.inputs) else ""

    def output(self, i: int) -> str:
        return self.outputs[i] if i < len(self.outputs) else ""

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def describe(self) -> str:
        return f"ONNX {self.op_type} node '{self.name}'"


def symbol_name(text: str, fallback: str) -> str:
    """An ONNX ``dim_param`` as a cnnir symbol: an identifier (``batch size`` -> ``batch_size``)."""
    name = re.sub(r"\W", "_", text.strip()) or fallback
    return f"d_{name}" if not name.isidentifier() or name == "floor" else name


def onnx_type(type_proto: onnx.TypeProto, what: str, symbol_base: str) -> TensorType:
    """A ``TensorType`` from a value's type: dim_value -> int, dim_param -> symbol; a dim
    with neither becomes ``<symbol_base>_<axis>``."""
    if not type_proto.HasField("tensor_type"):
        raise ModelFormatError(f"{what} is not a tensor (sequences, maps and optionals are "
                               f"not supported)")
    tensor = type_proto.tensor_type
    if not tensor.HasField("shape"):
        raise ModelFormatError(f"{what} has no shape",
                               hint="cnnir needs the rank of every graph input; dims may be "
                                    "symbolic (dim_param)")
    dims = []
    for axis, d in enumerate(tensor.shape.dim):
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(symbol_name(d.dim_param, f"{symbol_base}_{axis}"))
    return TensorType(tuple(dims), np_dtype(tensor.elem_type, what))


def np_dtype(elem_type: int, what: str) -> str:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError) as e:
        name = onnx.TensorProto.DataType.Name(elem_type) \
            if elem_type in onnx.TensorProto.DataType.values() else elem_type
        raise ModelFormatError(f"{what} has the unsupported element type {name}") from e


class ImportContext:
    """The cnnir graph being built and what is known about every ONNX value."""

    def __init__(self, graph: Graph, opset: int, consumers: dict[str, list[OnnxNode]],
                 graph_outputs: set[str]) -> None:
        self.graph = graph
        self.opset = opset
        self.values: dict[str, Value] = {}
        self.consts: dict[str, np.ndarray] = {}
        self.kinds: dict[str, str] = {}
        self.origins: dict[str, str] = {}
        self.consumers = consumers
        self.graph_outputs = graph_outputs
        self.skipped: set[int] = set()
        self._materialized: dict[tuple[str, str], Value] = {}

    # -- reading inputs --------------------------------------------------------------

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)

    def type(self, name: str) -> TensorType:
        if name in self.values:
            return self.values[name].type
        array = self.consts[name]
        return TensorType(array.shape, array.dtype.name)

    def tensor(self, name: str, kind: str = "literal") -> Value | None:
        """The cnnir value of ``name``; a constant becomes a graph constant of ``kind``
        (unless cnnir's exporter recorded its kind), once per name and kind."""
        if not name:
            return None
        if name in self.values:
            return self.values[name]
        if name not in self.consts:
            raise ModelFormatError(f"ONNX value '{name}' is used before it is defined")
        kind = self.kinds.get(name, kind)
        key = (name, kind)
        if key not in self._materialized:
            self._materialized[key] = self._add_constant(name, kind)
        return self._materialized[key]

    def param(self, name: str) -> Value | None:
        return self.tensor(name, "parameter")

    def buffer(self, name: str) -> Value | None:
        return self.tensor(name, "buffer")

    def constant_value(self, name: str, array: np.ndarray, kind: str) -> Value:
        """A new graph constant holding ``array`` (named after ``name``'s origin)."""
        base = self.origins.get(name, name)
        data = ConstantData(TensorType(array.shape, array.dtype.name), kind, array=array)
        return self.graph.add_constant(self.graph.unique_name(base), data)

    def _add_constant(self, name: str, kind: str) -> Value:
        array = self.consts[name]
        if array.dtype == object:
            raise ModelFormatError(
                f"ONNX value '{name}' depends on a symbolic dim ({list(array)}) but is used as "
                f"data", hint="give the model static input shapes")
        return self.constant_value(name, array, kind)

    # -- writing outputs -------------------------------------------------------------

    def emit(self, n: OnnxNode, op: OpDef, inputs: Sequence[Value | None], attrs: Any = None,
             *, suffix: str = "") -> Value:
        """Add one cnnir node for ``n`` (named after it) and return its first output."""
        return self.emit_all(n, op, inputs, attrs, suffix=suffix)[0]

    def emit_all(self, n: OnnxNode, op: OpDef, inputs: Sequence[Value | None],
                 attrs: Any = None, *, suffix: str = "") -> list[Value]:
        name = n.name + suffix
        scope = name.rpartition(".")[0]
        inputs = list(inputs)
        if not op.inputs[-1].endswith("*"):  # absent optional operands are explicit Nones
            inputs += [None] * (len(op.inputs) - len(inputs))
        try:
            node = self.graph.add_node(op, inputs, attrs, name=name, scope=scope)
        except CnnirError as e:
            raise ModelFormatError(f"{n.describe()} cannot be imported: {e.message}",
                                   hint=e.hint) from e
        return node.outputs

    def bind(self, onnx_name: str, value: Value) -> None:
        if onnx_name:
            self.values[onnx_name] = value

    def bind_const(self, onnx_name: str, array: np.ndarray, origin: str | None = None) -> None:
        if onnx_name:
            self.consts[onnx_name] = array
            if origin is not None:
                self.origins[onnx_name] = self.origins.get(origin, origin)
                if origin in self.kinds:
                    self.kinds[onnx_name] = self.kinds[origin]

    # -- looking ahead (fusions that undo cnnir's own decompositions) ---------------

    def sole_consumer(self, name: str) -> OnnxNode | None:
        """The one node reading ``name``, when it is not also a graph output."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.graph_outputs:
            return None
        return users[0]

    def skip(self, n: OnnxNode) -> None:
        self.skipped.add(id(n))

    def fail(self, n: OnnxNode, message: str, hint: str | None = None) -> NoReturn:
        raise ModelFormatError(f"{n.describe()} {message}", hint=hint)
