"""An optimizer's update as IR, and programs that write the values they compute back into the
arrays they replace.

``append_updates`` places one update op per parameter at the end of a graph holding the
parameters' gradients (the generated backward graph of ``compile_train``, or a graph of
gradient inputs for ``Optimizer.step``); the optimizer's state arrays become constants
bound by reference, and the scalars of the step one run-time ``hyper`` input.

``StatefulProgram`` compiles such a graph: on the Numba backend the update ops write into
the model's and the optimizer's own arrays (``in_place``); on the reference backend, whose
constants are frozen copies, those arrays are passed as inputs and copied back (and so are
parameters another program updates, ``reads``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnir.errors import CnnirError
from cnnir.ir import ConstantData, Graph, TensorType, Value, verify

if TYPE_CHECKING:
    from cnnir.frontend.module import Parameter
    from cnnir.optim.optimizer import Optimizer


@dataclass
class UpdatePlan:
    """The ``hyper`` input (row i for ``params[i]``) and, for each output of the update ops,
    the array it is the new value of."""

    hyper: Value
    params: list[Parameter]
    targets: list[tuple[Value, np.ndarray]]


def append_updates(graph: Graph, optimizer: Optimizer,
                   entries: list[tuple[Parameter, Value, Value]], dtype: np.dtype) -> UpdatePlan:
    """One ``optimizer.op`` node per ``(parameter, its constant, its gradient)``, in order,
    appended after every other node (so each is the last reader of what it replaces). The
    state constants are named ``<parameter>.<slot>`` and the new values ``<name>.new``."""
    op = optimizer.op
    width = len(op.extra["hyper"])
    hyper = graph.add_input("hyper", TensorType((len(entries), width), dtype.name))
    targets: list[tuple[Value, np.ndarray]] = []
    for row, (p, param, grad) in enumerate(entries):
        arrays = optimizer.slot_arrays(p)
        state = {slot: graph.add_constant(f"{param.name}.{slot}",
                                          ConstantData(param.type, "buffer", array=array))
                 for slot, array in arrays.items()}
        node = graph.add_node(op, [param, grad, hyper,
                                   *(state.get(name.rstrip("?")) for name in op.inputs[3:])],
                              optimizer.attrs(optimizer.group_of(p), row),
                              name=f"{param.name}.update")
        replaced = [(param, p.data)] + [(state[slot], arrays[slot]) for slot in
                                        (n.rstrip("?") for n in op.inputs[3:]) if slot in state]
        for out, (value, array) in zip(node.outputs, replaced):
            graph.rename_value(out, f"{value.name}.new")
            targets.append((out, array))
    return UpdatePlan(hyper, [p for p, _, _ in entries], targets)


class StatefulProgram:
    """A graph whose last outputs are the new values of ``targets`` (arrays of the model and
    of the optimizer), compiled on ``backend``; a call returns the other outputs and leaves
    the new values in the targets."""

    def __init__(self, graph: Graph, targets: list[np.ndarray], backend: str,
                 dtype: np.dtype, seed: int = 0, reads: Sequence[Parameter] = (),
                 **options: Any) -> None:
        from cnnir.api import compile as compile_graph
        from cnnir.grad import constants_as_inputs

        self.targets = targets
        self.returned = len(graph.outputs) - len(targets)
        self.passed: list[np.ndarray] = []  # state passed as inputs (reference backend)
        if backend == "numba":
            options = {"optimize": False, "in_place": True, **options}
        else:
            live = [*targets, *(p.data for p in reads)]  # arrays changed between calls
            named = [(v.name, v.const.array) for v in graph.constants.values()
                     if v.const.kind in ("parameter", "buffer")
                     and any(v.const.array is t for t in live)]
            graph = constants_as_inputs(graph, [name for name, _ in named])
            self.passed = [array for _, array in named]
        self.graph = graph
        self.compiled = compile_graph(graph, backend=backend, dtype=dtype.name, seed=seed,
                                      **options)

    def changed(self, names: list[str]) -> None:
        """Tell the program that something else wrote these state arrays (``reads``), so
        the forms derived from them are remade before the next call."""
        state = getattr(self.compiled, "state", None)
        if state is not None:
            state.mark_changed([n for n in names if n in state])

    def __call__(self, *arrays: Any) -> list[np.ndarray]:
        outs = self.compiled(*arrays, *self.passed)
        outs = list(outs) if isinstance(outs, tuple) else [outs]
        for target, new in zip(self.targets, outs[self.returned:]):
            if new is not target:
                np.copyto(target, new, casting="unsafe")
        return outs[:self.returned]


def float_dtype(params: list[Parameter], what: str) -> np.dtype:
    dtypes = {np.dtype(p.data.dtype) for p in params}
    if len(dtypes) != 1 or next(iter(dtypes)).kind != "f":
        raise CnnirError(f"{what} needs parameters of one float dtype, got "
                         f"{sorted(d.name for d in dtypes)}",
                         hint="convert the model first: model.float() or model.double()")
    return dtypes.pop()


class UpdateProgram:
    """The update alone, for ``Optimizer.step``: gradients in, parameters and state updated
    in place."""

    def __init__(self, optimizer: Optimizer, params: list[Parameter], backend: str) -> None:
        self.optimizer = optimizer
        self.params = params
        self.dtype = float_dtype(params, f"{type(optimizer).__name__}.step")
        graph = Graph(f"{type(optimizer).__name__}_step")
        entries = []
        for i, p in enumerate(params):
            t = TensorType(p.shape, self.dtype.name)
            value = graph.add_constant(f"param{i}", ConstantData(t, "parameter", array=p.data))
            entries.append((p, value, graph.add_input(f"param{i}.grad", t)))
        plan = append_updates(graph, optimizer, entries, self.dtype)
        graph.set_outputs([v for v, _ in plan.targets])
        options = {"tune": False} if backend == "numba" else {}
        self.program = StatefulProgram(verify(graph), [a for _, a in plan.targets], backend,
                                       self.dtype, **options)

    def __call__(self, grads: list[Any]) -> None:
        arrays = []
        for p, g in zip(self.params, grads):
            g = np.asarray(g)
            if g.shape != p.shape:
                raise CnnirError(f"the gradient of a parameter of shape {list(p.shape)} has "
                                 f"shape {list(g.shape)}")
            arrays.append(np.ascontiguousarray(g, dtype=self.dtype))
        self.program(*arrays, self.optimizer.hyper(self.params, self.dtype))
        self.optimizer.stepped(self.params)
