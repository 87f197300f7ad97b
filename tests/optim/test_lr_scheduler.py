"""cnnir.optim.lr_scheduler against float64 references written here from the closed forms and
pseudo-code of docs/semantics.md §5 (they never call the implementation), over 60 steps with a
relative tolerance of 1e-12, on two parameter groups; PyTorch's traps (CyclicLR's momentum
cycling, the unclamped cosine); state_dict round trips through JSON; chaining; bad arguments."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from cnnir import optim
from cnnir.frontend.module import Parameter
from cnnir.optim import lr_scheduler

STEPS = 60
RTOL = 1e-12
LRS = (0.1, 0.05)  # the lrs of the two parameter groups


def two_groups(cls: type = optim.SGD, **options: Any) -> Any:
    return cls([{"params": [Parameter((3,))], "lr": LRS[0]},
                {"params": [Parameter((2,))], "lr": LRS[1]}], **options)


def momentum_of(group: dict[str, Any]) -> float:
    """Momentum, or beta1 for Adam; NaN for an optimizer with neither (Adagrad)."""
    return group["betas"][0] if "betas" in group else group.get("momentum", math.nan)


def history(opt: Any, sched: Any, steps: int = STEPS) -> tuple[list[list[float]], ...]:
    """The groups' lrs and momenta (beta1 for Adam) right after construction and after each
    of ``steps`` steps."""
    lrs, momenta = [], []
    for i in range(steps + 1):
        if i:
            sched.step()
        lrs.append([g["lr"] for g in opt.param_groups])
        momenta.append([momentum_of(g) for g in opt.param_groups])
    return lrs, momenta


def trajectory(opt: Any, sched: Any, steps: int = STEPS) -> list[list[float]]:
    return history(opt, sched, steps)[0]


def assert_close(got: list[list[float]], want: list[list[float]]) -> None:
    assert len(got) == len(want)
    for e, (got_row, want_row) in enumerate(zip(got, want)):
        assert len(got_row) == len(want_row)
        for g, w in zip(got_row, want_row):
            assert abs(g - w) <= RTOL * abs(w), f"epoch {e}: got {g!r}, want {w!r}"


def reference(lr_at: Callable[[float, int], float], steps: int = STEPS,
              bases: tuple[float, ...] = LRS) -> list[list[float]]:
    return [[lr_at(base, e) for base in bases] for e in range(steps + 1)]


# -- the recursive schedules against their closed forms ------------------------------------

@pytest.mark.parametrize("step_size, gamma", [(1, 0.5), (7, 0.1), (10, 0.9), (25, 2.0)])
def test_step_lr(step_size: int, gamma: float) -> None:
    opt = two_groups()
    got = trajectory(opt, lr_scheduler.StepLR(opt, step_size, gamma=gamma))
    assert_close(got, reference(lambda b, e: b * gamma ** (e // step_size)))


def test_step_lr_default_gamma_is_a_tenth() -> None:
    opt = two_groups()
    got = trajectory(opt, lr_scheduler.StepLR(opt, step_size=3), steps=7)
    assert_close(got, reference(lambda b, e: b * 0.1 ** (e // 3), steps=7))


@pytest.mark.parametrize("milestones, gamma", [([5, 20, 33], 0.5), ([33, 5, 20, 20], 0.1),
                                               ([0, 59], 0.3)])
def test_multi_step_lr(milestones: list[int], gamma: float) -> None:
    """A repeated milestone decays twice; the order given does not matter; a milestone at
    epoch 0 already applies at construction."""
    opt = two_groups()
    got = trajectory(opt, lr_scheduler.MultiStepLR(opt, milestones, gamma=gamma))
    assert_close(got, reference(lambda b, e: b * gamma ** sum(m <= e for m in milestones)))


@pytest.mark.parametrize("gamma", [0.95, 0.5, 1.01])
def test_exponential_lr(gamma: float) -> None:
    opt = two_groups()
    got = trajectory(opt, lr_scheduler.ExponentialLR(opt, gamma))
    assert_close(got, reference(lambda b, e: b * gamma ** e))


def cosine(base: float, e: int, period: int, low: float) -> float:
    return low + (base - low) * (1 + math.cos(math.pi * e / period)) / 2


@pytest.mark.parametrize("period, low", [(10, 0.001), (7, 0.0), (25, 0.01), (60, 0.0), (1, 0.02)])
def test_cosine_annealing_follows_the_cosine_past_t_max(period: int, low: float) -> None:
    opt = two_groups()
    got = trajectory(opt, lr_scheduler.CosineAnnealingLR(opt, T_max=period, eta_min=low))
    assert_close(got, reference(lambda b, e: cosine(b, e, period, low)))


def test_cosine_annealing_semantics_vector() -> None:
    opt = optim.SGD([Parameter((3,))], lr=0.1)
    got = trajectory(opt, lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=0.001), 20)
    assert got[10][0] == pytest.approx(0.001, rel=RTOL)
    assert got[15][0] == pytest.approx(0.0505, rel=RTOL)
    assert got[20][0] == pytest.approx(0.1, rel=RTOL)
    assert got[5][0] == pytest.approx(0.0505, rel=RTOL)


@pytest.mark.parametrize("start, end, total", [(1 / 3, 1.0, 5), (0.25, 1.0, 8), (1.0, 0.1, 10),
                                               (0.5, 0.0, 4), (0.1, 0.7, 59), (0.4, 0.4, 6)])
def test_linear_lr(start: float, end: float, total: int) -> None:
    opt = two_groups()
    sched = lr_scheduler.LinearLR(opt, start_factor=start, end_factor=end, total_iters=total)
    got = trajectory(opt, sched)
    assert_close(got, reference(lambda b, e: b * (start + (end - start) * min(total, e) / total)))


def test_linear_lr_defaults_warm_up_from_a_third_in_five_epochs() -> None:
    opt = two_groups()
    got = trajectory(opt, lr_scheduler.LinearLR(opt), steps=8)
    assert_close(got, reference(lambda b, e: b * (1 / 3 + 2 / 3 * min(5, e) / 5), steps=8))
    assert got[0][0] == pytest.approx(0.1 / 3, rel=RTOL) and got[8] == pytest.approx(list(LRS))


# -- OneCycleLR ----------------------------------------------------------------------------

def one_cycle(step: int, top: float, total: int, *, pct: float = 0.3, cos: bool = True,
              three_phase: bool = False, div: float = 25.0, final_div: float = 1e4,
              low_m: float = 0.85, high_m: float = 0.95) -> tuple[float, float]:
    """(lr, momentum) of the 1cycle policy at ``step``: phases end at pct·total − 1,
    (three-phase) 2·pct·total − 2, and total − 1; each anneals between its two ends."""
    first = top / div
    last = first / final_div
    if three_phase:
        phases = [(pct * total - 1, first, top, high_m, low_m),
                  (2 * pct * total - 2, top, first, low_m, high_m),
                  (total - 1, first, last, high_m, high_m)]
    else:
        phases = [(pct * total - 1, first, top, high_m, low_m),
                  (total - 1, top, last, low_m, high_m)]
    begin = 0.0
    for end, lr0, lr1, m0, m1 in phases:
        if step <= end or end == total - 1:  # the last phase also takes steps past its end
            t = (step - begin) / (end - begin)
            return anneal(lr0, lr1, t, cos), anneal(m0, m1, t, cos)
        begin = end
    raise AssertionError("the last phase ends at total − 1")


def anneal(a: float, b: float, t: float, cos: bool) -> float:
    """From a (t = 0) to b (t = 1), along a half cosine or a line."""
    if cos:
        return b + (a - b) / 2 * (1 + math.cos(math.pi * t))
    return a + (b - a) * t


ONE_CYCLE_CASES = [
    {},
    {"anneal_strategy": "linear"},
    {"three_phase": True},
    {"three_phase": True, "anneal_strategy": "linear"},
    {"pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0},
    {"base_momentum": 0.8, "max_momentum": 0.99, "pct_start": 0.45, "three_phase": True},
]


def one_cycle_options(case: dict[str, Any]) -> dict[str, Any]:
    names = {"anneal_strategy": None, "three_phase": "three_phase", "pct_start": "pct",
             "div_factor": "div", "final_div_factor": "final_div", "base_momentum": "low_m",
             "max_momentum": "high_m"}
    options = {names[k]: v for k, v in case.items() if names[k]}
    options["cos"] = case.get("anneal_strategy", "cos") == "cos"
    return options


@pytest.mark.parametrize("case", ONE_CYCLE_CASES)
@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam])
def test_one_cycle_lr_and_momentum(case: dict[str, Any], cls: type) -> None:
    tops = (1.0, 0.3)
    opt = two_groups(cls)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=list(tops), total_steps=STEPS, **case)
    lrs, momenta = history(opt, sched)
    options = one_cycle_options(case)
    want = [[one_cycle(s, top, STEPS, **options) for top in tops] for s in range(STEPS + 1)]
    assert_close(lrs, [[lr for lr, _ in row] for row in want])
    assert_close(momenta, [[m for _, m in row] for row in want])
    if cls is optim.Adam:  # beta1 cycles, beta2 stays
        assert all(g["betas"][1] == 0.999 for g in opt.param_groups)


def test_one_cycle_landmarks_and_epochs_times_steps() -> None:
    opt = optim.SGD([Parameter((3,))], lr=0.5, momentum=0.9)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=0.1, epochs=6, steps_per_epoch=10)
    got = trajectory(opt, sched)
    assert sched.total_steps == 60 and opt.param_groups[0]["initial_lr"] == 0.1 / 25
    assert got[0][0] == pytest.approx(0.004, rel=RTOL)  # max_lr / div_factor, not the given lr
    assert got[17][0] == pytest.approx(0.1, rel=RTOL)  # the peak at pct_start·total − 1
    assert got[59][0] == pytest.approx(0.004 / 1e4, rel=RTOL)  # the floor at total − 1
    with pytest.raises(ValueError, match="Tried to step 61 times"):
        sched.step()


def test_one_cycle_without_momentum_cycling_leaves_momentum_alone() -> None:
    opt = two_groups(optim.Adagrad)  # no momentum at all: fine when not cycling
    lrs = trajectory(opt, lr_scheduler.OneCycleLR(opt, 0.2, total_steps=STEPS,
                                                  cycle_momentum=False))
    assert_close(lrs, [[one_cycle(s, 0.2, STEPS)[0]] * 2 for s in range(STEPS + 1)])
    sgd = two_groups(momentum=0.5)
    trajectory(sgd, lr_scheduler.OneCycleLR(sgd, 0.2, total_steps=10, cycle_momentum=False), 5)
    assert [g["momentum"] for g in sgd.param_groups] == [0.5, 0.5]


# -- CyclicLR ------------------------------------------------------------------------------

def cyclic(i: int, base: float, top: float, up: int, down: int, mode: str = "triangular",
           gamma: float = 1.0, low_m: float = 0.8, high_m: float = 0.9) -> tuple[float, float]:
    """docs/semantics.md §5's pseudo-code: (lr, momentum) at iteration ``i``."""
    total = up + down
    ratio = up / total
    cycle = math.floor(1 + i / total)
    x = 1 + i / total - cycle
    height = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    scale = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1), "exp_range": gamma ** i}[mode]
    return base + (top - base) * height * scale, high_m - (high_m - low_m) * height * scale


