"""cnnir.optim's optimizers against float64 numpy references written here from
docs/semantics.md §4 (PyTorch's ``_single_tensor_*`` rules; they never call the
implementation): every option combination over 50 steps on both backends (parameters and
state within a relative 1e-12, step counts exact), options changed mid-run, parameter groups,
the None-gradient rule,
state_dict layout and round trips, bad options, float32 parameters, and L1 regularization
through value_and_grad."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

import cnnir
import cnnir.nn as nn
import cnnir.nn.functional as F
from cnnir import optim
from cnnir.errors import CnnirError, OptionError
from cnnir.frontend.module import Parameter

BACKENDS = ("numba", "reference")
STEPS = 50
RTOL = 1e-12
SHAPES = ((3, 4), (5,))  # two parameters of different shapes

# The defaults of docs/semantics.md §4 (the reference's own copy; the implementation's are checked
# against them by ``test_defaults``).
DEFAULTS: dict[str, dict[str, Any]] = {
    "SGD": dict(lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False),
    "Adagrad": dict(lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                    eps=1e-10),
    "Adadelta": dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0),
    "RMSprop": dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                    centered=False),
    "Adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False),
    "AdamW": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False),
}


# -- the float64 reference (docs/semantics.md §4) --------------------------------------------------
def ref_sgd(p, g, st, o):
    if o["weight_decay"] != 0:
        g = g + o["weight_decay"] * p
    mu = o["momentum"]
    if mu != 0:
        if "momentum_buffer" not in st:
            b = g.copy()  # the first step: the gradient itself, no dampening
        else:
            b = mu * st["momentum_buffer"] + (1 - o["dampening"]) * g
        st["momentum_buffer"] = b
        g = g + mu * b if o["nesterov"] else b
    return p - o["lr"] * g


def ref_adagrad(p, g, st, o):
    st["step"] += 1
    t = st["step"]
    if o["weight_decay"] != 0:
        g = g + o["weight_decay"] * p
    clr = o["lr"] / (1 + (t - 1) * o["lr_decay"])
    st["sum"] = st["sum"] + g * g
    return p - clr * (g / (np.sqrt(st["sum"]) + o["eps"]))


def ref_adadelta(p, g, st, o):
    if "step" not in st:
        st.update(step=0, square_avg=np.zeros_like(p), acc_delta=np.zeros_like(p))
    st["step"] += 1
    rho, eps = o["rho"], o["eps"]
    if o["weight_decay"] != 0:
        g = g + o["weight_decay"] * p
    st["square_avg"] = rho * st["square_avg"] + (1 - rho) * g * g
    delta = np.sqrt(st["acc_delta"] + eps) / np.sqrt(st["square_avg"] + eps) * g
    st["acc_delta"] = rho * st["acc_delta"] + (1 - rho) * delta * delta
    return p - o["lr"] * delta


def ref_rmsprop(p, g, st, o):
    if "step" not in st:
        st.update(step=0, square_avg=np.zeros_like(p))
        if o["momentum"] > 0:
            st["momentum_buffer"] = np.zeros_like(p)
        if o["centered"]:
            st["grad_avg"] = np.zeros_like(p)
    st["step"] += 1
    alpha, eps = o["alpha"], o["eps"]
    if o["weight_decay"] != 0:
        g = g + o["weight_decay"] * p
    st["square_avg"] = alpha * st["square_avg"] + (1 - alpha) * g * g
    if o["centered"]:
        st["grad_avg"] = alpha * st["grad_avg"] + (1 - alpha) * g
        avg = np.sqrt(st["square_avg"] - st["grad_avg"] ** 2) + eps
    else:
        avg = np.sqrt(st["square_avg"]) + eps  # eps outside the root
    if o["momentum"] > 0:
        st["momentum_buffer"] = o["momentum"] * st["momentum_buffer"] + g / avg
        return p - o["lr"] * st["momentum_buffer"]
    return p - o["lr"] * (g / avg)


def ref_adam(p, g, st, o, decoupled=False):
    if "step" not in st:
        st.update(step=0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p))
        if o["amsgrad"]:
            st["max_exp_avg_sq"] = np.zeros_like(p)
    st["step"] += 1
    t = st["step"]
    b1, b2 = o["betas"]
    lr, wd = o["lr"], o["weight_decay"]
    if decoupled:
        p = p * (1 - lr * wd)  # before the moments
    elif wd != 0:
        g = g + wd * p
    st["exp_avg"] = b1 * st["exp_avg"] + (1 - b1) * g
    st["exp_avg_sq"] = b2 * st["exp_avg_sq"] + (1 - b2) * g * g
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
    v = st["exp_avg_sq"]
    if o["amsgrad"]:
        st["max_exp_avg_sq"] = np.maximum(st["max_exp_avg_sq"], v)  # the uncorrected v
        v = st["max_exp_avg_sq"]
    denom = np.sqrt(v) / np.sqrt(bc2) + o["eps"]  # eps after the bias correction
    return p - (lr / bc1) * (st["exp_avg"] / denom)


RULES = {"SGD": ref_sgd, "Adagrad": ref_adagrad, "Adadelta": ref_adadelta,
         "RMSprop": ref_rmsprop, "Adam": ref_adam,
         "AdamW": lambda p, g, st, o: ref_adam(p, g, st, o, decoupled=True)}


class Ref:
    """A float64 reference optimizer over arrays: ``groups`` are option dicts (defaults filled
    in) each with ``"params"``, a list of indices into ``params``; options may be changed
    between steps, and each step uses the current ones."""

    def __init__(self, kind: str, params: list[np.ndarray], groups: list[dict[str, Any]]):
        self.kind = kind
        self.params = [np.array(a, dtype=np.float64) for a in params]
        self.groups = [{**DEFAULTS[kind], **g} for g in groups]
        self.state: dict[int, dict[str, Any]] = {}
        if kind == "Adagrad":  # state from the constructor
            for g in self.groups:
                for i in g["params"]:
                    self.state[i] = {"step": 0, "sum": np.full_like(
                        self.params[i], g["initial_accumulator_value"])}

    def step(self, grads: list[np.ndarray | None]) -> None:
        for group in self.groups:
            for i in group["params"]:
                if grads[i] is None:
                    continue  # the None-gradient rule: skipped entirely
                st = self.state.setdefault(i, {})
                self.params[i] = RULES[self.kind](self.params[i],
                                                  np.asarray(grads[i], np.float64), st, group)


# -- helpers ---------------------------------------------------------------------------
def assert_close(got: Any, want: Any, rtol: float = RTOL, what: str = "") -> None:
    """Elementwise ``|got − want| ≤ rtol·(|want| + max|want|)``: relative, with the array's
    scale as the floor (an element that crosses zero has no relative error of its own)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-300)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)


