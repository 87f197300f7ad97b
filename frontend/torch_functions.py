"""The ``torch.*`` functions model code calls, as ``cnnir.*``: on a traced ``Tensor`` each
records IR ops; on plain constants it computes with numpy and returns a ``ConstTensor``.

Model code uses both: a forward calls ``cnnir.transpose(x, 1, 2)`` on traced tensors, and a
constructor computes its layer widths from constants, as torchvision's RegNet does::

    widths = cnnir.arange(depth) * w_a + w_0
    caps = cnnir.round(cnnir.log(widths / w_0) / math.log(w_m))
    widths = (cnnir.round(cnnir.divide(w_0 * cnnir.pow(w_m, caps), q)) * q).int().tolist()

Constants follow torch's dtypes: Python floats and float results are float32 (an int tensor
divided or mixed with a float becomes float32), integers int64, unless a float64 tensor takes
part. A constant mixed into a traced op becomes a literal of the traced tensor's dtype.

Random constants (``empty(...).bernoulli_(p)``, stochastic depth's noise in training mode)
are drawn once, when the forward is traced: the graph holds that draw as a constant.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnnir.errors import CnnirError
from cnnir.frontend import functional as F
from cnnir.frontend.tensor import Tensor, max_result
from cnnir.frontend.tracer import build_attrs, current_tracer
from cnnir.ir.types import is_static
from cnnir.ops import tensor as tensor_ops

float32, float64, int32, int64, bool_ = "float32", "float64", "int32", "int64", "bool"


def _emit(op: Any, inputs: Sequence[Any], attrs: Any = None) -> Tensor:
    return current_tracer(f"cnnir.{op.name}").emit(op, inputs, attrs)[0]


def _is_traced(*args: Any) -> bool:
    return builtins.any(isinstance(a, Tensor) or (isinstance(a, (list, tuple))
                                                  and _is_traced(*a)) for a in args)


def _dtype(dtype: Any) -> np.dtype | None:
    """``cnnir.float32``, a numpy dtype or its name; None stays None."""
    if dtype is None:
        return None
    try:
        return np.dtype("bool" if dtype is builtins.bool else dtype)
    except TypeError:
        raise CnnirError(f"unknown dtype {dtype!r}",
                         hint="use cnnir.float32, cnnir.float64, cnnir.int64, cnnir.int32 "
                              "or a numpy dtype") from None


def _plain(x: Any) -> Any:
    """A ConstTensor's array, a list as an array (torch's dtypes); anything else as is."""
    if isinstance(x, (list, tuple)):
        return _as_array(x)
    return x.array if isinstance(x, ConstTensor) else x


def _torch_float(*operands: Any) -> list[Any]:
    """Operands cast as torch would compute a float result: int and bool arrays become
    float32 unless a float64 array takes part (Python scalars keep the arrays' dtype)."""
    values = [_plain(v) for v in operands]
    arrays = [v for v in values if isinstance(v, np.ndarray)]
    if builtins.any(a.dtype == np.float64 for a in arrays):
        return values
    cast = []
    for v in values:
        if isinstance(v, np.ndarray) and v.dtype.kind in "biu":
            v = v.astype(np.float32)
        elif isinstance(v, np.ndarray) and v.dtype.kind == "f":
            v = v.astype(np.float32, copy=False)
        cast.append(v)
    if not arrays:
        cast[0] = np.asarray(cast[0], np.float32)
    return cast


def _const_math(fn: Callable[..., Any], *operands: Any, floating: bool = False) -> ConstTensor:
    values = [_plain(v) for v in operands]
    if floating or np.result_type(*values).kind == "f":
        values = _torch_float(*values)
    return ConstTensor(fn(*values))


def _as_array(data: Any, dtype: Any = None) -> np.ndarray:
    """``torch.tensor``'s dtypes: Python floats float32, ints int64, bools bool; an array
    keeps its dtype."""
    want = _dtype(dtype)
    if isinstance(data, ConstTensor):
        data = data.array
    if isinstance(data, np.ndarray):
        return data.astype(want) if want is not None else data.copy()
    array = np.asarray(data)
    if want is not None:
        return array.astype(want)
    return array.astype(np.float32) if array.dtype.kind == "f" else array


class ConstTensor:
    """A constant (not traced) tensor: a numpy array with the torch methods model code uses
    while it builds a model (``.int().tolist()``, ``.item()``, arithmetic, ``.bernoulli_``).
    """

    __slots__ = ("array",)
    __array_priority__ = 1000  # numpy defers to our reflected operators

    def __init__(self, array: Any) -> None:
        self.array = np.asarray(array)

    # -- type and conversion -----------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> str:
        return self.array.dtype.name

    @property
    def ndim(self) -> int:
        return self.array.ndim

    def dim(self) -> int:
        return self.ndim

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(self.array.size)

    def __len__(self) -> int:
        return len(self.array)

    def __repr__(self) -> str:
        return f"cnnir.tensor({self.array.tolist()!r}, dtype={self.dtype})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.array if dtype is None else self.array.astype(dtype)

    def numpy(self) -> np.ndarray:
        return self.array

    def tolist(self) -> Any:
        return self.array.tolist()

    def item(self) -> Any:
        if self.array.size != 1:
            raise CnnirError(f"item() needs a tensor of one element, got shape "
                             f"{list(self.shape)}")
        return self.array.reshape(()).item()

    def __int__(self) -> int:
        return int(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __index__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        return builtins.bool(self.item())

    def to(self, *args: Any, **kwargs: Any) -> ConstTensor:
        """``.to(dtype)``; a device (``"cpu"``, ``"cuda"``) is ignored."""
        dtype = kwargs.get("dtype") or next((a for a in args if a not in ("cpu", "cuda")),
                                            None)
        return self if dtype is None else ConstTensor(self.array.astype(_dtype(dtype)))

    def int(self) -> ConstTensor:
        return ConstTensor(self.array.astype(np.int32))

    def long(self) -> ConstTensor:
        return ConstTensor(self.array.astype(np.int64))

    def float(self) -> ConstTensor:
        return ConstTensor(self.array.astype(np.float32))

    def double(self) -> ConstTensor:
        return ConstTensor(self.array.astype(np.float64))

    def bool(self) -> ConstTensor:
        return ConstTensor(self.array.astype(np.bool_))

    def clone(self) -> ConstTensor:
        return ConstTensor(self.array.copy())

    def detach(self) -> ConstTensor:
        return self

    def cpu(self) -> ConstTensor:
        return self

    def contiguous(self) -> ConstTensor:
        return self

    # -- arithmetic ----------------------------------------------------------------------
    def _binary(self, fn: Callable[..., Any], other: Any, reflected: bool = False,
                floating: bool = False) -> Any:
        if isinstance(other, Tensor):
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        return _const_math(fn, a, b, floating=floating)

    def __add__(self, o: Any) -> Any:
        return self._binary(np.add, o)

    def __radd__(self, o: Any) -> Any:
        return self._binary(np.add, o, True)

    def __sub__(self, o: Any) -> Any:
        return self._binary(np.subtract, o)

    def __rsub__(self, o: Any) -> Any:
        return self._binary(np.subtract, o, True)

    def __mul__(self, o: Any) -> Any:
        return self._binary(np.multiply, o)

    def __rmul__(self, o: Any) -> Any:
        return self._binary(np.multiply, o, True)

    def __truediv__(self, o: Any) -> Any:
        return self._binary(np.true_divide, o, floating=True)

    def __rtruediv__(self, o: Any) -> Any:
        return self._binary(np.true_divide, o, True, floating=True)

    def __floordiv__(self, o: Any) -> Any:
        return self._binary(np.floor_divide, o)

    def __mod__(self, o: Any) -> Any:
        return self._binary(np.remainder, o)

    def __pow__(self, o: Any) -> Any:
        return self._binary(np.power, o)

    def __rpow__(self, o: Any) -> Any:
        return self._binary(np.power, o, True)

    def __neg__(self) -> ConstTensor:
        return ConstTensor(-self.array)

    def __abs__(self) -> ConstTensor:
        return ConstTensor(np.abs(self.array))

    def __lt__(self, o: Any) -> Any:
        return self._binary(np.less, o)

    def __le__(self, o: Any) -> Any:
        return self._binary(np.less_equal, o)

    def __gt__(self, o: Any) -> Any:
        return self._binary(np.greater, o)

    def __ge__(self, o: Any) -> Any:
        return self._binary(np.greater_equal, o)

    def __eq__(self, o: Any) -> Any:  # type: ignore[override]
        return self._binary(np.equal, o)

    def __ne__(self, o: Any) -> Any:  # type: ignore[override]
        return self._binary(np.not_equal, o)

    __hash__ = object.__hash__

    def _inplace(self, result: Any) -> ConstTensor:
        """Write ``result`` into this tensor, keeping its dtype (as torch's ``x.add_(y)``)."""
        self.array = np.asarray(_plain(result)).astype(self.array.dtype)
        return self

    def add_(self, o: Any) -> ConstTensor:
        return self._inplace(self + o)

    def sub_(self, o: Any) -> ConstTensor:
        return self._inplace(self - o)

    def mul_(self, o: Any) -> ConstTensor:
        return self._inplace(self * o)

    def div_(self, o: Any) -> ConstTensor:
        return self._inplace(self / o)

    def fill_(self, value: float) -> ConstTensor:
        return self._inplace(np.full(self.shape, value))

    def zero_(self) -> ConstTensor:
        return self.fill_(0)

    def bernoulli_(self, p: float = 0.5) -> ConstTensor:
        """Ones with probability ``p``, drawn now (see the module docstring)."""
        return self._inplace(_generator().random(self.shape) < float(p))

    def uniform_(self, a: float = 0.0, b: float = 1.0) -> ConstTensor:
        return self._inplace(_generator().uniform(a, b, self.shape))

    # -- shape and math, as the module functions --------------------------------------
    def __getitem__(self, index: Any) -> ConstTensor:
        return ConstTensor(self.array[_plain(index)])

    def __iter__(self):
        return (ConstTensor(a) for a in self.array)

    def view(self, *shape: Any) -> ConstTensor:
        return ConstTensor(self.array.reshape(_sizes(shape)))

    reshape = view

    def __getattr__(self, name: str) -> Any:
        """``x.round()``, ``x.sum(0)``, ...: the module function of that name."""
        fn = _METHODS.get(name)
        if fn is None:
            raise AttributeError(f"cnnir.ConstTensor has no attribute {name!r}")
        return lambda *args, **kwargs: fn(self, *args, **kwargs)


def _generator() -> np.random.Generator:
    """The next draw of the seed sequence ``nn.manual_seed`` sets, which parameter
    initializers draw from too (one global generator, as torch's)."""
    from cnnir.frontend import module

    return np.random.default_rng((module._base_seed[0], next(module._seeds)))


def _sizes(args: Sequence[Any]) -> tuple[Any, ...]:
    """``ones(2, 3)`` and ``ones((2, 3))`` alike."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return tuple(args)


# -- creating constants ----------------------------------------------------------------------


def tensor(data: Any, dtype: Any = None, device: Any = None,
           requires_grad: bool = False) -> ConstTensor:
    return ConstTensor(_as_array(data, dtype))


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> ConstTensor:
    return tensor(data, dtype)


def _filled(size: Sequence[Any], value: Any, dtype: Any) -> ConstTensor:
    shape = _sizes(size)
    want = _dtype(dtype) or (np.dtype(np.float32) if isinstance(value, float)
                             else _as_array(value).dtype)
    return ConstTensor(np.full(shape, value, dtype=want))


def ones(*size: Any, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> ConstTensor:
    return _filled(size, 1.0, dtype)


def zeros(*size: Any, dtype: Any = None, device: Any = None,
          requires_grad: bool = False) -> ConstTensor:
    return _filled(size, 0.0, dtype)


def empty(*size: Any, dtype: Any = None, device: Any = None,
          requires_grad: bool = False, memory_format: Any = None) -> ConstTensor:
    """Zeros: cnnir never hands out uninitialized memory."""
    return _filled(size, 0.0, dtype)


def full(size: Sequence[Any], fill_value: Any, dtype: Any = None,
         device: Any = None) -> ConstTensor:
    return _filled((tuple(size),), fill_value, dtype)


def arange(start: Any, end: Any = None, step: Any = 1, dtype: Any = None,
           device: Any = None) -> ConstTensor:
    """torch.arange: int64 for integer bounds, float32 when any is a float."""
    if end is None:
        start, end = 0, start
    bounds = [_plain(v) for v in (start, end, step)]
    floating = builtins.any(isinstance(v, float) or np.asarray(v).dtype.kind == "f"
                            for v in bounds)
    want = _dtype(dtype) or np.dtype(np.float32 if floating else np.int64)
    count = builtins.max(0, math.ceil((float(bounds[1]) - float(bounds[0])) / float(bounds[2])))
    values = bounds[0] + np.arange(count, dtype=np.float64 if floating else np.int64) * bounds[2]
    return ConstTensor(values.astype(want))


def linspace(start: float, end: float, steps: int, dtype: Any = None,
             device: Any = None) -> ConstTensor:
    return ConstTensor(np.linspace(start, end, steps).astype(_dtype(dtype) or np.float32))


# -- elementwise math --------------------------------------------------------------------------


def _unary(name: str, op: Any, fn: Callable[[np.ndarray], np.ndarray]) -> Callable:
    def function(input: Any) -> Any:
        if isinstance(input, Tensor):
            if op is None:
                raise CnnirError(f"cnnir.{name} on a traced tensor has no op",
                                 hint=f"{name} works on constants (model construction) only")
            return _emit(op, [input])
        return _const_math(fn, input, floating=name not in ("abs", "neg"))

    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"torch.{name}: an IR op on a traced tensor, numpy on a constant."
    return function


sqrt = _unary("sqrt", tensor_ops.sqrt, np.sqrt)
exp = _unary("exp", tensor_ops.exp, np.exp)
log = _unary("log", tensor_ops.log, np.log)
round = _unary("round", None, np.round)  # noqa: A001  (torch.round: half to even, as numpy)
floor = _unary("floor", None, np.floor)
ceil = _unary("ceil", None, np.ceil)


def abs(input: Any) -> Any:  # noqa: A001
    return F.abs(input) if isinstance(input, Tensor) else ConstTensor(np.abs(_plain(input)))


def pow(input: Any, exponent: Any) -> Any:  # noqa: A001
    """torch.pow: a traced tensor to a constant power, or constants either way."""
    if isinstance(input, Tensor):
        if isinstance(exponent, Tensor):
            raise CnnirError("cnnir.pow with a traced exponent is not supported",
                             hint="use a constant exponent, or cnnir.exp(y * cnnir.log(x))")
        exponent = _plain(exponent)
        if np.ndim(exponent) != 0:
            raise CnnirError("cnnir.pow on a traced tensor needs a scalar exponent, got shape "
                             f"{list(np.shape(exponent))}")
        if float(exponent) == 2.0:
            return input * input
        return _emit(tensor_ops.pow_, [input],
                     build_attrs(tensor_ops.PowAttrs, "pow", exponent=float(exponent)))
    if isinstance(exponent, Tensor):  # a constant base: b^y = e^(y·ln b)
        if np.ndim(_plain(input)) != 0:
            raise CnnirError("cnnir.pow with a tensor base and a traced exponent is not "
                             "supported", hint="use a scalar base")
        return exp(exponent * math.log(float(_plain(input))))
    return _const_math(np.power, input, exponent)


def _arith(name: str, functional: Callable, fn: Callable, floating: bool = False) -> Callable:
    def function(input: Any, other: Any) -> Any:
        if _is_traced(input, other):
            return functional(_literal(input, other), _literal(other, input))
        return _const_math(fn, input, other, floating=floating)

    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"torch.{name}: an IR op on traced tensors, numpy on constants."
    return function


def _literal(x: Any, like: Any) -> Any:
    """A constant operand of a traced op, as an array of the traced tensor's dtype."""
    if isinstance(x, ConstTensor):
        return x.array.astype(like.dtype) if isinstance(like, Tensor) else x.array
    return x


add = _arith("add", F.add, np.add)
sub = subtract = _arith("sub", F.sub, np.subtract)
mul = multiply = _arith("mul", F.mul, np.multiply)
div = divide = true_divide = _arith("div", F.div, np.true_divide, floating=True)


def clamp(input: Any, min: Any = None, max: Any = None) -> Any:  # noqa: A002
    if isinstance(input, Tensor):
        bounds = [None if v is None else float(_plain(v)) for v in (min, max)]
        return _emit(tensor_ops.clamp, [input],
                     build_attrs(tensor_ops.ClampAttrs, "clamp", min=bounds[0], max=bounds[1]))
    array = _plain(input)
    lo = -np.inf if min is None else _plain(min)
    hi = np.inf if max is None else _plain(max)
    return ConstTensor(np.minimum(np.maximum(array, lo), hi).astype(array.dtype))


clip = clamp


def compare(kind: str, input: Any, other: Any) -> Any:
    """``input > other`` and the like: a traced tensor gives a 0/1 mask of its float dtype."""
    if isinstance(input, Tensor) or isinstance(other, Tensor):
        attrs = build_attrs(tensor_ops.CompareAttrs, "compare", kind=kind)
        return _emit(tensor_ops.compare, [_literal(input, other), _literal(other, input)],
                     attrs)
    return ConstTensor(tensor_ops.NUMPY_COMPARISONS[kind](_plain(input), _plain(other)))


def gt(input: Any, other: Any) -> Any:
    return compare("gt", input, other)


def lt(input: Any, other: Any) -> Any:
    return compare("lt", input, other)


def ge(input: Any, other: Any) -> Any:
    return compare("ge", input, other)


def le(input: Any, other: Any) -> Any:
    return compare("le", input, other)


def eq(input: Any, other: Any) -> Any:
    return compare("eq", input, other)


def ne(input: Any, other: Any) -> Any:
    return compare("ne", input, other)


def where(condition: Any, input: Any, other: Any) -> Any:
    """torch.where(condition, input, other); a traced condition is a mask (nonzero: true)."""
    if _is_traced(condition, input, other):
        like = next(v for v in (input, other, condition) if isinstance(v, Tensor))
        operands = [_literal(v, like) for v in (condition, input, other)]
        if isinstance(operands[0], np.ndarray) and operands[0].dtype.kind == "b":
            operands[0] = operands[0].astype(like.dtype)
        return _emit(tensor_ops.where, operands)
    return _const_math(lambda c, a, b: np.where(c, a, b), condition, input, other)


def maximum(input: Any, other: Any) -> Any:
    if _is_traced(input, other):
        return where(gt(input, other), input, other)
    return _const_math(np.maximum, input, other)


def minimum(input: Any, other: Any) -> Any:
    if _is_traced(input, other):
        return where(lt(input, other), input, other)
    return _const_math(np.minimum, input, other)


# -- shapes and reductions ---------------------------------------------------------------------


def _shape_fn(name: str, traced: Callable, const: Callable) -> Callable:
    def function(input: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(input, Tensor):
            return traced(input, *args, **kwargs)
        result = const(_plain(input), *args, **kwargs)
        return tuple(ConstTensor(r) for r in result) if isinstance(result, list) else \
            ConstTensor(result)

    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"torch.{name}: IR ops on a traced tensor, numpy on a constant."
    return function


def _np_squeeze(a: np.ndarray, dim: int | None = None) -> np.ndarray:
    if dim is None:
        return np.squeeze(a)
    return np.squeeze(a, dim) if a.shape[dim] == 1 else a


def _np_flatten(a: np.ndarray, start_dim: int = 0, end_dim: int = -1) -> np.ndarray:
    if a.ndim == 0:
        return a.reshape(1)
    start, end = start_dim % a.ndim, end_dim % a.ndim
    return a.reshape(a.shape[:start] + (-1,) + a.shape[end + 1:])


def _np_split(a: np.ndarray, sizes: Any, dim: int = 0) -> list[np.ndarray]:
    length = a.shape[dim]
    if isinstance(sizes, int):
        sizes = [builtins.min(sizes, length - i) for i in range(0, length, sizes)]
    return np.split(a, np.cumsum(sizes)[:-1], axis=dim)


def _np_reduce(fn: Callable) -> Callable:
    def reduce(a: np.ndarray, dim: Any = None, keepdim: bool = False) -> np.ndarray:
        axis = tuple(dim) if isinstance(dim, (list, tuple)) else dim
        return fn(a, axis=axis, keepdims=keepdim)

    return reduce


transpose = _shape_fn("transpose", F.transpose, lambda a, d0, d1: np.swapaxes(a, d0, d1))
permute = _shape_fn("permute", lambda x, *dims: F.permute(x, _sizes(dims)),
                    lambda a, *dims: np.transpose(a, _sizes(dims)))
unsqueeze = _shape_fn("unsqueeze", F.unsqueeze, np.expand_dims)
squeeze = _shape_fn("squeeze", F.squeeze, _np_squeeze)
flatten = _shape_fn("flatten", F.flatten, _np_flatten)
reshape = _shape_fn("reshape", lambda x, *shape: F.reshape(x, _sizes(shape)),
                    lambda a, *shape: a.reshape(_sizes(shape)))
split = _shape_fn("split", F.split, _np_split)
chunk = _shape_fn("chunk", F.chunk, lambda a, n, dim=0: _np_split(
    a, list(tensor_ops.chunk_sizes(a.shape[dim], n)), dim))
sum = _shape_fn("sum", F.sum, _np_reduce(np.sum))  # noqa: A001
mean = _shape_fn("mean", F.mean, _np_reduce(np.mean))
amax = _shape_fn("amax", F.amax, _np_reduce(np.amax))


def cat(tensors: Sequence[Any], dim: int = 0) -> Any:
    if _is_traced(*tensors):
        like = next(t for t in tensors if isinstance(t, Tensor))
        return F.cat([_literal(t, like) for t in tensors], dim)
    return ConstTensor(np.concatenate([_plain(t) for t in tensors], axis=dim))


concat = concatenate = cat


def stack(tensors: Sequence[Any], dim: int = 0) -> Any:
    """torch.stack: each tensor given a new dim ``dim``, then concatenated along it."""
    if _is_traced(*tensors):
        rank = next(t for t in tensors if isinstance(t, Tensor)).ndim
        d = tensor_ops.normalize_dim(dim, rank + 1)
        return cat([unsqueeze(t, d) for t in tensors], d)
    return ConstTensor(np.stack([_plain(t) for t in tensors], axis=dim))


def max(input: Any, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001
    """torch.max: the maximum; with ``dim`` (values, indices), indices refused on traced
    tensors; with a tensor second argument, the elementwise maximum."""
    if isinstance(dim, (Tensor, ConstTensor)):
        return maximum(input, dim)
    if isinstance(input, Tensor):
        return input.max(dim, keepdim)
    array = _plain(input)
    if dim is None:
        return ConstTensor(np.amax(array))
    return max_result(ConstTensor(np.amax(array, axis=dim, keepdims=keepdim)),
                      ConstTensor(np.argmax(array, axis=dim, keepdims=keepdim)))


def min(input: Any, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001
    if isinstance(dim, (Tensor, ConstTensor)):
        return minimum(input, dim)
    if isinstance(input, Tensor):
        return input.min(dim, keepdim)
    array = _plain(input)
    if dim is None:
        return ConstTensor(np.amin(array))
    return max_result(ConstTensor(np.amin(array, axis=dim, keepdims=keepdim)),
                      ConstTensor(np.argmin(array, axis=dim, keepdims=keepdim)))


def numel(input: Any) -> Any:
    return input.numel()


def is_tensor(obj: Any) -> bool:
    return isinstance(obj, (Tensor, ConstTensor))


# -- indexing a traced tensor ------------------------------------------------------------------


def index(x: Tensor, key: Any) -> Tensor:
    """``x[key]`` on a traced tensor: ints, slices with positive steps, ``...``, ``None`` and
    one list of constant indices; a ``slice`` op, a ``gather`` op, then a reshape dropping
    the int-indexed dims and adding the ``None`` ones."""
    items = list(key) if isinstance(key, tuple) else [key]
    real = [k for k in items if k is not None and k is not Ellipsis]
    ellipses = [i for i, k in enumerate(items) if k is Ellipsis]  # `is`: x == y is an op
    if len(ellipses) > 1:
        raise CnnirError("an index can only have a single ellipsis ('...')")
    if len(real) > x.ndim:
        raise CnnirError(f"too many indices for a {x.ndim}-D tensor: {len(real)} given",
                         hint=f"the tensor's shape is {list(x.shape)}")
    if ellipses:
        at = ellipses[0]
        items[at:at + 1] = [slice(None)] * (x.ndim - len(real))
    slices: dict[str, list[int]] = {"axes": [], "starts": [], "ends": [], "steps": []}
    gathers: list[tuple[int, tuple[int, ...]]] = []
    advanced: list[int] = []
    shape: list[Any] = []
    dim = 0
    for k in items:
        if k is None:
            shape.append(1)
            continue
        size = x.shape[dim]
        k = _plain(k)
        if isinstance(k, slice):
            _index_slice(k, dim, size, slices, shape)
        elif _is_int(k):
            i = _static_index(int(k), dim, size, x)
            for name, v in zip(slices, (dim, i, i + 1, 1)):
                slices[name].append(v)
            advanced.append(dim)
        elif isinstance(k, (list, tuple, np.ndarray)) and np.ndim(k) == 1 and \
                builtins.all(_is_int(i) for i in k):
            for i in k:
                _static_index(int(i), dim, size, x)
            gathers.append((dim, tuple(int(i) for i in k)))
            advanced.append(dim)
            shape.append(len(k))
        else:
            raise CnnirError(
                f"indexing a traced tensor with {type(k).__name__} {k!r} is not supported",
                hint="index with ints, slices (positive steps), '...', None or one list of "
                     "constant ints; a data-dependent index (a traced tensor or mask) "
                     "cannot be traced: use cnnir.where(mask, x, y) instead")
        dim += 1
    shape.extend(x.shape[dim:])
    _check_advanced(gathers, advanced)
    y = x
    if slices["axes"]:
        y = _emit(tensor_ops.slice_, [y], build_attrs(tensor_ops.SliceAttrs, "slice",
                                                  **{k: tuple(v) for k, v in slices.items()}))
    for d, indices in gathers:
        y = _emit(tensor_ops.gather, [y], build_attrs(tensor_ops.GatherAttrs, "gather", dim=d,
                                                  indices=indices))
    if tuple(str(d) for d in y.shape) != tuple(str(d) for d in shape):
        y = F.reshape(y, shape)
    return y


def _is_int(k: Any) -> bool:
    return isinstance(k, (int, np.integer)) and not isinstance(k, (builtins.bool, np.bool_))


def _static_index(i: int, dim: int, size: Any, x: Tensor) -> int:
    if not is_static(size):
        raise CnnirError(f"cannot index dim {dim} of {list(x.shape)}: its size {size} is "
                         "symbolic", hint="index only dims of a known size")
    if not -size <= i < size:
        raise CnnirError(f"index {i} is out of range for dim {dim} of size {size}",
                         hint=f"the tensor's shape is {list(x.shape)}")
    return i % size


def _index_slice(k: slice, dim: int, size: Any, slices: dict[str, list[int]],
                 shape: list[Any]) -> None:
    if not all(v is None or _is_int(v) for v in (k.start, k.stop, k.step)):
        raise CnnirError(f"slice {k} is not supported: bounds and steps must be constant ints",
                         hint="a data-dependent slice cannot be traced")
    step = 1 if k.step is None else k.step
    if step <= 0:
        raise CnnirError(f"slice step {k.step!r} is not supported: steps must be positive "
                         "ints (torch refuses negative steps too)",
                         hint="reverse with a list index instead: x[:, [2, 1, 0]]")
    if (k.start is None or k.start == 0) and k.stop is None and step == 1:
        shape.append(size)
        return
    if not is_static(size):
        raise CnnirError(f"cannot slice dim {dim}: its size {size} is symbolic",
                         hint="slice only dims of a known size")
    start = 0 if k.start is None else int(k.start)
    stop = size if k.stop is None else int(k.stop)
    for name, v in zip(slices, (dim, start, stop, step)):
        slices[name].append(v)
    shape.append(len(range(*slice(start, stop, step).indices(size))))


def _check_advanced(gathers: list, advanced: list[int]) -> None:
    """numpy/torch move the dims of non-adjacent advanced indices to the front; cnnir keeps
    them in place, so it refuses the cases where that would differ."""
    if len(gathers) > 1:
        raise CnnirError("indexing with more than one list of indices is not supported",
                         hint="index one dim at a time: x[:, [0, 2]][..., [1, 3]]")
    if gathers and advanced != list(range(advanced[0], advanced[0] + len(advanced))):
        raise CnnirError("an int index and a list index separated by a slice are not "
                         "supported (torch would move the indexed dim to the front)",
                         hint="index in two steps: x[0][:, [1, 2]]")


_METHODS: dict[str, Callable] = {
    "sqrt": sqrt, "exp": exp, "log": log, "round": round, "floor": floor, "ceil": ceil,
    "abs": abs, "pow": pow, "clamp": clamp, "clip": clamp, "transpose": transpose,
    "permute": permute, "unsqueeze": unsqueeze, "squeeze": squeeze, "flatten": flatten,
    "split": split, "chunk": chunk, "sum": sum, "mean": mean, "amax": amax, "max": max,
    "min": min, "div": div, "mul": mul, "add": add, "sub": sub,
}

__all__ = [
    "ConstTensor", "abs", "add", "amax", "arange", "as_tensor", "cat", "ceil", "chunk", "clamp",
    "clip", "concat", "div", "divide", "empty", "eq", "exp", "flatten", "float32", "float64",
    "floor", "full", "ge", "gt", "int32", "int64", "is_tensor", "le", "linspace", "log", "lt",
    "max", "maximum", "mean", "min", "minimum", "mul", "multiply", "ne", "numel", "ones",
    "permute", "pow", "reshape", "round", "split", "sqrt", "squeeze", "stack", "sub",
    "subtract", "sum", "tensor", "transpose", "true_divide", "unsqueeze", "where", "zeros",
]
