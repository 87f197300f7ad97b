"""stack-3x3 changes the function, so its tests check what it promises instead of values:
kernel sides, output shapes, receptive fields, and parameter and MAC deltas against the
closed form of docs/semantics.md §6.3; plus the fit it reports, measured on the stack's own
impulse response."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import assert_equivalent, build, constant, run_reference

import cnnir
from cnnir import ops
from cnnir.ir import Graph, TensorType
from cnnir.ops.conv import Conv2dAttrs
from cnnir.passes.manager import run_pipeline

MODELS = [("inception.py", "googlenet", (1, 3, 224, 224), {}),
          ("resnet.py", "resnet50", (1, 3, 224, 224), {}),
          ("inception.py", "inception_v3", (1, 3, 299, 299), {"init": "kaiming"})]


def sides(k: int) -> list[int]:
    """A side k > 3 becomes (k − 1)/2 sides of 3; a side of 1 stays 1."""
    return [3] * ((k - 1) // 2) if k > 1 else [1]


def closed_form_weights(c: int, o: int, kh: int, kw: int, m: int) -> int:
    """Σ kh_i·kw_i·c_i·c_{i+1} over the stack C -> m -> ... -> m -> O (§6.3: 9Cm + 9mO for a
    5x5, 9Cm + 9m² + 9mO for a 7x7, 3Cm + 3m² + 3mO for a 1x7)."""
    hs, ws = sides(kh), sides(kw)
    n = max(len(hs), len(ws))
    hs, ws = hs + [1] * (n - len(hs)), ws + [1] * (n - len(ws))
    widths = [c] + [m] * (n - 1) + [o]
    return sum(h * w * a * b for h, w, a, b in zip(hs, ws, widths, widths[1:]))


def big_convs(graph) -> dict:
    return {n.name: n for n in graph.nodes
            if n.op is ops.conv2d and max(n.inputs[1].type.shape[2:]) > 3}


@pytest.fixture(scope="module", params=MODELS, ids=[m[1] for m in MODELS])
def stacked(request):
    path, builder, shape, options = request.param
    g = build(path, builder, shape)
    return g, run_pipeline(g, ["stack-3x3"], **options)


def test_no_side_above_3_remains_and_outputs_keep_their_shapes(stacked):
    g, result = stacked
    out = result.graph
    assert big_convs(g) and not big_convs(out)
    assert [v.type for v in out.outputs] == [v.type for v in g.outputs]
    after = {n.name: n for n in out.nodes}
    for node in g.nodes:  # every original layer name still gives the same shape
        assert after[node.name].output.type == node.output.type, node.name


def test_macs_never_increase_and_deltas_follow_the_closed_form(stacked):
    g, result = stacked
    report = result.report["passes"][0]
    rows = {r["layer"]: r for r in report["layers"]}
    assert set(rows) == set(big_convs(g)) and not report["skipped"]
    want_params = want_macs = 0
    for name, node in big_convs(g).items():
        o, c, kh, kw = node.inputs[1].type.shape
        m = rows[name]["width"]
        delta = closed_form_weights(c, o, kh, kw, m) - kh * kw * c * o
        pixels = np.prod(node.output.type.shape) // o  # stride first: all at output size
        want_params += delta
        want_macs += int(pixels) * delta
        assert rows[name]["macs_after"] <= rows[name]["macs_before"]
        assert rows[name]["params_saved"] == -delta
    before, after = cnnir.analyze(g).totals, cnnir.analyze(result.graph).totals
    assert after.params - before.params == want_params
    assert after.macs - before.macs == want_macs <= 0
    assert report["totals"]["macs_saved"] == -want_macs


def _fields(graph) -> dict:
    return {layer.name: layer.receptive_field for layer in cnnir.analyze(graph).layers}


def _same_fields(before, after) -> bool:
    """Every layer of ``before`` has the same field in ``after`` (which adds the stack's
    inner convs)."""
    fields = _fields(after)
    return all(fields[name] == field for name, field in _fields(before).items())


def test_stride_1_layers_keep_their_receptive_field():
    """Inception v3 stacks only stride-1 layers: every layer's field is unchanged."""
    g = build("inception.py", "inception_v3", (1, 3, 299, 299))
    out = run_pipeline(g, ["stack-3x3"], init="kaiming").graph
    assert _same_fields(g, out)


@pytest.mark.parametrize(("path", "builder"), [("resnet.py", "resnet50"),
                                               ("inception.py", "googlenet")])
def test_strided_stems_keep_the_field_with_the_stride_last(path, builder):
    """7x7/2 stems: stride last keeps every field; stride first grows the stem's to 11."""
    g = build(path, builder, (1, 3, 224, 224))
    last = run_pipeline(g, ["stack-3x3"], stride_position="last", init="kaiming").graph
    assert _same_fields(g, last)
    assert [v.type for v in last.outputs] == [v.type for v in g.outputs]
    first = run_pipeline(g, ["stack-3x3"], init="kaiming")
    (row,) = first.report["passes"][0]["layers"]
    assert row["receptive_field_before"] == [7, 7] and row["receptive_field_after"] == [11, 11]
    assert _fields(first.graph)[row["layer"]] == (11, 11)


