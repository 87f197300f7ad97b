"""stack-3x3: replace every conv2d with a kernel side above 3 by a stack of convs with sides
of at most 3. THIS PASS CHANGES THE NETWORK'S FUNCTION: it reparameterizes the layer (VGG's
observation that two 3x3 convs see what one 5x5 sees, with fewer weights). It is registered
with ``preserves_semantics=False``, so ``cnnir optimize`` warns with the measured output change
and writes ``-o`` only with ``--allow-approximate``.

Shape of the stack (docs/semantics.md §6.3). An odd side k becomes (k − 1)/2 convs of side 3 (a 5x5
two 3x3, a 7x7 three, a 1x7 three 1x3; the shorter axis of a 5x7 is padded with side-1
convs). Groups and dilation are kept; the widths are C → m → ... → m → O, with
``m = min(C, O)`` by default, lowered to a multiple of the groups when the stack would
otherwise have more weights than the layer (only 1-D kernels need it: three 1x3 convs at full
width cost 9/7 of a 1x7), or ``width=m``. Weight parameters go from ``k_h·k_w·C·O/G`` to
``Σ_i kh_i·kw_i·c_i·c_{i+1}/G``: 25CO → 9Cm + 9mO for 5x5, 49CO → 9Cm + 9m² + 9mO for 7x7.
Only the last conv has a bias (the layer's own). ``nonlinearity="relu"`` (or another unary
activation) goes between the convs; off by default, so the stack stays a linear map.

Stride and padding. ``stride_position="first"`` (default) strides the first conv and gives
the others 'same' padding on the strided grid: all convs run at the output resolution, so
MACs change by the parameters' ratio and never grow by default, but a strided layer's
receptive field grows (7 → 11 for ResNet's 7x7/2 stem: 3 + 2·2 + 2·2). The first conv's
padding is the layer's minus what the later convs add; a layer with too little padding for
that (AlexNet's 11x11/4 stem with padding 2) has no such stack and is left alone, with the
reason in the report. ``stride_position="last"`` strides the last conv and splits the
padding greedily: output shape and receptive field are exactly the layer's for any stride,
at the price of running the first convs at the input resolution. Stride-1 layers keep their
receptive field either way. Even sides and non-constant weights are left alone too.

Borders. With ``borders="zero"`` (default) every conv pads its own input, so the stack's
intermediate maps are zero outside the image where the layer would have seen image pixels:
even a stack whose kernel is exact differs from the layer along a border band as wide as the
layer's padding. ``borders="exact"`` (stride 1, or ``stride_position="last"``) gives the
first conv all of the layer's padding and the later ones none: the stack then computes its
composite kernel everywhere, borders included, at the price of larger intermediate maps
(MACs of (H + 2p)·(W + 2p) instead of H·W pixels for the first convs).

A ``conv2d_fused`` layer (after fuse-conv-activation) keeps its activation and residual on
the last conv of its stack.

Weights. ``init="lstsq"`` (default) fits the stack's composed kernel to the layer's kernel
(cnnir.passes.kernel_fit): exactly once the width allows it (a 5x5 C → O is two 3x3 convs
through 4·min(C, O) channels, a 7x7 three through 9·min(C, O), at unit tap spacing), by
alternating least squares below that (``fit_sweeps`` caps the sweeps per width), with an error
that never grows with the width. The report gives per layer the width, parameters, MACs and the
fit error: the relative error ‖K̂ − K‖/‖K‖ (Frobenius) of the kernel the stack computes, taps
it cannot reach included. ``init="kaiming"`` draws He-normal weights (lazily, seeded by
``seed``). The report lists, per layer and in total, the parameters and MACs before, after
and saved.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from cnnir import ops
from cnnir.errors import PassError
from cnnir.ir import Graph, Node, TensorType, Value
from cnnir.ops.conv import Conv2dAttrs
from cnnir.passes.kernel_fit import fit_stack
from cnnir.passes.manager import Pass, PassResult
from cnnir.passes.rewrite import (
    Splice,
    add_array,
    add_lazy,
    drop_constant,
    kaiming_init,
    result_name,
)
from cnnir.passes.shape_inference import batch_bindings, bind_types

MAX_SIDE = 3
CONVS = frozenset({ops.conv2d, ops.conv2d_fused})  # a fused conv keeps its epilogue last


@dataclass(frozen=True)
class AxisPlan:
    """One spatial axis of a stack: per conv, the kernel side, stride and (before, after)
    padding; ``spacing`` is the tap spacing of the later convs in input units of dilation."""

    kernels: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    spacing: int


def _sides(k: int, n: int) -> tuple[int, ...]:
    threes = (k - 1) // 2
    return (MAX_SIDE,) * threes + (1,) * (n - threes)


def _greedy(pad: int, sides: tuple[int, ...], d: int) -> list[int]:
    """Each conv but the last takes up to its 'same' padding; the last takes the rest."""
    out = []
    for k in sides[:-1]:
        out.append(min(pad, d * (k - 1) // 2))
        pad -= out[-1]
    return out + [pad]


def plan_axis(k: int, s: int, d: int, before: int, after: int, n: int,
              stride_last: bool, exact_borders: bool = False) -> AxisPlan | str:
    """The stack along one axis, or the reason there is none."""
    sides = _sides(k, n)
    if s == 1 or stride_last:
        pads = tuple(zip(_greedy(before, sides, d), _greedy(after, sides, d)))
        if exact_borders:
            pads = ((before, after),) + ((0, 0),) * (n - 1)
        return AxisPlan(sides, (1,) * (n - 1) + (s,), pads, 1)
    later = d * sum(side - 1 for side in sides[1:])
    first = before + after - later
    if first < 0:
        return (f"padding {before}+{after} is less than the {later} the stacked convs after "
                f"the strided one add; no stack gives the same output shape "
                f"(stride_position='last' would)")
    if d * (sides[0] - 1) + 1 < s <= d * (k - 1) + 1:
        return f"stride {s} would skip input pixels in the first {sides[0]}-wide conv"
    top = min(max(before - later // 2, 0), first)
    same = tuple((d * (side - 1) // 2,) * 2 for side in sides[1:])
    return AxisPlan(sides, (s,) + (1,) * (n - 1), ((top, first - top),) + same, s)


@dataclass
class StackPlan:
    axes: tuple[AxisPlan, AxisPlan]
    widths: list[int]  # c_0 = C, ..., c_n = O

    @property
    def depth(self) -> int:
        return len(self.axes[0].kernels)

    def kernel(self, i: int) -> tuple[int, int]:
        return self.axes[0].kernels[i], self.axes[1].kernels[i]

    def attrs(self, i: int, layer: Conv2dAttrs) -> Conv2dAttrs:
        """Conv i's attributes: plain conv2d ones, or (last conv of a fused layer) the
        layer's own with this conv's stride and padding, keeping its epilogue."""
        h, w = (a.pads[i] for a in self.axes)
        geometry = {"stride": (self.axes[0].strides[i], self.axes[1].strides[i]),
                    "padding": (h[0], w[0], h[1], w[1])}
        if i == self.depth - 1:
            return dataclasses.replace(layer, **geometry)
        return Conv2dAttrs(dilation=layer.dilation, groups=layer.groups, **geometry)

    def weight_params(self, groups: int) -> int:
        return sum(kh * kw * a * b // groups for (kh, kw), a, b in
                   zip(map(self.kernel, range(self.depth)), self.widths, self.widths[1:]))

    def describe(self) -> str:
        """``3x3/2 -> 3x3 -> 3x3``: each conv's kernel and, after a slash, its stride."""
        parts = []
        for i in range(self.depth):
            (kh, kw), (sh, sw) = self.kernel(i), (a.strides[i] for a in self.axes)
            stride = "" if sh == sw == 1 else f"/{sh}" if sh == sw else f"/{sh}x{sw}"
            parts.append(f"{kh}x{kw}{stride}")
        return " -> ".join(parts)