def test_cyclic_lr_semantics_vector() -> None:
    opt = optim.SGD([Parameter((3,))], lr=0.5, momentum=0.9)
    got = trajectory(opt, lr_scheduler.CyclicLR(opt, 0.01, 0.1, step_size_up=4), steps=9)
    want = [0.01, 0.0325, 0.055, 0.0775, 0.1, 0.0775, 0.055, 0.0325, 0.01, 0.0325]
    assert_close(got, [[w] for w in want])


@pytest.mark.parametrize("mode, gamma", [("triangular", 1.0), ("triangular2", 1.0),
                                         ("exp_range", 0.97)])
@pytest.mark.parametrize("up, down", [(4, None), (4, 6), (7, 3), (1, 1)])
@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam])
def test_cyclic_lr_and_momentum(mode: str, gamma: float, up: int, down: int | None,
                                cls: type) -> None:
    bases, tops, low_m, high_m = (0.01, 0.002), (0.1, 0.05), (0.8, 0.7), (0.9, 0.95)
    opt = two_groups(cls)
    sched = lr_scheduler.CyclicLR(opt, list(bases), list(tops), step_size_up=up,
                                  step_size_down=down, mode=mode, gamma=gamma,
                                  base_momentum=list(low_m), max_momentum=list(high_m))
    lrs, momenta = history(opt, sched)
    want = [[cyclic(i, bases[k], tops[k], up, down or up, mode, gamma, low_m[k], high_m[k])
             for k in range(2)] for i in range(STEPS + 1)]
    assert_close(lrs, [[lr for lr, _ in row] for row in want])
    assert_close(momenta, [[m for _, m in row] for row in want])
    assert sched.base_lrs == list(bases)
    if cls is optim.Adam:
        assert all(g["betas"][1] == 0.999 for g in opt.param_groups)


