"""The dataflow graph: SSA values, nodes in topological order, and named constants.

Every value is defined once: by a graph input, by a constant (a parameter, a buffer or a
literal), or by exactly one node output. Values know their users, so rewrites can replace all
uses and refuse to delete a node that is still needed. Node outputs are typed by the op's
``infer`` rule at construction, so a graph is shape-checked as it is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnir.errors import CnnirError, VerificationError
from cnnir.ir.source import SourceLoc
from cnnir.ir.types import TensorType

if TYPE_CHECKING:
    from cnnir.ops.registry import OpDef


class ConstantData:
    """A constant's array, made on first use so that analysis never allocates weights.

    ``kind`` is ``"parameter"`` (trainable unless ``requires_grad`` is False), ``"buffer"``
    (BatchNorm statistics and counters) or ``"literal"`` (scalars and tables in the graph).
    ``fresh``: the array is computed for this graph alone (a folded weight), never a model's
    own array or a view of one, so a backend that snapshots parameters need not copy it.
    """

    __slots__ = ("type", "kind", "requires_grad", "fresh", "_array", "_make")

    def __init__(
        self,
        type: TensorType,
        kind: str,
        *,
        array: np.ndarray | None = None,
        make: Callable[[], np.ndarray] | None = None,
        requires_grad: bool = True,
        fresh: bool = False,
    ) -> None:
        self.type = type
        self.kind = kind
        self.requires_grad = requires_grad and kind == "parameter"
        self.fresh = fresh
        self._array = array
        self._make = make

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            if self._make is None:
                raise CnnirError(f"constant of type {self.type} has no data")
            self._array = self._make()
        return self._array


class Value:
    """One SSA value: a graph input, a constant, or a node output."""

    __slots__ = ("name", "type", "producer", "const", "users")

    def __init__(
        self,
        name: str,
        type: TensorType,
        producer: Node | None = None,
        const: ConstantData | None = None,
    ) -> None:
        self.name = name
        self.type = type
        self.producer = producer
        self.const = const
        self.users: list[Node] = []

    @property
    def is_constant(self) -> bool:
        return self.const is not None

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    """One op application. ``name`` is unique; ``scope`` is the module path it came from."""

    __slots__ = ("op", "attrs", "inputs", "outputs", "name", "scope", "loc")

    def __init__(
        self,
        op: OpDef,
        attrs: Any,
        inputs: list[Value | None],
        name: str,
        scope: str = "",
        loc: SourceLoc | None = None,
    ) -> None:
        self.op = op
        self.attrs = attrs
        self.inputs = inputs
        self.outputs: list[Value] = []
        self.name = name
        self.scope = scope
        self.loc = loc

    @property
    def output(self) -> Value:
        return self.outputs[0]

    def describe(self) -> str:
        """``conv2d 'layer1.0.conv1' (examples/resnet.py:41)``, the prefix of every error."""
        where = f" ({self.loc})" if self.loc else ""
        return f"{self.op.name} '{self.name}'{where}"

    def __repr__(self) -> str:
        return f"<Node {self.describe()}>"


class Graph:
    """Inputs, outputs, nodes in topological order, and named constants.

    Mutate only through the methods below (``add_node``, ``replace_all_uses``,
    ``remove_node``, ...), which keep the user lists and the name table consistent.
    """

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.constants: dict[str, Value] = {}
        self.module_types: dict[str, str] = {}  # module path -> class name, from tracing
        # A gradient graph (cnnir.grad_graph) has outputs[0] the loss, then this many
        # gradients (then the updated running statistics); the nodes the loss depends on are
        # the forward pass, the rest the backward. None for any other graph.
        self.gradients: int | None = None
        # node name -> the names of the original nodes a rewrite (Splice) made it from
        self.fused_from: dict[str, list[str]] = {}
        self._names: set[str] = set()
        self._counters: dict[str, int] = {}

    # -- names -------------------------------------------------------------------------

    def unique_name(self, base: str) -> str:
        """``base`` if free, else ``base_1``, ``base_2``, ... (amortized O(1))."""
        if base not in self._names:
            return base
        n = self._counters.get(base, 0)
        while True:
            n += 1
            candidate = f"{base}_{n}"
            if candidate not in self._names:
                self._counters[base] = n
                return candidate

    def _claim(self, name: str) -> str:
        if name in self._names:
            raise VerificationError(f"duplicate name '{name}' in graph '{self.name}'")
        self._names.add(name)
        return name

    # -- construction ------------------------------------------------------------------

    def add_input(self, name: str, type: TensorType) -> Value:
        value = Value(self._claim(name), type)
        self.inputs.append(value)
        return value

    def add_constant(self, name: str, data: ConstantData) -> Value:
        value = Value(self._claim(name), data.type, const=data)
        self.constants[name] = value
        return value

    def add_literal(self, array: np.ndarray, base: str = "const") -> Value:
        array = np.asarray(array)
        data = ConstantData(TensorType(array.shape, array.dtype.name), "literal", array=array)
        return self.add_constant(self.unique_name(base), data)

    def make_node(
        self,
        op: OpDef,
        inputs: Sequence[Value | None],
        attrs: Any = None,
        *,
        name: str | None = None,
        scope: str = "",
        loc: SourceLoc | None = None,
    ) -> Node:
        """A typed node, not yet placed: its outputs come from ``op.infer``.

        A shape error is re-raised naming the node and the user's location.
        """
        attrs = op.attrs() if attrs is None else attrs
        inputs = list(inputs)
        if not op.inputs[-1:] or not op.inputs[-1].endswith("*"):
            inputs += [None] * (len(op.inputs) - len(inputs))  # absent optional inputs
        node = Node(op, attrs, inputs, self.unique_name(name or op.name), scope, loc)
        try:
            out_types = op.infer_types(attrs, [v.type if v is not None else None for v in inputs])
        except CnnirError as e:
            raise e.with_context(node.describe()) from e
        self._claim(node.name)
        for i, t in enumerate(out_types):
            vname = node.name if i == 0 else self.unique_name(f"{node.name}.{i}")
            if i > 0:
                self._claim(vname)
            node.outputs.append(Value(vname, t, producer=node))
        return node

    def add_node(self, op: OpDef, inputs: Sequence[Value | None], attrs: Any = None, **kw) -> Node:
        """Build a typed node and append it (its inputs must already be defined)."""
        return self.insert_node(self.make_node(op, inputs, attrs, **kw))

    def insert_node(self, node: Node, before: Node | None = None) -> Node:
        for v in node.inputs:
            if v is not None:
                v.users.append(node)
        if before is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self.nodes.index(before), node)
        return node

    def set_outputs(self, values: Iterable[Value]) -> None:
        self.outputs = list(values)

    def rename_value(self, value: Value, name: str) -> str:
        """Give a node's output its own name (``name``, or ``name_1``... if taken); the node
        keeps its name. Returns the name given."""
        if value.producer is None:
            raise VerificationError(f"only node outputs can be renamed, not %{value.name}")
        new = self._claim(self.unique_name(name))
        if value.name != value.producer.name:
            self._names.discard(value.name)
        value.name = new
        return new

    # -- rewriting ---------------------------------------------------------------------

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Point every user of ``old`` (nodes and graph outputs) at ``new``."""
        for user in old.users:
            user.inputs = [new if v is old else v for v in user.inputs]
            new.users.append(user)
        old.users = []
        self.outputs = [new if v is old else v for v in self.outputs]

    def remove_node(self, node: Node, *, safe: bool = True) -> None:
        """Remove ``node``; with ``safe`` refuse while any output is still used."""
        if safe:
            used = [u.name for v in node.outputs for u in v.users]
            used += [f"graph output %{v.name}" for v in node.outputs if v in self.outputs]
            if used:
                raise VerificationError(
                    f"cannot remove {node.describe()}: its outputs are still used by {used}"
                )
        for v in node.inputs:
            if v is not None and node in v.users:
                v.users.remove(node)
        self.nodes.remove(node)
        self._names.discard(node.name)
        for v in node.outputs:
            self._names.discard(v.name)

    def remove_constant(self, value: Value, *, safe: bool = True) -> None:
        """Remove a constant; with ``safe`` refuse while a node or a graph output uses it."""
        if safe and (value.users or value in self.outputs):
            users = [u.name for u in value.users] + (["graph output"] if value in self.outputs
                                                     else [])
            raise VerificationError(f"cannot remove constant %{value.name}: still used by "
                                    f"{users}")
        del self.constants[value.name]
        self._names.discard(value.name)

    # -- queries -----------------------------------------------------------------------

    def parameters(self) -> dict[str, Value]:
        return {n: v for n, v in self.constants.items() if v.const.kind == "parameter"}

    def buffers(self) -> dict[str, Value]:
        return {n: v for n, v in self.constants.items() if v.const.kind == "buffer"}

    def __str__(self) -> str:
        from cnnir.ir.printer import format_graph

        return format_graph(self)

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes>"
