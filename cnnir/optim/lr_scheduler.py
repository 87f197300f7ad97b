"""Learning-rate schedulers, as ``torch.optim.lr_scheduler``.

The ``step()`` contract is PyTorch's. The constructor records each group's ``initial_lr``
(``base_lrs``), sets ``last_epoch = -1`` and calls ``step()`` once, so right after construction
``last_epoch == 0`` and every group holds lr(0). Each later ``step()`` adds one to
``last_epoch`` and writes ``get_lr()`` into the parameter groups: call it after
``optimizer.step()``, once per epoch (``CyclicLR`` and ``OneCycleLR``: once per batch).

Where PyTorch's ``get_lr()`` is recursive, so is this one: it multiplies the group's current lr,
so schedulers chained on one optimizer compose multiplicatively. With nothing else touching
the lr, the lr at epoch e is

    StepLR             base·γ^⌊e/step_size⌋
    MultiStepLR        base·γ^(number of milestones ≤ e)
    ExponentialLR      base·γ^e
    CosineAnnealingLR  η_min + (base − η_min)·(1 + cos(π·e/T_max))/2   (not clamped after T_max)
    LinearLR           base·(s + (f − s)·min(e, T)/T)

``CyclicLR`` and ``OneCycleLR`` compute the lr from ``last_epoch`` alone and also set each
group's momentum (``betas[0]`` for Adam-like optimizers). ``ReduceLROnPlateau`` has no initial
step; ``step(metric)`` divides the lr once the metric stops improving.

    >>> opt = optim.SGD(params, lr=0.1, momentum=0.9)
    >>> sched = optim.lr_scheduler.StepLR(opt, step_size=30)
    >>> for epoch in range(90):
    ...     train_one_epoch(opt)
    ...     sched.step()
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from cnnir.errors import OptionError

if TYPE_CHECKING:
    from cnnir.optim.optimizer import Optimizer

__all__ = [
    "CosineAnnealingLR", "CyclicLR", "ExponentialLR", "LRScheduler", "LinearLR", "MultiStepLR",
    "OneCycleLR", "ReduceLROnPlateau", "StepLR",
]

Floats = float | Sequence[float]


def _check_optimizer(optimizer: Any) -> None:
    if not hasattr(optimizer, "param_groups"):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")


def _per_group(name: str, optimizer: Optimizer, value: Floats) -> list[float]:
    """One value per parameter group: a scalar is repeated, a list must match the groups."""
    groups = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != groups:
            raise OptionError(f"{name} must have the same length as optimizer.param_groups. "
                             f"{name} has {len(value)} values, param_groups has {groups}.")
        return list(value)
    return [value] * groups


def _require_positive(name: str, value: float) -> None:
    if value <= 0:
        raise OptionError(f"Expected positive {name}, but got {value}")


def _set_momentum(group: dict[str, Any], use_beta1: bool, value: float) -> None:
    if use_beta1:
        group["betas"] = (value, *group["betas"][1:])
    else:
        group["momentum"] = value


def _init_momentum(optimizer: Optimizer, base_momentum: Floats, max_momentum: Floats,
                   resuming: bool) -> tuple[bool, list[float], list[float]]:
    """The momentum bounds of a cycling scheduler; a fresh start sets every group's momentum
    to its maximum. An optimizer without momentum or betas cannot cycle; SGD always has the
    key, so SGD(momentum=0) gets momentum switched on."""
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise OptionError(
            "optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
    use_beta1 = "betas" in optimizer.defaults
    bases = _per_group("base_momentum", optimizer, base_momentum)
    maxes = _per_group("max_momentum", optimizer, max_momentum)
    if not resuming:
        for group, low, high in zip(optimizer.param_groups, bases, maxes):
            _set_momentum(group, use_beta1, high)
            group["max_momentum"], group["base_momentum"] = high, low
    return use_beta1, bases, maxes


class LRScheduler:
    """Base class: subclasses define ``get_lr()``, the lrs for ``last_epoch`` (already
    incremented). ``last_epoch != -1`` resumes a schedule; every group then needs its
    ``initial_lr``, and the constructor's step keeps the current lrs of recursive schedules.
    ``state_dict()`` is a copy of every attribute except the optimizer."""

    _not_state: tuple[str, ...] = ("optimizer",)

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        for i, group in enumerate(optimizer.param_groups):
            if "initial_lr" not in group:
                raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] "
                               "when resuming an optimizer")
        self.base_lrs: list[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._is_initial = True  # recursive schedules keep the lr they find (a resume)
        self.step()
        self._is_initial = False

    def get_lr(self) -> list[float]:
        """The lr of each group at ``last_epoch``; ``step()`` calls it."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch (one batch for the cyclic schedules) and set the groups' lrs."""
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = self._current_lrs()

    def get_last_lr(self) -> list[float]:
        """The lrs the last ``step()`` set (the constructor's, before any)."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy({key: value for key, value in self.__dict__.items()
                              if key not in self._not_state})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(copy.deepcopy(state_dict))

    def _current_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` epochs.

    >>> sched = StepLR(opt, step_size=30, gamma=0.1)   # 0.05, then 0.005 from epoch 30
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        _require_positive("step_size", step_size)
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]


class MultiStepLR(LRScheduler):
    """Multiply the lr by ``gamma`` at each milestone epoch (a repeated milestone counts
    twice).

    >>> sched = MultiStepLR(opt, milestones=[30, 80], gamma=0.1)
    """

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.milestones = sorted(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        hits = self.milestones.count(self.last_epoch)
        if not hits:
            return self._current_lrs()
        return [lr * self.gamma ** hits for lr in self._current_lrs()]


class ExponentialLR(LRScheduler):
    """Multiply the lr by ``gamma`` every epoch.

    >>> sched = ExponentialLR(opt, gamma=0.95)
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self._is_initial:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the base lr down to ``eta_min`` over ``T_max`` epochs, computed
    recursively from the current lr. Past ``T_max`` it climbs back along the same cosine
    (period ``2·T_max``) instead of staying at ``eta_min``.

    >>> sched = CosineAnnealingLR(opt, T_max=100, eta_min=1e-5)
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        _require_positive("T_max", T_max)
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        e, period, low = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current_lrs()
        if (e - 1 - period) % (2 * period) == 0:
            # The previous lr sat at a trough, where the ratio below would divide by zero.
            rise = 1 - math.cos(math.pi / period)
            return [lr + (base - low) * rise / 2
                    for lr, base in zip(self._current_lrs(), self.base_lrs)]
        ratio = (1 + math.cos(math.pi * e / period)) / (1 + math.cos(math.pi * (e - 1) / period))
        return [ratio * (lr - low) + low for lr in self._current_lrs()]


