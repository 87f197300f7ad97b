"""Tensor types with integer or symbolic dimensions.

A dimension is a non-negative ``int`` or a symbol: a string naming a size unknown at trace
time (``"N"``) or an arithmetic expression over such names (``"(H + 2) // 2"``). Shape rules
build expressions with the ``dim_*`` helpers, which fold to plain ints whenever every operand
is known; ``evaluate_dim`` substitutes values for symbols without ever calling ``eval``.
"""

from __future__ import annotations

import ast
import functools
import math
from dataclasses import dataclass

import numpy as np

from cnnir.errors import ShapeError

Dim = int | str


def is_static(dim: Dim) -> bool:
    return isinstance(dim, int)


def _wrap(dim: Dim) -> str:
    text = str(dim)
    return text if text.isidentifier() or text.isdigit() else f"({text})"


def dim_add(a: Dim, b: Dim) -> Dim:
    if is_static(a) and is_static(b):
        return a + b
    if b == 0:
        return a
    if a == 0:
        return b
    if is_static(b) and b < 0:
        return f"{_wrap(a)} - {-b}"
    return f"{_wrap(a)} + {_wrap(b)}"


def dim_mul(a: Dim, b: Dim) -> Dim:
    if is_static(a) and is_static(b):
        return a * b
    if a == 1:
        return b
    if b == 1:
        return a
    return f"{_wrap(a)} * {_wrap(b)}"


def dim_floordiv(a: Dim, b: int) -> Dim:
    if is_static(a):
        return a // b
    return a if b == 1 else f"{_wrap(a)} // {b}"


def dim_scale_floor(a: Dim, scale: float) -> Dim:
    """``floor(a * scale)``, exact for the float the user gave."""
    if is_static(a):
        return math.floor(a * scale)
    return f"floor({_wrap(a)} * {scale!r})"


_BINOPS = {
    ast.Add: lambda x, y: x + y,
    ast.Sub: lambda x, y: x - y,
    ast.Mult: lambda x, y: x * y,
    ast.FloorDiv: lambda x, y: x // y,
}


class SymDim(str):
    """A symbolic size as model code sees it (``x.size(0)`` under a symbolic batch).

    Arithmetic builds dimension expressions, as torch's SymInt does, instead of Python's
    string operators (``"N" * 2`` would silently be ``"NN"``)."""

    def __add__(self, other: Dim) -> Dim:  # type: ignore[override]
        return sym(dim_add(str(self), _plain(other)))

    def __radd__(self, other: Dim) -> Dim:
        return sym(dim_add(_plain(other), str(self)))

    def __sub__(self, other: Dim) -> Dim:
        return sym(dim_add(str(self), -other if isinstance(other, int) else
                           f"-1 * {_wrap(_plain(other))}"))

    def __mul__(self, other: Dim) -> Dim:  # type: ignore[override]
        return sym(dim_mul(str(self), _plain(other)))

    def __rmul__(self, other: Dim) -> Dim:  # type: ignore[override]
        return sym(dim_mul(_plain(other), str(self)))

    def __floordiv__(self, other: int) -> Dim:
        return sym(dim_floordiv(str(self), other))

    def __mod__(self, other: object) -> Dim:  # type: ignore[override]
        raise ShapeError(f"the remainder of the symbolic size {str(self)!r} is unknown",
                         hint="bind the symbol with a concrete input shape")


def _plain(dim: Dim) -> Dim:
    return str(dim) if isinstance(dim, SymDim) else dim


def sym(dim: Dim) -> Dim:
    """``dim`` as model code should see it: ints stay ints, symbols become SymDim."""
    return SymDim(dim) if isinstance(dim, str) else dim


def evaluate_dim(dim: Dim, env: dict[str, int]) -> Dim:
    """Substitute ``env`` into ``dim``; returns an int when every symbol is bound."""
    if is_static(dim):
        return dim
    tree = ast.parse(dim, mode="eval").body

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise KeyError(node.id)
            return env[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "floor":
            return math.floor(walk(node.args[0]))
        raise ShapeError(f"unsupported symbolic dimension expression {dim!r}")

    try:
        return int(walk(tree))
    except KeyError:
        return dim


def dim_symbols(dim: Dim) -> set[str]:
    if is_static(dim):
        return set()
    return {n.id for n in ast.walk(ast.parse(dim, mode="eval")) if isinstance(n, ast.Name)} - {
        "floor"
    }


def numel(shape: tuple[Dim, ...]) -> Dim:
    total: Dim = 1
    for d in shape:
        total = dim_mul(total, d)
    return total


_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.Name, ast.Constant, ast.Load, ast.UnaryOp,
                  ast.USub, ast.Call, *_BINOPS)


def _check_expression(text: str) -> None:
    """A symbol is a name or an expression of names, ints, + - * // and floor()."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        tree = None
    if tree is None or not all(isinstance(n, _ALLOWED_NODES) for n in ast.walk(tree)):
        raise ShapeError(f"{text!r} is not a valid symbolic dimension",
                         hint="a symbol is a name like 'N' or an expression like '(H + 2) // 2'")


def _check_dim(dim: object) -> Dim:
    if type(dim) is int and dim >= 0:  # the common case, first
        return dim
    if isinstance(dim, (bool, np.bool_)):
        raise ShapeError(f"a dimension must be an int or a symbol name, got {dim!r}")
    if isinstance(dim, (int, np.integer)):
        if dim < 0:
            raise ShapeError(f"a dimension must be >= 0, got {dim}")
        return int(dim)
    if isinstance(dim, str) and dim.strip():
        _check_expression(dim.strip())
        return str(dim).strip()
    raise ShapeError(f"a dimension must be an int or a symbol name, got {dim!r}")


@functools.cache
def _dtype_name(dtype: object) -> str:
    try:
        return np.dtype(dtype).name
    except TypeError as e:
        raise ShapeError(f"unknown dtype {dtype!r}") from e


def dtype_name(dtype: object) -> str:
    """The numpy name of ``dtype`` (``"float32"``), memoized: types are built per value."""
    try:
        return _dtype_name(dtype)
    except TypeError:  # unhashable dtype-like objects
        return _dtype_name.__wrapped__(dtype)


@dataclass(frozen=True)
class TensorType:
    """The static type of a tensor: its shape (ints or symbols) and numpy dtype name.

    >>> TensorType(("N", 3, 224, 224))
    TensorType(float32[N, 3, 224, 224])
    """

    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if isinstance(self.shape, (int, str)):
            raise ShapeError(f"a shape must be a sequence of dimensions, got {self.shape!r}")
        object.__setattr__(self, "shape", tuple(_check_dim(d) for d in self.shape))
        object.__setattr__(self, "dtype", dtype_name(self.dtype))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(is_static(d) for d in self.shape)

    @property
    def numel(self) -> Dim:
        return numel(self.shape)

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    @property
    def symbols(self) -> set[str]:
        return set().union(*(dim_symbols(d) for d in self.shape))

    def with_shape(self, shape: tuple[Dim, ...]) -> TensorType:
        return TensorType(tuple(shape), self.dtype)

    def bind(self, env: dict[str, int]) -> TensorType:
        return self.with_shape(tuple(evaluate_dim(d, env) for d in self.shape))

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"

    def __repr__(self) -> str:
        return f"TensorType({self})"


def shape_str(shape: tuple[Dim, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