def test_cyclic_lr_custom_scale_fn_on_cycles_or_iterations() -> None:
    for scale_mode, arg in (("cycle", lambda i, cycle: cycle), ("iterations", lambda i, c: i)):
        opt = two_groups()
        sched = lr_scheduler.CyclicLR(opt, 0.01, 0.1, step_size_up=3, step_size_down=5,
                                      scale_fn=lambda x: 1 / (1 + x), scale_mode=scale_mode,
                                      cycle_momentum=False)
        got = trajectory(opt, sched)
        want = []
        for i in range(STEPS + 1):
            lr, _ = cyclic(i, 0.01, 0.1, 3, 5)  # triangular: the unscaled height
            cycle = math.floor(1 + i / 8)
            want.append([0.01 + (lr - 0.01) / (1 + arg(i, cycle))] * 2)
        assert_close(got, want)


def test_cyclic_lr_overwrites_the_lr_and_switches_sgd_momentum_on() -> None:
    opt = two_groups()  # SGD with momentum=0 still has a "momentum" key
    assert [g["momentum"] for g in opt.param_groups] == [0, 0]
    sched = lr_scheduler.CyclicLR(opt, base_lr=0.001, max_lr=0.01, step_size_up=4)
    assert [g["lr"] for g in opt.param_groups] == [0.001, 0.001]
    momenta = history(opt, sched, steps=2)[1]
    assert_close(momenta, [[0.9] * 2, [0.875] * 2, [0.85] * 2])
    plain = two_groups()
    lr_scheduler.CyclicLR(plain, 0.001, 0.01, step_size_up=4, cycle_momentum=False).step()
    assert [g["momentum"] for g in plain.param_groups] == [0, 0]


