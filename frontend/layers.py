"""torch.nn's layer classes: same names, signatures and defaults.

Attributes are validated when a layer is constructed (``nn.Conv2d(3, 8, 3, stride=0)`` fails
there, naming the layer and the user's line), and each forward calls one
``cnnir.nn.functional`` function.
"""

from __future__ import annotations

import math
from typing import Any

from cnnir import ops
from cnnir.frontend import functional as F
from cnnir.frontend import init
from cnnir.frontend.module import Buffer, Module, Parameter
from cnnir.frontend.tensor import Tensor
from cnnir.frontend.tracer import build_attrs
from cnnir.ops.activation import DropoutAttrs, RReluAttrs, SoftplusAttrs
from cnnir.ops.conv import Conv2dAttrs, ConvTranspose2dAttrs, normalize_padding
from cnnir.ops.norm import BatchNormAttrs, GroupNormAttrs, LayerNormAttrs
from cnnir.ops.pool import AdaptivePoolAttrs, AvgPoolAttrs, InterpolateAttrs, PoolAttrs
from cnnir.ops.registry import pair, positive_pair, require


def _check_channels(where: str, in_channels: int, out_channels: int, groups: int) -> None:
    def check() -> None:
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            require(isinstance(value, int) and value >= 1, f"{name} must be >= 1, got {value!r}")
        require(isinstance(groups, int) and groups >= 1, f"groups must be >= 1, got {groups!r}")
        require(in_channels % groups == 0 and out_channels % groups == 0,
                f"groups={groups} must divide both in_channels={in_channels} and "
                f"out_channels={out_channels}")

    build_attrs(check, where)


