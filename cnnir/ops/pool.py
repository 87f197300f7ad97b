"""Pooling and resampling: max/avg pooling, adaptive pooling and interpolate.

Pool output size (ATen ``pooling_output_shape``), per spatial axis of length L:
    out = floor((L + 2p − d(k−1) − 1 + (ceil_mode ? s−1 : 0)) / s) + 1,
    and in ceil mode ``out −= 1`` when the last window would start in the right padding.
Adaptive pooling: cell i covers ``[floor(i·L/out), ceil((i+1)·L/out))``.
interpolate: ``size``, or ``floor(L·scale_factor)``.

FLOPs: max/avg pool ``E_out·kh·kw`` (every window tap, padding included); adaptive avg pool
the sum of window sizes plus ``E_out`` divisions, adaptive max pool the sum of window sizes;
interpolate nearest 0, bilinear ``7·E_out`` (4 multiplies, 3 adds).

Gradients (docs/semantics.md §3) are backward-only ops emitted by the vjp rules below, costed
by the same rules (E_out = elements of the forward output, i.e. of the incoming gradient):
max_pool2d_grad ``E_out·kh·kw + E_out`` (the argmax search again, one add per window);
avg_pool2d_grad ``E_out·kh·kw + E_out`` (one division per window, one add per tap);
adaptive_avg_pool2d_grad Σ window sizes + E_out (adds, divisions); adaptive_max_pool2d_grad
Σ window sizes + E_out (comparisons, adds); interpolate_grad nearest ``E_out`` (one add per
output element), bilinear ``8·E_out`` (4 multiplies, 4 adds: the transposed blend).
The ops whose gradient does not read the forward input (avg, adaptive avg, interpolate) carry
the input's spatial size in their attributes (``input_size``) instead of keeping it alive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnir.errors import ShapeError
from cnnir.ir.types import (
    Dim,
    TensorType,
    dim_add,
    dim_floordiv,
    dim_scale_floor,
    is_static,
    shape_str,
)
from cnnir.ops.registry import (
    GLOBAL,
    Cost,
    OpDef,
    Window,
    expect_rank,
    nonnegative_pair,
    positive_pair,
    register,
    require,
    same_dtype,
    static_numel,
)

if TYPE_CHECKING:
    from cnnir.ir.graph import Node


@dataclass(frozen=True)
class PoolAttrs:
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] | None = None
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False

    def __post_init__(self) -> None:
        kernel = positive_pair(self.kernel_size, "kernel_size")
        object.__setattr__(self, "kernel_size", kernel)
        stride = kernel if self.stride is None or self.stride == () else self.stride
        object.__setattr__(self, "stride", positive_pair(stride, "stride"))
        object.__setattr__(self, "padding", nonnegative_pair(self.padding, "padding"))
        object.__setattr__(self, "dilation", positive_pair(self.dilation, "dilation"))
        # ATen's two checks, in its order and words: the output-shape function's limit on the
        # effective (dilated) kernel, then the pooling shape check's on the kernel itself (the
        # stricter one once dilation > 1: max_pool2d(3, padding=2, dilation=2) is refused)
        for axis in range(2):
            eff = self.dilation[axis] * (kernel[axis] - 1) + 1
            require(self.padding[axis] <= eff // 2,
                    f"pad should be at most half of effective kernel size, got "
                    f"padding={self.padding}, kernel_size={kernel}, dilation={self.dilation} "
                    f"(effective kernel size {eff} on axis {'HW'[axis]})")
        for axis in range(2):
            require(self.padding[axis] <= kernel[axis] // 2,
                    f"pad should be smaller than or equal to half of kernel size, got "
                    f"padding={self.padding}, kernel_size={kernel} (dilation does not raise "
                    f"this limit)", "use padding <= kernel_size // 2; torch refuses this too")


@dataclass(frozen=True)
class AvgPoolAttrs(PoolAttrs):
    count_include_pad: bool = True
    divisor_override: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.dilation == (1, 1), "avg_pool2d has no dilation")
        require(self.divisor_override is None or self.divisor_override != 0,
                "divisor_override must be non-zero")


def pool_out_dim(size: Dim, k: int, s: int, p: int, d: int, ceil_mode: bool) -> Dim:
    if not is_static(size):
        require(not ceil_mode, f"ceil_mode needs a static spatial size, got {size}",
                "bind the symbolic dimension with a concrete input shape")
        return dim_add(dim_floordiv(dim_add(size, 2 * p - d * (k - 1) - 1), s), 1)
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def infer_pool(a: PoolAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = types[0]
    expect_rank(x, 4, "its input (N, C, H, W)")
    spatial = []
    for axis in range(2):
        out = pool_out_dim(x.shape[2 + axis], a.kernel_size[axis], a.stride[axis],
                           a.padding[axis], a.dilation[axis], a.ceil_mode)
        require(not is_static(out) or out > 0,
                f"gives an empty output on axis {'HW'[axis]}: input {shape_str(x.shape)} is "
                f"too small for kernel_size={a.kernel_size}, padding={a.padding}, "
                f"dilation={a.dilation}", "use a smaller kernel or a larger input")
        spatial.append(out)
    return [TensorType((*x.shape[:2], *spatial), x.dtype)]


def cost_pool(a: PoolAttrs, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
    return Cost(flops=static_numel(outs[0]) * a.kernel_size[0] * a.kernel_size[1])


def pool_window(a: PoolAttrs, types: list[TensorType | None]) -> Window:
    kernel = tuple(a.dilation[i] * (a.kernel_size[i] - 1) + 1 for i in range(2))
    return Window(kernel, (Fraction(a.stride[0]), Fraction(a.stride[1])))


def _onnx_pool(b: Any, op_type: str, node: Node, **attrs: Any) -> tuple[str, bool]:
    """``MaxPool``/``AveragePool`` with ``pads`` = [top, left, bottom, right] from the
    symmetric torch padding, and whether it had to pad the bottom/right further. ONNX's
    ceil mode (its shape inference; ORT follows torch) keeps a last window that starts in
    the right padding, which torch drops (§1.7), and one ``ceil_mode`` serves both axes. So
    ``ceil_mode`` only where every axis that differs from floor mode gains its cell in both;
    where one axis gains a cell and the other drops it, floor mode with the gaining axis
    padded at the end far enough for its last window (never past it: the window starts
    inside the input or the left padding)."""
    a = node.attrs
    x, y = node.inputs[0].type.shape[2:], node.output.type.shape[2:]
    ceil, extra = False, [0, 0]
    if a.ceil_mode:  # ceil mode has static H and W
        eff = [a.dilation[i] * (a.kernel_size[i] - 1) + 1 for i in range(2)]
        span = [x[i] + 2 * a.padding[i] - eff[i] for i in range(2)]
        floor = [span[i] // a.stride[i] + 1 for i in range(2)]
        onnx_ceil = [-(-span[i] // a.stride[i]) + 1 for i in range(2)]
        if list(y) != floor:
            if list(y) == onnx_ceil:
                ceil = True
            else:
                extra = [(y[i] - 1) * a.stride[i] + eff[i] - x[i] - 2 * a.padding[i]
                         if y[i] != floor[i] else 0 for i in range(2)]
    source = b.input(0)
    if any(a.padding[i] + extra[i] >= a.kernel_size[i] for i in range(2)):
        # ORT refuses pads ≥ kernel_shape (a dilated max pool's window is longer): the
        # extra rows and columns as -inf before the pool (only MaxPool has dilation)
        pads = np.asarray([0, 0, 0, 0, 0, 0, *extra], dtype=np.int64)
        source = b.op("Pad", [source, b.const(pads, "pads"),
                              b.scalar(-np.inf, node.inputs[0].type.dtype)], mode="constant")
        extra = [0, 0]
    pooled = b.op(op_type, [source], kernel_shape=list(a.kernel_size),
                  strides=list(a.stride), ceil_mode=int(ceil),
                  pads=[*a.padding, a.padding[0] + extra[0], a.padding[1] + extra[1]],
                  **attrs)
    return pooled, any(extra)


def onnx_max_pool2d(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``MaxPool`` (ORT follows torch's ceil-mode rule)."""
    return [_onnx_pool(b, "MaxPool", node, dilations=list(node.attrs.dilation))[0]]


