"""cnnir Graph -> ONNX ModelProto (docs/semantics.md §7.1-§7.4).

* opset 19 by default (DeformConv, AveragePool dilations, Resize axes); IR version
  ``onnx.helper.find_min_ir_version_for(opset_import)``, i.e. 9 for opset 19.
* Weights are initializers and never graph inputs, so runtimes fold them as constants.
  Each initializer's ``doc_string`` says what it was in cnnir (parameter, buffer, literal).
* Every graph input and output has a shape; a symbolic dim is a ``dim_param`` ("N"); a
  derived one (an expression of symbols) is left unnamed.
* Node names are the layers' module paths; decompositions add ``<layer>/<OpType>`` nodes.
* Every export is validated: ``check_model(full_check=True)`` and strict, type-checked shape
  inference with data propagation (models over 64 MiB of weights as a ``skeleton`` whose
  weights are typed inputs, so validation never copies them). A failure is an exporter bug
  and raises LoweringError.
* Models whose weights exceed ``large_model_bytes`` (2 GB protobuf limit) are written with
  external data (one ``<file>.data`` beside the model), then checked through the path.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

import cnnir
from cnnir.errors import LoweringError, check_output_dir
from cnnir.ir import Graph, TensorType
from cnnir.ir.types import is_static

from .builder import ConstSpec, NodeSpec, OnnxBuilder

DEFAULT_OPSET = 19
MIN_OPSET = 19
# Keep headroom under the 2 GiB protobuf limit for the graph itself.
LARGE_MODEL_BYTES = 2_000_000_000
# Tensors from this size on go to the external data file (shape constants stay inline:
# externalized Reshape/Resize shapes break full_check).
EXTERNAL_MIN_BYTES = 1024
# Models with more weights than this are validated as a skeleton (weights as typed inputs);
# constants up to SKELETON_INLINE_BYTES stay initializers there.
SKELETON_ABOVE_BYTES = 64 * 2**20
SKELETON_INLINE_BYTES = 4096


def _elem_type(dtype: str) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _value_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
    """A typed value whose symbolic dims are ``dim_param`` (unnamed when an expression)."""
    dims = [d if is_static(d) or d.isidentifier() else None for d in t.shape]
    return helper.make_tensor_value_info(name, _elem_type(t.dtype), dims)


def _add_initializer(graph: onnx.GraphProto, name: str, array: np.ndarray, kind: str) -> None:
    """Append one initializer, copying its bytes once (little-endian raw data)."""
    array = np.asarray(array)
    tensor = graph.initializer.add()
    tensor.name = name
    tensor.doc_string = kind
    tensor.data_type = _elem_type(array.dtype.name)
    tensor.dims.extend(array.shape)
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    tensor.raw_data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def _node_proto(spec: NodeSpec) -> onnx.NodeProto:
    attrs = {k: (int(v) if isinstance(v, (bool, np.bool_)) else v) for k, v in spec.attrs.items()}
    for k, v in attrs.items():
        if isinstance(v, np.ndarray):
            attrs[k] = numpy_helper.from_array(v)
    return helper.make_node(spec.op_type, spec.inputs, spec.outputs, name=spec.name,
                            domain=spec.domain or None, **attrs)


def _check_opset(opset: int) -> None:
    latest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= latest:
        raise LoweringError(f"cannot export at opset {opset}: cnnir writes opsets "
                            f"{MIN_OPSET}-{latest}",
                            hint="opset 19 is the lowest with DeformConv, AveragePool "
                                 "dilations and Resize axes")


def _outputs(builder: OnnxBuilder, graph: Graph) -> list[onnx.ValueInfoProto]:
    """Graph outputs; an input, a constant or a repeated value goes through an Identity."""
    infos, seen = [], set()
    for i, value in enumerate(graph.outputs):
        name = builder.name_of(value)
        if value.producer is None or name in seen:
            alias = builder.fresh(f"output_{i}")
            builder.identity(name, alias, alias)
            name = alias
        seen.add(name)
        infos.append(_value_info(name, value.type))
    return infos


def _intermediate_infos(graph: Graph) -> list[onnx.ValueInfoProto]:
    outputs = {id(v) for v in graph.outputs}
    return [_value_info(v.name, v.type) for n in graph.nodes for v in n.outputs
            if id(v) not in outputs and v.users]


def _assemble(graph: Graph, opset: int, builder: OnnxBuilder | None = None
              ) -> tuple[onnx.ModelProto, dict[str, ConstSpec]]:
    """The model without its initializers, and the initializers to add (``builder``: one
    made with other options, e.g. lenient)."""
    _check_opset(opset)
    builder = builder or OnnxBuilder(graph, opset)
    for node in graph.nodes:
        builder.lower(node)
    outputs = _outputs(builder, graph)
    inputs = [_value_info(v.name, v.type) for v in graph.inputs]
    onnx_graph = helper.make_graph([_node_proto(s) for s in builder.nodes], graph.name, inputs,
                                   outputs, value_info=_intermediate_infos(graph),
                                   doc_string=f"cnnir graph '{graph.name}'")
    opset_import = [helper.make_opsetid("", opset)]
    if any(spec.domain == "cnnir" for spec in builder.nodes):
        opset_import.append(helper.make_opsetid("cnnir", 1))
    model = helper.make_model(onnx_graph, opset_imports=opset_import,
                              producer_name="cnnir", producer_version=cnnir.__version__,
                              model_version=1,
                              doc_string=f"'{graph.name}' exported by cnnir {cnnir.__version__}")
    model.ir_version = helper.find_min_ir_version_for(opset_import, ignore_unknown=True)
    helper.set_model_props(model, {"cnnir.graph": graph.name})
    return model, builder.initializers


def _with_initializers(model: onnx.ModelProto, consts: dict[str, ConstSpec]) -> onnx.ModelProto:
    for name, const in consts.items():
        _add_initializer(model.graph, name, const.array, const.kind)
    return model


def to_model(graph: Graph, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The ONNX model of ``graph`` (``export`` also validates and writes it)."""
    return _with_initializers(*_assemble(graph, opset))


