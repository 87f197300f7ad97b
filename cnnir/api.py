"""The public entry points: ``trace`` and ``analyze``.

    g = cnnir.trace(model, (1, 3, 224, 224))
    rep = cnnir.analyze(model, (1, 3, 224, 224))
    rep.totals.params, rep.totals.macs
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnir.backend import CompiledGraph, check_input_sizes, get_backend
from cnnir.errors import CnnirError, ShapeError
from cnnir.frontend.module import Module
from cnnir.frontend.tensor import Tensor
from cnnir.frontend.tracer import Tracer, tracing
from cnnir.ir import Graph, Node, TensorType, verify
from cnnir.passes.cost import CostReport, analyze_graph

if TYPE_CHECKING:
    from cnnir.passes.manager import PassResult

InputSpec = Any  # a shape tuple, a TensorType, or a list of them


SPEC_FORMS = ("give a shape like (1, 3, 224, 224) or [1, 3, 224, 224] (a symbolic batch: "
              "('N', 3, 224, 224)), a cnnir.TensorType, or a list of them for several inputs; "
              "on the command line --input-shape 1x3x224x224, Nx3x224x224 or N,3,224,224")


def input_types(spec: InputSpec, dtype: str = "float32") -> list[TensorType]:
    """``(1, 3, 224, 224)`` or ``[1, 3, 224, 224]`` -> one input; ``[(1, 3, 8, 8),
    (1, 3, 8, 8)]`` -> two. Plain shapes hold ``dtype`` (a model's own float dtype:
    ``model_dtype``). Sizes are positive ints or symbol names; floats, bools and other
    objects are refused."""
    if isinstance(spec, TensorType):
        return [spec]
    if isinstance(spec, (list, tuple)) and spec and not any(
            isinstance(d, (list, tuple, TensorType)) for d in spec):
        return [TensorType(tuple(_dim(d, spec) for d in spec), dtype)]
    if isinstance(spec, (list, tuple)) and spec:
        return [t for item in spec for t in input_types(item, dtype)]
    raise ShapeError(f"cannot read an input spec from {spec!r}", hint=SPEC_FORMS)


def _dim(d: Any, spec: Any) -> int | str:
    if isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)):
        if d < 0:
            raise ShapeError(f"input shape {list(spec)} has a negative size {d}",
                             hint=SPEC_FORMS)
        return int(d)  # a zero is refused by check_input_sizes, which knows the input's name
    if isinstance(d, str) and d.strip():
        return d
    raise ShapeError(f"input shape {list(spec)} has a {type(d).__name__} {d!r} as a size: "
                     f"sizes are whole numbers or symbol names", hint=SPEC_FORMS)


def model_dtype(model: Module) -> str:
    """The float dtype of a model's parameters and buffers (float32 for a model with none,
    or with several: then an op reports the mismatch): what its inputs are by default, as
    ``model.double()`` in PyTorch expects float64 inputs."""
    dtypes = {a.dtype for a in (*model.parameters(), *model.buffers())
              if np.dtype(a.dtype).kind == "f"}
    return dtypes.pop() if len(dtypes) == 1 else "float32"


def _input_names(model: Module, count: int) -> list[str]:
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(names) >= count:
        return names[:count]
    return [f"input{i}" for i in range(count)]


def _check_arity(model: Module, count: int) -> None:
    """Refuse a number of input specs ``forward`` cannot take, naming its inputs."""
    try:
        signature = inspect.signature(model.forward)
        signature.bind(*range(count))
    except ValueError:  # no signature to check (a builtin): forward itself will say
        return
    except TypeError:
        params = [p for p in signature.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p.name for p in params if p.default is p.empty]
        takes = (f"{len(required)}" if len(required) == len(params)
                 else f"{len(required)} to {len(params)}")
        names = ", ".join(p.name for p in params) or "none"
        raise CnnirError(
            f"{type(model).__name__}.forward takes {takes} input(s) ({names}) but {count} "
            f"input shape(s) were given",
            hint="give one shape per input: input_shape = [(1, 3, 32, 32), (1, 3, 32, 32)] "
                 "in a model file, or one --input-shape per input") from None


def _flatten_outputs(result: Any) -> list[Tensor]:
    if isinstance(result, Tensor):
        return [result]
    if isinstance(result, (list, tuple)):
        return [t for item in result for t in _flatten_outputs(item)]
    if isinstance(result, dict):
        return [t for item in result.values() for t in _flatten_outputs(item)]
    raise CnnirError(f"forward returned a {type(result).__name__}, not tensors",
                     hint="return a tensor, or a tuple/list/dict of tensors")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Building a graph allocates many long-lived objects; Python's cyclic collector would
    rescan them all again and again (superlinear time on deep networks), so it waits."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def trace(model: Module, inputs: InputSpec, *, training: bool | None = None,
          name: str | None = None) -> Graph:
    """Run ``model.forward`` on typed proxies and return the verified graph.

    ``training`` overrides the model's mode for the trace (restored afterwards)."""
    return _trace(model, input_types(inputs, model_dtype(model)), lambda out: out,
                  training=training, name=name)


