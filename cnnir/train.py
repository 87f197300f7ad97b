"""``cnnir.compile_train``: forward, generated backward and the optimizer's update as one
compiled graph.

    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = cnnir.compile_train(model, nn.CrossEntropyLoss(), opt, inputs=("N", 1, 8, 8),
                               targets=("N",))
    for x, y in cnnir.data.batches(X, Y, batch_size=32, shuffle=True, seed=epoch):
        loss = step(x, y)                      # a float; the model and opt are updated

The graph is ``grad_graph``'s, followed by one update op per optimized parameter
(``cnnir.optim.update``). Each call passes the optimizer's scalars for this step (learning
rate, momentum, betas, bias corrections: ``Optimizer.hyper``) as an input, so a scheduler's
change or a write to ``param_groups[i]["lr"]`` takes effect at the next call. Parameters,
BatchNorm buffers and optimizer state are updated in place: ``model.state_dict()`` and
``opt.state_dict()`` are current after every call. What changes the graph (an option that
adds or drops state, a parameter converted to another dtype, a state loaded into new arrays)
recompiles it before the next call.

With ``comm`` (``cnnir.distributed.init()``) the step is data-parallel: rank 0's parameters
and buffers are broadcast when the step is built, and each call runs the forward and backward
on this rank's batch, averages the gradients across ranks and applies the same update on
every rank (the update is then a program of its own, ``UpdateProgram``, after the
collective). The loss returned is this rank's; BatchNorm uses this rank's batch statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnir.api import InputSpec, run_passes
from cnnir.errors import CnnirError
from cnnir.frontend.module import Module
from cnnir.grad import build_grad_graph
from cnnir.ir import verify
from cnnir.optim.optimizer import Optimizer
from cnnir.optim.update import StatefulProgram, UpdateProgram, append_updates, float_dtype

if TYPE_CHECKING:
    from cnnir.distributed import Communicator


class TrainStep:
    """``step(*inputs, *targets) -> loss`` (see the module docstring). ``output`` is the
    model's output on the latest batch (for accuracy), ``graph`` the compiled graph."""

    def __init__(self, model: Module, loss_fn: Callable[..., Any], optimizer: Optimizer,
                 inputs: InputSpec, targets: InputSpec | None, backend: str, seed: int,
                 options: dict[str, Any], comm: Communicator | None = None) -> None:
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.comm = comm
        self.update: UpdateProgram | None = None
        self.inputs, self.targets = inputs, targets
        self.backend, self.seed, self.options = backend, seed, options
        self.output: np.ndarray | None = None
        self.program: StatefulProgram | None = None
        self._key: tuple | None = None
        self._build()

    def _build(self) -> None:
        """Trace, differentiate, append the updates and compile, for the model's current
        arrays and dtype and the optimizer's current options."""
        self.dtype = model_dtype(self.model)
        gg = build_grad_graph(self.model, with_output(self.loss_fn), self.inputs, self.targets,
                              keep_outputs=True)
        graph = gg.graph
        named = dict(self.model.named_parameters())
        optimized = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        # the None-gradient rule: a parameter the loss does not reach is never updated
        names = [n for n in gg.parameters if id(named[n]) in optimized]
        self.params = [named[n] for n in names]
        loss, rest = graph.outputs[0], graph.outputs[1:]
        grads = dict(zip(gg.parameters, rest))
        stats = rest[len(gg.parameters):len(gg.parameters) + len(gg.buffers)]
        kept = rest[len(gg.parameters) + len(gg.buffers):]
        targets = [gg.graph.constants[b].const.array for b in gg.buffers]
        if self.comm is None:
            entries = [(p, graph.constants[n], grads[n]) for n, p in zip(names, self.params)]
            plan = append_updates(graph, self.optimizer, entries, self.dtype)
            graph.set_outputs([loss, *kept[:1], *stats, *(v for v, _ in plan.targets)])
            targets += [a for _, a in plan.targets]
        else:  # the gradients come out, to be averaged before the update
            graph.set_outputs([loss, *kept[:1], *(grads[n] for n in names), *stats])
            self.update = UpdateProgram(self.optimizer, self.params, self.backend)
        self.names, self.kept = names, len(kept[:1])
        graph = verify(run_passes(graph, ["eliminate-dead-code"]).graph)
        self.graph = graph
        options = dict(self.options)
        if self._key is not None and self._key[1] == self._arrays() and self.state is not None:
            options.setdefault("state", self.state)  # same arrays: evaluators keep following
        self.program = StatefulProgram(graph, targets, self.backend, self.dtype, self.seed,
                                       reads=self.params if self.comm else (), **options)
        self._key = self._signature()

    @property
    def state(self) -> Any:
        """The program state the step updates (Numba backend): compile an evaluation program
        with it to follow the training without recompiling,
        ``cnnir.compile(model.eval(), shape, optimize=False, state=step.state)``; a program
        compiled otherwise holds a snapshot (``optimize=True``) or, with ``optimize=False``,
        packed weights that nothing tells of the step's writes."""
        return getattr(self.program.compiled, "state", None)

    def reseed(self, seed: int) -> None:
        """Restart the generator of the random ops (dropout) from ``seed``: a trainer that
        reseeds at the start of each epoch gets the same masks whether or not it resumed."""
        self.seed = seed
        self.program.compiled.reseed(seed)

    def _arrays(self) -> tuple:
        return tuple(id(a) for a in (*(p.data for p in self.model.parameters()),
                                     *(b.data for b in self.model.buffers())))

    def _signature(self) -> tuple:
        return self.optimizer.signature(self.params), self._arrays()

    def __call__(self, *arrays: Any) -> float:
        if self._signature() != self._key:
            self._build()
        if self.comm is not None:
            return self._parallel_step(arrays)
        hyper = self.optimizer.hyper(self.params, self.dtype)
        loss, *output = self.program(*arrays, hyper)
        self.optimizer.stepped(self.params)
        self.output = output[0] if output else None
        return float(loss)

    def _parallel_step(self, arrays: tuple) -> float:
        """Forward and backward, the gradients averaged over the ranks as they become final
        (on the Numba backend; elsewhere after the backward), then the update."""
        from cnnir.distributed import GradientAverage

        first = 1 + self.kept  # outputs: loss, the model's output, the gradients
        average = GradientAverage(self.comm, [p.data.size for p in self.params], self.dtype)
        compiled = self.program.compiled
        hooked = hasattr(compiled, "on_output_ready")
        if hooked:
            compiled.on_output_ready = lambda k, value: (
                average.ready(k - first, value) if first <= k < first + len(self.params)
                else None)
        try:
            loss, *rest = self.program(*arrays)
        finally:
            if hooked:
                compiled.on_output_ready = None
        if not hooked:
            for k, g in enumerate(rest[self.kept:]):
                average.ready(k, g)
        self.output = rest[0] if self.kept else None
        self.update([g.reshape(p.shape) for g, p in zip(average.finish(), self.params)])
        self.program.changed(self.names)
        return float(loss)

    def broadcast_state(self) -> None:
        """Give every rank rank 0's parameters, buffers and optimizer state (at the start,
        and after a rank alone loaded a checkpoint)."""
        slots = [a for p in self.params for a in self.optimizer.slot_arrays(p).values()]
        arrays = [p.data for p in self.model.parameters()] + [
            b.data for b in self.model.buffers()] + slots
        self.comm.broadcast([a for a in arrays if isinstance(a, np.ndarray) and a.size])
        self.program.changed([n for n, _ in self.model.named_parameters()]
                             + [n for n, _ in self.model.named_buffers()])