def make_params(seed: int = 0, shapes=SHAPES, dtype=np.float64) -> list[Parameter]:
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]


def gradients(seed: int, steps: int = STEPS, shapes=SHAPES) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(1000 + seed)
    return [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]


def check_state(opt: Any, ref: Ref, what: str = "") -> None:
    """The implementation's state_dict against the reference: the same parameters have state,
    the same keys (PyTorch's names), step counts equal, arrays within RTOL."""
    sd = opt.state_dict()["state"]
    # SGD without momentum keeps no state: PyTorch 1.x lists an empty entry per stepped
    # parameter, 2.x none; either is accepted.
    assert sorted(i for i in sd if sd[i]) == sorted(i for i in ref.state if ref.state[i]), what
    for i, want in ref.state.items():
        got = sd[i]
        assert set(got) == set(want), f"{what} param {i}: {sorted(got)} != {sorted(want)}"
        for key, value in want.items():
            if key == "step":
                assert float(got[key]) == value, f"{what} param {i} step"
            else:
                assert_close(got[key], value, what=f"{what} param {i} {key}")


def check_params(params: list[Parameter], ref: Ref, rtol: float = RTOL, what: str = "") -> None:
    for i, p in enumerate(params):
        assert_close(p.data, ref.params[i], rtol=rtol, what=f"{what} param {i}")


# -- 1. every optimizer × every option combination -------------------------------------
def grid(**axes: tuple) -> list[dict[str, Any]]:
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*axes.values())]


def sgd_configs() -> list[dict[str, Any]]:
    out = []
    for c in grid(momentum=(0, 0.9), dampening=(0, 0.3), nesterov=(False, True),
                  weight_decay=(0, 0.1)):
        if c["nesterov"] and (c["momentum"] == 0 or c["dampening"] != 0):
            continue  # a ValueError (test_nesterov_needs_momentum_and_no_dampening)
        out.append({"lr": 0.05, **c})
    return out + [{"momentum": 0.9}]  # the default lr


