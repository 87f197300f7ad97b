"""Random valid inference graphs for differential fuzzing, and the check that runs one.

A graph is a ``Spec``: an input shape and a list of ``Layer``s, each naming an op, the
indices of the tensors it reads (0 is the input, i + 1 the output of layer i, so branches,
residual adds and concatenations of earlier tensors arise) and its attributes. A spec's
``repr`` is Python that rebuilds it, so a failing case pastes into ``test_regressions.py``.

``draw_spec(d)`` builds a spec from a ``Draw``: ``HypothesisDraw`` (the CI test; hypothesis
shrinks a failure to a minimal spec) or ``RandomDraw`` (a numpy generator). Layers are valid
by construction: each is drawn from the current static shapes (groups among the divisors of
the channels, kernels that fit the padded input, pooling windows that leave an output) and
keeps every tensor under ``MAX_ELEMENTS``.

``check(spec)`` runs the graph on the float64 reference executor, the Numba CPU backend in
float32 (with ``spec.tune`` picking the convolution algorithm) and, exported to ONNX, on
onnxruntime, and compares both with the reference within the docs/semantics.md §8 float32
tolerance (rtol 1e-4, atol 1e-5·max(1, ‖y‖∞)·√K, K the longest reduction of the graph).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import cnnir
import cnnir.nn.functional as F
from cnnir import nn

MAX_ELEMENTS = 8000  # per tensor, batch included
MAX_CHANNELS = 20
ALGORITHMS = (False, "pointwise-microkernel", "im2col-microkernel", "direct-microkernel",
              "pointwise-blas", "im2col-blas", "winograd-f2x2-3x3", "winograd-f4x4-3x3",
              "depthwise-3x3-flat", "depthwise-3x3-rows", "depthwise-phases",
              "depthwise-direct", "max-pool-2x2", "max-pool-phases",
              "max-pool-rows")
ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "gelu", "gelu_tanh", "sigmoid", "tanh",
               "silu", "hardswish", "hardsigmoid")


@dataclass
class Layer:
    op: str
    inputs: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Spec:
    input_shape: tuple[int, ...]
    layers: list[Layer]
    outputs: tuple[int, ...] = (-1,)
    tune: bool | str = False
    seed: int = 0
    symbolic_batch: bool = False  # traced with batch "N", bound at run time



# -- drawing ----------------------------------------------------------------------------------

class Draw:
    """The choices a generator makes; subclasses decide them."""

    def int(self, lo: int, hi: int) -> int:  # lo..hi inclusive
        raise NotImplementedError

    def choice(self, options: Any) -> Any:
        options = list(options)
        return options[self.int(0, len(options) - 1)]

    def bool(self, p_true: float = 0.5) -> bool:
        return self.int(0, 99) < p_true * 100


class RandomDraw(Draw):
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))


class HypothesisDraw(Draw):
    """Draws through hypothesis's ``data.draw``: smaller integers and earlier options are
    what a failure shrinks towards."""

    def __init__(self, draw: Any) -> None:
        self.draw = draw

    def int(self, lo: int, hi: int) -> int:
        from hypothesis import strategies as st

        return self.draw(st.integers(lo, hi))


def specs(max_layers: int = 6) -> Any:
    """The hypothesis strategy of specs."""
    from hypothesis import strategies as st

    return st.composite(lambda draw: draw_spec(HypothesisDraw(draw), max_layers))()


def draw_spec(d: Draw, max_layers: int = 6) -> Spec:
    small = (1, 2, 3, 4, 5, 7, 8, 9, 12)
    shape = (d.int(1, 3), d.int(1, 6), d.choice(small), d.choice(small))
    shapes = [shape]
    layers: list[Layer] = []
    for _ in range(d.int(1, max_layers)):
        src = len(shapes) - 1 if d.bool(0.7) else d.int(0, len(shapes) - 1)
        op = d.choice(ops_for(shapes[src]))
        drawn = DRAWERS[op](d, src, shapes)
        if drawn is None:
            continue
        layer = Layer(op, *drawn)
        out = out_shape(layer, shapes)
        if out is None or min(out) < 1 or math.prod(out) > MAX_ELEMENTS:
            continue
        layers.append(layer)
        shapes.append(out)
    if not layers:
        layers.append(Layer("activation", (0,), dict(kind="relu", param=None)))
    outputs = (-1,) if d.bool(0.7) else (-1, d.int(1, len(layers)))
    spec = Spec(shape, layers, outputs, d.choice(ALGORITHMS), d.int(0, 2**16))
    spec.symbolic_batch = batch_stays_apart(spec) and d.bool()
    return spec


def batch_stays_apart(spec: Spec) -> bool:
    """Whether no layer mixes the batch dim with others (reshapes, transposes, constants
    broadcast over it, operands of different ranks, reductions or concatenation along it),
    so it can stay symbolic."""
    shapes = shapes_of(spec)
    for layer in spec.layers:
        a, rank = layer.attrs, len(shapes[layer.inputs[0]])
        if layer.op in ("reshape", "flatten", "transpose") or (
                "constant" in a and len(a["constant"]) >= rank) or (
                layer.op == "pad" and len(a["pads"]) // 2 >= rank) or (
                layer.op == "reduce" and 0 in a["dim"]) or (
                layer.op in ("cat", "softmax") and a["dim"] == 0) or (
                len({len(shapes[i]) for i in layer.inputs}) > 1):  # broadcast shifts it
            return False
    return True


def ops_for(shape: tuple[int, ...]) -> list[str]:
    names = ["activation", "prelu", "add", "mul", "cat", "pad", "transpose", "softmax",
             "reduce", "linear", "reshape", "flatten"]
    if len(shape) == 4:
        names += ["conv2d", "conv2d", "conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d",
                  "adaptive_pool2d", "batch_norm", "interpolate", "channel_shuffle"]
    return names


def divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def draw_conv2d(d: Draw, src: int, shapes: list) -> Any:
    c = shapes[src][1]
    groups = d.choice(divisors(c))
    if groups == c and d.bool():
        out_c = c * d.int(1, max(1, MAX_CHANNELS // c))  # depthwise with a multiplier
    else:
        out_c = groups * d.int(1, max(1, MAX_CHANNELS // groups))
    k = (d.int(1, 5), d.int(1, 5)) if d.bool(0.3) else (d.int(1, 5),) * 2
    dil = (d.int(1, 3), d.int(1, 3)) if d.bool(0.2) else (1, 1)
    stride = (d.int(1, 4), d.int(1, 4)) if d.bool(0.3) else (d.int(1, 3),) * 2
    style = d.choice(["int", "tuple4", "same"])
    if style == "same" and stride == (1, 1):
        padding: Any = "same"
    elif style == "tuple4":
        padding = tuple(d.int(0, 2) for _ in range(4))
    else:
        padding = d.int(0, 2)
    return (src,), dict(out_channels=out_c, kernel_size=k, stride=stride, padding=padding,
                        dilation=dil, groups=groups, bias=d.bool())


def draw_conv_transpose2d(d: Draw, src: int, shapes: list) -> Any:
    groups = d.choice(divisors(shapes[src][1]))
    k, s, dil = d.int(1, 4), d.int(1, 3), d.int(1, 2)
    return (src,), dict(out_channels=groups * d.int(1, max(1, MAX_CHANNELS // groups)),
                        kernel_size=k, stride=s, padding=d.int(0, dil * (k - 1)),
                        output_padding=d.int(0, s - 1),  # ORT refuses output_padding >= stride
                        groups=groups, dilation=dil, bias=d.bool())


def draw_linear(d: Draw, src: int, shapes: list) -> Any:
    if len(shapes[src]) < 2 or shapes[src][-1] > 64:
        return None
    return (src,), dict(out_features=d.int(1, 12), bias=d.bool())


def draw_pool(d: Draw, src: int, shapes: list, avg: bool) -> Any:
    k = (d.int(1, 4), d.int(1, 4))
    attrs: dict[str, Any] = dict(
        kernel_size=k, stride=None if d.bool(0.3) else (d.int(1, 4), d.int(1, 4)),
        padding=(d.int(0, k[0] // 2), d.int(0, k[1] // 2)), ceil_mode=d.bool())
    if avg:
        attrs["count_include_pad"] = d.bool()
    else:
        attrs["dilation"] = (1, 1) if d.bool(0.7) else (d.int(1, 2), d.int(1, 2))
    return (src,), attrs


def draw_adaptive(d: Draw, src: int, shapes: list) -> Any:
    _, _, h, w = shapes[src]
    # ONNX expresses an adaptive pool only as a global pool or one whose output divides
    return (src,), dict(output_size=(d.choice(divisors(h)), d.choice(divisors(w))),
                        max=d.bool())


def draw_interpolate(d: Draw, src: int, shapes: list) -> Any:
    _, _, h, w = shapes[src]
    mode = d.choice(["nearest", "bilinear", "nearest-exact"])
    attrs: dict[str, Any] = dict(mode=mode)
    if d.bool():
        attrs["size"] = (d.int(1, 2 * h + 1), d.int(1, 2 * w + 1))
    else:
        attrs["scale_factor"] = d.choice([0.5, 1.5, 2.0, 3.0, 0.75, (2.0, 1.5), (0.5, 3.0)])
        if d.bool(0.3):
            attrs["recompute_scale_factor"] = True
    if mode == "bilinear":
        attrs["align_corners"] = d.bool()
    return (src,), attrs


def draw_pad(d: Draw, src: int, shapes: list) -> Any:
    dims = d.int(1, min(2, len(shapes[src])))
    return (src,), dict(pads=tuple(d.int(-1, 3) for _ in range(2 * dims)),
                        value=d.choice([0.0, 1.5, -2.0]))


def other_operand(d: Draw, src: int, shapes: list, accept: Any) -> int | None:
    """An earlier tensor that ``accept(shape)`` allows (a residual branch), or None."""
    fits = [i for i, s in enumerate(shapes) if i != src and accept(s)]
    return d.choice(fits) if fits and d.bool(0.7) else None


def broadcast(a: tuple, b: tuple) -> tuple | None:
    out = []
    for x, y in zip(((1,) * (len(b) - len(a))) + a, ((1,) * (len(a) - len(b))) + b):
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y))
    return tuple(out)


def draw_binary(d: Draw, src: int, shapes: list) -> Any:
    shape = shapes[src]
    other = other_operand(d, src, shapes, lambda s: broadcast(shape, s) is not None)
    if other is not None:
        return ((other, src) if d.bool() else (src, other)), {}
    # a constant operand of a broadcast shape: some dims 1, maybe fewer of them
    cshape = tuple(1 if d.bool(0.4) else s for s in shape)[d.int(0, len(shape) - 1):]
    return (src,), dict(constant=cshape)


def draw_cat(d: Draw, src: int, shapes: list) -> Any:
    shape = shapes[src]
    dim = 1 if len(shape) > 1 and d.bool(0.6) else d.int(0, len(shape) - 1)
    other = other_operand(d, src, shapes, lambda s: len(s) == len(shape) and all(
        a == b for i, (a, b) in enumerate(zip(s, shape)) if i != dim))
    return ((src, src) if other is None else (src, other)), dict(dim=dim)


def draw_reshape(d: Draw, src: int, shapes: list) -> Any:
    shape = shapes[src]
    dims, left = [shape[0]], math.prod(shape[1:])
    for _ in range(d.int(0, 2)):
        dims.append(d.choice(divisors(left)))
        left //= dims[-1]
    dims.append(left)
    if d.bool(0.3):
        dims[d.int(1, len(dims) - 1)] = -1
    return (src,), dict(shape=tuple(dims))


def draw_flatten(d: Draw, src: int, shapes: list) -> Any:
    start = d.int(0, len(shapes[src]) - 1)
    return (src,), dict(start_dim=start, end_dim=d.int(start, len(shapes[src]) - 1))


def draw_transpose(d: Draw, src: int, shapes: list) -> Any:
    perm = list(range(len(shapes[src])))
    for i in range(len(perm) - 1, 0, -1):
        j = d.int(0, i)
        perm[i], perm[j] = perm[j], perm[i]
    return (src,), dict(perm=tuple(perm))


def draw_reduce(d: Draw, src: int, shapes: list) -> Any:
    rank = len(shapes[src])
    dims = tuple(i for i in range(rank) if d.bool(0.4)) or (rank - 1,)
    keep = d.bool() or len(dims) == rank  # a 0-d output is legal, but later ops want a rank
    return (src,), dict(kind=d.choice(["mean", "sum", "amax"]), dim=dims, keepdim=keep)


def draw_channel_shuffle(d: Draw, src: int, shapes: list) -> Any:
    return (src,), dict(groups=d.choice(divisors(shapes[src][1])))


def attrs_only(**attrs_of: Any) -> Any:
    def drawer(d: Draw, src: int, shapes: list) -> Any:
        return (src,), {k: f(d, shapes[src]) for k, f in attrs_of.items()}
    return drawer


DRAWERS = {
    "conv2d": draw_conv2d,
    "conv_transpose2d": draw_conv_transpose2d,
    "linear": draw_linear,
    "max_pool2d": lambda d, src, shapes: draw_pool(d, src, shapes, avg=False),
    "avg_pool2d": lambda d, src, shapes: draw_pool(d, src, shapes, avg=True),
    "adaptive_pool2d": draw_adaptive,
    "batch_norm": attrs_only(affine=lambda d, s: d.bool(0.7)),
    "activation": attrs_only(kind=lambda d, s: d.choice(ACTIVATIONS),
                             param=lambda d, s: d.choice([None, 0.2, 2.0])),
    "prelu": attrs_only(per_channel=lambda d, s: len(s) >= 2 and d.bool()),
    "add": draw_binary,
    "mul": draw_binary,
    "cat": draw_cat,
    "interpolate": draw_interpolate,
    "pad": draw_pad,
    "flatten": draw_flatten,
    "reshape": draw_reshape,
    "transpose": draw_transpose,
    "channel_shuffle": draw_channel_shuffle,
    "softmax": attrs_only(dim=lambda d, s: d.int(0, len(s) - 1), log=lambda d, s: d.bool(0.3)),
    "reduce": draw_reduce,
}


# -- shapes (PyTorch's formulas, docs/semantics.md §1) ------------------------------------------

def window_out(size: int, k: int, s: int, p0: int, p1: int, d: int = 1,
               ceil: bool = False) -> int:
    """§1.7; the padding may differ on the two sides (a convolution's four-tuple)."""
    span = size + p0 + p1 - d * (k - 1) - 1  # may be negative: floor division, as ATen
    out = (span + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p0:
        out -= 1
    return out


def conv_pads(a: dict) -> tuple[int, int, int, int]:
    p = a["padding"]
    if p == "same":
        tot = [dd * (kk - 1) for dd, kk in zip(a["dilation"], a["kernel_size"])]
        return (tot[0] // 2, tot[1] // 2, tot[0] - tot[0] // 2, tot[1] - tot[1] // 2)
    return tuple(p) if isinstance(p, tuple) else (p, p, p, p)


def out_shape(layer: Layer, shapes: list) -> tuple[int, ...] | None:
    a, op = layer.attrs, layer.op
    shape = shapes[layer.inputs[0]]
    if op == "conv2d":
        n, _, h, w = shape
        t, left, b, r = conv_pads(a)
        (kh, kw), (sh, sw), (dh, dw) = a["kernel_size"], a["stride"], a["dilation"]
        return (n, a["out_channels"], window_out(h, kh, sh, t, b, dh),
                window_out(w, kw, sw, left, r, dw))
    if op == "conv_transpose2d":
        k, s, p, dil = a["kernel_size"], a["stride"], a["padding"], a["dilation"]
        return (shape[0], a["out_channels"], *((size - 1) * s - 2 * p + dil * (k - 1)
                                               + a["output_padding"] + 1 for size in shape[2:]))
    if op == "linear":
        return (*shape[:-1], a["out_features"])
    if op in ("max_pool2d", "avg_pool2d"):
        k, p = a["kernel_size"], a["padding"]
        s, dil = a["stride"] or k, a.get("dilation", (1, 1))
        return (*shape[:2], *(window_out(shape[2 + i], k[i], s[i], p[i], p[i], dil[i],
                                         a["ceil_mode"]) for i in range(2)))
    if op == "adaptive_pool2d":
        return (*shape[:2], *a["output_size"])
    if op in ("add", "mul"):
        other = a["constant"] if "constant" in a else shapes[layer.inputs[1]]
        return broadcast(shape, tuple(other))
    if op == "cat":
        out = list(shape)
        out[a["dim"]] = sum(shapes[i][a["dim"]] for i in layer.inputs)
        return tuple(out)
    if op == "interpolate":
        if "size" in a:
            return (*shape[:2], *a["size"])
        sf = a["scale_factor"]
        sf = sf if isinstance(sf, tuple) else (sf, sf)
        return (*shape[:2], *(math.floor(shape[2 + i] * sf[i]) for i in range(2)))
    if op == "pad":
        out = list(shape)
        for i in range(len(a["pads"]) // 2):
            out[-1 - i] += a["pads"][2 * i] + a["pads"][2 * i + 1]
        return tuple(out)
    if op == "flatten":
        s, e = a["start_dim"], a["end_dim"]
        return (*shape[:s], math.prod(shape[s:e + 1]), *shape[e + 1:])
    if op == "reshape":
        dims = list(a["shape"])
        if -1 in dims:
            dims[dims.index(-1)] = math.prod(shape) // -math.prod(dims)
        return tuple(dims)
    if op == "transpose":
        return tuple(shape[p] for p in a["perm"])
    if op == "reduce":
        return tuple(1 if i in a["dim"] else s for i, s in enumerate(shape)
                     if a["keepdim"] or i not in a["dim"])
    return shape  # elementwise, per-channel, shuffles, softmax


# -- building ---------------------------------------------------------------------------------

class FuzzNet(nn.Module):
    """The network of a spec; parameters drawn from ``spec.seed``, weights scaled by
    1/√fan_in and BatchNorm variances log-uniform down to 1e-4 (docs/semantics.md §8)."""

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        self.spec = spec
        self.shapes = shapes_of(spec)
        rng = np.random.default_rng(spec.seed)
        for i, layer in enumerate(spec.layers):
            module = self._module(layer, self.shapes[layer.inputs[0]], rng)
            if module is not None:
                setattr(self, f"l{i}", module)

    def _module(self, layer: Layer, shape: tuple, rng: np.random.Generator) -> Any:
        a = layer.attrs
        if layer.op == "conv2d":
            m = nn.Conv2d(shape[1], a["out_channels"], a["kernel_size"], a["stride"],
                          a["padding"], a["dilation"], a["groups"], a["bias"])
        elif layer.op == "conv_transpose2d":
            m = nn.ConvTranspose2d(shape[1], a["out_channels"], a["kernel_size"], a["stride"],
                                   a["padding"], a["output_padding"], a["groups"], a["bias"],
                                   a["dilation"])
        elif layer.op == "linear":
            m = nn.Linear(shape[-1], a["out_features"], a["bias"])
        elif layer.op == "batch_norm":
            c = shape[1]
            m = nn.BatchNorm2d(c, affine=a["affine"])
            m.running_mean.data = rng.standard_normal(c).astype(np.float32)
            m.running_var.data = (10 ** rng.uniform(-4, 1, c)).astype(np.float32)
            if a["affine"]:
                m.weight.data = rng.uniform(0.5, 1.5, c).astype(np.float32)
                m.bias.data = rng.standard_normal(c).astype(np.float32)
            return m.eval()
        elif layer.op == "prelu":
            m = nn.PReLU(shape[1] if a["per_channel"] else 1)
            m.weight.data = rng.uniform(-0.5, 0.5, m.weight.shape).astype(np.float32)
            return m
        elif layer.op in ("add", "mul") and "constant" in a:
            m = nn.Module()
            m.weight = nn.Parameter(a["constant"])
            m.weight.data = rng.standard_normal(a["constant"]).astype(np.float32)
            return m
        else:
            return None
        fan_in = math.prod(m.weight.shape[1:])
        m.weight.data = (rng.standard_normal(m.weight.shape) / math.sqrt(fan_in)).astype(
            np.float32)
        if m.bias is not None:
            m.bias.data = rng.standard_normal(m.bias.shape).astype(np.float32) * 0.5
        return m

    def forward(self, x: Any) -> Any:
        ts = [x]
        for i, layer in enumerate(self.spec.layers):
            ts.append(apply(layer, [ts[j] for j in layer.inputs], getattr(self, f"l{i}", None)))
        outs = tuple(ts[j] for j in self.spec.outputs)
        return outs[0] if len(outs) == 1 else outs


def apply(layer: Layer, xs: list, m: Any) -> Any:
    a, x = layer.attrs, xs[0]
    op = layer.op
    if op in ("conv2d", "conv_transpose2d", "linear", "batch_norm", "prelu"):
        return m(x)
    if op in ("max_pool2d", "avg_pool2d"):
        return getattr(F, op)(x, **a)
    if op == "adaptive_pool2d":
        pool = F.adaptive_max_pool2d if a["max"] else F.adaptive_avg_pool2d
        return pool(x, a["output_size"])
    if op == "activation":
        return activation(x, a["kind"], a["param"])
    if op in ("add", "mul"):
        other = m.weight if m is not None else xs[1]
        return getattr(F, op)(x, other)
    if op == "cat":
        return F.cat(xs, a["dim"])
    if op == "interpolate":
        return F.interpolate(x, **a)
    if op == "pad":
        return F.pad(x, a["pads"], value=a["value"])
    if op == "flatten":
        return F.flatten(x, a["start_dim"], a["end_dim"])
    if op == "reshape":
        return F.reshape(x, a["shape"])
    if op == "transpose":
        return F.permute(x, a["perm"])
    if op == "channel_shuffle":
        return F.channel_shuffle(x, a["groups"])
    if op == "softmax":
        return (F.log_softmax if a["log"] else F.softmax)(x, a["dim"])
    if op == "reduce":
        return getattr(F, a["kind"])(x, a["dim"], a["keepdim"])
    raise AssertionError(op)


def activation(x: Any, kind: str, param: float | None) -> Any:
    if kind == "leaky_relu":
        return F.leaky_relu(x, 0.01 if param is None else param)
    if kind == "elu":
        return F.elu(x, 1.0 if param is None else param)
    if kind in ("gelu", "gelu_tanh"):
        return F.gelu(x, approximate="tanh" if kind == "gelu_tanh" else "none")
    return getattr(F, kind)(x)


def shapes_of(spec: Spec) -> list[tuple[int, ...]]:
    """Each tensor's shape, by the formulas the generator drew with (independent of cnnir's
    shape inference, which the trace checks against them)."""
    shapes = [tuple(spec.input_shape)]
    for layer in spec.layers:
        shapes.append(out_shape(layer, shapes))
    return shapes


# -- checking ---------------------------------------------------------------------------------

def reduction_length(spec: Spec, shapes: list) -> int:
    """The longest reduction any layer of the graph performs (the √K of the tolerance)."""
    lengths = [1]
    for layer in spec.layers:
        shape, a, op = shapes[layer.inputs[0]], layer.attrs, layer.op
        if op in ("conv2d", "conv_transpose2d"):
            k = a["kernel_size"]
            lengths.append(shape[1] // a["groups"] * math.prod(k if isinstance(k, tuple)
                                                                else (k, k)))
        elif op == "linear":
            lengths.append(shape[-1])
        elif op == "avg_pool2d":
            lengths.append(math.prod(a["kernel_size"]))
        elif op == "adaptive_pool2d":
            lengths.append(math.prod(shape[2:]))
        elif op == "softmax":
            lengths.append(shape[a["dim"]])
        elif op == "reduce":
            lengths.append(math.prod(shape[i] for i in a["dim"]))
    return max(lengths)


class Mismatch(AssertionError):
    """A backend disagreeing with the reference; the message ends with the spec."""


def check(spec: Spec, ort_optimize: bool = True) -> dict[str, Any]:
    """Run ``spec`` everywhere and raise ``Mismatch`` (naming the backend, output and spec)
    on any disagreement with the float64 reference; returns the worst error per backend as
    a fraction of the tolerance (≤ 1 passes).

    Compared: the Numba backend (float32) and onnxruntime on the exported file (float32,
    except where a max pool window lies in the padding: ``empty_max_pool_window``) at the
    §8 float32 tolerance; the exported file imported back (``cnnir.load_onnx``) on
    the reference, at rtol 1e-6 (float64, but decompositions such as tanh-GELU's carry
    float32 constants), where the importer takes the file (``"reimport": None`` where it
    refuses an op). ``"ort_optimizer_error"`` records an onnxruntime failure that only its
    graph optimizations cause (the file then runs unoptimized); ``"conditioning"`` the
    widened float32 allowance of an ill-conditioned graph (``float32_allowance``)."""
    shapes = shapes_of(spec)
    n, *rest = spec.input_shape
    graph = cnnir.trace(FuzzNet(spec), [("N" if spec.symbolic_batch else n, *rest)])
    traced = [tuple(n if d == "N" else d for d in v.type.shape) for v in graph.outputs]
    want = [shapes[i] for i in spec.outputs]
    if traced != want:
        raise Mismatch(f"cnnir infers output shapes {traced}, PyTorch's formulas {want}\n"
                       f"{spec!r}")
    x = np.random.default_rng(spec.seed + 1).standard_normal(spec.input_shape)
    expected = outputs(cnnir.compile(graph, backend="reference")(x))
    k = reduction_length(spec, shapes)
    got = {"numba": outputs(cnnir.compile(graph, backend="numba", tune=spec.tune)(
        x.astype(np.float32)))}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzz.onnx")
        cnnir.export_onnx(graph, path)
        optimizer_error = None
        if not empty_max_pool_window(spec, shapes):
            try:
                got["onnxruntime"] = run_onnxruntime(path, x.astype(np.float32), ort_optimize)
            except Exception as error:  # noqa: BLE001  (ORT's own exception classes)
                if not ort_optimize:
                    raise
                # an ORT graph-optimizer failure (e.g. its transpose optimizer on a Resize
                # with ``axes`` after a Transpose): recorded; the file must run unoptimized
                optimizer_error = f"{type(error).__name__}: {str(error)[:200]}"
                got["onnxruntime"] = run_onnxruntime(path, x.astype(np.float32), False)
        reimported = reimport(path)
    worst: dict[str, Any] = {"ort_optimizer_error": optimizer_error, "conditioning": None}
    for backend, results in got.items():
        try:
            worst[backend] = compare(backend, results, expected, k, spec)
        except Mismatch:
            if worst["conditioning"] is None:
                worst["conditioning"] = float32_allowance(graph, x, expected, k, spec)
            worst[backend] = compare(backend, results, expected, k, spec,
                                     allowance=worst["conditioning"])
    worst["reimport"] = None
    if reimported is not None:
        results = outputs(cnnir.compile(reimported, backend="reference")(x))
        worst["reimport"] = compare("reimport", results, expected, k, spec, rtol=1e-6)
    return worst


def empty_max_pool_window(spec: Spec, shapes: list) -> bool:
    """Whether a max pool has a window lying entirely in the padding: PyTorch (and cnnir)
    give -∞ there, onnxruntime the lowest float32, which later ops treat differently (-∞ - -∞
    is NaN), so such graphs are not compared on onnxruntime."""
    for layer in spec.layers:
        if layer.op != "max_pool2d":
            continue
        a, out = layer.attrs, out_shape(layer, shapes)
        k, p, d = a["kernel_size"], a["padding"], a["dilation"]
        s = a["stride"] or k
        for axis in range(2):
            size = shapes[layer.inputs[0]][2 + axis]
            for o in range(out[2 + axis]):
                taps = [o * s[axis] - p[axis] + j * d[axis] for j in range(k[axis])]
                if all(t < 0 or t >= size for t in taps):
                    return True
    return False


def float32_allowance(graph: cnnir.Graph, x: np.ndarray, expected: list, k: int,
                      spec: Spec) -> float:
    """How far past the §8 float32 tolerance an ill-conditioned graph may go: 8× the error
    of the reference executor itself run in float32 (at least 1). A BatchNorm of tiny
    variance followed by a cancellation (x·BN(x) with BN's gain 30 and shift −68, folded
    into one scale and shift by the Numba backend) misses the tolerance by rounding alone.
    Asked only after a float32 miss, and only once the Numba backend in float64 agrees with
    the float64 reference to 1e-9, so that the semantics are right."""
    in64 = outputs(cnnir.compile(graph, backend="numba", dtype="float64", tune=spec.tune)(x))
    compare("numba in float64", in64, expected, k, spec, rtol=1e-9)
    in32 = outputs(cnnir.compile(graph, backend="reference", dtype="float32")(
        x.astype(np.float32)))
    errors = [scaled_error(np.asarray(r), e, k, blur_nonfinite=True)
              for r, e in zip(in32, expected)]
    return max([1.0] + [8 * e for e in errors if e is not None])


def compare(backend: str, results: list, expected: list, k: int, spec: Spec,
            rtol: float = 1e-4, allowance: float = 1.0) -> float:
    """The worst error of ``results`` as a fraction of the tolerance; ``Mismatch`` over
    ``allowance``."""
    worst = 0.0
    if len(results) != len(expected):
        raise Mismatch(f"{backend} gives {len(results)} outputs, the reference {len(expected)}"
                       f"\n{spec!r}")
    # A bilinear resize blends 0·∞ in an order each implementation picks (PyTorch's own
    # differs from the §1.10 formula): after one, NaN and ±∞ (from a max pool window that
    # lies in the padding) count as one.
    blur = any(layer.op == "interpolate" and layer.attrs["mode"] == "bilinear"
               for layer in spec.layers)
    for i, (g, e) in enumerate(zip(results, expected)):
        err = scaled_error(np.asarray(g), e, k, rtol, blur)
        if err is None or err > allowance:
            raise Mismatch(f"{backend} output {i} differs from the float64 reference (shape "
                           f"{np.shape(g)} vs {e.shape}, error {err} of the §8 tolerance, "
                           f"allowed {allowance:.3g}, K={k})\n{spec!r}")
        worst = max(worst, err)
    return worst


def reimport(path: str) -> cnnir.Graph | None:
    from cnnir.errors import ModelFormatError

    try:
        return cnnir.load_onnx(path)
    except ModelFormatError as error:
        if "not supported" in str(error) or "unsupported" in str(error):
            return None
        raise


def scaled_error(actual: np.ndarray, expected: np.ndarray, k: int, rtol: float = 1e-4,
                 blur_nonfinite: bool = False) -> float | None:
    """The largest error as a fraction of the §8 tolerance (``rtol``, and atol = rtol/10 ·
    max(1, ‖expected‖∞ over finite values)·√K); None on a shape mismatch or where the
    non-finite values differ: NaN must match NaN and ±∞ match exactly (§8), or with
    ``blur_nonfinite`` any non-finite value match any other."""
    if actual.shape != expected.shape:
        return None
    finite = np.isfinite(expected)
    if not np.array_equal(finite, np.isfinite(actual)):
        return None
    if not blur_nonfinite and not np.array_equal(actual[~finite], expected[~finite],
                                                 equal_nan=True):
        return None
    scale = max(1.0, float(np.max(np.abs(expected[finite]), initial=0.0)))
    bound = rtol / 10 * scale * math.sqrt(k) + rtol * np.abs(expected[finite])
    diff = np.abs(actual[finite].astype(np.float64) - expected[finite])
    return float(np.max(diff / bound, initial=0.0))


def outputs(result: Any) -> list[np.ndarray]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def run_onnxruntime(path: str, x: np.ndarray, optimize: bool) -> list[np.ndarray]:
    """The exported file (``export`` has run the ONNX checker on it) on onnxruntime's CPU
    provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})
