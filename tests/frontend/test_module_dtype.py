"""Module dtype conversion (``double``/``float``/``to``), in-place weight assignment and
``grad``/``zero_grad``, as torch.nn.Module and torch.nn.Parameter behave."""

from __future__ import annotations

import numpy as np
import pytest

import cnnir
from cnnir import CnnirError, ModelFormatError, ShapeError, TensorType, nn


def small_net(seed: int = 0) -> nn.Module:
    nn.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, 5))


def entries(model: nn.Module) -> dict[str, nn.Parameter | nn.Buffer]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def dtypes(model: nn.Module) -> dict[str, str]:
    return {name: item.dtype for name, item in entries(model).items()}


def expected(dtype: str) -> dict[str, str]:
    names = ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias",
             "1.running_mean", "1.running_var"]
    return {**{n: dtype for n in names}, "1.num_batches_tracked": "int64"}


# -- conversion -------------------------------------------------------------------------
@pytest.mark.parametrize("convert", [
    lambda m: m.double(), lambda m: m.to(np.float64), lambda m: m.to("float64"),
    lambda m: m.to(dtype=np.dtype("float64")), lambda m: m.to("cpu", np.float64),
    lambda m: m.to(device="cpu", dtype="double"),
], ids=["double", "to-numpy", "to-string", "to-dtype-kwarg", "to-cpu-and-dtype", "to-kwargs"])
def test_to_float64_converts_floating_point_arrays_only(convert) -> None:
    model = small_net()
    assert convert(model) is model
    assert dtypes(model) == expected("float64")
    assert model.float() is model
    assert dtypes(model) == expected("float32")


def test_lazy_arrays_change_their_declared_dtype_without_being_filled() -> None:
    model = small_net().double()
    assert all(item._data is None for item in entries(model).values())
    assert model[0].weight.data.dtype == np.float64
    assert model[1].num_batches_tracked.data.dtype == np.int64


def test_materialized_arrays_are_converted_exactly_and_round_trip() -> None:
    model = small_net()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    old_weight = model[0].weight.data
    model.double()
    assert model[0].weight.data is not old_weight  # a new array, as a torch dtype change
    for key, value in model.state_dict().items():
        assert value.dtype == (np.int64 if key.endswith("num_batches_tracked") else np.float64)
        np.testing.assert_array_equal(value, before[key])
    model.float()
    for key, value in model.state_dict().items():
        assert value.dtype == before[key].dtype
        assert value.tobytes() == before[key].tobytes()


def test_converting_before_or_after_filling_gives_the_same_values() -> None:
    filled_first = small_net(seed=3)
    filled_first.state_dict()
    filled_first.double()
    converted_first = small_net(seed=3).double()
    for key, value in converted_first.state_dict().items():
        assert value.tobytes() == filled_first.state_dict()[key].tobytes(), key
    weight = converted_first[0].weight.data
    np.testing.assert_array_equal(weight, weight.astype(np.float32))  # float32 values


def test_a_new_initializer_after_conversion_fills_at_the_new_dtype() -> None:
    model = small_net().double()
    nn.init.normal_(model[4].weight)
    weight = model[4].weight.data
    assert weight.dtype == np.float64
    assert not np.array_equal(weight, weight.astype(np.float32))


def test_converting_twice_to_the_same_dtype_keeps_the_arrays() -> None:
    model = small_net().double()
    arrays = model.state_dict()
    model.to("float64")
    assert all(model.state_dict()[k] is v for k, v in arrays.items())


def test_integer_buffers_registered_from_arrays_keep_their_dtype() -> None:
    model = nn.Module()
    model.register_buffer("table", np.arange(4, dtype=np.int32))
    model.register_buffer("scale", np.ones(4, dtype=np.float32))
    model.double()
    assert model.table.dtype == "int32" and model.table.data.dtype == np.int32
    assert model.scale.dtype == "float64" and model.scale.data.dtype == np.float64


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (("cuda",), {}, "'cpu' device, not 'cuda'"),
    (("cuda:0",), {}, "'cpu' device"),
    ((0,), {}, "'cpu' device"),
    ((), {"device": "mps"}, "'cpu' device"),
    (("garbage",), {}, "neither a dtype nor a device"),
    ((object(),), {}, "neither a dtype nor a device"),
    (("int32",), {}, "only converts to floating-point dtypes"),
    ((np.int64,), {}, "only converts to floating-point dtypes"),
    (("float32", "float64"), {}, "more than one dtype"),
])
def test_to_refuses_other_devices_and_non_float_dtypes(args, kwargs, message) -> None:
    model = small_net()
    with pytest.raises(CnnirError, match=message) as info:
        model.to(*args, **kwargs)
    assert info.value.hint
    assert dtypes(model) == expected("float32")


def test_to_cpu_changes_nothing() -> None:
    model = small_net()
    arrays = model.state_dict()
    assert model.to("cpu") is model
    assert model.to(device="cpu") is model
    assert all(model.state_dict()[k] is v for k, v in arrays.items())


def test_shared_parameters_are_converted_once() -> None:
    layer = nn.Linear(3, 3)
    model = nn.Sequential(layer, nn.ReLU(), layer)
    model.state_dict()
    model.double()
    assert layer.weight.data.dtype == np.float64


# -- tracing and running a converted model ----------------------------------------------
def test_a_float64_model_traces_with_float64_constants() -> None:
    model = small_net().eval().double()
    graph = cnnir.trace(model, TensorType((1, 3, 8, 8), "float64"))
    assert {name: v.type.dtype for name, v in graph.constants.items()} == expected("float64")
    assert graph.constants["0.weight"].const.array.dtype == np.float64
    assert graph.outputs[0].type.dtype == "float64"