CONFIGS: list[tuple[str, dict[str, Any]]] = (
    [("SGD", c) for c in sgd_configs()]
    + [("Adagrad", {"lr": 0.1, **c}) for c in grid(
        lr_decay=(0, 0.05), initial_accumulator_value=(0, 0.5), weight_decay=(0, 0.1))]
    + [("Adagrad", {}), ("Adagrad", {"eps": 1e-3})]
    + [("Adadelta", c) for c in grid(rho=(0.9, 0.5), weight_decay=(0, 0.1), lr=(1.0, 0.3))]
    + [("Adadelta", {}), ("Adadelta", {"eps": 1e-3})]
    + [("RMSprop", c) for c in grid(centered=(False, True), momentum=(0, 0.8),
                                    weight_decay=(0, 0.1))]
    + [("RMSprop", {"alpha": 0.9, "eps": 1e-3, "centered": True, "momentum": 0.5})]
    + [(kind, {"lr": 0.01, **c}) for kind in ("Adam", "AdamW") for c in grid(
        amsgrad=(False, True), weight_decay=(0, 0.1), betas=((0.9, 0.999), (0.8, 0.99)))]
    + [("Adam", {}), ("AdamW", {}), ("AdamW", {"amsgrad": True}),
       ("Adam", {"eps": 1e-3, "betas": (0.5, 0.6), "amsgrad": True})]
)


def config_id(case: tuple[str, dict[str, Any]]) -> str:
    kind, options = case
    return kind + "(" + ",".join(f"{k}={v}" for k, v in options.items()) + ")"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CONFIGS, ids=[config_id(c) for c in CONFIGS])
def test_matches_reference(case: tuple[str, dict[str, Any]], backend: str) -> None:
    kind, options = case
    seed = CONFIGS.index(case)
    params = make_params(seed)
    ref = Ref(kind, [p.data for p in params], [{"params": [0, 1], **options}])
    opt = getattr(optim, kind)(params, **options)
    for step, grads in enumerate(gradients(seed)):
        opt.step(dict(zip(params, grads)), backend=backend)
        ref.step(grads)
        if step in (0, 1, 9):
            check_params(params, ref, what=f"step {step + 1}")
            check_state(opt, ref, what=f"step {step + 1}")
    check_params(params, ref, what=f"after {STEPS} steps")
    check_state(opt, ref, what=f"after {STEPS} steps")
    moved = max(float(np.abs(p.data - p0.data).max())
                for p, p0 in zip(params, make_params(seed)))
    assert moved > 1e-4  # the test is not vacuous


@pytest.mark.parametrize("kind", list(DEFAULTS))
def test_defaults(kind: str) -> None:
    opt = getattr(optim, kind)(make_params())
    group = opt.param_groups[0]
    for key, value in DEFAULTS[kind].items():
        assert group[key] == value, key
    assert set(group) == set(DEFAULTS[kind]) | {"params"}


# -- 2. options changed mid-run --------------------------------------------------------
MID_RUN = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1},
     {10: {"lr": 0.02}, 20: {"momentum": 0.5}, 30: {"dampening": 0.2, "lr": 0.3}}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True},
     {15: {"lr": 0.01, "momentum": 0.3}}),
    ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1},
     {10: {"lr": 0.05}, 20: {"betas": (0.5, 0.9)}, 30: {"eps": 1e-3, "weight_decay": 0}}),
    ("AdamW", {"lr": 0.01},
     {10: {"lr": 0.05}, 20: {"betas": (0.8, 0.99), "weight_decay": 0.3}}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.1},
     {10: {"lr": 0.5}, 25: {"lr_decay": 0.0}}),
    ("Adadelta", {"weight_decay": 0.1}, {10: {"lr": 0.3}, 20: {"rho": 0.5}}),
    ("RMSprop", {"momentum": 0.8, "centered": True},
     {10: {"lr": 0.001}, 20: {"momentum": 0.3, "alpha": 0.9}}),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", MID_RUN, ids=[c[0] + str(i) for i, c in enumerate(MID_RUN)])
