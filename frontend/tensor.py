"""``cnnir.Tensor``: the proxy a forward receives while it is traced.

It carries a graph value (type known, no data) and supports the PyTorch tensor methods model
code uses; each method records an op through ``cnnir.nn.functional`` or the torch-level
functions (``cnnir.frontend.torch_functions``: indexing, comparisons, ``sqrt``, ...).
Data-dependent Python (``if x.sum() > 0``, ``x[mask]``) cannot be traced and raises a clear
error. A constant tensor (``cnnir.tensor``, ``ConstTensor``) mixed in becomes a literal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from cnnir.errors import CnnirError
from cnnir.ir import Value
from cnnir.ir.types import Dim, sym

if TYPE_CHECKING:
    from cnnir.frontend.tracer import Tracer


def _F():
    from cnnir.frontend import functional

    return functional


def _T():
    from cnnir.frontend import torch_functions

    return torch_functions


def _const(other: Any, like: Tensor) -> Any:
    """A ``ConstTensor`` operand as an array of ``like``'s dtype; anything else unchanged."""
    return _T()._literal(other, like) if _is_const(other) else other


def _is_const(x: Any) -> bool:
    return isinstance(x, _T().ConstTensor)


def _comparable(x: Any) -> bool:
    return isinstance(x, (Tensor, int, float, np.number, np.ndarray)) or _is_const(x)


class MaxResult(NamedTuple):
    """``x.max(dim)``: (values, indices), as torch.return_types.max."""

    values: Any
    indices: Any


class RefusedIndices:
    """The indices of ``x.max(dim)`` on a traced tensor: cnnir has no argmax op, so any use
    of them is refused (unpacking ``values, _ = x.max(1)`` still works)."""

    def refuse(self, *args: Any) -> Any:
        raise CnnirError("the indices of max/min over a dim (argmax) are not supported on "
                         "traced tensors", hint="use .values, or cnnir.amax(x, dim)")

    __getattr__ = refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = refuse
    __eq__ = __ne__ = __lt__ = __gt__ = __getitem__ = __iter__ = __bool__ = refuse  # type: ignore[assignment]
    __hash__ = object.__hash__


def max_result(values: Any, indices: Any) -> MaxResult:
    return MaxResult(values, indices)


