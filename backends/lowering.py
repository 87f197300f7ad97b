"""What every backend's lowering shares: program state, the builder, the lowering loop.

A compiled model is a *program* (steps over planned buffers, one per input-shape binding) and
its *state*:

- ``ProgramState`` holds the parameters and buffers the program reads, by ``state_dict`` name
  and by reference: a float32 model compiled in float32 reads the module's own arrays, so an
  optimizer updating them in place trains the model itself. It also holds the forms derived
  from them (pre-packed or transformed weights, folded scales): each remembers the versions
  of its sources and is recomputed, in place, before the next run after a source changed.
  Writers say what they changed: ``assign(name, values)`` copies and marks; code that writes
  a state array itself calls ``mark_changed(names)``. Several compiled models may share one
  state (a training step and the evaluation program of the same network).
- ``Builder`` is what a lowering sees while it turns one node into a step: arrays for values
  (views into the one arena of the shared memory plan, literals, state), scratch space,
  derived forms, and the per-node algorithm choice by measurement.

A device supplies its ``DeviceMemory`` (how to allocate, view, upload and overwrite arrays;
``HOST_MEMORY`` for numpy) and a clock; the rest is the same on every device.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnir.backend import KernelTable
from cnnir.errors import CnnirError, LoweringError
from cnnir.ir import Graph, Node, Value
from cnnir.ops.registry import updated_inputs
from cnnir.passes.memory import ALIGNMENT, live_ranges, plan_buffers
from cnnir.passes.shape_inference import TypeMap

Step = Callable[[], None]
STATE_KINDS = ("parameter", "buffer")  # constants bound by reference through the state
TUNING_ROUNDS = 5


@dataclass(frozen=True)
class DeviceMemory:
    """How a device makes and fills arrays (numpy arrays on the CPU, device arrays on a GPU)."""

    allocate: Callable[[int], Any]  # nbytes -> a raw byte buffer
    view: Callable[[Any, int, np.dtype, tuple[int, ...]], Any]  # buffer, byte offset -> array
    upload: Callable[[np.ndarray], Any]  # host array -> a (contiguous) device array
    overwrite: Callable[[Any, np.ndarray], None]  # host values into an existing device array


def _host_view(buffer: np.ndarray, offset: int, dtype: np.dtype,
               shape: tuple[int, ...]) -> np.ndarray:
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return buffer[offset:offset + size].view(dtype).reshape(shape)


def _host_upload(array: np.ndarray) -> np.ndarray:
    """The array itself when C-contiguous, else a contiguous copy; 0-d stays 0-d (unlike
    ``np.ascontiguousarray``, which makes it 1-d)."""
    return np.require(array, requirements="C")


def _host_allocate(nbytes: int) -> np.ndarray:
    """Zeroed bytes starting on an ``ALIGNMENT`` boundary (numpy only promises 16), so that
    the memory plan's aligned offsets are cache-line and vector aligned in memory too."""
    raw = np.zeros(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes]


HOST_MEMORY = DeviceMemory(allocate=_host_allocate, view=_host_view,
                           upload=_host_upload, overwrite=np.copyto)


def compute_dtype(type_dtype: str, dtype: np.dtype) -> np.dtype:
    """Floating-point tensors compute in the program's dtype; others keep their own."""
    return dtype if np.dtype(type_dtype).kind == "f" else np.dtype(type_dtype)


@dataclass
class _Derived:
    value: Any  # an array, or a tuple of arrays
    make: Callable[[], Any]
    seen: dict[str, int]  # source name -> its version when value was made
    remake: Callable[[Any], None] | None = None  # writes fresh values into ``value`` itself