def test_options_changed_mid_run(case: tuple, backend: str) -> None:
    kind, options, changes = case
    params = make_params(7)
    ref = Ref(kind, [p.data for p in params], [{"params": [0, 1], **options}])
    opt = getattr(optim, kind)(params, **options)
    for step, grads in enumerate(gradients(7)):
        for key, value in changes.get(step, {}).items():
            opt.param_groups[0][key] = value
            ref.groups[0][key] = value
        opt.step(dict(zip(params, grads)), backend=backend)
        ref.step(grads)
    check_params(params, ref)
    check_state(opt, ref)


def test_lr_change_takes_effect_at_next_step() -> None:
    """The change is seen by the very next step, even after the update was compiled."""
    p = Parameter(np.ones(3))
    opt = optim.SGD([p], lr=0.1)
    opt.step({p: np.ones(3)})
    np.testing.assert_array_equal(p.data, 0.9)
    opt.param_groups[0]["lr"] = 0.5
    opt.step({p: np.ones(3)})
    np.testing.assert_allclose(p.data, 0.4, rtol=0, atol=1e-15)


# -- 3. parameter groups ---------------------------------------------------------------
GROUPED = [
    ("SGD", [{"lr": 0.1}, {"momentum": 0.9, "nesterov": True}, {"weight_decay": 0.2}],
     {"lr": 0.01}),
    ("Adam", [{"amsgrad": True}, {"lr": 0.05, "betas": (0.5, 0.9)}, {"weight_decay": 0.3}],
     {"lr": 0.01}),
    ("AdamW", [{}, {"weight_decay": 0.5, "amsgrad": True}, {"lr": 0.1}], {}),
    ("RMSprop", [{"centered": True}, {"momentum": 0.5}, {"alpha": 0.5, "weight_decay": 0.1}],
     {}),
    ("Adagrad", [{"initial_accumulator_value": 1.0}, {"lr_decay": 0.1}, {"lr": 0.3}],
     {"lr": 0.1}),
    ("Adadelta", [{"rho": 0.5}, {"lr": 0.2}, {"weight_decay": 0.1, "eps": 1e-4}], {}),
]
GROUP_SHAPES = ((3, 4), (5,), (2, 3, 2), (7,))  # group 0 holds two parameters


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", GROUPED, ids=[c[0] for c in GROUPED])
def test_parameter_groups(case: tuple, backend: str) -> None:
    kind, group_options, options = case
    params = make_params(3, GROUP_SHAPES)
    members = [[0, 1], [2], [3]]
    groups = [{"params": [params[i] for i in m], **o} for m, o in zip(members, group_options)]
    opt = getattr(optim, kind)(groups, **options)
    ref = Ref(kind, [p.data for p in params],
              [{**options, **o, "params": m} for m, o in zip(members, group_options)])
    for key, value in {**DEFAULTS[kind], **options, **group_options[1]}.items():
        assert opt.param_groups[1][key] == value, key
    for grads in gradients(3, 30, GROUP_SHAPES):
        opt.step(dict(zip(params, grads)), backend=backend)
        ref.step(grads)
    check_params(params, ref)
    check_state(opt, ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_add_param_group(backend: str) -> None:
    p, q = make_params(5)
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": [q], "lr": 0.01})
    assert opt.param_groups[1]["momentum"] == 0.9
    ref = Ref("SGD", [p.data, q.data], [{"params": [0], "lr": 0.1, "momentum": 0.9},
                                        {"params": [1], "lr": 0.01, "momentum": 0.9}])
    for grads in gradients(5, 10):
        opt.step({p: grads[0], q: grads[1]}, backend=backend)
        ref.step(grads)
    check_params([p, q], ref)


# -- 4. the None-gradient rule ---------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_none_gradient_is_skipped_zero_gradient_is_not(backend: str) -> None:
    none, zero = Parameter(np.ones(4)), Parameter(np.ones(4))
    opt = optim.SGD([none, zero], lr=0.1, weight_decay=0.5)
    opt.step({zero: np.zeros(4)}, backend=backend)
    np.testing.assert_array_equal(none.data, 1.0)
    np.testing.assert_allclose(zero.data, 0.95, rtol=0, atol=1e-15)
    # the same through .grad, and an explicit None in the dict
    zero.grad, none.grad = np.zeros(4), None
    opt.step(backend=backend)
    np.testing.assert_array_equal(none.data, 1.0)
    np.testing.assert_allclose(zero.data, 0.95 * 0.95, rtol=0, atol=1e-15)
    opt.step({none: None, zero: np.zeros(4)}, backend=backend)
    np.testing.assert_array_equal(none.data, 1.0)
    np.testing.assert_allclose(zero.data, 0.95 ** 3, rtol=0, atol=1e-15)


def test_zero_grad_sets_none() -> None:
    p, q = make_params()
    p.grad, q.grad = np.ones(p.shape), np.ones(q.shape)
    opt = optim.Adam([p, q], lr=0.1, weight_decay=0.5)
    opt.zero_grad()
    assert p.grad is None and q.grad is None
    before = [x.data.copy() for x in (p, q)]
    opt.step()  # nothing has a gradient: nothing moves, no state
    for x, b in zip((p, q), before):
        np.testing.assert_array_equal(x.data, b)
    assert opt.state_dict()["state"] == {}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind,options", [
    ("Adam", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    ("AdamW", {"lr": 0.01}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.1}),
    ("RMSprop", {"momentum": 0.5, "centered": True, "weight_decay": 0.1}),
    ("Adadelta", {"weight_decay": 0.1}),
], ids=["Adam", "AdamW", "SGD", "Adagrad", "RMSprop", "Adadelta"])
def test_skipped_parameter_keeps_step_count_and_state(kind: str, options: dict,
                                                      backend: str) -> None:
    params = make_params(11)
    ref = Ref(kind, [p.data for p in params], [{"params": [0, 1], **options}])
    opt = getattr(optim, kind)(params, **options)
    for step, grads in enumerate(gradients(11, 30)):
        if 5 <= step < 15:
            grads = [grads[0], None]  # the second parameter sits out ten steps
        if step < 3:
            grads = [None, grads[1]]  # the first has no state at all yet
        opt.step({p: g for p, g in zip(params, grads) if g is not None}, backend=backend)
        ref.step(grads)
        if step in (2, 10):
            check_params(params, ref, what=f"step {step + 1}")
            check_state(opt, ref, what=f"step {step + 1}")
    check_params(params, ref)
    check_state(opt, ref)
    if "step" in ref.state[0]:
        assert float(opt.state_dict()["state"][0]["step"]) == 27
        assert float(opt.state_dict()["state"][1]["step"]) == 20


