"""The optimizers of ``torch.optim``, with its names, defaults and update rules
(docs/semantics.md §4): parameter groups, ``zero_grad``, ``state_dict``.

An optimizer here describes an update; it does not loop over arrays itself. Its rule is an IR
op (``cnnir.ops.optim``) that ``cnnir.compile_train`` places after the generated backward
pass, and ``step()`` runs the same op on gradients from ``value_and_grad`` or ``p.grad``.
The host keeps what PyTorch keeps in Python: the options of each group and the step counts,
from which it computes each parameter's row of run-time scalars (``hyper_row``).

    >>> opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    >>> loss, grads = vg(x, y)
    >>> opt.step(grads)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from cnnir.errors import CnnirError, OptionError
from cnnir.frontend.module import Parameter
from cnnir.ops import OpDef
from cnnir.ops import optim as optim_ops


def check(condition: bool, message: str) -> None:
    if not condition:
        raise OptionError(message)


class Optimizer:
    """The base class: ``param_groups`` (dicts of ``"params"`` and every option), ``state``
    (per parameter: the ``step`` count and the named state arrays, as PyTorch), ``defaults``.

    A subclass names its update ``op`` and says which state a group needs (``slots``), the
    op's attributes (``attrs``) and the scalars of one step (``hyper_row``)."""

    op: OpDef
    eager_state = False  # Adagrad makes its state in the constructor; the rest on first step

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Parameter, dict[str, Any]] = {}
        self._slots: dict[Parameter, dict[str, np.ndarray]] = {}
        self._programs: dict[tuple, Any] = {}
        groups = list(params)
        if not groups:
            raise OptionError(f"{type(self).__name__} got an empty parameter list",
                              hint="pass model.parameters() of a model with parameters")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])

    # -- groups --------------------------------------------------------------------------
    def add_param_group(self, group: dict[str, Any]) -> None:
        if not isinstance(group, dict):
            raise OptionError(f"a parameter group must be a dict, got {type(group).__name__}")
        params = group["params"]
        params = [params] if isinstance(params, Parameter) else list(params)
        for p in params:
            if not isinstance(p, Parameter):
                raise OptionError(f"{type(self).__name__} can only optimize Parameters, got "
                                  f"{type(p).__name__}", hint="pass model.parameters()")
        taken = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or taken & {id(p) for p in params}:
            raise OptionError("some parameters appear in more than one parameter group")
        unknown = sorted(set(group) - set(self.defaults) - {"params", "initial_lr"})
        if unknown:
            raise OptionError(f"unknown {type(self).__name__} options {unknown}",
                              hint=f"its options: {sorted(self.defaults)}")
        full = {**self.defaults, **group, "params": params}
        self.check_group(full)
        self.param_groups.append(full)
        if self.eager_state:
            for p in params:
                self._initial_state(p, full)

    def check_group(self, group: dict[str, Any]) -> None:
        check(group["lr"] >= 0, f"Invalid learning rate: {group['lr']}")
        check(group.get("weight_decay", 0) >= 0,
              f"Invalid weight_decay value: {group.get('weight_decay')}")

    def group_of(self, p: Parameter) -> dict[str, Any]:
        for group in self.param_groups:
            for q in group["params"]:
                if q is p:
                    return group
        raise CnnirError(f"{p!r} is not optimized by this {type(self).__name__}")

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad[...] = 0

    # -- what a subclass says ---------------------------------------------------------
    def slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The state arrays a parameter of ``group`` needs, in the order of the op's inputs
        (the op's optional state that the group's options leave out is absent)."""
        raise NotImplementedError

    def attrs(self, group: dict[str, Any], row: int) -> Any:
        raise NotImplementedError

    def hyper_row(self, group: dict[str, Any], state: dict[str, Any]) -> tuple[float, ...]:
        """The run-time scalars of the next step of a parameter whose state is ``state``."""
        raise NotImplementedError

    def initial_value(self, group: dict[str, Any], slot: str) -> float:
        return 0.0

    # -- state ---------------------------------------------------------------------------
    def slot_arrays(self, p: Parameter) -> dict[str, np.ndarray]:
        """The state arrays of ``p`` its group's options need, made (at their initial value)
        on first use. The compiled update reads and writes these very arrays."""
        group = self.group_of(p)
        arrays = self._slots.setdefault(p, {})
        for slot in self.slots(group):
            if slot not in arrays or arrays[slot].dtype != p.data.dtype:
                arrays[slot] = np.full(p.shape, self.initial_value(group, slot), p.data.dtype)
        return {slot: arrays[slot] for slot in self.slots(group)}

    def _initial_state(self, p: Parameter, group: dict[str, Any]) -> None:
        self.state[p] = {"step": np.zeros((), np.float32), **self.slot_arrays(p)}

    def stepped(self, params: Iterable[Parameter]) -> None:
        """Record that one update of ``params`` ran: their state now holds its arrays and
        (for every optimizer but SGD) the step count goes up by one."""
        for p in params:
            state = self.state.setdefault(p, {})
            if not isinstance(self, SGD):
                state["step"] = np.asarray(self.steps(p) + 1, np.float32)
            state.update(self.slot_arrays(p))

    def steps(self, p: Parameter) -> int:
        return int(self.state.get(p, {}).get("step", 0))

    def hyper(self, params: list[Parameter], dtype: np.dtype) -> np.ndarray:
        """The ``[len(params), width]`` matrix of the next step's scalars."""
        rows = [self.hyper_row(self.group_of(p), self.state.get(p, {})) for p in params]
        return np.array(rows, dtype=dtype).reshape(len(params), len(self.op.extra["hyper"]))

    def signature(self, params: list[Parameter]) -> tuple:
        """What the compiled update depends on besides the run-time scalars: per parameter,
        its array, its state arrays and the attributes of its op."""
        return tuple((id(p.data), tuple(id(a) for a in self.slot_arrays(p).values()),
                      self.attrs(self.group_of(p), row))
                     for row, p in enumerate(params))

    def state_dict(self) -> dict[str, Any]:
        """PyTorch's layout: ``{"state": {index: {...}}, "param_groups": [{..., "params":
        [indices]}]}``, parameters numbered in group order; arrays are copies."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            ids = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[id(p)]: {k: np.array(v, copy=True) for k, v in s.items()}
                 for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Options and state from ``state_dict()`` of an optimizer over the same parameters;
        state arrays are copied into this optimizer's own (so compiled steps see them)."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(g["params"]) != len(mine["params"])
                for g, mine in zip(groups, self.param_groups)):
            raise OptionError("loaded state dict has a different number of parameter groups "
                              "or parameters per group than this optimizer")
        params = [p for g in self.param_groups for p in g["params"]]
        for group, saved in zip(self.param_groups, groups):
            group.update({k: (tuple(v) if k == "betas" else v) for k, v in saved.items()
                          if k != "params"})
        self.state = {}
        for index, saved in state_dict["state"].items():
            p = params[int(index)]
            arrays = self.slot_arrays(p)
            state = {}
            for key, value in saved.items():
                value = np.asarray(value)
                if key in arrays:
                    if value.shape != p.shape:
                        raise OptionError(f"state {key!r} of parameter {index} has shape "
                                          f"{list(value.shape)}, the parameter {list(p.shape)}")
                    np.copyto(arrays[key], value, casting="unsafe")
                    state[key] = arrays[key]
                else:
                    state[key] = np.array(value, np.float32 if key == "step" else None)
            self.state[p] = state

    # -- the update ------------------------------------------------------------------------
    def step(self, grads: Mapping[Any, np.ndarray] | None = None,
             backend: str = "numba") -> None:
        """One update of every parameter that has a gradient: ``grads`` from
        ``value_and_grad`` (or keyed by Parameter), else each parameter's ``.grad``. A
        parameter without a gradient is skipped entirely: no weight decay, no state change,
        no step count (PyTorch's rule for ``grad is None``)."""
        from cnnir.optim.update import UpdateProgram

        pairs = self._gradients(grads)
        if not pairs:
            return
        params = [p for p, _ in pairs]
        key = (backend, self.signature(params))
        if key not in self._programs:
            self._programs = {key: UpdateProgram(self, params, backend)}
        self._programs[key]([g for _, g in pairs])

    def _gradients(self, grads: Mapping[Any, np.ndarray] | None) -> list[tuple[Parameter, Any]]:
        owners = getattr(grads, "owners", {})
        by_param = {}
        if grads is not None:
            for key, g in grads.items():
                p = owners.get(key, key) if isinstance(key, str) else key
                if not isinstance(p, Parameter):
                    raise CnnirError(f"step() got a gradient for {key!r}, which names no "
                                     f"parameter", hint="pass the gradients value_and_grad "
                                                        "returns, or a dict keyed by Parameter")
                by_param[id(p)] = g
        pairs = []
        for group in self.param_groups:
            for p in group["params"]:
                g = by_param.get(id(p)) if grads is not None else p.grad
                if g is not None:
                    pairs.append((p, g))
        return pairs


class SGD(Optimizer):
    """``torch.optim.SGD``: momentum's buffer starts as the first gradient (no dampening)."""

    op = optim_ops.sgd_update

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        check(group["momentum"] >= 0, f"Invalid momentum value: {group['momentum']}")
        check(not group["nesterov"] or (group["momentum"] > 0 and group["dampening"] == 0),
              "Nesterov momentum requires a momentum and zero dampening")

    def slots(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def attrs(self, group, row):
        return optim_ops.SGDAttrs(row, bool(group["nesterov"]))

    def hyper_row(self, group, state):
        first = "momentum_buffer" not in state
        return (group["lr"], group["momentum"], group["dampening"], group["weight_decay"],
                float(first))


class Adagrad(Optimizer):
    """``torch.optim.Adagrad``: the learning rate decays as lr/(1 + (t−1)·lr_decay)."""

    op = optim_ops.adagrad_update
    eager_state = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float = 0,
                 eps: float = 1e-10) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps))

    def check_group(self, group):
        super().check_group(group)
        check(group["lr_decay"] >= 0, f"Invalid lr_decay value: {group['lr_decay']}")
        check(group["initial_accumulator_value"] >= 0,
              f"Invalid initial_accumulator_value value: {group['initial_accumulator_value']}")
        check(group["eps"] >= 0, f"Invalid epsilon value: {group['eps']}")

    def slots(self, group):
        return ("sum",)

    def initial_value(self, group, slot):
        return group["initial_accumulator_value"]

    def attrs(self, group, row):
        return optim_ops.AdagradAttrs(row)

    def hyper_row(self, group, state):
        t = int(state.get("step", 0)) + 1
        clr = group["lr"] / (1 + (t - 1) * group["lr_decay"])
        return (clr, group["weight_decay"], group["eps"])