def _dims(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``view(1, -1)`` and ``view((1, -1))`` alike."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return args


class Tensor:
    __slots__ = ("value", "tracer")

    def __init__(self, value: Value, tracer: Tracer) -> None:
        self.value = value
        self.tracer = tracer

    # -- type --------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[Dim, ...]:
        """Sizes; a symbolic one is a SymDim, whose arithmetic builds expressions."""
        return tuple(sym(d) for d in self.value.type.shape)

    @property
    def dtype(self) -> str:
        return self.value.type.dtype

    @property
    def ndim(self) -> int:
        return self.value.type.rank

    def dim(self) -> int:
        return self.ndim

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> Dim:
        return sym(self.value.type.numel)

    def __repr__(self) -> str:
        return f"cnnir.Tensor(%{self.value.name}: {self.value.type})"

    # -- arithmetic --------------------------------------------------------------------
    def __add__(self, other: Any) -> Tensor:
        return _F().add(self, _const(other, self))

    def __radd__(self, other: Any) -> Tensor:
        return _F().add(_const(other, self), self)

    def __sub__(self, other: Any) -> Tensor:
        return _F().sub(self, _const(other, self))

    def __rsub__(self, other: Any) -> Tensor:
        return _F().sub(_const(other, self), self)

    def __mul__(self, other: Any) -> Tensor:
        return _F().mul(self, _const(other, self))

    def __rmul__(self, other: Any) -> Tensor:
        return _F().mul(_const(other, self), self)

    def __truediv__(self, other: Any) -> Tensor:
        return _F().div(self, _const(other, self))

    def __rtruediv__(self, other: Any) -> Tensor:
        return _F().div(_const(other, self), self)

    def __neg__(self) -> Tensor:
        return _F().mul(self, -1.0)

    def __abs__(self) -> Tensor:
        return _F().abs(self)

    def abs(self) -> Tensor:
        return _F().abs(self)

    def __pow__(self, exponent: Any) -> Tensor:
        """``x ** 2`` is ``x * x``; another constant exponent is a ``pow`` op."""
        return _T().pow(self, exponent)

    def pow(self, exponent: Any) -> Tensor:
        return _T().pow(self, exponent)

    def sqrt(self) -> Tensor:
        return _T().sqrt(self)

    def exp(self) -> Tensor:
        return _T().exp(self)

    def log(self) -> Tensor:
        return _T().log(self)

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
        return _T().clamp(self, min, max)

    clip = clamp

    # -- comparisons: a 0/1 mask of the tensor's dtype (cnnir has no bool tensors) ------
    def __gt__(self, other: Any) -> Tensor:
        return _T().compare("gt", self, other)

    def __lt__(self, other: Any) -> Tensor:
        return _T().compare("lt", self, other)

    def __ge__(self, other: Any) -> Tensor:
        return _T().compare("ge", self, other)

    def __le__(self, other: Any) -> Tensor:
        return _T().compare("le", self, other)

    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        """A mask against a tensor, array or number; anything else (``x == None``) is
        Python's identity comparison."""
        return _T().compare("eq", self, other) if _comparable(other) else NotImplemented

    def __ne__(self, other: Any) -> Any:  # type: ignore[override]
        return _T().compare("ne", self, other) if _comparable(other) else NotImplemented

    __hash__ = object.__hash__

    def __matmul__(self, other: Any) -> Tensor:
        return _F().matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _F().matmul(other, self)

    # -- shape ops ---------------------------------------------------------------------
    def view(self, *shape: Any) -> Tensor:
        return _F().reshape(self, _dims(shape))

    def reshape(self, *shape: Any) -> Tensor:
        return _F().reshape(self, _dims(shape))

    def expand(self, *sizes: Any) -> Tensor:
        return _F().expand(self, _dims(sizes))

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return _F().flatten(self, start_dim, end_dim)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        return _F().transpose(self, dim0, dim1)

    def permute(self, *dims: int) -> Tensor:
        return _F().permute(self, _dims(dims))

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        return _F().chunk(self, chunks, dim)

    def split(self, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
        return _F().split(self, split_size_or_sections, dim)

    def unsqueeze(self, dim: int) -> Tensor:
        return _F().unsqueeze(self, dim)

    def squeeze(self, dim: int | None = None) -> Tensor:
        return _F().squeeze(self, dim)

    def contiguous(self) -> Tensor:
        return self

    # -- reductions and activations ------------------------------------------------------
    def mean(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _F().mean(self, dim, keepdim)

    def sum(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _F().sum(self, dim, keepdim)

    def amax(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _F().amax(self, dim, keepdim)

    def max(self, dim: Any = None, keepdim: bool = False) -> Any:
        """The maximum; over ``dim``, (values, indices) with the indices refused (no argmax
        op); against a tensor, the elementwise maximum."""
        if isinstance(dim, Tensor) or _is_const(dim):
            return _T().maximum(self, dim)
        if dim is None:
            return _F().amax(self)
        return MaxResult(_F().amax(self, dim, keepdim), RefusedIndices())

    def min(self, dim: Any = None, keepdim: bool = False) -> Any:
        """As ``max``, through ``-amax(-x)``."""
        if isinstance(dim, Tensor) or _is_const(dim):
            return _T().minimum(self, dim)
        if dim is None:
            return -_F().amax(-self)
        return MaxResult(-_F().amax(-self, dim, keepdim), RefusedIndices())

    def sigmoid(self) -> Tensor:
        return _F().sigmoid(self)

    def relu(self) -> Tensor:
        return _F().relu(self)

    def tanh(self) -> Tensor:
        return _F().tanh(self)

    def softmax(self, dim: int) -> Tensor:
        return _F().softmax(self, dim)

    def log_softmax(self, dim: int) -> Tensor:
        return _F().log_softmax(self, dim)

    def matmul(self, other: Any) -> Tensor:
        return _F().matmul(self, other)

    # -- what cannot be traced ---------------------------------------------------------
    def __bool__(self) -> bool:
        raise CnnirError(
            f"the truth value of traced tensor %{self.value.name} is not known at trace time",
            hint="control flow may depend on shapes (x.shape) but not on tensor values",
        )

    def __getitem__(self, index: Any) -> Tensor:
        """Ints, slices (positive steps), ``...``, ``None`` and one list of constant
        indices (see ``torch_functions.index``)."""
        return _T().index(self, index)

    def __iter__(self):
        raise CnnirError("iterating over a traced tensor is not supported",
                         hint="use x.chunk(n, dim) or x.split(sizes, dim)")

    def __len__(self) -> int:
        return self.shape[0]