# -- 5. state_dict ---------------------------------------------------------------------
ROUND_TRIP = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.05, "initial_accumulator_value": 0.3}),
    ("Adadelta", {"rho": 0.8, "weight_decay": 0.1}),
    ("RMSprop", {"momentum": 0.5, "centered": True}),
    ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.01, "betas": (0.8, 0.9)}),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ROUND_TRIP, ids=[config_id(c) for c in ROUND_TRIP])
def test_state_dict_round_trip(case: tuple, backend: str) -> None:
    kind, options = case
    cls = getattr(optim, kind)
    params = make_params(21)
    opt = cls([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.02}], **options)
    grads = gradients(21)
    for g in grads[:20]:
        opt.step(dict(zip(params, g)), backend=backend)
    sd = opt.state_dict()
    copies = [Parameter(p.data.copy()) for p in params]
    fresh = cls([{"params": [copies[0]]}, {"params": [copies[1]]}], **options)
    fresh.load_state_dict(sd)
    assert fresh.param_groups[1]["lr"] == 0.02
    for g in grads[20:]:
        opt.step(dict(zip(params, g)), backend=backend)
        fresh.step(dict(zip(copies, g)), backend=backend)
    for p, c in zip(params, copies):
        np.testing.assert_array_equal(p.data, c.data)
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert a["state"][i].keys() == b["state"][i].keys()
        for key in a["state"][i]:
            np.testing.assert_array_equal(a["state"][i][key], b["state"][i][key])
    # and the whole 50 steps agree with the reference
    ref = Ref(kind, [p.data for p in make_params(21)],
              [{"params": [0], **options}, {"params": [1], **options, "lr": 0.02}])
    for g in grads:
        ref.step(g)
    check_params(copies, ref)
    check_state(fresh, ref)