def _trace(model: Module, types: list[TensorType], finish: Any, *,
           targets: Any = lambda out: [], training: bool | None = None,
           name: str | None = None) -> Graph:
    """Trace ``finish(model(*inputs), *targets)`` into one graph: the model's forward on
    proxies of ``types``, then ``finish`` on its result and on proxies of the types
    ``targets(result)`` gives (graph inputs after the model's own)."""
    if not isinstance(model, Module):
        raise CnnirError(f"cnnir.trace needs an nn.Module, got {type(model).__name__}")
    graph = Graph(name or type(model).__name__)
    tracer = Tracer(graph, model)
    was_training = model.training
    if training is not None:
        model.train(training)
    try:
        with gc_paused(), tracing(tracer):
            _check_arity(model, len(types))
            args = [Tensor(graph.add_input(n, t), tracer)
                    for n, t in zip(_input_names(model, len(types)), types)]
            check_input_sizes(graph.inputs)
            out = model(*args)
            target_types = targets(out)
            extra = [Tensor(graph.add_input(n, t), tracer)
                     for n, t in zip(_target_names(len(target_types)), target_types)]
            result = finish(out, *extra)
        graph.set_outputs(t.value for t in _flatten_outputs(result))
    finally:
        model.train(was_training)
    return verify(graph)


def _target_names(count: int) -> list[str]:
    return ["target"] if count == 1 else [f"target{i}" for i in range(count)]


def analyze(model_or_graph: Module | Graph, inputs: InputSpec | None = None, *,
            training: bool = False) -> CostReport:
    """Cost report of a graph, or of a model traced (in eval mode) on ``inputs``.

    ``training=True`` analyzes a training step instead: the model traced in training mode,
    its backward generated (with respect to every trainable parameter, from the sum of its
    outputs as a stand-in loss) and the report's ``training`` part split into forward and
    backward costs and training memory. A gradient graph (``cnnir.grad_graph``) is
    reported that way as it is."""
    if isinstance(model_or_graph, Graph) and not training:
        graph = model_or_graph
    elif isinstance(model_or_graph, Graph) or training:
        from cnnir.grad import grad_graph, sum_of_outputs

        if isinstance(model_or_graph, Graph):
            graph = grad_graph(_with_loss(model_or_graph))
        else:
            graph = grad_graph(model_or_graph, sum_of_outputs, _needs(inputs))
    else:
        graph = trace(model_or_graph, _needs(inputs), training=False)
    with gc_paused():
        return analyze_graph(graph)


def _needs(inputs: InputSpec | None) -> InputSpec:
    if inputs is None:
        raise CnnirError("cnnir.analyze(model, inputs) needs the input shape(s)")
    return inputs


def _with_loss(graph: Graph) -> Graph:
    """A copy of a forward graph whose first output is the sum of its float outputs."""
    from cnnir.ir.clone import clone_graph
    from cnnir.ops import add, sum_

    graph = clone_graph(graph)
    terms = [graph.add_node(sum_, [v], name=f"{v.name}.sum").output for v in graph.outputs
             if v.type.dtype.startswith("float")]
    total = terms[0]
    for term in terms[1:]:
        total = graph.add_node(add, [total, term], name="loss").output
    graph.set_outputs([total])
    return graph