def _include_pad_window_sizes(a: AvgPoolAttrs, x: TensorType, y: TensorType) -> np.ndarray:
    """``pool_size`` per output position (§1.8): the window clipped at the padded border."""
    sizes = []
    for axis in range(2):
        start = np.arange(y.shape[2 + axis]) * a.stride[axis] - a.padding[axis]
        end = np.minimum(start + a.kernel_size[axis], x.shape[2 + axis] + a.padding[axis])
        sizes.append(end - start)
    return np.outer(sizes[0], sizes[1])


def onnx_avg_pool2d(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``AveragePool`` that always states ``count_include_pad`` (ONNX's default
    is 0, torch's 1). ``divisor_override`` d has no ONNX attribute and is decomposed as
    ``AveragePool(count_include_pad=1) · pool_size / d``: a scalar factor ``kh·kw/d`` without
    ceil mode, a per-position ``[OH, OW]`` factor with it (ceil mode has static H and W)."""
    a = node.attrs
    x, y = node.inputs[0].type, node.output.type
    include = a.divisor_override is not None or a.count_include_pad
    pooled, padded = _onnx_pool(b, "AveragePool", node, count_include_pad=int(include))
    if not include or (a.divisor_override is None and not padded):
        return [pooled]
    # with the extra end padding every window divides by kh·kw, torch's last ones by less
    window = a.kernel_size[0] * a.kernel_size[1]
    if a.divisor_override is None:
        factor = window / _include_pad_window_sizes(a, x, y)
    elif a.ceil_mode and not padded:
        factor = _include_pad_window_sizes(a, x, y) / a.divisor_override
    else:
        factor = np.asarray(window / a.divisor_override)
    return [b.op("Mul", [pooled, b.const(factor.astype(x.dtype), "divisor_factor")])]


# -- gradients: shared helpers (docs/semantics.md §3) ------------------------------------------


def check_input_size(size: Any) -> tuple[Dim, Dim]:
    """The ``input_size`` of a gradient op's attributes: the forward input's (H, W)."""
    require(isinstance(size, tuple) and len(size) == 2
            and all(isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool)
                                           and d >= 1) for d in size),
            f"input_size must be a pair of positive sizes, got {size!r}")
    return size


def with_input_size(cls: type, attrs: Any, node: Node) -> Any:
    """``attrs`` of a forward node as the gradient op's ``cls``, with the forward input's
    spatial size added."""
    values = {f.name: getattr(attrs, f.name) for f in fields(attrs)}
    return cls(**values, input_size=tuple(node.inputs[0].type.shape[2:]))


def grad_input_type(size: tuple[Dim, Dim], gy: TensorType) -> TensorType:
    """The forward input's type, from the gradient's (N, C) and ``input_size``."""
    expect_rank(gy, 4, "its grad_output (N, C, OH, OW)")
    return TensorType((*gy.shape[:2], *size), gy.dtype)


def check_grad_output(forward: TensorType, gy: TensorType) -> None:
    require(gy.shape == forward.shape,
            lambda: f"expects grad_output shaped like the forward output "
                    f"{shape_str(forward.shape)}, but it is {shape_str(gy.shape)}")


def vjp_max_pool2d(ad: Any, node: Node, grads: list) -> list:
    """Each window's gradient goes to its first maximum (docs/semantics.md §3)."""
    return [ad.op(max_pool2d_grad, [node.inputs[0], grads[0]], node.attrs)]


def vjp_avg_pool2d(ad: Any, node: Node, grads: list) -> list:
    """``gy / divisor`` to each window's pixels inside the image (docs/semantics.md §3)."""
    attrs = with_input_size(AvgPoolGradAttrs, node.attrs, node)
    return [ad.op(avg_pool2d_grad, [grads[0]], attrs)]


max_pool2d = register(OpDef(
    name="max_pool2d", inputs=("input",), attrs=PoolAttrs, infer=infer_pool, cost=cost_pool,
    window=pool_window, flop_rule="E_out·kh·kw comparisons", onnx=onnx_max_pool2d,
    vjp=vjp_max_pool2d,
))
avg_pool2d = register(OpDef(
    name="avg_pool2d", inputs=("input",), attrs=AvgPoolAttrs, infer=infer_pool, cost=cost_pool,
    window=pool_window, flop_rule="E_out·kh·kw", onnx=onnx_avg_pool2d, vjp=vjp_avg_pool2d,
))


def infer_max_pool_grad(a: PoolAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x, gy = types
    (y,) = infer_pool(a, [x])
    expect_rank(gy, 4, "its grad_output (N, C, OH, OW)")
    check_grad_output(y, gy)
    return [TensorType(x.shape, same_dtype([x, gy]))]


def cost_pool_grad(a: PoolAttrs, ins: list[TensorType | None],
                   outs: list[TensorType]) -> Cost:
    """Both pool gradients: ``E_out·kh·kw`` taps (max: comparisons; avg: adds) plus ``E_out``
    (max: the add of the window's gradient; avg: the division by the divisor)."""
    e_out = static_numel(ins[-1])
    return Cost(flops=e_out * a.kernel_size[0] * a.kernel_size[1] + e_out)


@dataclass(frozen=True)
class AvgPoolGradAttrs(AvgPoolAttrs):
    """The forward avg_pool2d's attributes and its input's (H, W)."""

    input_size: tuple[Dim, Dim] = (1, 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_input_size(self.input_size)


def infer_avg_pool_grad(a: AvgPoolGradAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = grad_input_type(a.input_size, types[0])
    (y,) = infer_pool(a, [x])
    check_grad_output(y, types[0])
    return [x]


# Backward-only (docs/semantics.md §3): the gradients of the input, from the forward input
# (max) or its size (avg) and the output's gradient.
max_pool2d_grad = register(OpDef(
    name="max_pool2d_grad", inputs=("input", "grad_output"), attrs=PoolAttrs,
    infer=infer_max_pool_grad, cost=cost_pool_grad, backward=True, differentiable=False,
    flop_rule="E_out·kh·kw comparisons + E_out adds",
))
avg_pool2d_grad = register(OpDef(
    name="avg_pool2d_grad", inputs=("grad_output",), attrs=AvgPoolGradAttrs,
    infer=infer_avg_pool_grad, cost=cost_pool_grad, backward=True, differentiable=False,
    flop_rule="E_out divisions + E_out·kh·kw adds",
))


@dataclass(frozen=True)
class AdaptivePoolAttrs:
    """``output_size`` entries may be None: keep that input dimension."""

    output_size: tuple[int | None, int | None] = (1, 1)

    def __post_init__(self) -> None:
        size = self.output_size
        size = (size, size) if size is None or isinstance(size, int) else tuple(size)
        require(len(size) == 2 and all(s is None or (isinstance(s, int) and s >= 1)
                                       for s in size),
                f"output_size must be a positive int or pair (None keeps a dim), got "
                f"{self.output_size!r}")
        object.__setattr__(self, "output_size", size)


def _adaptive_sizes(a: AdaptivePoolAttrs, x: TensorType) -> tuple[Dim, Dim]:
    return tuple(x.shape[2 + i] if s is None else s  # type: ignore[return-value]
                 for i, s in enumerate(a.output_size))


def infer_adaptive(a: AdaptivePoolAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = types[0]
    expect_rank(x, (3, 4), "its input (N, C, H, W)")
    require(x.rank == 4, f"expects a 4-D input but it is {shape_str(x.shape)}")
    return [TensorType((*x.shape[:2], *_adaptive_sizes(a, x)), x.dtype)]


def adaptive_window_total(length: int, out: int) -> int:
    """Σ over output cells of the window length ``ceil((i+1)L/out) − floor(iL/out)``."""
    return sum(-(-(i + 1) * length // out) - (i * length // out) for i in range(out))


def _window_taps(ins: list[TensorType | None], outs: list[TensorType]) -> int:
    x, y = ins[0], outs[0]
    per_plane = (adaptive_window_total(x.shape[2], y.shape[2])
                 * adaptive_window_total(x.shape[3], y.shape[3]))
    return x.shape[0] * x.shape[1] * per_plane


def cost_adaptive_avg(a: Any, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
    return Cost(flops=_window_taps(ins, outs) + static_numel(outs[0]))


def cost_adaptive_max(a: Any, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
    return Cost(flops=_window_taps(ins, outs))


def adaptive_window(a: AdaptivePoolAttrs, types: list[TensorType | None]) -> Window | str:
    x = types[0]
    out = _adaptive_sizes(a, x)
    if out == (1, 1):
        return GLOBAL
    kernel = tuple(math.ceil(x.shape[2 + i] / out[i]) for i in range(2))
    return Window(kernel, tuple(Fraction(x.shape[2 + i], out[i]) for i in range(2)))


def onnx_adaptive_pool(global_type: str, pool_type: str, **pool_attrs: Any) -> Any:
    """ONNX mapping of adaptive pooling: output (1, 1) is ``Global*Pool``; otherwise, where
    every static input length L is divisible by its output length, ``*Pool(k = s = L/out)``;
    anything else has no ONNX equivalent and is refused."""

    def mapping(b: Any, node: Node) -> list[str]:
        x = node.inputs[0].type
        out = _adaptive_sizes(node.attrs, x)
        if out == (1, 1):
            return [b.op(global_type, [b.input(0)])]
        lengths = x.shape[2:]
        if not all(is_static(n) and n % o == 0 for n, o in zip(lengths, out)):
            b.fail(f"cannot be exported: output_size {out} must divide the static input size "
                   f"{list(lengths)} (input {shape_str(x.shape)})",
                   "ONNX has no adaptive pooling; use output_size 1 or a divisible input size")
        kernel = [n // o for n, o in zip(lengths, out)]
        return [b.op(pool_type, [b.input(0)], kernel_shape=kernel, strides=kernel,
                     pads=[0, 0, 0, 0], **pool_attrs)]

    return mapping


def vjp_adaptive_avg_pool2d(ad: Any, node: Node, grads: list) -> list:
    """``gy / window size`` to each cell of the window (docs/semantics.md §3)."""
    attrs = with_input_size(AdaptivePoolGradAttrs, node.attrs, node)
    return [ad.op(adaptive_avg_pool2d_grad, [grads[0]], attrs)]


def vjp_adaptive_max_pool2d(ad: Any, node: Node, grads: list) -> list:
    """Each window's gradient goes to its first maximum, as max_pool2d's."""
    return [ad.op(adaptive_max_pool2d_grad, [node.inputs[0], grads[0]], node.attrs)]


adaptive_avg_pool2d = register(OpDef(
    name="adaptive_avg_pool2d", inputs=("input",), attrs=AdaptivePoolAttrs,
    infer=infer_adaptive, cost=cost_adaptive_avg, window=adaptive_window,
    flop_rule="Σ window sizes + E_out (E_in + E_out when windows do not overlap)",
    onnx=onnx_adaptive_pool("GlobalAveragePool", "AveragePool", count_include_pad=1),
    vjp=vjp_adaptive_avg_pool2d,
))
adaptive_max_pool2d = register(OpDef(
    name="adaptive_max_pool2d", inputs=("input",), attrs=AdaptivePoolAttrs,
    infer=infer_adaptive, cost=cost_adaptive_max, window=adaptive_window,
    flop_rule="Σ window sizes (comparisons)",
    onnx=onnx_adaptive_pool("GlobalMaxPool", "MaxPool"), vjp=vjp_adaptive_max_pool2d,
))


@dataclass(frozen=True)
class AdaptivePoolGradAttrs(AdaptivePoolAttrs):
    """The forward adaptive pool's attributes and its input's (H, W)."""

    input_size: tuple[Dim, Dim] = (1, 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_input_size(self.input_size)


def infer_adaptive_avg_grad(a: AdaptivePoolGradAttrs,
                            types: list[TensorType | None]) -> list[TensorType]:
    x = grad_input_type(a.input_size, types[0])
    (y,) = infer_adaptive(a, [x])
    check_grad_output(y, types[0])
    return [x]


def infer_adaptive_max_grad(a: AdaptivePoolAttrs,
                            types: list[TensorType | None]) -> list[TensorType]:
    x, gy = types
    (y,) = infer_adaptive(a, [x])
    expect_rank(gy, 4, "its grad_output (N, C, OH, OW)")
    check_grad_output(y, gy)
    return [TensorType(x.shape, same_dtype([x, gy]))]


def cost_adaptive_grad(a: Any, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
    """Σ window sizes (avg: adds; max: comparisons) + E_out (avg: divisions; max: adds)."""
    gy = ins[-1]
    return Cost(flops=_window_taps([outs[0]], [gy]) + static_numel(gy))


adaptive_avg_pool2d_grad = register(OpDef(
    name="adaptive_avg_pool2d_grad", inputs=("grad_output",), attrs=AdaptivePoolGradAttrs,
    infer=infer_adaptive_avg_grad, cost=cost_adaptive_grad, backward=True,
    differentiable=False, flop_rule="Σ window sizes adds + E_out divisions",
))
adaptive_max_pool2d_grad = register(OpDef(
    name="adaptive_max_pool2d_grad", inputs=("input", "grad_output"), attrs=AdaptivePoolAttrs,
    infer=infer_adaptive_max_grad, cost=cost_adaptive_grad, backward=True,
    differentiable=False, flop_rule="Σ window sizes comparisons + E_out adds",
))

INTERPOLATE_MODES = ("nearest", "nearest-exact", "bilinear")


@dataclass(frozen=True)
class InterpolateAttrs:
    size: tuple[int, int] | None = None
    scale_factor: tuple[float, float] | None = None
    mode: str = "nearest"
    align_corners: bool | None = None
    recompute_scale_factor: bool | None = None

    def __post_init__(self) -> None:
        require(self.mode in INTERPOLATE_MODES,
                f"mode must be one of {INTERPOLATE_MODES}, got {self.mode!r}")
        require((self.size is None) != (self.scale_factor is None),
                "only one of size or scale_factor should be defined")
        if self.size is not None:
            object.__setattr__(self, "size", positive_pair(self.size, "size"))
        else:
            object.__setattr__(self, "scale_factor", _scale_pair(self.scale_factor))
        require(self.align_corners is None or self.mode == "bilinear",
                "align_corners option can only be set with the interpolating modes: bilinear")


def _scale_pair(scale: Any) -> tuple[float, float]:
    if isinstance(scale, (int, float)):
        scale = (scale, scale)
    if not (isinstance(scale, (tuple, list)) and len(scale) == 2):
        raise ShapeError(f"scale_factor must be a number or a pair, got {scale!r}")
    require(all(s > 0 for s in scale), f"scale_factor must be > 0, got {scale!r}")
    return (float(scale[0]), float(scale[1]))


def infer_interpolate(a: InterpolateAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = types[0]
    expect_rank(x, 4, "its input (N, C, H, W)")
    if a.size is not None:
        spatial = a.size
    else:
        spatial = tuple(dim_scale_floor(x.shape[2 + i], a.scale_factor[i]) for i in range(2))
    for axis, size in enumerate(spatial):
        require(not is_static(size) or size > 0,
                f"gives an empty output on axis {'HW'[axis]} for input {shape_str(x.shape)} "
                f"and scale_factor={a.scale_factor}")
    return [TensorType((*x.shape[:2], *spatial), x.dtype)]


def cost_interpolate(a: InterpolateAttrs, ins: list[TensorType | None],
                     outs: list[TensorType]) -> Cost:
    return Cost(flops=7 * static_numel(outs[0]) if a.mode == "bilinear" else 0)


def interpolate_window(a: InterpolateAttrs, types: list[TensorType | None]) -> Window:
    x = types[0]
    out = infer_interpolate(a, types)[0]
    stride = tuple(Fraction(x.shape[2 + i], out.shape[2 + i]) for i in range(2))
    taps = 2 if a.mode == "bilinear" else 1
    return Window((taps, taps), stride)


# (mode, coordinate_transformation_mode, nearest_mode) per torch variant (docs/semantics.md §7.3);
# all three are always written because ONNX's defaults are not torch's.
RESIZE_MODES = {
    ("nearest", False): ("nearest", "asymmetric", "floor"),
    ("nearest-exact", False): ("nearest", "half_pixel", "round_prefer_ceil"),
    ("bilinear", False): ("linear", "half_pixel", "floor"),
    ("bilinear", True): ("linear", "align_corners", "floor"),
}


def _resize_uses_sizes(a: InterpolateAttrs) -> bool:
    """``sizes`` for size=, recompute_scale_factor=True and align_corners with a scale that
    is not a whole number (ONNX's reference does not floor ``in·scale`` there, onnx#2462);
    ``scales`` otherwise (the same 1/scale in the coordinate math as torch)."""
    if a.size is not None or a.recompute_scale_factor:
        return True
    return bool(a.align_corners) and any(s < 1 or s != int(s) for s in a.scale_factor)


def _nearest_indices(in_len: int, out_len: int, exact_mode: bool) -> np.ndarray:
    """§1.10's source index of each output index, for a resize to a given size."""
    dst = np.arange(out_len, dtype=np.float64) + (0.5 if exact_mode else 0.0)
    return np.minimum(np.floor(dst * (in_len / out_len)), in_len - 1).astype(np.int64)


def _ort_misrounds(x: TensorType, y: TensorType, mode: str) -> bool:
    """Whether ORT's Resize by sizes would pick other pixels than torch: it computes the
    scale ``out/in`` in float32, and where an output index lands exactly on a rounding
    boundary that scale can put it just below (14 → 2 columns: pixel 6 for torch's 7).
    ORT's arithmetic is replayed in float32 (static sizes up to 2¹⁶)."""
    for axis in (2, 3):
        n_in, n_out = x.shape[axis], y.shape[axis]
        if not (is_static(n_in) and is_static(n_out)) or n_out > 1 << 16:
            return False
        f32 = np.float32
        scale = f32(n_out) / f32(n_in)
        dst = np.arange(n_out, dtype=f32)
        if mode == "nearest":  # asymmetric, floor
            ort = np.floor(dst / scale)
        else:  # half_pixel, round_prefer_ceil
            ort = np.floor((dst + f32(0.5)) / scale - f32(0.5) + f32(0.5))
        ort = np.clip(ort, 0, n_in - 1).astype(np.int64)
        if not np.array_equal(ort, _nearest_indices(n_in, n_out, mode == "nearest-exact")):
            return True
    return False


def onnx_interpolate(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Resize(X, "", scales | sizes, axes=[2, 3])``; the axes keep N and C
    out of it, so the batch stays dynamic."""
    a = node.attrs
    x, y = node.inputs[0].type, node.output.type
    mode, transform, nearest = RESIZE_MODES[(a.mode, bool(a.align_corners))]
    if _resize_uses_sizes(a) and a.mode != "bilinear" and _ort_misrounds(x, y, a.mode):
        out = b.input(0)  # torch's source indices, exactly, as two Gathers
        for axis in (2, 3):
            src = _nearest_indices(x.shape[axis], y.shape[axis], a.mode == "nearest-exact")
            out = b.op("Gather", [out, b.const(src, "indices")], axis=axis)
        return [out]
    if _resize_uses_sizes(a):
        if not all(is_static(d) for d in y.shape[2:]):
            b.fail(f"needs static output sizes to export 'sizes', got {shape_str(y.shape)} "
                   f"from input {shape_str(x.shape)}", "trace with concrete H and W")
        second = b.const(np.asarray(y.shape[2:], dtype=np.int64), "sizes")
        inputs = [b.input(0), "", "", second]
    else:
        inputs = [b.input(0), "", b.const(np.asarray(a.scale_factor, np.float32), "scales")]
    return [b.op("Resize", inputs, axes=[2, 3], mode=mode,
                 coordinate_transformation_mode=transform, nearest_mode=nearest)]


def vjp_interpolate(ad: Any, node: Node, grads: list) -> list:
    """The transposed resampling: gy scatter-added to the source pixels with the forward's
    weights, ``gx = M_hᵀ · gy · M_w`` (docs/semantics.md §3)."""
    attrs = with_input_size(InterpolateGradAttrs, node.attrs, node)
    return [ad.op(interpolate_grad, [grads[0]], attrs)]


interpolate = register(OpDef(
    name="interpolate", inputs=("input",), attrs=InterpolateAttrs, infer=infer_interpolate,
    cost=cost_interpolate, window=interpolate_window, onnx=onnx_interpolate,
    flop_rule="nearest 0; bilinear 7·E_out (4 multiplies + 3 adds)", vjp=vjp_interpolate,
))


@dataclass(frozen=True)
class InterpolateGradAttrs(InterpolateAttrs):
    """The forward interpolate's attributes and its input's (H, W)."""

    input_size: tuple[Dim, Dim] = (1, 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_input_size(self.input_size)


def infer_interpolate_grad(a: InterpolateGradAttrs,
                           types: list[TensorType | None]) -> list[TensorType]:
    x = grad_input_type(a.input_size, types[0])
    (y,) = infer_interpolate(a, [x])
    check_grad_output(y, types[0])
    return [x]


def cost_interpolate_grad(a: InterpolateGradAttrs, ins: list[TensorType | None],
                          outs: list[TensorType]) -> Cost:
    return Cost(flops=(8 if a.mode == "bilinear" else 1) * static_numel(ins[0]))


interpolate_grad = register(OpDef(
    name="interpolate_grad", inputs=("grad_output",), attrs=InterpolateGradAttrs,
    infer=infer_interpolate_grad, cost=cost_interpolate_grad, backward=True,
    differentiable=False,
    flop_rule="nearest E_out adds; bilinear 8·E_out (4 multiplies + 4 adds)",
))