@pytest.mark.parametrize("cls", [optim.Adagrad, optim.Adadelta])
@pytest.mark.parametrize("make", [
    lambda opt: lr_scheduler.CyclicLR(opt, 0.01, 0.1),
    lambda opt: lr_scheduler.OneCycleLR(opt, 0.1, total_steps=10),
])
def test_momentum_cycling_needs_momentum_or_betas(cls: type, make: Callable) -> None:
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1 with "
                                         "`cycle_momentum` option enabled"):
        make(two_groups(cls))


def test_rmsprop_momentum_cycles() -> None:
    opt = two_groups(optim.RMSprop)
    sched = lr_scheduler.CyclicLR(opt, 0.01, 0.1, step_size_up=2)
    assert_close(history(opt, sched, steps=4)[1],
                 [[m, m] for m in (0.9, 0.85, 0.8, 0.85, 0.9)])


# -- ReduceLROnPlateau ---------------------------------------------------------------------

def plateau(metrics: list[float], lrs: list[float], *, mode: str = "min", factor: float = 0.1,
            patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
            cooldown: int = 0, min_lrs: list[float] | None = None,
            eps: float = 1e-8) -> list[list[float]]:
    """docs/semantics.md §5's pseudo-code: the lrs after each metric."""
    min_lrs = min_lrs or [0.0] * len(lrs)
    lrs = list(lrs)
    best = math.inf if mode == "min" else -math.inf
    bad = cooling = 0
    rows = []
    for a in metrics:
        margin = {("min", "rel"): best * (1 - threshold), ("min", "abs"): best - threshold,
                  ("max", "rel"): best * (1 + threshold), ("max", "abs"): best + threshold}
        limit = margin[mode, threshold_mode]
        if (a < limit) if mode == "min" else (a > limit):
            best, bad = a, 0
        else:
            bad += 1
        if cooling > 0:
            cooling -= 1
            bad = 0
        if bad > patience:
            for k, lr in enumerate(lrs):
                new = max(lr * factor, min_lrs[k])
                if lr - new > eps:
                    lrs[k] = new
            cooling, bad = cooldown, 0
        rows.append(list(lrs))
    return rows