def test_plain_shapes_take_the_model_dtype_and_explicit_float32_is_an_error() -> None:
    graph = cnnir.trace(small_net().double(), (1, 3, 8, 8))
    assert graph.inputs[0].type.dtype == "float64"
    # as PyTorch ("expected scalar type Double but found Float"): cast the input instead
    with pytest.raises(ShapeError, match="one dtype"):
        cnnir.trace(small_net().double(), TensorType((1, 3, 8, 8), "float32"))


def test_a_float64_model_runs_on_the_reference_backend() -> None:
    model = small_net().eval()
    x = np.random.default_rng(0).normal(size=(1, 3, 8, 8))
    want = cnnir.compile(model, (1, 3, 8, 8), backend="reference")(x.astype(np.float32))
    model.double()
    graph = cnnir.trace(model, TensorType((1, 3, 8, 8), "float64"))
    got = cnnir.compile(graph, backend="reference", dtype="float64")(x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_graph_keeps_the_dtype_it_was_traced_with() -> None:
    model = small_net().eval()
    graph = cnnir.trace(model, (1, 3, 8, 8))
    model.double()  # before the graph's constants were filled
    weight = graph.constants["0.weight"]
    assert weight.type.dtype == "float32" and weight.const.array.dtype == np.float32


# -- assigning weights ------------------------------------------------------------------
def test_load_state_dict_copies_into_the_existing_arrays() -> None:
    model, other = small_net(0), small_net(1)
    arrays = model.state_dict()
    checkpoint = {k: v * 2 for k, v in other.state_dict().items()}
    model.load_state_dict(checkpoint)
    for key, value in model.state_dict().items():
        assert value is arrays[key], key
        np.testing.assert_array_equal(value, checkpoint[key].astype(value.dtype))


def test_load_state_dict_casts_to_the_model_dtype() -> None:
    model = small_net(0)
    arrays = model.state_dict()
    checkpoint = small_net(1).double().state_dict()
    model.load_state_dict(checkpoint)
    assert dtypes(model) == expected("float32")
    for key, value in model.state_dict().items():
        assert value is arrays[key]
        np.testing.assert_array_equal(value, checkpoint[key].astype(value.dtype))


def test_assigning_data_copies_in_place_and_a_lazy_array_is_filled() -> None:
    linear = nn.Linear(2, 2)
    linear.weight.data = np.eye(2)  # lazy: a new array of the parameter's dtype
    weight = linear.weight.data
    assert weight.dtype == np.float32
    linear.weight.data = [[1.5, 2.5], [3.5, 4.5]]
    assert linear.weight.data is weight
    np.testing.assert_array_equal(weight, [[1.5, 2.5], [3.5, 4.5]])


def test_a_float_array_assigned_to_an_integer_buffer_is_cast() -> None:
    bn = nn.BatchNorm2d(2)
    counter = bn.num_batches_tracked.data
    bn.num_batches_tracked.data = np.array(7.0)
    assert bn.num_batches_tracked.data is counter
    assert counter.dtype == np.int64 and counter == 7


def test_a_read_only_array_is_replaced_not_written() -> None:
    frozen = np.zeros(3, np.float32)
    frozen.flags.writeable = False
    model = nn.Module()
    model.register_buffer("b", frozen)
    model.b.data = np.ones(3)
    np.testing.assert_array_equal(frozen, 0)
    np.testing.assert_array_equal(model.b.data, 1)


@pytest.mark.parametrize("value", [
    np.array(["a", "b"]), np.array([1.0, 2.0], dtype=object), [[1.0], [1.0, 2.0]],
    {"a": 1},
], ids=["strings", "objects", "ragged", "dict"])
def test_assigning_non_numbers_is_a_model_format_error(value) -> None:
    linear = nn.Linear(1, 2)
    with pytest.raises(ModelFormatError, match="cannot assign"):
        linear.bias.data = value
    before = linear.weight.data.copy()
    with pytest.raises(ModelFormatError, match="not numbers: bias"):
        linear.load_state_dict({"weight": np.ones((2, 1)), "bias": value})
    np.testing.assert_array_equal(linear.weight.data, before)  # a refused checkpoint: no writes


def test_assigning_the_wrong_shape_is_still_refused() -> None:
    linear = nn.Linear(1, 2)
    with pytest.raises(ModelFormatError, match=r"shape \[3\]"):
        linear.bias.data = np.zeros(3)


# -- gradients --------------------------------------------------------------------------
def test_grad_is_none_and_assignable() -> None:
    model = small_net()
    assert all(item.grad is None for item in entries(model).values())
    weight = model[0].weight
    weight.grad = np.ones(weight.shape, np.float32)
    assert weight.grad.shape == weight.shape
    assert model[4].weight.grad is None


def test_parameters_still_read_as_tensors_inside_a_trace() -> None:
    class L1(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x).sum() + self.fc.weight.abs().sum()

    model = L1()
    model.fc.weight.grad = np.zeros((2, 4), np.float32)
    graph = cnnir.trace(model, (3, 4))
    assert "abs(%fc.weight)" in str(graph)


def test_zero_grad_forgets_or_zero_fills_the_gradients() -> None:
    model = small_net()
    params = list(model.parameters())
    for p in params[:-1]:
        p.grad = np.ones(p.shape, np.float32)
    held = params[0].grad
    model.zero_grad(set_to_none=False)
    assert params[0].grad is held and not held.any()
    assert params[-1].grad is None
    model.zero_grad()
    assert all(p.grad is None for p in params)


def test_conversion_converts_the_gradients_too() -> None:
    model = small_net()
    weight = model[0].weight
    weight.grad = np.full(weight.shape, 0.1, np.float32)
    model.double()
    assert weight.grad.dtype == np.float64
    np.testing.assert_array_equal(weight.grad, np.float32(0.1))
