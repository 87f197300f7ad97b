"""The program state: parameters and buffers bound by reference, derived forms (packed and
transformed weights, folded BatchNorm scales) remade when what they derive from changes, and
one state shared by several compiled models. The reference backend, compiled afresh on the
updated weights, is the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from op_helpers import assert_close

import cnnir
import cnnir.nn.functional as F
from cnnir import nn
from cnnir.errors import LoweringError


class Net(nn.Module):
    """One layer per derived form: a 1x1 conv (packed rows), a 3x3 conv (packed rows, or
    Winograd-transformed), a depthwise conv (read directly), BatchNorm in eval (scale and
    shift), PReLU (broadcast slopes), a transposed conv (transposed weights) and a linear
    layer (transposed weights at this batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.pw = nn.Conv2d(3, 8, 1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.PReLU(8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.fc = nn.Linear(4 * 16 * 16, 5)

    def forward(self, x):
        x = self.act(self.bn(self.dw(self.conv(F.relu(self.pw(x))))))
        return self.fc(cnnir.flatten(self.up(x), 1))


SHAPE = (20, 3, 8, 8)  # 20 rows: the linear layer takes the BLAS path (pre-transposed weights)


def model_and_input() -> tuple[Net, np.ndarray]:
    model = Net().eval()
    rng = np.random.default_rng(0)
    for name, p in model.state_dict().items():
        if np.asarray(p).dtype.kind == "f":
            model.load_state_dict({name: rng.uniform(0.5, 1.5, np.shape(p))}, strict=False)
    return model, rng.standard_normal(SHAPE).astype(np.float32)


def reference(model: Net, x: np.ndarray) -> np.ndarray:
    return cnnir.compile(model, SHAPE, backend="reference")(x.astype(np.float64))


def new_weights(model: Net) -> dict[str, np.ndarray]:
    """Other values for every float parameter and buffer (variances stay positive)."""
    rng = np.random.default_rng(1)
    return {name: rng.uniform(0.1 if name.endswith("var") else -1, 1, np.shape(p)).astype(
        np.float32) for name, p in model.state_dict().items() if np.asarray(p).dtype.kind == "f"}


def assert_matches(got: np.ndarray, want: np.ndarray) -> None:
    assert np.isfinite(want).all()
    assert_close(got, want, 72)


@pytest.mark.parametrize("tune", ["im2col-microkernel", "winograd-f2x2-3x3", "winograd-f4x4-3x3",
                                  "depthwise-phases", "depthwise-3x3-flat",
                                  "depthwise-3x3-rows"])
def test_assigned_weights_reach_every_derived_form(tune: str) -> None:
    model, x = model_and_input()
    run = cnnir.compile(model, SHAPE, optimize=False, tune=tune)
    assert_matches(run(x), reference(model, x))
    for name, array in new_weights(model).items():
        run.state.assign(name, array)
    np.testing.assert_array_equal(model.state_dict()["fc.weight"], run.state["fc.weight"])
    assert_matches(run(x), reference(model, x))


def test_parameters_are_the_models_own_arrays() -> None:
    model, x = model_and_input()
    run = cnnir.compile(model, SHAPE, optimize=False)
    for name in ("pw.weight", "bn.running_var", "fc.bias"):
        assert np.shares_memory(run.state[name], model.state_dict()[name])


def test_an_optimized_model_snapshots_the_models_arrays_not_its_own() -> None:
    """Folding BatchNorm makes new weights that only the compiled graph holds: bound as they
    are, uncopied. The model's own arrays are copied: writing them changes nothing."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 4, 1)).eval()
    x = np.random.default_rng(2).standard_normal((1, 3, 6, 6)).astype(np.float32)
    run = cnnir.compile(model, x.shape)
    before = run(x).copy()
    graph = run.program((x.shape,)).builder.graph
    folded = [v for v in graph.constants.values() if v.const.fresh]
    assert folded
    for value in folded:
        assert np.shares_memory(run.state[value.name], value.const.array)
    for name, p in model.state_dict().items():
        if name in run.state.names():
            assert not np.shares_memory(run.state[name], p)
        if np.asarray(p).dtype.kind == "f":
            p[...] = 7.0
    np.testing.assert_array_equal(run(x), before)


def test_writes_in_place_count_once_marked() -> None:
    """An optimizer writes the arrays itself and says which it changed."""
    model, x = model_and_input()
    run = cnnir.compile(model, SHAPE, optimize=False, tune="winograd-f2x2-3x3")
    run(x)
    weight = model.state_dict()["conv.weight"]
    weight *= -0.5
    model.state_dict()["bn.running_mean"][:] += 0.25
    run.state.mark_changed(["conv.weight", "bn.running_mean"])
    assert_matches(run(x), reference(model, x))


def test_two_models_share_one_state() -> None:
    model, x = model_and_input()
    first = cnnir.compile(model, SHAPE, optimize=False)
    second = cnnir.compile(model, (2, 3, 8, 8), optimize=False, state=first.state)
    assert second.state is first.state
    first.state.assign("pw.weight", new_weights(model)["pw.weight"])
    got = second(x[:2])
    want = cnnir.compile(model, (2, 3, 8, 8), backend="reference")(x[:2].astype(np.float64))
    assert_matches(got, want)


def test_a_float64_program_converts_once_and_still_follows_assignments() -> None:
    model, x = model_and_input()
    run = cnnir.compile(model, SHAPE, optimize=False, dtype="float64")
    assert not np.shares_memory(run.state["pw.weight"], model.state_dict()["pw.weight"])
    run.state.assign("pw.weight", new_weights(model)["pw.weight"])
    model.load_state_dict({"pw.weight": np.asarray(run.state["pw.weight"])}, strict=False)
    np.testing.assert_allclose(run(x.astype(np.float64)), reference(model, x), rtol=1e-10,
                               atol=1e-10)


def test_state_views_are_read_only_and_assignments_checked() -> None:
    model, _ = model_and_input()
    run = cnnir.compile(model, SHAPE, optimize=False)
    with pytest.raises(ValueError, match="read-only"):
        run.state["fc.bias"][0] = 1.0
    with pytest.raises(LoweringError, match=r"shape \[3\] to 'fc.bias' of shape \[5\]"):
        run.state.assign("fc.bias", np.zeros(3))
    with pytest.raises(LoweringError, match="(?s)no array named 'fc.b'.*fc.bias"):
        run.state.assign("fc.b", np.zeros(5))
    other = nn.Sequential()
    other.add_module("fc", nn.Linear(3, 5))
    with pytest.raises(LoweringError, match=r"holds 'fc.weight' with shape \[5, 1024\]"):
        cnnir.compile(other.eval(), (2, 3), optimize=False, state=run.state)
    with pytest.raises(LoweringError, match="float64 program state cannot serve a float32"):
        cnnir.compile(model, SHAPE, optimize=False,
                      state=cnnir.compile(model, SHAPE, optimize=False, dtype="float64").state)