class ProgramState:
    """Parameters, buffers and the forms derived from them (see the module docstring).

    >>> run = cnnir.compile(model, (1, 3, 32, 32))
    >>> run.state.assign("fc.weight", new_weight)    # the next call uses it (and repacks)
    >>> run.state["fc.weight"]                        # a read-only view
    """

    def __init__(self, dtype: str | np.dtype, memory: DeviceMemory,
                 snapshot: bool = False) -> None:
        self.dtype = np.dtype(dtype)
        self.memory = memory
        self.snapshot = snapshot  # bind copies: the values at compile time, never the model's
        self._arrays: dict[str, Any] = {}
        self._versions: dict[str, int] = {}
        self._derived: dict[Hashable, _Derived] = {}
        self._kept: dict[Hashable, int] = {}  # derived form -> the chosen steps reading it
        self._stale = False

    def __contains__(self, name: str) -> bool:
        return name in self._arrays

    def __getitem__(self, name: str) -> Any:
        array = self._arrays[name]
        if isinstance(array, np.ndarray):
            array = array.view()
            array.flags.writeable = False  # writes go through assign(), which marks them
        return array

    def names(self) -> list[str]:
        return list(self._arrays)

    def bind(self, value: Value) -> Any:
        """The array of a parameter or buffer: the graph's own array when it already has the
        compute dtype and is contiguous (bound by reference), else (or in a ``snapshot``
        state, unless the array is ``fresh``: ResNet-18's folded weights, 41 MB of new pages
        at every start) a converted copy. A name bound before (by another program sharing
        this state) keeps its array."""
        if value.name not in self._arrays:
            source = value.const.array
            dtype = compute_dtype(value.type.dtype, self.dtype)
            copy = self.snapshot and not value.const.fresh
            if isinstance(source, np.ndarray) and (copy or source.dtype != dtype
                                                   or not source.flags.c_contiguous):
                source = np.array(source, dtype=dtype, order="C")
            self._arrays[value.name] = self.memory.upload(source)
            self._versions[value.name] = 0
        bound = self._arrays[value.name]
        if tuple(bound.shape) != tuple(value.type.shape):
            raise LoweringError(f"the shared program state holds {value.name!r} with shape "
                                f"{list(bound.shape)}, but this graph's has {value.type}",
                                hint="share a state only between compilations of one network")
        return bound

    def _array(self, name: str) -> Any:
        if name not in self._arrays:
            raise LoweringError(f"the program state has no array named {name!r}",
                                hint=f"its names: {', '.join(self._arrays)}")
        return self._arrays[name]

    def mark_changed(self, names: Iterable[str] | None = None) -> None:
        """Record that these arrays (all when None) were written in place."""
        for name in self._arrays if names is None else names:
            self._array(name)
            self._versions[name] += 1
        self._stale = True

    def assign(self, name: str, values: Any) -> None:
        """Overwrite a parameter or buffer in place (same shape) and mark it changed."""
        target = self._array(name)
        values = np.asarray(values)
        if tuple(values.shape) != tuple(target.shape):
            raise LoweringError(f"cannot assign an array of shape {list(values.shape)} to "
                                f"{name!r} of shape {list(target.shape)}")
        self.memory.overwrite(target, values.astype(target.dtype, copy=False))
        self.mark_changed([name])

    def derive(self, key: Hashable, sources: Sequence[str], make: Callable[[], Any],
               remake: Callable[[Any], None] | None = None) -> Any:
        """The form ``make()`` computes from the named arrays, made once per state and remade
        in place when a source changes (``refresh``): by ``remake(value)`` where given (no
        temporary, for forms remade after every training step), else ``make()`` copied in."""
        if key not in self._derived:
            value = _map_arrays(self.memory.upload, make())
            self._derived[key] = _Derived(value, make, {s: self._versions[s] for s in sources},
                                          remake)
        return self._derived[key].value

    def keep(self, keys: Iterable[Hashable]) -> None:
        """Record that a chosen step reads these derived forms."""
        for key in keys:
            self._kept[key] = self._kept.get(key, 0) + 1

    def forget(self, keys: Iterable[Hashable]) -> None:
        """Drop the derived forms among ``keys`` that no chosen step reads (those only the
        losing candidates of an algorithm choice made): they would be remade for nothing
        after every training step."""
        for key in keys:
            if not self._kept.get(key):
                self._derived.pop(key, None)

    def derived_keys(self) -> set[Hashable]:
        return set(self._derived)

    def refresh(self) -> None:
        """Remake the derived forms whose sources changed since they were made (cheap when
        nothing changed: one flag)."""
        if not self._stale:
            return
        for derived in self._derived.values():
            if any(self._versions[s] != v for s, v in derived.seen.items()):
                if derived.remake is not None:
                    derived.remake(derived.value)
                else:
                    for target, values in zip(_as_tuple(derived.value),
                                              _as_tuple(derived.make())):
                        self.memory.overwrite(target, values)
                derived.seen = {s: self._versions[s] for s in derived.seen}
        self._stale = False