def _graph_of(model_or_graph: Module | Graph, inputs: InputSpec | None,
              training: bool = False) -> Graph:
    if isinstance(model_or_graph, Graph):
        return model_or_graph
    if inputs is None:
        raise CnnirError("a model needs its input shape(s): pass inputs=(1, 3, 224, 224)")
    return trace(model_or_graph, inputs, training=training)


def compile(model_or_graph: Module | Graph, inputs: InputSpec | None = None, *,  # noqa: A001
            backend: str = "numba", dtype: str | None = None, **options: Any) -> CompiledGraph:
    """A callable on numpy arrays that runs the graph on ``backend`` (``"numba"``, the CPU;
    ``"reference"``, the float64 oracle; ``"cuda"``), see ``cnnir.backend``.

    A model is compiled for inference, in eval mode (dropout off, BatchNorm on its running
    statistics), whatever its mode; a model left in training mode whose graph depends on
    the mode gets a ``UserWarning`` naming ``model.eval()``. To run training-mode semantics,
    compile a graph traced in that mode: ``cnnir.compile(cnnir.trace(model, shape))``.

    >>> run = cnnir.compile(model, (1, 3, 224, 224), backend="numba")
    >>> y = run(np.zeros((1, 3, 224, 224), np.float32))
    """
    module = get_backend(backend)
    if dtype is not None:  # else the backend's default: float32, or float64 for "reference"
        options["dtype"] = dtype
    graph = _graph_of(model_or_graph, inputs)
    if isinstance(model_or_graph, Module) and model_or_graph.training:
        _warn_if_mode_matters(model_or_graph, inputs, graph)
    check_input_sizes(graph.inputs)
    return module.compile_graph(graph, **options)


def _warn_if_mode_matters(model: Module, inputs: InputSpec, eval_graph: Graph) -> None:
    """Warn when ``model`` (in training mode) traces differently in training mode than the
    eval-mode graph ``cnnir.compile`` runs."""
    def ops(graph: Graph) -> list[tuple[str, str]]:
        return [(n.op.name, repr(n.attrs)) for n in graph.nodes]

    if ops(trace(model, inputs, training=True)) != ops(eval_graph):
        warnings.warn(
            f"cnnir.compile runs {type(model).__name__} in eval mode (dropout off, BatchNorm "
            f"on its running statistics) although the model is in training mode; call "
            f"model.eval() before compiling to say so, or compile "
            f"cnnir.trace(model, shape) to run it in training mode",
            UserWarning, stacklevel=3)


def run_passes(graph: Graph, passes: Sequence[str], **options: Any) -> PassResult:
    """Run the named passes on a copy of ``graph`` (``run_pipeline``), giving passes the
    services they need: fold-constants gets the reference backend's evaluator unless
    ``evaluate=`` is given."""
    from cnnir.passes.manager import run_pipeline

    if "fold-constants" in passes and "evaluate" not in options:
        options["evaluate"] = _reference_evaluate
    return run_pipeline(graph, list(passes), **options)


def _reference_evaluate(node: Node, arrays: list) -> list:
    """The reference backend's evaluator, imported when a node is first folded (most graphs
    fold nothing, and the import costs a warm start about 0.2 s)."""
    from cnnir.backends.reference import evaluate

    return evaluate(node, arrays)


def optimize(graph: Graph, passes: Sequence[str], **options: Any) -> Graph:
    """A new, verified graph with the named passes applied (the input is unchanged)."""
    return run_passes(graph, passes, **options).graph


def export_onnx(model_or_graph: Module | Graph, path: str, inputs: InputSpec | None = None, *,
                opset: int = 19) -> None:
    """Write the graph as an ONNX model (weights as initializers)."""
    from cnnir.backends.onnx_export import export

    export(_graph_of(model_or_graph, inputs), path, opset=opset)


def load_onnx(path: str) -> Graph:
    """Import an ONNX file (weights included) without running any code from it."""
    from cnnir.frontend.onnx_import import load

    return load(path)


__all__ = ["analyze", "compile", "export_onnx", "input_types", "load_onnx", "optimize",
           "run_passes", "trace"]