def test_state_dict_arrays_are_copies_and_loaded_state_is_copied() -> None:
    params = make_params()
    opt = optim.Adam(params, lr=0.1)
    opt.step(dict(zip(params, gradients(0, 1)[0])))
    sd = opt.state_dict()
    kept = sd["state"][0]["exp_avg"].copy()
    sd["state"][0]["exp_avg"][...] = 123.0
    np.testing.assert_array_equal(opt.state_dict()["state"][0]["exp_avg"], kept)
    other = optim.Adam([Parameter(p.data.copy()) for p in params], lr=0.1)
    sd = opt.state_dict()
    other.load_state_dict(sd)
    sd["state"][0]["exp_avg"][...] = 456.0
    np.testing.assert_array_equal(other.state_dict()["state"][0]["exp_avg"], kept)


@pytest.mark.parametrize("kind,options,before,after", [
    ("SGD", {}, set(), set()),
    ("SGD", {"momentum": 0.9}, set(), {"momentum_buffer"}),
    ("Adam", {}, None, {"step", "exp_avg", "exp_avg_sq"}),
    ("Adam", {"amsgrad": True}, None, {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
    ("AdamW", {"amsgrad": True}, None, {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
    ("Adagrad", {"initial_accumulator_value": 0.25}, {"step", "sum"}, {"step", "sum"}),
    ("RMSprop", {}, None, {"step", "square_avg"}),
    ("RMSprop", {"momentum": 0.5, "centered": True}, None,
     {"step", "square_avg", "momentum_buffer", "grad_avg"}),
    ("Adadelta", {}, None, {"step", "square_avg", "acc_delta"}),
])
def test_state_dict_layout(kind: str, options: dict, before: set | None, after: set) -> None:
    """PyTorch's layout and key names. ``before`` is the key set of each parameter's state
    right after construction (None: no entry at all)."""
    a, b, c = make_params(0, ((2, 2), (3,), (4,)))
    opt = getattr(optim, kind)([{"params": [a, b]}, {"params": [c], "lr": 0.5}], **options)
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert sd["param_groups"][1]["lr"] == 0.5
    for key, value in {**DEFAULTS[kind], **options}.items():
        assert sd["param_groups"][0][key] == value, key
    if not before:
        assert not any(sd["state"].values())
    else:
        assert sorted(sd["state"]) == [0, 1, 2]
        for i in range(3):
            assert set(sd["state"][i]) == before
            assert float(sd["state"][i]["step"]) == 0
        np.testing.assert_array_equal(sd["state"][2]["sum"], np.full(4, 0.25))
    opt.step({a: np.ones((2, 2)), c: np.ones(4)})  # b has no gradient
    sd = opt.state_dict()
    if not after:  # no momentum_buffer, nor any other key (an empty entry is allowed)
        assert not any(sd["state"].values())
        return
    have = [0, 1, 2] if kind == "Adagrad" else [0, 2]
    assert sorted(sd["state"]) == have
    for i in have:
        assert set(sd["state"][i]) == after
        for key in after - {"step"}:
            assert sd["state"][i][key].shape == (a, b, c)[i].shape
    if "step" in after:
        assert [float(sd["state"][i]["step"]) for i in have] == (
            [1, 0, 1] if kind == "Adagrad" else [1, 1])


def test_sgd_momentum_zero_never_has_a_buffer() -> None:
    params = make_params()
    opt = optim.SGD(params, lr=0.1, momentum=0)
    for g in gradients(0, 3):
        opt.step(dict(zip(params, g)))
    assert not any(opt.state_dict()["state"].values())


def test_load_state_dict_rejects_mismatched_groups() -> None:
    params = make_params()
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    opt.step(dict(zip(params, gradients(0, 1)[0])))
    sd = opt.state_dict()
    with pytest.raises(ValueError):
        optim.SGD([params[0]], lr=0.1, momentum=0.9).load_state_dict(sd)
    with pytest.raises(ValueError):
        optim.SGD([{"params": [params[0]]}, {"params": [params[1]]}],
                  lr=0.1, momentum=0.9).load_state_dict(sd)


# -- 6. bad options ----------------------------------------------------------------------
def one() -> list[Parameter]:
    return [Parameter(np.ones(3))]


BAD = [
    ("negative lr SGD", lambda: optim.SGD(one(), lr=-0.1)),
    ("negative lr Adam", lambda: optim.Adam(one(), lr=-1e-3)),
    ("negative lr Adagrad", lambda: optim.Adagrad(one(), lr=-1.0)),
    ("negative lr Adadelta", lambda: optim.Adadelta(one(), lr=-1.0)),
    ("negative lr RMSprop", lambda: optim.RMSprop(one(), lr=-1.0)),
    ("negative lr AdamW", lambda: optim.AdamW(one(), lr=-1.0)),
    ("negative lr in a group", lambda: optim.SGD([{"params": one(), "lr": -1.0}], lr=0.1)),
    ("nesterov without momentum", lambda: optim.SGD(one(), lr=0.1, nesterov=True)),
    ("nesterov with dampening",
     lambda: optim.SGD(one(), lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)),
    ("nesterov group without momentum",
     lambda: optim.SGD([{"params": one(), "momentum": 0, "nesterov": True}], lr=0.1)),
    ("beta1 = 1", lambda: optim.Adam(one(), betas=(1.0, 0.999))),
    ("beta2 negative", lambda: optim.Adam(one(), betas=(0.9, -0.1))),
    ("beta1 negative AdamW", lambda: optim.AdamW(one(), betas=(-0.5, 0.999))),
    ("beta2 > 1", lambda: optim.AdamW(one(), betas=(0.9, 1.5))),
    ("unknown group option", lambda: optim.Adam([{"params": one(), "beta": 0.9}])),
    ("empty parameter list", lambda: optim.SGD([], lr=0.1)),
    ("empty generator", lambda: optim.Adam(iter([]))),
    ("duplicate in a group", lambda: (lambda p: optim.SGD([p, p], lr=0.1))(one()[0])),
    ("duplicate across groups",
     lambda: (lambda p: optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1))(one()[0])),
    ("negative weight_decay", lambda: optim.SGD(one(), lr=0.1, weight_decay=-0.1)),
    ("negative momentum", lambda: optim.SGD(one(), lr=0.1, momentum=-0.5)),
    ("negative eps Adam", lambda: optim.Adam(one(), eps=-1e-8)),
    ("rho > 1", lambda: optim.Adadelta(one(), rho=1.5)),
    ("negative lr_decay", lambda: optim.Adagrad(one(), lr_decay=-0.1)),
    ("negative initial_accumulator_value",
     lambda: optim.Adagrad(one(), initial_accumulator_value=-0.1)),
    ("negative alpha", lambda: optim.RMSprop(one(), alpha=-0.1)),
    ("negative RMSprop momentum", lambda: optim.RMSprop(one(), momentum=-0.1)),
]


@pytest.mark.parametrize("make", [b[1] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_options_raise_value_error(make) -> None:
    with pytest.raises(ValueError) as info:
        make()
    assert isinstance(info.value, OptionError)
    assert isinstance(info.value, CnnirError)


def test_unknown_keyword_option_is_a_type_error() -> None:
    """As in PyTorch, a misspelled keyword is Python's TypeError; in a group dict it is a
    ValueError (BAD above)."""
    with pytest.raises(TypeError):
        optim.SGD(one(), lr=0.1, momentun=0.9)


def test_duplicate_added_group_raises() -> None:
    p = one()[0]
    opt = optim.Adam([p])
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [p], "lr": 0.1})
    assert len(opt.param_groups) == 1


# -- 7. float32 parameters ---------------------------------------------------------------
F32 = [
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.05, "initial_accumulator_value": 0.5,
                 "weight_decay": 0.1}),
    ("Adadelta", {"rho": 0.5, "weight_decay": 0.1}),
    ("RMSprop", {"centered": True, "momentum": 0.8, "weight_decay": 0.1}),
    ("RMSprop", {}),
    ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.01, "betas": (0.8, 0.99)}),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", F32, ids=[config_id(c) for c in F32])