def _as_tuple(x: Any) -> tuple:
    return x if isinstance(x, tuple) else (x,)


def _map_arrays(fn: Callable[[np.ndarray], Any], x: Any) -> Any:
    return tuple(fn(a) for a in x) if isinstance(x, tuple) else fn(x)


class Builder:
    """What a lowering sees (see the module docstring). A device's subclass sets ``memory``
    (its arrays) and ``elapsed`` (its clock, for tuning)."""

    memory: DeviceMemory

    def __init__(self, graph: Graph, types: TypeMap, state: ProgramState, seed: int = 0,
                 tune: bool | str = True, in_place: bool = False) -> None:
        self.graph = graph
        self.types = types
        self.state = state
        self.dtype = state.dtype
        self.rng = np.random.default_rng(seed)
        self.tune = tune
        self.choices: dict[str, str] = {}
        self._scratch: dict[Hashable, Any] = {}
        self._local: dict[Hashable, Any] = {}  # forms derived from literals only
        self.run_time_forms: list[tuple[Any, Callable[[], Any]]] = []  # of the current node
        self._requested: set[Hashable] | None = None  # state forms asked for (choose_among)
        # node name -> its step, made by an earlier node's lowering that fused the two
        self.taken_over: dict[str, Step] = {}
        # id(output) -> the parameter or buffer it overwrites (in-place updates)
        self.aliases: dict[int, Value] = in_place_updates(graph) if in_place else {}
        # id(output) -> the value whose memory it reads in another shape (a reshape's)
        self.views: dict[int, Value] = self.view_outputs()
        # id(value) -> array shape, for the values a device keeps in a blocked layout
        self.blocked: dict[int, tuple[int, ...]] = self.blocked_values()
        self.plan = plan_buffers(graph, self._nbytes, late_reads=self._reads_of_views())
        self.arena = self.memory.allocate(self.plan.arena_bytes)
        self.arrays: dict[int, Any] = {}
        for value in (*graph.inputs, *(v for n in graph.nodes for v in n.outputs)):
            if id(value) in self.aliases:
                self.arrays[id(value)] = self.array(self.aliases[id(value)])
                continue
            if id(value) in self.views:
                self.arrays[id(value)] = self.arrays[id(self.views[id(value)])].reshape(
                    types[id(value)].shape)
                continue
            placement = self.plan.placements[id(value)]
            self.arrays[id(value)] = self.memory.view(
                self.arena, placement.offset, self.value_dtype(value),
                self.blocked.get(id(value), types[id(value)].shape))

    def late_reads(self) -> dict[int, int]:
        """``id(value) -> node index``: values a step reads later than their last reader
        does, the memory plan keeping them alive until then (``plan_buffers``). None here: a
        device whose lowerings fuse two nodes into the later one's step names their inputs."""
        return {}

    def view_outputs(self) -> dict[int, Value]:
        """``id(output) -> value``: outputs that are the memory of an earlier value (not a
        constant) in another shape, and need no step (``OpDef.reshapes``),
        the value being the first of a chain of them. None here: a device whose arrays
        reshape in place (``memory.view`` of an offset) says so."""
        return {}

    def blocked_values(self) -> dict[int, tuple[int, ...]]:
        """``id(value) -> array shape`` of the values whose arrays a device keeps in a
        blocked layout (the same bytes in another shape). None here."""
        return {}

    def _reads_of_views(self) -> dict[int, int]:
        """``late_reads`` and, for a value viewed in another shape, the last read of any of
        its views: its memory lives as long as they do."""
        reads = dict(self.late_reads())
        if self.views:
            ranges = live_ranges(self.graph)
            for view, source in self.views.items():
                reads[id(source)] = max(reads.get(id(source), -1), ranges[view][1])
        return reads

    def value_dtype(self, value: Value) -> np.dtype:
        return compute_dtype(self.types[id(value)].dtype, self.dtype)

    def _nbytes(self, value: Value) -> int:
        if id(value) in self.aliases or id(value) in self.views:
            return 0
        return self.types[id(value)].numel * self.value_dtype(value).itemsize

    def array(self, value: Value | None) -> Any:
        """The array of a value: its planned buffer, a literal, or the state's array."""
        if value is None:
            return None
        if id(value) not in self.arrays:  # a constant, bound on first use
            if value.const.kind in STATE_KINDS:
                self.arrays[id(value)] = self.state.bind(value)
            else:
                self.arrays[id(value)] = self.memory.upload(np.asarray(
                    value.const.array, dtype=self.value_dtype(value)))
        return self.arrays[id(value)]

    def derived(self, sources: Sequence[Value | None], kind: Hashable,
                make: Callable[[], Any], remake: Callable[[Any], None] | None = None) -> Any:
        """A form computed by ``make()`` from the arrays of ``sources`` (packed weights, a
        folded scale): shared through the state, and remade when a parameter or buffer among
        the sources changes; from literals alone it is made once. From a value computed at
        run time (a graph input, another node's output) it is remade by the node's step
        before each run (``lower_nodes`` wraps the step), in the order the forms were asked
        for, so a form may be made from another."""
        present = [v for v in sources if v is not None]
        for v in present:
            self.array(v)  # bind first, so make() reads the arrays the steps read
        if not all(v.is_constant for v in present):
            form = _map_arrays(lambda a: self.memory.upload(np.array(a, copy=True)), make())
            self.run_time_forms.append((form, make))
            return form
        named = [v.name for v in present if v.is_constant and v.const.kind in STATE_KINDS]
        if named:
            if self._requested is not None:
                self._requested.add((kind, *named))
            return self.state.derive((kind, *named), named, make, remake)
        key = (kind, *(id(v) for v in present))
        if key not in self._local:
            self._local[key] = _map_arrays(self.memory.upload, make())
        return self._local[key]

    def scratch(self, shape: tuple[int, ...], dtype: np.dtype | None = None,
                owner: Hashable = 0) -> Any:
        """Working memory shared by every step that asks for the same shape (``owner``
        separates the buffers of concurrent workers, or of steps that must not share)."""
        dtype = np.dtype(dtype or self.dtype)
        key = (tuple(shape), dtype.name, owner)
        if key not in self._scratch:
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            self._scratch[key] = self.memory.view(self.memory.allocate(max(1, nbytes)), 0,
                                                  dtype, tuple(shape))
        return self._scratch[key]

    def choose_among(self, node: Node, makers: dict[str, Callable[[], Step]]) -> Step:
        """``choose`` over candidates built on demand by ``makers``: only those it will try
        are built (the first alone without tuning), and the derived forms of the state that
        only losing candidates asked for are dropped, so nothing remakes them after a
        training step changes the weights."""
        if isinstance(self.tune, str):
            names = [self.tune if self.tune in makers else next(iter(makers))]
        elif len(makers) == 1 or not self.tune:
            names = [next(iter(makers))]
        else:
            remembered = self.recall(node)  # build only the earlier choice
            names = [remembered] if remembered in makers else list(makers)
        existing = self.state.derived_keys()
        steps, requested = {}, {}
        for name in names:
            self._requested = set()
            try:
                steps[name] = makers[name]()
            finally:
                requested[name], self._requested = self._requested, None
        step = self.choose(node, steps)
        won = requested[self.choices[node.name]]
        self.state.keep(won)
        self.state.forget(set().union(*requested.values()) - won - existing)
        return step

    def elapsed(self, step: Step) -> float:
        """Seconds one run of ``step`` takes on this device."""
        raise NotImplementedError

    def recall(self, node: Node) -> str | None:
        """The algorithm an earlier tuning chose for a node like this one (a device that
        remembers its choices overrides this), or None: time the candidates."""
        return None

    def remember(self, node: Node, name: str) -> None:
        """Keep the tuner's choice for nodes like this one (see ``recall``)."""

    def signature(self, node: Node) -> str:
        """What a node's algorithm choice depends on: its op, attributes, the types of its
        inputs and outputs and the compute dtype (not its weights' values)."""
        def types(values) -> str:
            return ",".join("-" if v is None else f"{self.types[id(v)].dtype}"
                            f"{list(self.types[id(v)].shape)}" for v in values)

        return (f"{node.op.name}|{node.attrs!r}|{types(node.inputs)}|{types(node.outputs)}|"
                f"{np.dtype(self.dtype).name}")

    def choose(self, node: Node, candidates: dict[str, Step]) -> Step:
        """Per-op algorithm choice by measurement: run each candidate (after a warm-up that
        also compiles or loads its kernels) and keep the fastest (``remember``ed: a device
        that ``recall``s it builds and times nothing the next time); recorded in ``choices``.
        ``tune=False`` takes the first candidate; ``tune="<name>"`` takes that algorithm where
        it applies and the first candidate elsewhere."""
        if isinstance(self.tune, str):
            name = self.tune if self.tune in candidates else next(iter(candidates))
        elif len(candidates) == 1 or not self.tune:
            name = next(iter(candidates))
        elif (remembered := self.recall(node)) in candidates:
            name = remembered
        else:
            for step in candidates.values():
                step()  # compiles or loads its kernels
            # interleaved rounds, best of each: robust to a machine whose speed drifts
            timings = dict.fromkeys(candidates, float("inf"))
            for _ in range(TUNING_ROUNDS):
                for key, step in candidates.items():
                    timings[key] = min(timings[key], self.elapsed(step))
            name = min(timings, key=timings.get)
            self.remember(node, name)
        self.choices[node.name] = name
        return candidates[name]


