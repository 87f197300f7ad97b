"""stack-3x3's weight fit (cnnir.passes.kernel_fit): exact where an exact stack exists, never
worse at a larger width, and a reported error that is the error of the kernel the rewritten
graph computes. Composite kernels are recomputed here by an independent loop over taps, and
graph outputs by the reference executor."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import constant, run_reference

from cnnir import ops
from cnnir.ir import Graph, TensorType
from cnnir.ops.conv import Conv2dAttrs
from cnnir.passes.kernel_fit import fit_stack, schedule
from cnnir.passes.manager import run_pipeline


def composite(factors: list[np.ndarray]) -> np.ndarray:
    """Kernel of stride-1 convs ``[G, out, in, kh, kw]`` applied in order: tap t of a later
    factor and tap u of what came before land at u + t (cross-correlations compose by
    adding offsets)."""
    acc = factors[0]
    for f in factors[1:]:
        g, o, m, kh, kw = f.shape
        c, eh, ew = acc.shape[2:]
        out = np.zeros((g, o, c, eh + kh - 1, ew + kw - 1))
        for gi in range(g):
            for oi in range(o):
                for mi in range(m):
                    for i in range(kh):
                        for j in range(kw):
                            out[gi, oi, :, i:i + eh, j:j + ew] += f[gi, oi, mi, i, j] * acc[gi, mi]
        acc = out
    return acc


def shapes_for(c: int, o: int, kh: int, kw: int, m: int, g: int = 1) -> list[tuple]:
    n = max((kh - 1) // 2, (kw - 1) // 2)
    sides = [(3 if kh > 1 else 1, 3 if kw > 1 else 1)] * n
    widths = [c // g] + [m // g] * (n - 1) + [o // g]
    return [(g, b, a, *s) for a, b, s in zip(widths, widths[1:], sides)]


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize(("c", "o", "kh", "kw", "g"), [
    (1, 1, 5, 5, 1), (3, 2, 5, 5, 1), (2, 5, 5, 5, 1), (2, 2, 7, 7, 1), (3, 1, 7, 7, 1),
    (4, 4, 1, 7, 1), (4, 6, 5, 5, 2)])
def test_exact_at_nine_times_the_smaller_channel_count(c, o, kh, kw, g):
    """Every 5x5 is two 3x3 convs through 9·min(C, O) channels (one per shift), every 7x7
    three; the fit must find it (float64: error below 1e-5)."""
    rng = np.random.default_rng(c * 100 + o * 10 + kh)
    target = rng.normal(size=(g, o // g, c // g, kh, kw))
    for m in (9 * min(c, o), 9 * min(c, o) + g):
        fit = fit_stack(target, shapes_for(c, o, kh, kw, m, g), (1, 1))
        assert fit.relative_error < 1e-5
        assert relative(composite(fit.factors), target) < 1e-5


def test_one_channel_5x5_improves_with_width_and_is_exact_from_four():
    """A 5x5 tap u = s + t with t a tap of the second 3x3 and s in {0, 2}: four channels
    (s_h, s_w) suffice; one channel cannot hold a generic 5x5."""
    target = np.random.default_rng(0).normal(size=(1, 1, 1, 5, 5))
    errors = {m: fit_stack(target, shapes_for(1, 1, 5, 5, m), (1, 1)).relative_error
              for m in (1, 2, 4, 9, 16)}
    assert errors[1] > 0.1
    assert errors[1] >= errors[2] >= errors[4]
    assert all(errors[m] < 1e-12 for m in (4, 9, 16))


@pytest.mark.parametrize(("c", "o", "kh", "kw"), [(2, 3, 5, 5), (4, 3, 5, 5), (2, 2, 7, 7)])
def test_error_never_increases_with_the_width(c, o, kh, kw):
    rng = np.random.default_rng(7)
    target = rng.normal(size=(1, o, c, kh, kw))
    widths = range(1, 9) if kh == 5 else range(1, 6)
    errors = [fit_stack(target, shapes_for(c, o, kh, kw, m), (1, 1)).relative_error
              for m in widths]
    assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0]


def test_error_never_increases_along_the_schedule_of_wide_layers():
    target = np.random.default_rng(3).normal(size=(1, 20, 16, 5, 5))
    widths = schedule(27)
    assert widths == list(range(1, 9)) + [12, 18, 27]
    errors = [fit_stack(target, shapes_for(16, 20, 5, 5, m), (1, 1)).relative_error
              for m in widths[6:]]
    assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:])), errors


def conv_graph(c: int, o: int, k: int, size: int = 24, seed: int = 0) -> Graph:
    """One k×k 'same' conv without bias on a size×size float64 input."""
    rng = np.random.default_rng(seed)
    g = Graph("one_conv")
    x = g.add_input("x", TensorType((1, c, size, size), "float64"))
    w = constant(g, "conv.weight", rng.normal(size=(o, c, k, k)))
    conv = g.add_node(ops.conv2d, [x, w, None], Conv2dAttrs(padding=k // 2), name="conv")
    g.set_outputs([conv.output])
    return g


@pytest.mark.parametrize(("c", "o", "k", "width"), [(1, 1, 5, 1), (3, 3, 5, 2), (3, 2, 5, 2),
                                                     (2, 3, 7, 2)])
def test_reported_error_is_the_rewritten_graph_s_error(c, o, k, width):
    """Away from the borders (where the stack's zero-padded intermediate maps differ from the
    layer's padding) the stack is the conv with its composite kernel; on white-noise input
    the output's relative error is the kernel's, up to sampling noise."""
    g = conv_graph(c, o, k, size=64)
    result = run_pipeline(g, ["stack-3x3"], width=width)
    row = result.report["passes"][0]["layers"][0]
    assert row["width"] == width and row["params_before"] == k * k * c * o
    x = np.random.default_rng(1).standard_normal((1, c, 64, 64))
    want, got = run_reference(g, x), run_reference(result.graph, x)
    inner = (slice(None), slice(None), slice(k, -k), slice(k, -k))
    measured = relative(got[inner], want[inner])
    assert row["fit_error"] > 1e-3
    assert measured == pytest.approx(row["fit_error"], rel=0.15)


@pytest.mark.parametrize(("c", "o", "k"), [(1, 1, 5), (2, 3, 5), (2, 2, 7)])
def test_an_exact_stack_computes_the_layer_away_from_the_borders(c, o, k):
    g = conv_graph(c, o, k)
    m = 9 * min(c, o)
    result = run_pipeline(g, ["stack-3x3"], width=m)
    row = result.report["passes"][0]["layers"][0]
    assert row["fit_error"] < 1e-5 and row["params_after"] == 9 * (k // 2 - 2) * m * m \
        + 9 * c * m + 9 * m * o
    x = np.random.default_rng(2).standard_normal((1, c, 24, 24))
    want, got = run_reference(g, x), run_reference(result.graph, x)
    inner = (slice(None), slice(None), slice(k, -k), slice(k, -k))
    np.testing.assert_allclose(got[inner], want[inner], atol=1e-9)
    assert relative(got, want) > 1e-3  # each conv zero-pads its own input: borders differ
    exact = run_pipeline(g, ["stack-3x3"], width=m, borders="exact")
    first = exact.graph.nodes[0]
    assert first.attrs.padding == (k // 2,) * 4 and exact.graph.nodes[-1].attrs.padding == (
        0, 0, 0, 0)
    np.testing.assert_allclose(run_reference(exact.graph, x), want, atol=1e-9)


def test_the_report_line_gives_width_params_and_fit_error():
    g = conv_graph(1, 1, 5)
    lines = run_pipeline(g, ["stack-3x3"], width=9).report["passes"][0]["lines"]
    assert lines[0].startswith("conv: 5x5 -> 3x3 -> 3x3 (m=9), params 25 -> 162")
    assert "fit error" in lines[0]