# A validation loss that improves in steps for 30 epochs, then wobbles on a plateau.
LOSSES = [1.0 / (1 + min(e, 30) // 6) + 0.02 * ((e * 37) % 11) / 11 for e in range(STEPS)]


@pytest.mark.parametrize("options", [
    {},
    {"patience": 2},
    {"patience": 1, "factor": 0.5, "cooldown": 3},
    {"patience": 0, "factor": 0.5, "min_lr": [0.01, 0.02]},
    {"patience": 2, "threshold": 0.05, "threshold_mode": "abs", "min_lr": 0.001},
    {"patience": 3, "threshold": 0.1, "cooldown": 1, "factor": 0.3},
    {"mode": "max", "patience": 2},
    {"mode": "max", "patience": 1, "threshold": 0.02, "threshold_mode": "abs", "cooldown": 2},
])
def test_reduce_lr_on_plateau(options: dict[str, Any]) -> None:
    metrics = [2.0 - m for m in LOSSES] if options.get("mode") == "max" else LOSSES
    opt = two_groups()
    sched = lr_scheduler.ReduceLROnPlateau(opt, **options)
    assert [g["lr"] for g in opt.param_groups] == list(LRS)  # no initial step
    got = []
    for m in metrics:
        sched.step(m)
        got.append(sched.get_last_lr())
    min_lr = options.get("min_lr", 0.0)
    rest = {k: v for k, v in options.items() if k != "min_lr"}
    want = plateau(metrics, list(LRS), min_lrs=min_lr if isinstance(min_lr, list) else
                   [min_lr] * 2, **rest)
    assert_close(got, want)
    assert sched.last_epoch == STEPS and got[-1] != list(LRS)


def test_reduce_lr_on_plateau_by_hand() -> None:
    opt = two_groups()
    sched = lr_scheduler.ReduceLROnPlateau(opt, patience=2)
    lrs = []
    for m in [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5]:
        sched.step(m)
        lrs.append(sched.get_last_lr()[0])
    # bad epoch counts 0, 1, 2, 3 → cut and reset, 1, 2, 3 → cut, then an improvement
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001], rel=RTOL)


def test_reduce_lr_on_plateau_rel_versus_abs_threshold() -> None:
    for threshold_mode, cut in (("rel", True), ("abs", False)):
        opt = optim.SGD([Parameter((3,))], lr=0.1)
        sched = lr_scheduler.ReduceLROnPlateau(opt, patience=0, threshold=0.01,
                                               threshold_mode=threshold_mode)
        sched.step(10.0)
        sched.step(9.95)  # better than 10 − 0.01 but not than 10·(1 − 0.01)
        assert (sched.get_last_lr()[0] < 0.1) == cut


def test_reduce_lr_on_plateau_skips_changes_below_eps() -> None:
    opt = optim.SGD([{"params": [Parameter((3,))], "lr": 1.5e-8},
                     {"params": [Parameter((2,))], "lr": 1e-7}], lr=0.1)
    sched = lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    sched.step(1.0)
    sched.step(2.0)
    # 1.5e-8 → 7.5e-9 moves by less than eps = 1e-8; 1e-7 → 5e-8 moves by more
    assert sched.get_last_lr() == [1.5e-8, 5e-8]


# -- the contract shared by every scheduler -----------------------------------------------