class Adadelta(Optimizer):
    """``torch.optim.Adadelta`` (lr=1.0; eps inside both roots)."""

    op = optim_ops.adadelta_update

    def __init__(self, params: Iterable[Any], lr: float = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: float = 0) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay))

    def check_group(self, group):
        super().check_group(group)
        check(0.0 <= group["rho"] <= 1.0, f"Invalid rho value: {group['rho']}")
        check(group["eps"] >= 0, f"Invalid epsilon value: {group['eps']}")

    def slots(self, group):
        return ("square_avg", "acc_delta")

    def attrs(self, group, row):
        return optim_ops.AdadeltaAttrs(row)

    def hyper_row(self, group, state):
        return (group["lr"], group["rho"], group["eps"], group["weight_decay"])


class RMSprop(Optimizer):
    """``torch.optim.RMSprop`` (eps outside the root; centered subtracts the mean's square)."""

    op = optim_ops.rmsprop_update

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0, momentum: float = 0,
                 centered: bool = False) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def check_group(self, group):
        super().check_group(group)
        check(group["momentum"] >= 0, f"Invalid momentum value: {group['momentum']}")
        check(group["alpha"] >= 0, f"Invalid alpha value: {group['alpha']}")
        check(group["eps"] >= 0, f"Invalid epsilon value: {group['eps']}")

    def slots(self, group):
        return ("square_avg", *(("momentum_buffer",) if group["momentum"] > 0 else ()),
                *(("grad_avg",) if group["centered"] else ()))

    def attrs(self, group, row):
        return optim_ops.RMSpropAttrs(row, bool(group["centered"]))

    def hyper_row(self, group, state):
        return (group["lr"], group["alpha"], group["eps"], group["weight_decay"],
                group["momentum"])