def default_width(c: int, o: int, groups: int, original: int,
                  axes: tuple[AxisPlan, AxisPlan]) -> int:
    """``min(C, O)``, lowered in steps of ``groups`` until the stack has no more weights than
    the layer's ``original``; 0 when no width qualifies."""
    n = len(axes[0].kernels)
    m = min(c, o)
    while m > 0 and StackPlan(axes, [c] + [m] * (n - 1) + [o]).weight_params(groups) > original:
        m -= groups
    return m


@dataclass(frozen=True)
class Options:
    width: int | None
    stride_last: bool
    nonlinearity: ops.OpDef | None
    init: str
    seed: int
    fit_sweeps: int
    exact_borders: bool = False


def _layer_shape(node: Node) -> tuple[int, int, int, int, int]:
    """``(O, C, kh, kw, G)`` of a conv2d with a static weight."""
    o, per_group, kh, kw = node.inputs[1].type.shape
    return o, per_group * node.attrs.groups, kh, kw, node.attrs.groups


def plan_layer(node: Node, opts: Options) -> StackPlan | str:
    """The stack replacing ``node``, or the reason it is left alone."""
    w, b = node.inputs[1], node.inputs[2]
    if not w.is_constant or (b is not None and not b.is_constant):
        return "its weight or bias is not a constant"
    o, c, kh, kw, g = _layer_shape(node)
    if kh % 2 == 0 and kh > MAX_SIDE or kw % 2 == 0 and kw > MAX_SIDE:
        return f"its {kh}x{kw} kernel has an even side (no centred stack of odd sides)"
    n = max((kh - 1) // 2, (kw - 1) // 2)
    a = node.attrs
    axes = []
    for axis, k in enumerate((kh, kw)):
        plan = plan_axis(k, a.stride[axis], a.dilation[axis], a.padding[axis],
                         a.padding[axis + 2], n, opts.stride_last, opts.exact_borders)
        if isinstance(plan, str):
            return f"{'HW'[axis]} axis: {plan}"
        axes.append(plan)
    m = opts.width or default_width(c, o, g, kh * kw * c * o // g, tuple(axes))
    if m <= 0 or m % g:
        return f"no intermediate width: it must be a positive multiple of groups={g}, got {m}"
    return StackPlan(tuple(axes), [c] + [m] * (n - 1) + [o])


def _conv_chain(plan: StackPlan, node: Node, x: TensorType) -> tuple[TensorType, int]:
    """The stack's output type and MACs for input type ``x`` (symbolic dims allowed for the
    type; MACs need static shapes and are 0 otherwise)."""
    macs = 0
    for i in range(plan.depth):
        w = TensorType((plan.widths[i + 1], plan.widths[i] // node.attrs.groups,
                        *plan.kernel(i)), node.inputs[1].type.dtype)
        attrs = plan.attrs(i, node.attrs)
        y = ops.conv2d.infer_types(Conv2dAttrs(attrs.stride, attrs.padding, attrs.dilation,
                                               attrs.groups), [x, w, None])[0]
        if y.is_static:
            macs += ops.conv2d.cost(attrs, [x, w, None], [y]).macs
        x = y
    return x, macs


def _spacing(axis: AxisPlan, i: int) -> int:
    return 1 if i == 0 else axis.spacing


def receptive_field(axis: AxisPlan, d: int) -> int:
    """Input pixels one output of the stack sees along the axis."""
    return 1 + d * sum(_spacing(axis, i) * (k - 1) for i, k in enumerate(axis.kernels))


def fit_target(kernel: np.ndarray, plan: StackPlan, node: Node) -> tuple[np.ndarray, float]:
    """The layer's kernel ``[G, O/G, C/G, E_h, E_w]`` placed where the stack's composite
    kernel sees it, and the squared norm of taps the stack cannot reach."""
    a, g = node.attrs, node.attrs.groups
    o, per_group = kernel.shape[:2]
    extent, offset = [], []
    for axis, plan_ax in enumerate(plan.axes):
        extent.append(receptive_field(plan_ax, 1))
        reach = sum(_spacing(plan_ax, i) * p[0] for i, p in enumerate(plan_ax.pads))
        offset.append(round((reach - a.padding[axis]) / a.dilation[axis]))
    target = np.zeros((g, o // g, per_group, *extent))
    k = kernel.reshape(g, o // g, per_group, *kernel.shape[2:])
    rows = [np.arange(kernel.shape[2 + ax]) + offset[ax] for ax in range(2)]
    inside = [(r >= 0) & (r < extent[ax]) for ax, r in enumerate(rows)]
    target[:, :, :, rows[0][inside[0]][:, None], rows[1][inside[1]][None, :]] = \
        k[:, :, :, inside[0]][:, :, :, :, inside[1]]
    dropped = float(np.sum(k ** 2) - np.sum(target ** 2))
    return target, max(dropped, 0.0)


def lstsq_weights(node: Node, plan: StackPlan, sweeps: int) -> tuple[list[np.ndarray], float]:
    """Stack weights fitted to the layer's kernel, and the relative error of the fit."""
    w = node.inputs[1].const.array
    g = node.attrs.groups
    target, dropped = fit_target(np.asarray(w, np.float64), plan, node)
    shapes = [(g, plan.widths[i + 1] // g, plan.widths[i] // g, *plan.kernel(i))
              for i in range(plan.depth)]
    spacing = (plan.axes[0].spacing, plan.axes[1].spacing)
    fit = fit_stack(target, shapes, spacing, sweeps=sweeps, dropped=dropped)
    weights = [f.reshape(f.shape[0] * f.shape[1], *f.shape[2:]).astype(w.dtype)
               for f in fit.factors]
    return weights, fit.relative_error


def _new_weights(graph: Graph, node: Node, plan: StackPlan, opts: Options,
                 index: int) -> tuple[list[Value], float | None]:
    w_value = node.inputs[1]
    dtype = w_value.type.dtype
    names = [f"{node.name}.{i}.weight" for i in range(plan.depth - 1)] + [f"{node.name}.weight"]
    if opts.init == "kaiming":
        shapes = [(plan.widths[i + 1], plan.widths[i] // node.attrs.groups, *plan.kernel(i))
                  for i in range(plan.depth)]
        return [add_lazy(graph, name, TensorType(shape, dtype),
                         kaiming_init(shape, dtype, (opts.seed, index, i)), w_value)
                for i, (name, shape) in enumerate(zip(names, shapes))], None
    arrays, error = lstsq_weights(node, plan, opts.fit_sweeps)
    return [add_array(graph, name, a, w_value) for name, a in zip(names, arrays)], error


def rewrite(graph: Graph, node: Node, plan: StackPlan, opts: Options, index: int) -> float | None:
    """Replace ``node`` by its stack; returns the fit's relative error (lstsq) or None."""
    name = result_name(graph, node, node)
    w_value = node.inputs[1]
    splice = Splice(graph, [node])
    drop_constant(graph, w_value)
    weights, error = _new_weights(graph, node, plan, opts, index)
    x = node.inputs[0]
    for i, w in enumerate(weights):
        last = i == plan.depth - 1
        inputs = [x, w, *node.inputs[2:]] if last else [x, w, None]
        conv = splice.add(node.op if last else ops.conv2d, inputs, plan.attrs(i, node.attrs),
                          like=node, name=name if last else f"{node.name}.{i}")
        x = conv.output
        if opts.nonlinearity is not None and not last:
            x = splice.add(opts.nonlinearity, [x], like=node, name=f"{node.name}.{i}.act").output
    splice.finish(node.output, x)
    return error


def _options(width: int | None, stride_position: str, nonlinearity: str | ops.OpDef | None,
             init: str, seed: int, fit_sweeps: int, borders: str) -> Options:
    if stride_position not in ("first", "last"):
        raise PassError(f"stack-3x3: stride_position must be 'first' or 'last', got "
                        f"{stride_position!r}")
    if init not in ("lstsq", "kaiming"):
        raise PassError(f"stack-3x3: init must be 'lstsq' or 'kaiming', got {init!r}")
    if borders not in ("zero", "exact"):
        raise PassError(f"stack-3x3: borders must be 'zero' or 'exact', got {borders!r}")
    if width is not None and (not isinstance(width, int) or width < 1):
        raise PassError(f"stack-3x3: width must be a positive int, got {width!r}")
    act = nonlinearity
    if isinstance(act, str):
        if act not in ops.REGISTRY or ops.REGISTRY[act].inputs != ("input",):
            raise PassError(f"stack-3x3: nonlinearity {act!r} is not a unary op",
                            hint="use an activation name such as 'relu'")
        act = ops.REGISTRY[act]
    return Options(width, stride_position == "last", act, init, seed, fit_sweeps,
                   borders == "exact")


def _row(node: Node, plan: StackPlan, types: dict, error: float | None) -> dict:
    o, c, kh, kw, g = _layer_shape(node)
    x = types[id(node.inputs[0])]
    before_macs = ops.conv2d.cost(node.attrs, [x, node.inputs[1].type, None],
                                  [types[id(node.output)]]).macs
    after_macs = _conv_chain(plan, node, x)[1]
    before, after = kh * kw * c * o // g, plan.weight_params(g)
    a = node.attrs
    fields = [[a.dilation[ax] * (k - 1) + 1 for ax, k in enumerate((kh, kw))],
              [receptive_field(ax_plan, a.dilation[ax]) for ax, ax_plan in enumerate(plan.axes)]]
    return {"layer": node.name, "kernel": [kh, kw], "stride": list(a.stride),
            "stack": plan.describe(), "width": plan.widths[1],
            "params_before": before, "params_after": after, "params_saved": before - after,
            "macs_before": before_macs, "macs_after": after_macs,
            "macs_saved": before_macs - after_macs,
            "receptive_field_before": fields[0], "receptive_field_after": fields[1],
            "fit_error": error}


def _totals(rows: list[dict]) -> dict:
    keys = ("params_before", "params_after", "params_saved", "macs_before", "macs_after",
            "macs_saved")
    return {"layers": len(rows), **{k: sum(r[k] for r in rows) for k in keys}}


def _lines(rows: list[dict], skipped: list[dict], totals: dict) -> list[str]:
    lines = [f"{r['layer']}: {r['kernel'][0]}x{r['kernel'][1]} -> {r['stack']} (m={r['width']}),"
             f" params {r['params_before']:,} -> {r['params_after']:,}, MACs "
             f"{r['macs_before']:,} -> {r['macs_after']:,}"
             + ("" if r["fit_error"] is None else f", fit error {r['fit_error']:.3g}")
             for r in rows]
    lines += [f"{s['layer']}: left alone ({s['reason']})" for s in skipped]
    lines.append(f"total: params saved {totals['params_saved']:,}, MACs saved "
                 f"{totals['macs_saved']:,}")
    return lines


def stack_3x3(graph: Graph, *, width: int | None = None, stride_position: str = "first",
              nonlinearity: str | None = None, init: str = "lstsq", seed: int = 0,
              fit_sweeps: int = 30, borders: str = "zero") -> PassResult:
    """Replace every conv2d with a side above 3 by a stack of convs with sides <= 3."""
    opts = _options(width, stride_position, nonlinearity, init, seed, fit_sweeps, borders)
    types = bind_types(graph, batch_bindings(graph))
    planned, skipped = [], []
    for node in [n for n in graph.nodes if n.op in CONVS]:
        if max(node.inputs[1].type.shape[2:]) <= MAX_SIDE:
            continue
        plan = plan_layer(node, opts)
        if isinstance(plan, StackPlan) and \
                _conv_chain(plan, node, node.inputs[0].type)[0] != node.output.type:
            plan = "the stack would not give the layer's output shape"
        if isinstance(plan, str):
            skipped.append({"layer": node.name, "kernel": list(_layer_shape(node)[2:4]),
                            "reason": plan})
        else:  # costs first: a rewrite makes values the bound types do not know
            planned.append((node, plan, _row(node, plan, types, None)))
    rows = []
    for index, (node, plan, row) in enumerate(planned):
        row["fit_error"] = rewrite(graph, node, plan, opts, index)
        rows.append(row)
    totals = _totals(rows)
    summary = (f"stacked {len(rows)} layer(s), left {len(skipped)} alone; params saved "
               f"{totals['params_saved']:,}, MACs saved {totals['macs_saved']:,}")
    return PassResult(graph, bool(rows), {"summary": summary, "layers": rows,
                                          "skipped": skipped, "totals": totals,
                                          "lines": _lines(rows, skipped, totals)})


PASS = Pass("stack-3x3", stack_3x3, preserves_semantics=False,
            summary="replace kernels with sides above 3 by stacks of 3x3 convs (changes the "
                    "function)")
