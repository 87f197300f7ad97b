"""ONNX ModelProto -> cnnir Graph (docs/semantics.md §7.6).

1. Structure: node count, SSA, defined inputs, acyclicity and depth (``order``).
2. Opsets: the default domain at versions 7-28; the model is converted to opset 19 with
   ``onnx.version_converter`` (when conversion fails the original is kept: converters are
   chosen by the largest registered version ≤ the model's opset either way).
3. Every op type must have a converter or fold to a constant; all missing ones are listed
   in one error.
4. Graph inputs (not initializers; old IR lists weights as inputs too) become typed inputs,
   ``dim_param`` becoming a symbolic dim. Initializers and ``Constant`` nodes are constants;
   shape chains fold (``fold``); each node goes to its converter.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from cnnir.errors import ModelFormatError
from cnnir.ir import Graph, verify

from . import convert_act, convert_nn, convert_tensor  # noqa: F401  (register converters)
from .context import CONSTANT_KINDS, CONVERTERS, ImportContext, OnnxNode, find_converter, onnx_type
from .fold import can_fold, fold, may_fold
from .order import MAX_DEPTH, MAX_NODES, execution_order
from .safety import check_tensors, check_text

MIN_OPSET, MAX_OPSET = 7, 28
TARGET_OPSET = 19
DEFAULT_DOMAINS = ("", "ai.onnx")
Shape = Sequence[int | str]
# what a converter raises on an attribute of the wrong type (a float where ints belong, a
# string, a tensor, a graph), a wild value or a missing input: a ModelFormatError naming
# the node, as every converter would otherwise have to type-check each attribute it reads
CONVERTER_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError,
                    ArithmeticError, RuntimeError)


def model_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset; other domains (with nodes) are unsupported ops."""
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    if not versions:
        raise ModelFormatError("the ONNX model imports no default-domain opset")
    opset = max(versions)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelFormatError(f"the ONNX model uses opset {opset}; cnnir imports opsets "
                               f"{MIN_OPSET}-{MAX_OPSET}",
                               hint="convert it with onnx.version_converter first")
    return opset