class Adam(Optimizer):
    """``torch.optim.Adam``: L2 weight decay joins the gradient; eps after the bias
    correction; amsgrad keeps the maximum of the uncorrected second moment."""

    op = optim_ops.adam_update
    decoupled = False

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad))

    def check_group(self, group):
        super().check_group(group)
        beta1, beta2 = group["betas"]
        check(group["eps"] >= 0, f"Invalid epsilon value: {group['eps']}")
        check(0.0 <= beta1 < 1.0, f"Invalid beta parameter at index 0: {beta1}")
        check(0.0 <= beta2 < 1.0, f"Invalid beta parameter at index 1: {beta2}")

    def slots(self, group):
        return ("exp_avg", "exp_avg_sq", *(("max_exp_avg_sq",) if group["amsgrad"] else ()))

    def attrs(self, group, row):
        return optim_ops.AdamAttrs(row, bool(group["amsgrad"]), self.decoupled)

    def hyper_row(self, group, state):
        t = int(state.get("step", 0)) + 1
        beta1, beta2 = group["betas"]
        step_size = group["lr"] / (1 - beta1 ** t)
        bc2_sqrt = (1 - beta2 ** t) ** 0.5
        return (group["lr"], beta1, beta2, group["eps"], group["weight_decay"], step_size,
                bc2_sqrt)


class AdamW(Adam):
    """``torch.optim.AdamW``: decoupled weight decay, ``p *= 1 − lr·wd`` before the moments
    (weight_decay defaults to 1e-2)."""

    decoupled = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


def l1_penalty(model: Any, weight: float) -> Any:
    """``weight · Σ|w|`` over the model's weights, leaving out biases and the parameters of
    normalization layers (the common choice for L1 regularization), as a traced term to add
    to the loss: ``lambda out, y: F.cross_entropy(out, y) + optim.l1_penalty(model, 1e-4)``.
    Its gradient ``weight·sign(w)`` joins the data gradient before the optimizer's rule."""
    total = None
    for p in regularized(model):
        term = p.abs().sum()
        total = term if total is None else total + term
    if total is None:
        raise CnnirError(f"{type(model).__name__} has no weights to regularize")
    return total * weight


def regularized(model: Any) -> list[Parameter]:
    """The weights of ``model``: every parameter named ``weight`` of a module that is not a
    normalization layer (BatchNorm, LayerNorm, GroupNorm, ...)."""
    found = []
    for _, module in model.named_modules():
        if "Norm" in type(module).__name__:
            continue
        p = module._parameters.get("weight")
        if p is not None and p.requires_grad and all(p is not q for q in found):
            found.append(p)
    return found


__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop",
           "l1_penalty", "regularized"]