class Conv2d(Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: str = "float32") -> None:
        super().__init__()
        _check_channels("Conv2d", in_channels, out_channels, groups)
        self.kernel_size = build_attrs(lambda: positive_pair(kernel_size, "kernel_size"),
                                       "Conv2d")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.stride, self.dilation, self.padding = stride, dilation, padding
        require(padding_mode == "zeros", f"padding_mode {padding_mode!r} is not supported")
        pads = build_attrs(lambda: normalize_padding(padding, self.kernel_size,
                                                     pair(dilation, "dilation"),
                                                     pair(stride, "stride")), "Conv2d")
        self.attrs = build_attrs(Conv2dAttrs, "Conv2d", stride=stride, padding=pads,
                                 dilation=dilation, groups=groups)
        self.weight = Parameter((out_channels, in_channels // groups, *self.kernel_size),
                                dtype=dtype)
        self.bias = Parameter((out_channels,), dtype=dtype) if bias else None
        fan_in = in_channels // groups * math.prod(self.kernel_size)
        init.default_weight_and_bias(self.weight, self.bias, fan_in)

    def forward(self, x: Tensor) -> Tensor:
        a = self.attrs
        return F.conv2d(x, self.weight, self.bias, a.stride, a.padding, a.dilation, a.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.attrs.stride}, padding={self.padding}, groups={self.groups}")


class Conv1d(Module):
    """Runs as conv2d on a (N, C, 1, L) view (``F.conv1d``); the weight is (O, C/g, k)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: str = "float32") -> None:
        super().__init__()
        _check_channels("Conv1d", in_channels, out_channels, groups)
        k = kernel_size[0] if isinstance(kernel_size, (tuple, list)) else kernel_size
        build_attrs(lambda: require(isinstance(k, int) and k >= 1, f"kernel_size must be a "
                                    f"positive int, got {kernel_size!r}"), "Conv1d")
        require(padding_mode == "zeros", f"padding_mode {padding_mode!r} is not supported")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding, self.dilation = (k,), stride, padding, dilation
        self.weight = Parameter((out_channels, in_channels // groups, k), dtype=dtype)
        self.bias = Parameter((out_channels,), dtype=dtype) if bias else None
        init.default_weight_and_bias(self.weight, self.bias, in_channels // groups * k)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}")


class ConvTranspose2d(Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, groups: int = 1, bias: bool = True,
                 dilation: Any = 1, padding_mode: str = "zeros", device: Any = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        _check_channels("ConvTranspose2d", in_channels, out_channels, groups)
        self.kernel_size = build_attrs(lambda: positive_pair(kernel_size, "kernel_size"),
                                       "ConvTranspose2d")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        ph, pw = build_attrs(lambda: pair(padding, "padding"), "ConvTranspose2d")
        self.attrs = build_attrs(ConvTranspose2dAttrs, "ConvTranspose2d", stride=stride,
                                 padding=(ph, pw, ph, pw), dilation=dilation, groups=groups,
                                 output_padding=output_padding)
        self.weight = Parameter((in_channels, out_channels // groups, *self.kernel_size),
                                dtype=dtype)
        self.bias = Parameter((out_channels,), dtype=dtype) if bias else None
        # torch computes fan_in from weight.shape[1]: (out/groups)·kh·kw
        init.default_weight_and_bias(self.weight, self.bias,
                                     out_channels // groups * math.prod(self.kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        a = self.attrs
        return F.conv_transpose2d(x, self.weight, self.bias, a.stride, a.padding[:2],
                                  a.output_padding, a.groups, a.dilation)


class DeformConv2d(Module):
    """torchvision.ops.DeformConv2d: ``forward(input, offset, mask=None)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        _check_channels("DeformConv2d", in_channels, out_channels, groups)
        self.kernel_size = build_attrs(lambda: positive_pair(kernel_size, "kernel_size"),
                                       "DeformConv2d")
        ph, pw = build_attrs(lambda: pair(padding, "padding"), "DeformConv2d")
        self.attrs = build_attrs(Conv2dAttrs, "DeformConv2d", stride=stride,
                                 padding=(ph, pw, ph, pw), dilation=dilation, groups=groups)
        self.weight = Parameter((out_channels, in_channels // groups, *self.kernel_size))
        self.bias = Parameter((out_channels,)) if bias else None
        fan_in = in_channels // groups * math.prod(self.kernel_size)
        init.default_weight_and_bias(self.weight, self.bias, fan_in)

    def forward(self, input: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        a = self.attrs
        return F.deform_conv2d(input, offset, self.weight, self.bias, a.stride, a.padding[:2],
                               a.dilation, mask)


class Linear(Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: Any = None, dtype: str = "float32") -> None:
        super().__init__()
        build_attrs(lambda: require(in_features >= 0 and out_features >= 0,
                                    f"features must be >= 0, got {in_features}, "
                                    f"{out_features}"), "Linear")
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter((out_features, in_features), dtype=dtype)
        self.bias = Parameter((out_features,), dtype=dtype) if bias else None
        init.default_weight_and_bias(self.weight, self.bias, in_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class _BatchNorm(Module):
    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device: Any = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        c = (num_features,)
        self.weight = init.ones_(Parameter(c, dtype=dtype)) if affine else None
        self.bias = Parameter(c, dtype=dtype) if affine else None
        if track_running_stats:
            self.running_mean = Buffer(c, dtype=dtype)
            self.running_var = init.ones_(Buffer(c, dtype=dtype))
            self.num_batches_tracked = Buffer((), dtype="int64")
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            use_batch_stats, self.momentum, self.eps)

    def _check_input(self, x: Tensor) -> None:
        pass

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    def _check_input(self, x: Tensor) -> None:
        build_attrs(lambda: require(x.ndim in (2, 3), f"expected 2D or 3D input (got "
                                    f"{x.ndim}D input {list(x.shape)})"), "BatchNorm1d")


class BatchNorm2d(_BatchNorm):
    def _check_input(self, x: Tensor) -> None:
        build_attrs(lambda: require(x.ndim == 4, f"expected 4D input (got {x.ndim}D input "
                                    f"{list(x.shape)})"), "BatchNorm2d")


class SyncBatchNorm(_BatchNorm):
    """BatchNorm whose batch statistics, and in the backward their gradient sums, are over
    every rank's batch in data-parallel training (``cnnir.distributed``: the communicator
    ``init`` made active, PyTorch's default process group); in one process, or in eval, it
    is BatchNorm. Any input of rank 2 or more."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 process_group: Any = None, device: Any = None,
                 dtype: str = "float32") -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype)
        build_attrs(lambda: require(process_group is None, "process_group must be None: "
                                    "the statistics are over the active communicator's ranks",
                                    "cnnir.distributed.init(comm) chooses the ranks"),
                    "SyncBatchNorm")

    def forward(self, x: Tensor) -> Tensor:
        build_attrs(lambda: require(x.ndim >= 2, f"expected at least 2D input (got {x.ndim}D "
                                    f"input {list(x.shape)})"), "SyncBatchNorm")
        return F._emit(ops.batch_norm, [x, self.running_mean, self.running_var, self.weight,
                                        self.bias], BatchNormAttrs,
                       training=self.training or self.running_mean is None,
                       momentum=self.momentum, eps=self.eps, sync=True)

    @classmethod
    def convert_sync_batchnorm(cls, module: Module, process_group: Any = None) -> Module:
        """``module`` with every BatchNorm1d/2d replaced by a SyncBatchNorm holding the same
        parameters and buffers (the arrays themselves) and training mode; a BatchNorm given
        directly comes back converted, anything else is changed in place and returned."""
        if isinstance(module, (BatchNorm1d, BatchNorm2d)):
            sync = cls(module.num_features, module.eps, module.momentum, module.affine,
                       module.track_running_stats, process_group)
            for table in ("_parameters", "_buffers"):
                getattr(sync, table).update(getattr(module, table))
            sync.train(module.training)
            return sync
        for name, child in list(module.named_children()):
            converted = cls.convert_sync_batchnorm(child, process_group)
            if converted is not child:
                setattr(module, name, converted)
        return module


class GroupNorm(Module):
    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, device: Any = None, dtype: str = "float32") -> None:
        super().__init__()
        build_attrs(GroupNormAttrs, "GroupNorm", num_groups=num_groups, eps=eps)
        build_attrs(lambda: require(num_channels % num_groups == 0, f"num_channels="
                                    f"{num_channels} must be divisible by num_groups="
                                    f"{num_groups}"), "GroupNorm")
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.affine = affine
        self.weight = init.ones_(Parameter((num_channels,), dtype=dtype)) if affine else None
        self.bias = Parameter((num_channels,), dtype=dtype) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class LayerNorm(Module):
    def __init__(self, normalized_shape: Any, eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, device: Any = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        shape = build_attrs(LayerNormAttrs, "LayerNorm", normalized_shape=normalized_shape,
                            eps=eps).normalized_shape
        self.normalized_shape, self.eps = shape, eps
        self.elementwise_affine = elementwise_affine
        affine = elementwise_affine
        self.weight = init.ones_(Parameter(shape, dtype=dtype)) if affine else None
        self.bias = Parameter(shape, dtype=dtype) if affine and bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class _InstanceNorm(_BatchNorm):
    """Statistics per sample and channel (``F.instance_norm``); with track_running_stats,
    eval mode normalizes with the running statistics, and training mode, which would update
    them, is refused."""

    spatial_dims = 2

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = False, track_running_stats: bool = False, device: Any = None,
                 dtype: str = "float32") -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        name, rank = type(self).__name__, self.spatial_dims + 2
        build_attrs(lambda: require(x.ndim in (rank - 1, rank), f"expected {rank - 1}D or "
                                    f"{rank}D input (got {x.ndim}D input {list(x.shape)})"),
                    name)
        unbatched = x.ndim == rank - 1
        if unbatched:
            x = F.unsqueeze(x, 0)
        build_attrs(lambda: require(
            not (self.training and self.track_running_stats), "training with "
            "track_running_stats=True (updating running statistics) is not supported",
            "use track_running_stats=False, or call model.eval()"), name)
        y = F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            not self.track_running_stats, self.momentum, self.eps)
        return F.squeeze(y, 0) if unbatched else y

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class InstanceNorm1d(_InstanceNorm):
    spatial_dims = 1


class InstanceNorm2d(_InstanceNorm):
    spatial_dims = 2


class Dropout(Module):
    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        self.p = build_attrs(DropoutAttrs, "Dropout", p=p).p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)


class Dropout2d(Dropout):
    def forward(self, x: Tensor) -> Tensor:
        return F.dropout2d(x, self.p, self.training)


def _activation(name: str, fn: Any, doc: str) -> type:
    def forward(self: Module, x: Tensor) -> Tensor:
        return fn(x)

    def __init__(self: Module, inplace: bool = False) -> None:
        Module.__init__(self)

    return type(name, (Module,), {"__init__": __init__, "forward": forward, "__doc__": doc})


ReLU = _activation("ReLU", F.relu, "max(x, 0)")
ReLU6 = _activation("ReLU6", F.relu6, "min(max(x, 0), 6)")
Sigmoid = _activation("Sigmoid", F.sigmoid, "1 / (1 + exp(-x))")
Tanh = _activation("Tanh", F.tanh, "tanh(x)")
SiLU = _activation("SiLU", F.silu, "x·sigmoid(x)")
Hardsigmoid = _activation("Hardsigmoid", F.hardsigmoid, "min(max(x + 3, 0), 6) / 6")
Hardswish = _activation("Hardswish", F.hardswish, "x·min(max(x + 3, 0), 6) / 6")
Mish = _activation("Mish", F.mish, "x·tanh(softplus(x))")


class GELU(Module):
    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, self.approximate)


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)


class ELU(Module):
    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(x, self.alpha)


class Hardtanh(Module):
    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False,
                 min_value: float | None = None, max_value: float | None = None) -> None:
        super().__init__()
        self.min_val = min_val if min_value is None else min_value
        self.max_val = max_val if max_value is None else max_value
        build_attrs(lambda: require(self.max_val > self.min_val,
                                    f"needs max_val > min_val, got min_val={self.min_val}, "
                                    f"max_val={self.max_val}"), "Hardtanh")

    def forward(self, x: Tensor) -> Tensor:
        return F.hardtanh(x, self.min_val, self.max_val)

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}"


class Softplus(Module):
    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta, self.threshold = beta, threshold
        build_attrs(SoftplusAttrs, "Softplus", beta=beta, threshold=threshold)

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class PReLU(Module):
    def __init__(self, num_parameters: int = 1, init: float = 0.25, device: Any = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        self.num_parameters = num_parameters
        self.weight = _init_constant(Parameter((num_parameters,), dtype=dtype), init)

    def forward(self, x: Tensor) -> Tensor:
        return F.prelu(x, self.weight)


def _init_constant(p: Parameter, value: float) -> Parameter:
    return init.constant_(p, value)


class RReLU(Module):
    def __init__(self, lower: float = 1.0 / 8, upper: float = 1.0 / 3,
                 inplace: bool = False) -> None:
        super().__init__()
        build_attrs(RReluAttrs, "RReLU", lower=lower, upper=upper)
        self.lower, self.upper = lower, upper

    def forward(self, x: Tensor) -> Tensor:
        return F.rrelu(x, self.lower, self.upper, self.training)


class Softmax(Module):
    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(x, self.dim)


class LogSoftmax(Softmax):
    def forward(self, x: Tensor) -> Tensor:
        return F.log_softmax(x, self.dim)


class MaxPool2d(Module):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 return_indices: bool = False, ceil_mode: bool = False) -> None:
        super().__init__()
        self.attrs = build_attrs(PoolAttrs, "MaxPool2d", kernel_size=kernel_size, stride=stride,
                                 padding=padding, dilation=dilation, ceil_mode=ceil_mode)
        self.return_indices = return_indices

    def forward(self, x: Tensor) -> Tensor:
        a = self.attrs
        return F.max_pool2d(x, a.kernel_size, a.stride, a.padding, a.dilation, a.ceil_mode,
                            self.return_indices)


class AvgPool2d(Module):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None) -> None:
        super().__init__()
        self.attrs = build_attrs(AvgPoolAttrs, "AvgPool2d", kernel_size=kernel_size,
                                 stride=stride, padding=padding, ceil_mode=ceil_mode,
                                 count_include_pad=count_include_pad,
                                 divisor_override=divisor_override)

    def forward(self, x: Tensor) -> Tensor:
        a = self.attrs
        return F.avg_pool2d(x, a.kernel_size, a.stride, a.padding, a.ceil_mode,
                            a.count_include_pad, a.divisor_override)


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = build_attrs(AdaptivePoolAttrs, "AdaptiveAvgPool2d",
                                       output_size=output_size).output_size

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x, self.output_size)


class AdaptiveMaxPool2d(AdaptiveAvgPool2d):
    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_max_pool2d(x, self.output_size)


class Upsample(Module):
    def __init__(self, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                 align_corners: bool | None = None,
                 recompute_scale_factor: bool | None = None) -> None:
        super().__init__()
        build_attrs(InterpolateAttrs, type(self).__name__, size=size, scale_factor=scale_factor,
                    mode=mode, align_corners=align_corners)
        self.size, self.scale_factor, self.mode = size, scale_factor, mode
        self.align_corners, self.recompute_scale_factor = align_corners, recompute_scale_factor

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners,
                             self.recompute_scale_factor)


class UpsamplingBilinear2d(Upsample):
    """Bilinear upsampling with ``align_corners=True`` (unlike ``nn.Upsample``)."""

    def __init__(self, size: Any = None, scale_factor: Any = None) -> None:
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)


class UpsamplingNearest2d(Upsample):
    def __init__(self, size: Any = None, scale_factor: Any = None) -> None:
        super().__init__(size, scale_factor, mode="nearest")


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Tensor) -> Tensor:
        return F.flatten(x, self.start_dim, self.end_dim)


class Identity(Module):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x


class ChannelShuffle(Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        return F.channel_shuffle(x, self.groups)


class PixelShuffle(Module):
    def __init__(self, upscale_factor: int) -> None:
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(x, self.upscale_factor)

    def extra_repr(self) -> str:
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(Module):
    def __init__(self, downscale_factor: int) -> None:
        super().__init__()
        self.downscale_factor = downscale_factor

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_unshuffle(x, self.downscale_factor)

    def extra_repr(self) -> str:
        return f"downscale_factor={self.downscale_factor}"


class ZeroPad2d(Module):
    def __init__(self, padding: Any) -> None:
        super().__init__()
        self.padding = (padding,) * 4 if isinstance(padding, int) else tuple(padding)

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x, self.padding)


# -- losses ----------------------------------------------------------------------------------


class _Loss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction


class L1Loss(_Loss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(input, target, self.reduction)


class MSELoss(_Loss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(input, target, self.reduction)


class SmoothL1Loss(_Loss):
    def __init__(self, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(reduction)
        self.beta = beta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.smooth_l1_loss(input, target, self.reduction, self.beta)


class HuberLoss(_Loss):
    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        self.delta = delta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.huber_loss(input, target, self.reduction, self.delta)


class _WeightedLoss(_Loss):
    def __init__(self, weight: Any = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.register_buffer("weight", weight)


class CrossEntropyLoss(_WeightedLoss):
    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight, reduction)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(input, target, self.weight, self.ignore_index, self.reduction,
                               self.label_smoothing)


class NLLLoss(_WeightedLoss):
    def __init__(self, weight: Any = None, ignore_index: int = -100,
                 reduction: str = "mean") -> None:
        super().__init__(weight, reduction)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class BCELoss(_WeightedLoss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy(input, target, self.weight, self.reduction)


class BCEWithLogitsLoss(_WeightedLoss):
    def __init__(self, weight: Any = None, reduction: str = "mean", pos_weight: Any = None) -> None:
        super().__init__(weight, reduction)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(input, target, self.weight, self.reduction,
                                                  self.pos_weight)


class TripletMarginLoss(_Loss):
    def __init__(self, margin: float = 1.0, p: float = 2.0, eps: float = 1e-6, swap: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin, self.p, self.eps, self.swap = margin, p, eps, swap

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return F.triplet_margin_loss(anchor, positive, negative, self.margin, self.p, self.eps,
                                     self.swap, self.reduction)


class ContrastiveLoss(_Loss):
    """cnnir's contrastive loss (Hadsell et al. 2006; no torch class): label 0 = similar,
    1 = dissimilar, margin 1.0, with the ½ factors. See ``F.contrastive_loss``."""

    def __init__(self, margin: float = 1.0, eps: float = 1e-6, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin, self.eps = margin, eps

    def forward(self, x1: Tensor, x2: Tensor, label: Tensor) -> Tensor:
        return F.contrastive_loss(x1, x2, label, self.margin, self.eps, self.reduction)