def test_float32_parameters(case: tuple, backend: str) -> None:
    kind, options = case
    params = make_params(31, dtype=np.float32)
    ref = Ref(kind, [p.data for p in params], [{"params": [0, 1], **options}])
    opt = getattr(optim, kind)(params, **options)
    for grads in gradients(31, 20):
        grads = [g.astype(np.float32) for g in grads]
        opt.step(dict(zip(params, grads)), backend=backend)
        ref.step(grads)
    for p in params:
        assert p.data.dtype == np.float32
    check_params(params, ref, rtol=1e-5)
    sd = opt.state_dict()["state"]
    for i, st in ref.state.items():
        for key, value in st.items():
            if key != "step":
                assert sd[i][key].dtype == np.float32, key
                assert_close(sd[i][key], value, rtol=1e-5, what=key)


# -- 8. L1 regularization ----------------------------------------------------------------
class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


def small_model() -> tuple[Small, np.ndarray, np.ndarray]:
    model = Small()
    if hasattr(model, "double"):
        model.double()
    rng = np.random.default_rng(41)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.3
    model.fc.weight.data[0, :3] = 0.0  # sign(0) = 0: no L1 gradient there
    x = rng.standard_normal((4, 2, 4, 4)).astype(model.conv.weight.data.dtype)
    y = np.array([0, 3, 1, 4])
    return model, x, y