def lower_nodes(builder: Builder, kernels: KernelTable,
                progress: Callable[[int, int], None] | None = None) -> list[tuple[Node, Step]]:
    """Each node's step, from its lowering in ``kernels`` (a lowering may return None for a
    node that needs no work); a failure names the node. ``progress(done, total)`` is called
    after each node (lowering compiles and tunes its kernels: the slow part of compiling)."""
    kernels.check_supports(builder.graph)
    schedule = []
    for done, node in enumerate(builder.graph.nodes, 1):
        builder.run_time_forms = []
        try:
            step = kernels[node.op](builder, node)
        except CnnirError as e:
            raise e.with_context(node.describe()) from e
        if step is not None:
            step = _remaking(builder.run_time_forms, builder.memory, step)
            written = [builder.aliases[id(v)].name for v in node.outputs
                       if id(v) in builder.aliases]
            schedule.append((node, _marking(builder.state, written, step) if written else step))
        if progress is not None:
            progress(done, len(builder.graph.nodes))
    return schedule


def in_place_updates(graph: Graph) -> dict[int, Value]:
    """The outputs of update ops (``OpDef.updates``) that may be computed into the memory of
    the parameter or buffer they replace: ``id(output) -> that constant``. Only a constant
    bound through the state qualifies, only where the node is its last reader, and only
    when the constant is not itself a graph output."""
    last: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            if v is not None:
                last[id(v)] = i
    outputs = {id(v) for v in graph.outputs}
    aliases: dict[int, Value] = {}
    for i, node in enumerate(graph.nodes):
        for out, index in updated_inputs(node):
            target = node.inputs[index]
            if (target.is_constant and target.const.kind in STATE_KINDS
                    and last[id(target)] == i and id(target) not in outputs):
                aliases[id(node.outputs[out])] = target
    return aliases


def _marking(state: ProgramState, names: list[str], step: Step) -> Step:
    """``step`` followed by marking the state arrays it overwrote as changed (their derived
    forms are remade before the next run)."""

    def step_then_mark() -> None:
        step()
        state.mark_changed(names)

    return step_then_mark


def _remaking(forms: list[tuple[Any, Callable[[], Any]]], memory: DeviceMemory,
              step: Step) -> Step:
    """``step`` preceded by remaking the run-time derived forms it reads."""
    if not forms:
        return step

    def remake_then_step() -> None:
        for form, make in forms:
            for target, values in zip(_as_tuple(form), _as_tuple(make())):
                memory.overwrite(target, values)
        step()

    return remake_then_step


__all__ = ["HOST_MEMORY", "STATE_KINDS", "Builder", "DeviceMemory", "ProgramState", "Step",
           "compute_dtype", "in_place_updates", "lower_nodes"]