def test_alexnet_stem_is_left_alone_with_the_reason():
    g = build("alexnet.py", "alexnet", (1, 3, 224, 224))
    result = run_pipeline(g, ["stack-3x3"], init="kaiming")
    report = result.report["passes"][0]
    assert [s["layer"] for s in report["skipped"]] == ["features.0"]
    assert "no stack gives the same output shape" in report["skipped"][0]["reason"]
    assert [r["layer"] for r in report["layers"]] == ["features.3"]  # the 5x5
    last = run_pipeline(g, ["stack-3x3"], init="kaiming", stride_position="last").graph
    assert not big_convs(last) and [v.type for v in last.outputs] == [v.type for v in g.outputs]


def single_conv(kh: int, kw: int, *, stride=1, padding=None, dilation=1, groups=1,
                channels=(4, 6), seed=0) -> Graph:
    rng = np.random.default_rng(seed)
    c, o = channels
    pad = padding if padding is not None else (dilation * (kh // 2), dilation * (kw // 2))
    g = Graph("one_conv")
    x = g.add_input("x", TensorType((1, c, 17, 17), "float64"))
    w = constant(g, "conv.weight", rng.normal(size=(o, c // groups, kh, kw)))
    b = constant(g, "conv.bias", rng.normal(size=o))
    conv = g.add_node(ops.conv2d, [x, w, b], Conv2dAttrs(stride, pad, dilation, groups),
                      name="conv")
    g.set_outputs([conv.output])
    return g


def impulse_kernel(graph: Graph, kh: int, kw: int, dilation: int = 1) -> np.ndarray:
    """The conv kernel a stride-1 graph applies, read off its responses to unit impulses at
    the centre pixel: y[o, 8 − i·d, 8 − j·d] = K[o, c, i, j] + b[o] away from the borders."""
    x_type = graph.inputs[0].type
    c = x_type.shape[1]
    bias = run_reference(graph, np.zeros(x_type.shape))
    centre = 8
    taps = []
    for ch in range(c):
        x = np.zeros(x_type.shape)
        x[0, ch, centre, centre] = 1.0
        y = run_reference(graph, x) - bias
        pad_h, pad_w = dilation * (kh // 2), dilation * (kw // 2)
        rows = centre + pad_h - dilation * np.arange(kh)
        cols = centre + pad_w - dilation * np.arange(kw)
        taps.append(y[0][:, rows][:, :, cols])
    return np.stack(taps, axis=1)


@pytest.mark.parametrize(("kh", "kw", "dilation", "groups"),
                         [(5, 5, 1, 1), (7, 7, 1, 1), (1, 7, 1, 1), (5, 3, 2, 2)])
def test_reported_fit_error_is_the_stack_s_measured_error(kh, kw, dilation, groups):
    g = single_conv(kh, kw, dilation=dilation, groups=groups)
    kernel = g.constants["conv.weight"].const.array
    if groups == 1:
        np.testing.assert_allclose(impulse_kernel(g, kh, kw, dilation), kernel, atol=1e-12)
    result = run_pipeline(g, ["stack-3x3"])
    row = result.report["passes"][0]["layers"][0]
    if groups == 1:
        stack_kernel = impulse_kernel(result.graph, kh, kw, dilation)
        measured = np.linalg.norm(stack_kernel - kernel) / np.linalg.norm(kernel)
        assert row["fit_error"] == pytest.approx(measured, rel=1e-9)
    zero_sweeps = run_pipeline(g, ["stack-3x3"], fit_sweeps=0)
    assert row["fit_error"] < zero_sweeps.report["passes"][0]["layers"][0]["fit_error"]


def test_a_5x5_that_is_a_centred_3x3_is_recovered_exactly():
    """A 5x5 kernel with only its central 3x3 taps non-zero is a stack of a 3x3 and a
    centred delta, which least squares finds."""
    g = single_conv(5, 5)
    w = g.constants["conv.weight"].const.array
    w[:, :, [0, 4], :] = 0
    w[:, :, :, [0, 4]] = 0
    row = run_pipeline(g, ["stack-3x3"]).report["passes"][0]["layers"][0]
    assert row["fit_error"] < 1e-12


def test_options_width_nonlinearity_and_kaiming():
    g = single_conv(5, 5, channels=(4, 6))
    result = run_pipeline(g, ["stack-3x3"], width=2, nonlinearity="relu", init="kaiming")
    out = result.graph
    assert [n.op for n in out.nodes] == [ops.conv2d, ops.relu, ops.conv2d]
    w0, w1 = out.nodes[0].inputs[1], out.nodes[2].inputs[1]
    assert w0.type.shape == (2, 4, 3, 3) and w1.type.shape == (6, 2, 3, 3)
    assert w0.const._array is None  # drawn only when read
    assert np.std(w1.const.array) == pytest.approx(np.sqrt(2 / 18), rel=0.35)
    assert out.nodes[2].inputs[2].name == "conv.bias" and out.nodes[0].inputs[2] is None
    assert result.report["passes"][0]["layers"][0]["fit_error"] is None


def test_layers_left_alone_say_why():
    even = single_conv(4, 4, padding=(1, 1))
    report = run_pipeline(even, ["stack-3x3"]).report["passes"][0]
    assert not report["layers"] and "even side" in report["skipped"][0]["reason"]
    grouped = single_conv(5, 5, groups=2)
    report = run_pipeline(grouped, ["stack-3x3"], width=3).report["passes"][0]
    assert "multiple of groups=2" in report["skipped"][0]["reason"]


def test_one_d_kernels_get_a_width_that_saves_weights():
    """Three 1x3 convs at full width would cost 9/7 of a 1x7; the default width is lowered
    until the stack has no more weights than the layer."""
    g = single_conv(1, 7, channels=(16, 16))
    row = run_pipeline(g, ["stack-3x3"], init="kaiming").report["passes"][0]["layers"][0]
    m = row["width"]
    assert closed_form_weights(16, 16, 1, 7, m) <= 7 * 16 * 16
    assert closed_form_weights(16, 16, 1, 7, m + 1) > 7 * 16 * 16


def test_a_fused_layer_keeps_its_epilogue_on_the_last_conv():
    """relu(conv5x5(x) + x) with a kernel the stack represents exactly (a centred 3x3, so
    the first conv is a centred identity): the stacked graph computes the same function."""
    g = single_conv(5, 5, channels=(4, 4))
    w = g.constants["conv.weight"].const.array
    w[:, :, [0, 4], :] = 0
    w[:, :, :, [0, 4]] = 0
    conv = g.nodes[0]
    total = g.add_node(ops.add, [conv.output, g.inputs[0]], name="add")
    g.set_outputs([g.add_node(ops.relu, [total.output], name="relu").output])
    result = run_pipeline(g, ["fuse-conv-activation", "stack-3x3"])
    out = result.graph
    assert [n.op for n in out.nodes] == [ops.conv2d, ops.conv2d_fused]
    last = out.nodes[-1]
    assert last.attrs.activation is ops.relu and last.attrs.residual
    assert last.inputs[3] is out.inputs[0] and last.output.name == "relu"
    assert_equivalent(g, out)


def composite_kernel(weights: list[np.ndarray], stride: int) -> np.ndarray:
    """The kernel of convs applied in order, the first strided: tap (i0, j0) of the first and
    taps (i, j) of the later ones (on the strided grid) land at i0 + stride·Σi (written out
    independently of cnnir.passes.kernel_fit)."""
    acc = weights[0]
    for w in weights[1:]:
        o, m = w.shape[:2]
        c, eh, ew = acc.shape[1:]
        out = np.zeros((o, c, eh + stride * (w.shape[2] - 1), ew + stride * (w.shape[3] - 1)))
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                out[:, :, stride * i:stride * i + eh, stride * j:stride * j + ew] += \
                    np.einsum("om,mcuv->ocuv", w[:, :, i, j], acc)
        acc = out
    return acc


def test_a_stride_first_stack_is_the_conv_with_its_composite_kernel():
    """7x7/2 with padding 3: the stack (3x3/2 pad 1, then two 3x3 pad 1 on the strided grid)
    is, away from the borders, one 11x11/2 conv with padding 1 + 2·(1 + 1) = 5, whose kernel
    is the 7x7 centred (offset 2) plus what the fit could not match."""
    g = Graph("stem")
    rng = np.random.default_rng(4)
    x = g.add_input("x", TensorType((1, 3, 23, 23), "float64"))
    kernel = rng.normal(size=(5, 3, 7, 7))
    conv = g.add_node(ops.conv2d, [x, constant(g, "conv.weight", kernel), None],
                      Conv2dAttrs(stride=2, padding=3), name="conv")
    g.set_outputs([conv.output])
    result = run_pipeline(g, ["stack-3x3"], width=3)
    out = result.graph
    weights = [n.inputs[1].const.array for n in out.nodes]
    assert [n.attrs.stride for n in out.nodes] == [(2, 2), (1, 1), (1, 1)]
    composite = composite_kernel(weights, 2)
    single = Graph("single")
    xs = single.add_input("x", TensorType((1, 3, 23, 23), "float64"))
    c = single.add_node(ops.conv2d, [xs, constant(single, "k", composite), None],
                        Conv2dAttrs(stride=2, padding=5), name="conv")
    single.set_outputs([c.output])
    data = rng.normal(size=(1, 3, 23, 23))
    stacked, reference = run_reference(out, data), run_reference(single, data)
    assert stacked.shape == reference.shape == (1, 5, 12, 12)
    np.testing.assert_allclose(stacked[..., 2:-2, 2:-2], reference[..., 2:-2, 2:-2], atol=1e-10)
    target = np.zeros_like(composite)
    target[:, :, 2:9, 2:9] = kernel
    error = np.linalg.norm(composite - target) / np.linalg.norm(kernel)
    assert result.report["passes"][0]["layers"][0]["fit_error"] == pytest.approx(error, rel=1e-9)