SCHEDULERS: dict[str, Callable[[Any], Any]] = {
    "StepLR": lambda opt: lr_scheduler.StepLR(opt, 5, gamma=0.5),
    "MultiStepLR": lambda opt: lr_scheduler.MultiStepLR(opt, [3, 20, 20, 31]),
    "ExponentialLR": lambda opt: lr_scheduler.ExponentialLR(opt, 0.93),
    "CosineAnnealingLR": lambda opt: lr_scheduler.CosineAnnealingLR(opt, 9, eta_min=0.001),
    "LinearLR": lambda opt: lr_scheduler.LinearLR(opt, 0.2, 0.9, total_iters=25),
    "OneCycleLR": lambda opt: lr_scheduler.OneCycleLR(opt, [0.5, 0.2], total_steps=50,
                                                      three_phase=True),
    "CyclicLR": lambda opt: lr_scheduler.CyclicLR(opt, [0.01, 0.02], 0.1, step_size_up=3,
                                                  step_size_down=4, mode="exp_range",
                                                  gamma=0.99),
    "CyclicLR-scale_fn": lambda opt: lr_scheduler.CyclicLR(opt, 0.01, 0.1, step_size_up=3,
                                                           scale_fn=lambda x: 0.9 ** x),
    "ReduceLROnPlateau": lambda opt: lr_scheduler.ReduceLROnPlateau(opt, patience=1,
                                                                    cooldown=2),
}


def advance(sched: Any, opt: Any, steps: int, start: int) -> list[list[Any]]:
    """Step ``steps`` times (a plateau scheduler gets a metric) and record every group option."""
    rows = []
    for e in range(start, start + steps):
        if isinstance(sched, lr_scheduler.ReduceLROnPlateau):
            sched.step(LOSSES[e % STEPS])
        else:
            sched.step()
        rows.append([[g["lr"], g["momentum"]] for g in opt.param_groups])
    return rows


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_state_dict_round_trip_through_json_continues_identically(name: str) -> None:
    make = SCHEDULERS[name]
    opt = two_groups(momentum=0.9)
    sched = make(opt)
    advance(sched, opt, 17, 0)
    state = sched.state_dict()
    assert "optimizer" not in state and state["last_epoch"] == 17
    restored_state = json.loads(json.dumps(state))  # plain scalars, lists and dicts only

    clone_opt = two_groups(momentum=0.9)
    clone = make(clone_opt)
    for mine, theirs in zip(clone_opt.param_groups, opt.param_groups):
        mine.update({k: v for k, v in theirs.items() if k != "params"})  # the optimizer's part
    clone.load_state_dict(restored_state)
    assert clone.last_epoch == 17 and clone.get_last_lr() == sched.get_last_lr()
    assert advance(clone, clone_opt, 30, 17) == advance(sched, opt, 30, 17)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_get_last_lr_last_epoch_and_initial_lr(name: str) -> None:
    opt = two_groups(momentum=0.9)
    sched = SCHEDULERS[name](opt)
    assert sched.last_epoch == 0
    if name == "ReduceLROnPlateau":  # as PyTorch: no initial_lr; base_lrs are the lrs given
        assert "initial_lr" not in opt.param_groups[0] and sched.base_lrs == list(LRS)
    else:
        assert sched.base_lrs == [g["initial_lr"] for g in opt.param_groups]
    for e in range(1, 6):
        advance(sched, opt, 1, e)
        last = sched.get_last_lr()
        assert sched.last_epoch == e
        assert last == [g["lr"] for g in opt.param_groups]
        assert all(isinstance(lr, float) for lr in last)
        last.append(1.0)  # a copy: the scheduler's record is unchanged
        assert len(sched.get_last_lr()) == 2


def test_constructor_records_initial_lr_per_group() -> None:
    opt = two_groups()
    sched = lr_scheduler.ExponentialLR(opt, 0.5)
    sched.step()
    assert [g["initial_lr"] for g in opt.param_groups] == list(LRS) == sched.base_lrs
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.025]


def test_resuming_needs_initial_lr_and_keeps_the_current_lr() -> None:
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.ExponentialLR(two_groups(), 0.5, last_epoch=3)
    opt = optim.SGD([{"params": [Parameter((3,))], "lr": 0.0125, "initial_lr": 0.1}], lr=0.1)
    sched = lr_scheduler.ExponentialLR(opt, 0.5, last_epoch=3)
    assert sched.last_epoch == 4 and sched.get_last_lr() == [0.0125]
    sched.step()
    assert sched.get_last_lr() == [0.00625] and sched.base_lrs == [0.1]