def skeleton(model: onnx.ModelProto, consts: dict[str, ConstSpec]) -> onnx.ModelProto:
    """A copy of the initializer-less ``model`` for validation: small constants (shapes,
    axes, scalars) are initializers, so shape inference propagates their values; weights
    become typed graph inputs, so validating a 500 MB model never copies its weights."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for name, const in consts.items():
        if const.array.nbytes <= SKELETON_INLINE_BYTES:
            _add_initializer(copy.graph, name, const.array, const.kind)
        else:
            copy.graph.input.append(_value_info(name, TensorType(const.array.shape,
                                                                 const.array.dtype.name)))
    return copy


def _invalid(model_name: str, error: Exception) -> LoweringError:
    return LoweringError(f"the ONNX export of graph '{model_name}' failed validation: {error}",
                         hint="this is a bug in cnnir's ONNX exporter; please report it")


def validate(model: onnx.ModelProto | str) -> None:
    """``check_model(full_check=True)`` and strict, type-checked shape inference with data
    propagation; a path for models with external data."""
    name = model if isinstance(model, str) else model.graph.name
    try:
        onnx.checker.check_model(model, full_check=True)
        if isinstance(model, str):
            model = onnx.load(model, load_external_data=False)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True,
                                          data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise _invalid(name, e) from e


def export(graph: Graph, path: str | os.PathLike, opset: int = DEFAULT_OPSET, *,
           large_model_bytes: int = LARGE_MODEL_BYTES, check: bool = True) -> None:
    """Write ``graph`` to ``path`` as a validated ONNX model.

    When the weights exceed ``large_model_bytes`` they go to ``<file>.data`` beside it
    (external data, tensors of 1 KiB and more; small shape constants stay inline), and the
    written model is checked through its path.

    >>> export(cnnir.trace(model, ("N", 3, 224, 224)), "model.onnx")
    """
    check_output_dir(path)
    base, consts = _assemble(graph, opset)
    weight_bytes = sum(c.array.nbytes for c in consts.values())
    if check and weight_bytes > SKELETON_ABOVE_BYTES:
        validate(skeleton(base, consts))
    model = _with_initializers(base, consts)
    if check and weight_bytes <= SKELETON_ABOVE_BYTES:
        validate(model)
    path = os.fspath(path)
    if weight_bytes <= large_model_bytes:
        onnx.save_model(model, path)
        return
    location = os.path.basename(path) + ".data"
    data_path = os.path.join(os.path.dirname(os.path.abspath(path)), location)
    if os.path.lexists(data_path):
        os.remove(data_path)  # onnx appends to an existing data file
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=EXTERNAL_MIN_BYTES)
    if check:
        validate(path)