def test_regularized_lists_only_conv_and_linear_weights() -> None:
    model, _, _ = small_model()
    got = optim.regularized(model)
    assert len(got) == 2
    assert got[0] is model.conv.weight and got[1] is model.fc.weight
    for p in (model.conv.bias, model.fc.bias, model.bn.weight, model.bn.bias):
        assert all(p is not q for q in got)


def test_l1_penalty_gradient_is_data_gradient_plus_sign() -> None:
    model, x, y = small_model()
    float64 = model.conv.weight.data.dtype == np.float64
    tol = 1e-12 if float64 else 1e-5
    lam = 0.01
    spec = dict(inputs=x.shape, targets=y.shape, backend="reference")
    plain = cnnir.value_and_grad(model, lambda out, t: F.cross_entropy(out, t), **spec)
    l1 = cnnir.value_and_grad(
        model, lambda out, t: F.cross_entropy(out, t) + optim.l1_penalty(model, lam), **spec)
    loss0, g0 = plain(x, y)
    loss1, g1 = l1(x, y)
    weights = {id(p) for p in optim.regularized(model)}
    total = sum(float(np.abs(p.data).sum()) for p in optim.regularized(model))
    np.testing.assert_allclose(float(loss1), float(loss0) + lam * total, rtol=tol)
    names = dict(model.named_parameters())
    assert set(g0) == set(g1) == set(names)
    for name, p in names.items():
        want = np.asarray(g0[name], np.float64)
        if id(p) in weights:
            want = want + lam * np.sign(p.data)
        assert_close(g1[name], want, rtol=tol, what=name)
    assert g1["fc.weight"][0, 0] == pytest.approx(float(g0["fc.weight"][0, 0]), abs=1e-15)


# -- 9. opt.step with value_and_grad's gradients -----------------------------------------
@pytest.mark.parametrize("via", ["dict", "grad"])
def test_step_with_value_and_grad_gradients(via: str) -> None:
    model, x, y = small_model()
    float64 = model.conv.weight.data.dtype == np.float64
    tol = 1e-12 if float64 else 1e-5
    vg = cnnir.value_and_grad(
        model, lambda out, t: F.cross_entropy(out, t) + optim.l1_penalty(model, 0.01),
        inputs=x.shape, targets=y.shape, backend="reference")
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    opt = optim.Adam([{"params": params[:2], "amsgrad": True}, {"params": params[2:]}],
                     lr=0.01, weight_decay=0.1)
    ref = Ref("Adam", [p.data for p in params],
              [{"params": [0, 1], "lr": 0.01, "weight_decay": 0.1, "amsgrad": True},
               {"params": list(range(2, len(params))), "lr": 0.01, "weight_decay": 0.1}])
    for _ in range(3):
        _, grads = vg(x, y)
        for name, p in zip(names, params):
            np.testing.assert_array_equal(p.grad, grads[name])  # vg sets p.grad
        ref.step([np.asarray(grads[n], np.float64) for n in names])
        if via == "dict":
            opt.step(grads)
        else:
            opt.step()
        check_params(params, ref, rtol=tol)
    assert float(opt.state_dict()["state"][0]["step"]) == 3


def test_step_rejects_unknown_gradient_names() -> None:
    params = make_params()
    opt = optim.SGD(params, lr=0.1)
    with pytest.raises(CnnirError):
        opt.step({"no.such.parameter": np.ones(3)})