def normalize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The model at opset 19 when onnx can convert it, else as it is."""
    opset = model_opset(model)
    if opset == TARGET_OPSET or not follows_schemas(model.graph, opset):
        return model, opset
    try:
        from onnx import version_converter

        return version_converter.convert_version(model, TARGET_OPSET), TARGET_OPSET
    except Exception:  # the converter raises bare RuntimeErrors for unsupported adapters
        return model, opset


def follows_schemas(graph: onnx.GraphProto, opset: int) -> bool:
    """Whether every node matches its operator schema at ``opset`` in input and output
    counts and attribute names and types. onnx's version converter (C++) trusts that and
    crashes the process on, say, a string where ``axes`` should be ints, so a model that
    does not match is imported at its own opset (converters refuse what they cannot read)."""
    for node in graph.node:
        if node.domain not in DEFAULT_DOMAINS:
            continue  # the converter leaves other domains alone
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, "")
        except onnx.defs.SchemaError:
            return False
        if not (schema.min_input <= len(node.input) <= schema.max_input
                and schema.min_output <= len(node.output) <= schema.max_output):
            return False
        for a in node.attribute:
            declared = schema.attributes.get(a.name)
            if declared is None or int(declared.type) != int(a.type):
                return False
        required = {name for name, attr in schema.attributes.items() if attr.required}
        if not required <= {a.name for a in node.attribute}:
            return False
    return True


def _possibly_constant(graph: onnx.GraphProto, order: list[int]) -> set[int]:
    """Nodes that may fold: Constant, Shape/Size, and nodes on constant inputs only."""
    consts = {t.name for t in graph.initializer}
    folding: set[int] = set()
    for i in order:
        node = graph.node[i]
        inputs = [x for x in node.input if x]
        if node.domain not in DEFAULT_DOMAINS:
            continue
        if node.op_type in ("Constant", "Shape", "Size") or (
                inputs and all(x in consts for x in inputs) and may_fold(node.op_type)):
            folding.add(i)
            consts.update(node.output)
    return folding


def check_supported(graph: onnx.GraphProto, order: list[int], opset: int) -> None:
    """One error listing every op type that neither converts nor folds."""
    folding = _possibly_constant(graph, order)
    missing = sorted({
        (graph.node[i].domain + "." if graph.node[i].domain not in DEFAULT_DOMAINS else "")
        + graph.node[i].op_type
        for i in order if i not in folding and (
            graph.node[i].domain not in DEFAULT_DOMAINS
            or find_converter(graph.node[i].op_type, opset) is None)})
    if missing:
        raise ModelFormatError(f"unsupported ONNX ops (opset {opset}): {', '.join(missing)}",
                               hint=f"cnnir imports {', '.join(supported_ops())}")


def supported_ops() -> list[str]:
    return sorted(CONVERTERS)


def set_input_shapes(graph: onnx.GraphProto, shapes: Sequence[Shape]) -> None:
    """Give the graph inputs (initializers excluded) the concrete ``shapes``; each must keep
    the rank and every static dim of the declared shape."""
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    if len(shapes) != len(inputs):
        raise ModelFormatError(f"got {len(shapes)} input shape(s) for the model's "
                               f"{len(inputs)} input(s) {[v.name for v in inputs]}")
    for v, shape in zip(inputs, shapes):
        declared = onnx_type(v.type, f"graph input '{v.name}'", "dim").shape
        compatible = len(shape) == len(declared) and all(
            not isinstance(d, int) or d == s for d, s in zip(declared, shape))
        if not compatible:
            raise ModelFormatError(f"input shape {list(shape)} does not fit graph input "
                                   f"'{v.name}' {list(declared)}")
        dims = v.type.tensor_type.shape.dim
        for dim, size in zip(dims, shape):
            if isinstance(size, int):
                dim.dim_value = size
            else:
                dim.dim_param = str(size)


def _consumers(nodes: list[OnnxNode]) -> dict[str, list[OnnxNode]]:
    users: dict[str, list[OnnxNode]] = {}
    for n in nodes:
        for name in set(n.inputs):
            if name:
                users.setdefault(name, []).append(n)
    return users


def _add_inputs(ctx: ImportContext, graph: onnx.GraphProto) -> None:
    initializers = {t.name for t in graph.initializer}
    for v in graph.input:
        if v.name in initializers:
            continue
        t = onnx_type(v.type, f"graph input '{v.name}'", "dim")
        ctx.bind(v.name, ctx.graph.add_input(v.name, t))


def _add_initializers(ctx: ImportContext, graph: onnx.GraphProto) -> None:
    for t in graph.initializer:
        ctx.consts[t.name] = onnx.numpy_helper.to_array(t)
        if t.doc_string in CONSTANT_KINDS:
            ctx.kinds[t.name] = t.doc_string


def _set_outputs(ctx: ImportContext, graph: onnx.GraphProto) -> None:
    outputs = []
    for v in graph.output:
        if v.name not in ctx.values and v.name not in ctx.consts:
            raise ModelFormatError(f"graph output '{v.name}' is not computed by the graph")
        outputs.append(ctx.tensor(v.name))
    ctx.graph.set_outputs(outputs)


def _run_nodes(ctx: ImportContext, graph: onnx.GraphProto, nodes: list[OnnxNode],
               order: list[int]) -> None:
    for i in order:
        n = nodes[i]
        if id(n) in ctx.skipped:
            continue
        if can_fold(ctx, n):
            fold(ctx, n, graph.node[i])
            continue
        convert = find_converter(n.op_type, ctx.opset)
        if convert is None or n.domain not in DEFAULT_DOMAINS:
            raise ModelFormatError(f"{n.describe()} cannot be imported: its inputs are not "
                                   f"constant and cnnir has no converter for it")
        try:
            convert(ctx, n)
        except CONVERTER_ERRORS as e:  # attributes of the wrong type or value, bad inputs
            raise ModelFormatError(
                f"{n.describe()} cannot be imported: its attributes {list(n.attrs)} or "
                f"inputs {n.inputs} are not what ONNX {n.op_type} takes "
                f"({type(e).__name__}: {e})",
                hint="the file is damaged or breaks the ONNX operator spec") from e


def import_model(model: onnx.ModelProto, *, input_shapes: Sequence[Shape] | None = None,
                 max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH,
                 convert: bool = True) -> Graph:
    """The cnnir graph of an in-memory ONNX model (weights included, no code run).

    ``input_shapes`` (one per graph input) replaces symbolic input dims by sizes before
    import, e.g. ``[(1, 3, 224, 224)]``. ``convert=False`` skips the conversion to opset 19
    (the converters then follow the model's own opset)."""
    check_text(model)
    execution_order(model.graph, max_nodes, max_depth)
    check_tensors(model)
    if input_shapes is not None:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
        set_input_shapes(model.graph, input_shapes)
    model, opset = normalize(model) if convert else (model, model_opset(model))
    graph = model.graph
    order = execution_order(graph, max_nodes, max_depth)
    check_supported(graph, order, opset)
    nodes = [OnnxNode.from_proto(node, i) for i, node in enumerate(graph.node)]
    outputs = {v.name for v in graph.output}
    ctx = ImportContext(Graph(graph.name or "onnx"), opset, _consumers(nodes), outputs)
    _add_inputs(ctx, graph)
    _add_initializers(ctx, graph)
    _run_nodes(ctx, graph, nodes, order)
    _set_outputs(ctx, graph)
    return verify(ctx.graph)


__all__ = ["import_model", "normalize", "supported_ops"]