@pytest.mark.parametrize("first, second, closed_form", [
    (lambda opt: lr_scheduler.ExponentialLR(opt, 0.9),
     lambda opt: lr_scheduler.StepLR(opt, 3, gamma=0.5),
     lambda b, e: b * 0.9 ** e * 0.5 ** (e // 3)),
    (lambda opt: lr_scheduler.LinearLR(opt, 0.1, total_iters=4),
     lambda opt: lr_scheduler.MultiStepLR(opt, [10, 30], gamma=0.2),
     lambda b, e: b * (0.1 + 0.9 * min(e, 4) / 4) * 0.2 ** ((e >= 10) + (e >= 30))),
])
def test_chained_schedulers_multiply(first: Callable, second: Callable,
                                     closed_form: Callable) -> None:
    opt = two_groups()
    a, b = first(opt), second(opt)
    rows = [[g["lr"] for g in opt.param_groups]]
    for _ in range(STEPS):
        a.step()
        b.step()
        rows.append([g["lr"] for g in opt.param_groups])
    assert_close(rows, reference(closed_form))


@pytest.mark.parametrize("make, message", [
    (lambda opt: lr_scheduler.StepLR(opt, 0), "positive step_size"),
    (lambda opt: lr_scheduler.CosineAnnealingLR(opt, 0), "positive T_max"),
    (lambda opt: lr_scheduler.LinearLR(opt, start_factor=0), "Starting multiplicative factor"),
    (lambda opt: lr_scheduler.LinearLR(opt, start_factor=1.5), "Starting multiplicative"),
    (lambda opt: lr_scheduler.LinearLR(opt, end_factor=-0.1), "Ending multiplicative factor"),
    (lambda opt: lr_scheduler.OneCycleLR(opt, 0.1), "either total_steps OR"),
    (lambda opt: lr_scheduler.OneCycleLR(opt, 0.1, epochs=3), "either total_steps OR"),
    (lambda opt: lr_scheduler.OneCycleLR(opt, 0.1, total_steps=0), "positive integer total"),
    (lambda opt: lr_scheduler.OneCycleLR(opt, 0.1, epochs=-1, steps_per_epoch=3),
     "positive integer epochs"),
    (lambda opt: lr_scheduler.OneCycleLR(opt, 0.1, total_steps=9, pct_start=1.5), "pct_start"),
    (lambda opt: lr_scheduler.OneCycleLR(opt, 0.1, total_steps=9, pct_start=1), "pct_start"),
    (lambda opt: lr_scheduler.OneCycleLR(opt, 0.1, total_steps=9, anneal_strategy="cosine"),
     "anneal_strategy must be one of"),
    (lambda opt: lr_scheduler.OneCycleLR(opt, [0.1], total_steps=9),
     "max_lr must have the same length as optimizer.param_groups"),
    (lambda opt: lr_scheduler.CyclicLR(opt, 0.01, 0.1, mode="cosine"), "mode is invalid"),
    (lambda opt: lr_scheduler.CyclicLR(opt, [0.01] * 3, 0.1), "base_lr must have the same"),
    (lambda opt: lr_scheduler.CyclicLR(opt, 0.01, 0.1, max_momentum=[0.9]),
     "max_momentum must have the same"),
    (lambda opt: lr_scheduler.ReduceLROnPlateau(opt, factor=1.0), "Factor should be < 1.0"),
    (lambda opt: lr_scheduler.ReduceLROnPlateau(opt, mode="avg"), "mode avg is unknown"),
    (lambda opt: lr_scheduler.ReduceLROnPlateau(opt, threshold_mode="pct"),
     "threshold mode pct is unknown"),
    (lambda opt: lr_scheduler.ReduceLROnPlateau(opt, min_lr=[0.1]), "expected 2 min_lrs, got 1"),
])
def test_bad_arguments_raise_value_error(make: Callable, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(two_groups(momentum=0.9))


def test_not_an_optimizer() -> None:
    with pytest.raises(TypeError, match="list is not an Optimizer"):
        lr_scheduler.StepLR([0.1], 3)