class LinearLR(LRScheduler):
    """Scale the lr by a factor moving linearly from ``start_factor`` to ``end_factor`` over
    ``total_iters`` epochs, then keep it.

    >>> sched = LinearLR(opt, start_factor=0.1, total_iters=5)   # a five-epoch warm-up
    """

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5, last_epoch: int = -1) -> None:
        if not 0 < start_factor <= 1:
            raise OptionError("Starting multiplicative factor expected to be greater than 0 "
                             f"and less or equal to 1, but got {start_factor}")
        if not 0 <= end_factor <= 1:
            raise OptionError("Ending multiplicative factor expected to be between 0 and 1, "
                             f"but got {end_factor}")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return [lr * self.start_factor for lr in self._current_lrs()]
        if self._is_initial or self.last_epoch > self.total_iters:
            return self._current_lrs()
        slope = self.end_factor - self.start_factor
        previous = self.total_iters * self.start_factor + (self.last_epoch - 1) * slope
        return [lr * (1.0 + slope / previous) for lr in self._current_lrs()]


class OneCycleLR(LRScheduler):
    """The 1cycle policy, stepped once per batch: the lr rises from ``max_lr/div_factor`` to
    ``max_lr`` over the first ``pct_start`` of ``total_steps`` (or ``epochs·steps_per_epoch``),
    then falls to ``max_lr/div_factor/final_div_factor``; momentum moves the opposite way
    between ``max_momentum`` and ``base_momentum``. ``three_phase`` mirrors the rise back to
    the initial lr before the final fall. Each phase is a cosine (``anneal_strategy='cos'``)
    or a straight line (``'linear'``). Stepping past ``total_steps`` raises ValueError.

    >>> sched = OneCycleLR(opt, max_lr=0.1, epochs=10, steps_per_epoch=len(batches))
    """

    def __init__(self, optimizer: Optimizer, max_lr: Floats, total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None,
                 pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum: Floats = 0.85,
                 max_momentum: Floats = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        self.total_steps = _total_steps(total_steps, epochs, steps_per_epoch)
        if not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
            raise OptionError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise OptionError("anneal_strategy must be one of 'cos' or 'linear', "
                             f"instead got {anneal_strategy}")
        self._schedule_phases = _one_cycle_phases(self.total_steps, pct_start, three_phase)
        self._anneal_func_type = anneal_strategy
        max_lrs = _per_group("max_lr", optimizer, max_lr)
        if last_epoch == -1:
            for group, top in zip(optimizer.param_groups, max_lrs):
                group["initial_lr"] = top / div_factor
                group["max_lr"] = top
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1, _, _ = _init_momentum(optimizer, base_momentum, max_momentum,
                                                  last_epoch != -1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        if step > self.total_steps:
            raise OptionError(f"Tried to step {step} times. The specified number of total steps "
                             f"is {self.total_steps}")
        phase, pct = self._phase_at(step)
        lrs = []
        for group in self.optimizer.param_groups:
            lrs.append(self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct))
            if self.cycle_momentum:
                momentum = self._anneal(group[phase["start_momentum"]],
                                        group[phase["end_momentum"]], pct)
                _set_momentum(group, self.use_beta1, momentum)
        return lrs

    def _phase_at(self, step: int) -> tuple[dict[str, Any], float]:
        """The phase holding ``step`` and how far into it (0 to 1) the step is."""
        start = 0.0
        for phase in self._schedule_phases[:-1]:
            if step <= phase["end_step"]:
                return phase, (step - start) / (phase["end_step"] - start)
            start = phase["end_step"]
        last = self._schedule_phases[-1]
        return last, (step - start) / (last["end_step"] - start)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start


def _total_steps(total_steps: int | None, epochs: int | None,
                 steps_per_epoch: int | None) -> int:
    if total_steps is not None:
        if not isinstance(total_steps, int) or total_steps <= 0:
            raise OptionError(f"Expected positive integer total_steps, but got {total_steps}")
        return total_steps
    if epochs is None or steps_per_epoch is None:
        raise OptionError("You must define either total_steps OR (epochs AND steps_per_epoch)")
    for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
        if not isinstance(value, int) or value <= 0:
            raise OptionError(f"Expected positive integer {name}, but got {value}")
    return epochs * steps_per_epoch


def _one_cycle_phases(total: int, pct_start: float, three_phase: bool) -> list[dict[str, Any]]:
    """Each phase ends at ``end_step`` and anneals between the group keys it names."""
    def phase(end_step: float, lrs: tuple[str, str], momenta: tuple[str, str]) -> dict[str, Any]:
        return {"end_step": end_step, "start_lr": lrs[0], "end_lr": lrs[1],
                "start_momentum": momenta[0], "end_momentum": momenta[1]}

    rise = phase(float(pct_start * total) - 1, ("initial_lr", "max_lr"),
                 ("max_momentum", "base_momentum"))
    if not three_phase:
        return [rise, phase(total - 1, ("max_lr", "min_lr"), ("base_momentum", "max_momentum"))]
    return [rise,
            phase(float(2 * pct_start * total) - 2, ("max_lr", "initial_lr"),
                  ("base_momentum", "max_momentum")),
            phase(total - 1, ("initial_lr", "min_lr"), ("max_momentum", "max_momentum"))]


class CyclicLR(LRScheduler):
    """Cyclical learning rates, stepped once per batch: the lr climbs from ``base_lr`` to
    ``max_lr`` in ``step_size_up`` steps and back in ``step_size_down`` (default: the same),
    the amplitude scaled by ``mode``: 'triangular' (1), 'triangular2' (halved every cycle) or
    'exp_range' (``gamma**iteration``), or by ``scale_fn`` of the cycle number or iteration
    (``scale_mode``). The constructor overwrites each group's lr with ``base_lr``.

    With ``cycle_momentum`` (the default) momentum, or Adam's ``betas[0]``, moves inversely
    between ``max_momentum`` and ``base_momentum``. This switches momentum on for
    ``SGD(momentum=0)``; pass ``cycle_momentum=False`` to keep it off.

    >>> sched = CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=2000)
    """

    _not_state = ("optimizer", "_scale_fn_custom")

    def __init__(self, optimizer: Optimizer, base_lr: Floats, max_lr: Floats,
                 step_size_up: int = 2000, step_size_down: int | None = None,
                 mode: str = "triangular", gamma: float = 1.0,
                 scale_fn: Callable[[float], float] | None = None, scale_mode: str = "cycle",
                 cycle_momentum: bool = True, base_momentum: Floats = 0.8,
                 max_momentum: Floats = 0.9, last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        base_lrs = _per_group("base_lr", optimizer, base_lr)
        if last_epoch == -1:
            for group, lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr
        self.max_lrs = _per_group("max_lr", optimizer, max_lr)
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise OptionError("mode is invalid and scale_fn is None")
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        if scale_fn is None:
            scale_mode = "iterations" if mode == "exp_range" else "cycle"
        self.scale_mode = scale_mode
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1, self.base_momentums, self.max_momentums = _init_momentum(
                optimizer, base_momentum, max_momentum, last_epoch != -1)
        super().__init__(optimizer, last_epoch)
        # As in PyTorch, set after the constructor's step (which used the groups' initial_lr).
        self.base_lrs = base_lrs

    def scale_fn(self, x: float) -> float:
        """The amplitude scale at cycle number or iteration ``x``."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma ** x

    def get_lr(self) -> list[float]:
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            height = x / self.step_ratio
        else:
            height = (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        lrs = [base + (top - base) * height * scale
               for base, top in zip(self.base_lrs, self.max_lrs)]
        if self.cycle_momentum:
            for group, low, high in zip(self.optimizer.param_groups, self.base_momentums,
                                        self.max_momentums):
                _set_momentum(group, self.use_beta1, high - (high - low) * height * scale)
        return lrs


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lr by ``factor`` once the metric passed to ``step(metric)`` has not improved
    for more than ``patience`` steps, then wait ``cooldown`` steps before counting again.
    Improvement means beating the best value by ``threshold`` (relative or absolute, per
    ``threshold_mode``); the lr never goes below ``min_lr`` (a scalar or one per group) and
    changes smaller than ``eps`` are skipped. There is no initial step; ``base_lrs`` records
    the lrs at construction.

    >>> sched = ReduceLROnPlateau(opt, mode="min", patience=5)
    >>> sched.step(validation_loss)
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: Floats = 0, eps: float = 1e-8) -> None:
        if factor >= 1.0:
            raise OptionError("Factor should be < 1.0.")
        _check_optimizer(optimizer)
        if mode not in ("min", "max"):
            raise OptionError(f"mode {mode} is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise OptionError(f"threshold mode {threshold_mode} is unknown!")
        self.optimizer = optimizer
        groups = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != groups:
                raise OptionError(f"expected {groups} min_lrs, got {len(min_lr)}")
            self.default_min_lr, self.min_lrs = None, list(min_lr)
        else:
            self.default_min_lr, self.min_lrs = min_lr, [min_lr] * groups
        self.mode, self.factor, self.patience = mode, factor, patience
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.cooldown, self.eps = cooldown, eps
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0
        self.last_epoch = 0
        self.base_lrs = self._current_lrs()
        self._last_lr = self._current_lrs()

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def step(self, metrics: float) -> None:
        """Record one value of the monitored metric (e.g. the validation loss)."""
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during the cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._last_lr = self._current_lrs()

    def _is_better(self, a: float) -> bool:
        best, threshold = self.best, self.threshold
        if self.mode == "min":
            return a < (best * (1.0 - threshold) if self.threshold_mode == "rel"
                        else best - threshold)
        return a > (best * (threshold + 1.0) if self.threshold_mode == "rel"
                    else best + threshold)

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(self.min_lrs) != len(groups):
            if self.default_min_lr is None:
                raise RuntimeError(f"the optimizer has {len(groups)} param groups but min_lr "
                                   f"was given for {len(self.min_lrs)}; set min_lrs to match")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, min_lr)
            if old - new > self.eps:
                group["lr"] = new
