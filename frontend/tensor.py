"""``cnnir.Tensor``: the proxy a forward receives while it is traced.

It carries a graph value (type known, no data) and supports the PyTorch tensor methods model
code uses; each method records an op through ``cnnir.nn.functional``. Data-dependent Python
(``if x.sum() > 0``, ``x[0]``) cannot be traced and raises a clear error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnir.errors import CnnirError
from cnnir.ir import Value
from cnnir.ir.types import Dim, sym

if TYPE_CHECKING:
    from cnnir.frontend.tracer import Tracer


def _F():
    from cnnir.frontend import functional

    return functional


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
        return _F().add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _F().add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _F().sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _F().sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _F().mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _F().mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _F().div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _F().div(other, self)

    def __neg__(self) -> Tensor:
        return _F().mul(self, -1.0)

    def __abs__(self) -> Tensor:
        return _F().abs(self)

    def abs(self) -> Tensor:
        return _F().abs(self)

    def __pow__(self, exponent: Any) -> Tensor:
        """``x ** 2`` (the square of an L2 penalty); other powers have no op yet."""
        if exponent != 2:
            raise CnnirError(f"x ** {exponent!r} cannot be traced: only x ** 2 (x * x) has an op",
                             hint="write the product out, or use abs() for an L1 penalty")
        return _F().mul(self, self)

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
        raise CnnirError(
            f"indexing a traced tensor (%{self.value.name}[{index!r}]) is not supported",
            hint="use chunk/split, reshape or a channel reduction (amax, mean) instead",
        )

    def __iter__(self):
        raise CnnirError("iterating over a traced tensor is not supported",
                         hint="use x.chunk(n, dim) or x.split(sizes, dim)")

    def __len__(self) -> int:
        return self.shape[0]