def with_output(loss_fn: Callable[..., Any]) -> Callable[..., Any]:
    """``loss_fn`` that also returns the model's output (the step keeps its first tensor)."""

    def loss_and_output(out: Any, *targets: Any) -> Any:
        from cnnir.api import _flatten_outputs

        return (loss_fn(out, *targets), *_flatten_outputs(out)[:1])

    return loss_and_output


def model_dtype(model: Module) -> np.dtype:
    params = list(model.parameters())
    if not params:
        raise CnnirError(f"{type(model).__name__} has no parameters to train")
    return float_dtype(params, "compile_train")


def compile_train(model: Module, loss_fn: Callable[..., Any], optimizer: Optimizer,
                  inputs: InputSpec, targets: InputSpec | None = None, *,
                  backend: str = "numba", dtype: str | None = None, seed: int = 0,
                  comm: Any = None, **options: Any) -> TrainStep:
    """The training step of ``model`` under ``loss_fn`` and ``optimizer`` (see the module
    docstring). ``inputs`` and ``targets`` are shapes as for ``grad_graph`` (a symbolic
    batch ``"N"`` serves every batch size, the last smaller batch included). The step
    computes in the model's dtype (``model.double()`` trains in float64); ``seed`` seeds
    dropout's masks; ``comm`` (``cnnir.distributed.init()`` or an mpi4py communicator) makes
    it data-parallel across ranks; other options go to the backend (e.g. ``tune=False``)."""
    if not isinstance(model, Module):
        raise CnnirError(f"compile_train needs an nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise CnnirError(f"compile_train needs a cnnir.optim optimizer, got "
                         f"{type(optimizer).__name__}",
                         hint="e.g. optim.SGD(model.parameters(), lr=0.1)")
    own = model_dtype(model)
    if dtype is not None and np.dtype(dtype) != own:
        raise CnnirError(f"compile_train(dtype={dtype!r}) on a {own.name} model",
                         hint=f"convert the model instead: model.to(np.{np.dtype(dtype).name})")
    if comm is not None:
        from cnnir.distributed import init

        comm = init(comm)
    step = TrainStep(model, loss_fn, optimizer, inputs, targets, backend, seed, options, comm)
    if comm is not None:
        step.broadcast_state()
    return step


__all__ = ["TrainStep", "compile_train"]
