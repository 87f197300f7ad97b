"""``nn.Module`` and its containers, mirroring torch.nn.

Parameters and buffers are lazy: a ``Parameter`` knows its shape and how to initialize itself,
and makes its array only when something reads ``.data`` (running, saving). Tracing and
analysis never touch the data, so analysing a 60M-parameter network allocates nothing.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from cnnir.errors import CnnirError, ModelFormatError
from cnnir.ir import ConstantData, TensorType, user_location

Initializer = Callable[[tuple[int, ...], np.random.Generator], np.ndarray]

_seeds = itertools.count()
_base_seed = [0]


def manual_seed(seed: int) -> None:
    """Seed the initializers of parameters created from now on (like torch.manual_seed)."""
    global _seeds
    _base_seed[0] = int(seed)
    _seeds = itertools.count()


def zeros_init(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return np.zeros(shape)


class LazyArray:
    """An array known by shape and dtype until its data is first needed.

    ``grad`` is the gradient a training loop stores for it (a numpy array or None), as
    ``torch.nn.Parameter.grad``."""

    kind = "parameter"

    def __init__(self, shape: Iterable[int] | np.ndarray, init: Initializer | None = None,
                 dtype: str = "float32", requires_grad: bool = True) -> None:
        if isinstance(shape, np.ndarray):
            self._data: np.ndarray | None = shape
            self.shape = tuple(shape.shape)
            self.dtype = shape.dtype.name
        else:
            self._data = None
            self.shape = tuple(int(d) for d in shape)
            self.dtype = np.dtype(dtype).name
        self.init = init or zeros_init
        self.requires_grad = requires_grad
        # a real attribute: __getattr__ would otherwise look for a traced Tensor method
        self.grad: np.ndarray | None = None
        self.seed = (_base_seed[0], next(_seeds))

    @property
    def init(self) -> Initializer:
        return self._init

    @init.setter
    def init(self, fill: Initializer) -> None:
        self._init = fill
        # the dtypes the initializer's values pass through: the current one, then each
        # conversion made before they exist, so that converting a lazy array and then filling
        # it gives the very values filling and then converting would
        self._casts = [self.dtype]

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            rng = np.random.default_rng(self.seed)
            if getattr(self.init, "draws_in_dtype", False):  # nn.init's
                array = self.init(self.shape, rng, self._casts[0])
            else:
                array = self.init(self.shape, rng)
            for dtype in self._casts:
                array = np.asarray(array, dtype=dtype)
            self._data = array
        return self._data

    @data.setter
    def data(self, array: np.ndarray) -> None:
        """Assign values, cast to this array's dtype: copied into the existing array when
        there is one (as PyTorch's ``load_state_dict``), so that compiled programs holding it
        see the new values."""
        array = self._checked(array)
        current = self._data
        if current is not None and current.shape == array.shape and current.flags.writeable:
            np.copyto(current, array, casting="unsafe")
        else:
            self._data = np.array(array, dtype=self.dtype)

    def _checked(self, array: Any) -> np.ndarray:
        what = f"{type(self).__name__.lower()} of shape {list(self.shape)}"
        problem = _not_numbers(array)
        if problem is not None:
            raise ModelFormatError(f"cannot assign {problem} to a {what}",
                                   hint="assign numbers: a float or integer array")
        array = np.asarray(array)
        if tuple(array.shape) != self.shape:
            raise ModelFormatError(f"cannot assign an array of shape {list(array.shape)} to a "
                                   f"{what}")
        return array

    def _convert(self, dtype: str) -> None:
        """Change a floating-point array to ``dtype`` (``Module.to``); others keep theirs."""
        if np.dtype(self.dtype).kind != "f" or self.dtype == dtype:
            return
        self.dtype = dtype
        if self._data is None:
            self._casts.append(dtype)
        else:
            self._data = self._data.astype(dtype)
        if self.grad is not None:
            self.grad = np.asarray(self.grad).astype(dtype)

    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def constant_data(self) -> ConstantData:
        dtype = self.dtype

        def make() -> np.ndarray:  # the traced dtype even if the model is converted later
            return self.data if self.dtype == dtype else self.data.astype(dtype)

        return ConstantData(TensorType(self.shape, dtype), self.kind, make=make,
                            requires_grad=self.requires_grad)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={list(self.shape)}, dtype={self.dtype})"

    # -- inside a trace, a parameter reads as a tensor ---------------------------------
    def as_tensor(self) -> Any:
        """This array as a traced tensor (its graph constant), so that a loss can use the
        weights, e.g. L1 regularization: ``sum(p.abs().sum() for p in model.parameters())``.
        Tensor methods and operators on a parameter do this implicitly."""
        from cnnir.frontend.tensor import Tensor
        from cnnir.frontend.tracer import current_tracer

        tracer = current_tracer(f"using {self!r} as a tensor")
        return Tensor(tracer.constant_for(self), tracer)

    def __getattr__(self, name: str) -> Any:
        from cnnir.frontend.tensor import Tensor

        if name.startswith("_") or not hasattr(Tensor, name):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self.as_tensor(), name)


def _as_tensor_operator(name: str) -> Callable[..., Any]:
    def operator(self: LazyArray, *args: Any) -> Any:
        return getattr(self.as_tensor(), name)(*args)

    operator.__name__ = name
    return operator


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
              "__truediv__", "__rtruediv__", "__neg__", "__abs__", "__pow__", "__matmul__",
              "__rmatmul__"):
    setattr(LazyArray, _name, _as_tensor_operator(_name))


class Parameter(LazyArray):
    kind = "parameter"


class Buffer(LazyArray):
    kind = "buffer"

    def __init__(self, shape: Iterable[int] | np.ndarray, init: Initializer | None = None,
                 dtype: str = "float32") -> None:
        super().__init__(shape, init, dtype, requires_grad=False)


class Module:
    """Base class of every layer and network, as ``torch.nn.Module``."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_created_at", user_location())  # for errors at trace time

    # -- attribute routing -------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise CnnirError(f"{type(self).__name__}.__init__ must call super().__init__() "
                             f"before assigning {name!r}")
        target = (self._parameters if isinstance(value, Parameter) else self._buffers
                  if isinstance(value, Buffer) else self._modules if isinstance(value, Module)
                  else None)
        for table in (self._parameters, self._buffers, self._modules):
            if table is not target:  # a replacement in its own table keeps its place
                table.pop(name, None)
        if isinstance(value, (LazyArray, Module)):
            self.__dict__.pop(name, None)  # a plain attribute of that name would shadow it
        if target is not None:
            target[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Buffer | np.ndarray | None) -> None:
        if isinstance(tensor, np.ndarray):
            tensor = Buffer(tensor)
        self._buffers[name] = tensor

    def add_module(self, name: str, module: Module | None) -> None:
        self._modules[name] = module

    register_module = add_module

    # -- calling -----------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from cnnir.frontend.tracer import current_tracer

        tracer = current_tracer(f"{type(self).__name__}.forward")
        with tracer.module_scope(self):
            return self.forward(*args, **kwargs)

    # -- traversal ---------------------------------------------------------------------
    def has_children(self) -> bool:
        return any(m is not None for m in self._modules.values())

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def named_modules(self, memo: set[int] | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """Every module (a shared one once, under its first name, unless
        ``remove_duplicate=False``), depth-first, without recursion."""
        memo = set() if memo is None else memo
        stack = [(prefix, self)]
        while stack:
            path, module = stack.pop()
            if remove_duplicate:
                if id(module) in memo:
                    continue
                memo.add(id(module))
            yield path, module
            kids = [(f"{path}.{n}" if path else n, m) for n, m in module.named_children()]
            stack.extend(reversed(kids))

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def _named_members(self, table: str) -> Iterator[tuple[str, LazyArray]]:
        seen: set[int] = set()
        for path, module in self.named_modules():
            for name, item in getattr(module, table).items():
                if item is None or id(item) in seen:
                    continue
                seen.add(id(item))
                yield (f"{path}.{name}" if path else name), item

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        return self._named_members("_parameters")

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self) -> Iterator[tuple[str, Buffer]]:
        return self._named_members("_buffers")

    def buffers(self) -> Iterator[Buffer]:
        for _, b in self.named_buffers():
            yield b

    # -- modes -------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def apply(self, fn: Callable[[Module], None]) -> Module:
        for module in list(self.modules())[::-1]:
            fn(module)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget every parameter's ``grad``, or fill the existing ones with zeros."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    # -- dtype and device --------------------------------------------------------------
    def to(self, *args: Any, device: Any = None, dtype: Any = None,
           non_blocking: bool = False) -> Module:
        """Convert every floating-point parameter and buffer (and gradient) to ``dtype``, as
        ``torch.nn.Module.to``; integer buffers (``num_batches_tracked``) keep theirs. The
        only device is ``"cpu"``: the model's arrays live on the host, whatever backend runs
        it. A lazy array changes its declared dtype without being filled.

        >>> model.to(np.float64)           # or "float64", or model.double()
        >>> model.to("cpu", "float32")     # devices other than "cpu" are errors
        """
        for arg in args:
            if _is_device(arg):
                device = arg
            elif dtype is None:
                dtype = arg
            else:
                raise CnnirError(f"Module.to() got more than one dtype: {dtype!r}, {arg!r}",
                                 hint="pass one dtype, and at most the device \"cpu\"")
        if device is not None and not _is_cpu(device):
            raise CnnirError(
                f"Module.to(): cnnir modules live on the 'cpu' device, not {device!r}",
                hint="keep the model on the host and choose where it runs when compiling: "
                     "cnnir.compile(model, inputs, backend='cuda')")
        if dtype is not None:
            name = _float_dtype_name(dtype)
            for item in itertools.chain(self.parameters(), self.buffers()):
                item._convert(name)
        return self

    def double(self) -> Module:
        """Floating-point parameters and buffers to float64 (``to(np.float64)``)."""
        return self.to(np.float64)

    def float(self) -> Module:
        """Floating-point parameters and buffers to float32 (``to(np.float32)``)."""
        return self.to(np.float32)

    # -- weights -----------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """PyTorch's key names; values are numpy arrays (parameters, then buffers, per module)."""
        out: OrderedDict[str, np.ndarray] = OrderedDict()
        for path, module in self.named_modules(remove_duplicate=False):
            for table in (module._parameters, module._buffers):
                for name, item in table.items():
                    if item is not None:
                        out[f"{path}.{name}" if path else name] = item.data
        return out

    def _state_entries(self) -> dict[str, LazyArray]:
        entries: dict[str, LazyArray] = {}
        for path, module in self.named_modules(remove_duplicate=False):
            for table in (module._parameters, module._buffers):
                for name, item in table.items():
                    if item is not None:
                        entries[f"{path}.{name}" if path else name] = item
        return entries

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any:
        """Copy arrays in by PyTorch key name; every mismatch is reported at once.

        A missing ``num_batches_tracked`` (older checkpoints) is not an error."""
        entries = self._state_entries()
        missing = [k for k in entries if k not in state_dict
                   and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state_dict if k not in entries]
        not_numbers = {k: _not_numbers(v) for k, v in state_dict.items() if k in entries}
        arrays = {k: np.asarray(state_dict[k]) for k, p in not_numbers.items() if p is None}
        wrong = [f"{k}: checkpoint {list(v.shape)} vs model {list(entries[k].shape)}"
                 for k, v in arrays.items() if tuple(v.shape) != entries[k].shape]
        problems = []
        if any(not_numbers.values()):
            problems.append("not numbers: " + "; ".join(
                f"{k}: {p}" for k, p in not_numbers.items() if p is not None))
        if wrong:
            problems.append("wrong shapes: " + "; ".join(wrong))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise ModelFormatError(
                f"cannot load state_dict into {type(self).__name__}: " + " | ".join(problems),
                hint="keys follow PyTorch's state_dict names; pass strict=False to skip "
                     "missing and unexpected keys",
            )
        for key, value in arrays.items():
            entries[key].data = value
        return {"missing_keys": missing, "unexpected_keys": unexpected}

    # -- printing ----------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        kids = list(self.named_children())
        for name, module in kids:
            body = repr(module).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + (")" if not kids else "\n)")


def _not_numbers(value: Any) -> str | None:
    """What ``value`` is when it is not an array of numbers (strings, objects, ragged
    nesting), else None."""
    try:
        dtype = np.asarray(value).dtype
    except (TypeError, ValueError):  # ragged nesting
        dtype = np.dtype(object)
    if dtype.kind in "biufc":
        return None
    if isinstance(value, np.ndarray):
        return f"an array of {dtype}"
    return f"a {type(value).__name__} that is not an array of numbers"


_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu", "meta", "hip", "xla", "ipu", "vulkan", "mtia")


def _is_device(arg: Any) -> bool:
    """A device as ``torch.device`` spells it (``"cpu"``, ``"cuda:0"``), or a GPU's index."""
    if isinstance(arg, int) and not isinstance(arg, bool):
        return True
    return isinstance(arg, str) and arg.split(":")[0] in _DEVICE_TYPES


def _is_cpu(device: Any) -> bool:
    return str(device) in ("cpu", "cpu:0")  # a string, or a torch.device


def _float_dtype_name(dtype: Any) -> str:
    try:
        name = np.dtype(dtype).name
    except (TypeError, ValueError) as e:
        raise CnnirError(f"Module.to(): {dtype!r} is neither a dtype nor a device",
                         hint="pass a float dtype (np.float64, \"float32\") or the device "
                              "\"cpu\"") from e
    if np.dtype(name).kind != "f":
        raise CnnirError(f"Module.to() only converts to floating-point dtypes, not {name}",
                         hint="pass np.float32 or np.float64; integer buffers keep their "
                              "dtype on their own")
    return name


class Sequential(Module):
    """Modules applied in order; built from modules or an ``OrderedDict``."""

    def __init__(self, *args: Any) -> None:
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, module in args[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(args):
                self.add_module(str(i), module)

    def forward(self, x: Any) -> Any:
        for module in self._modules.values():
            x = module(x)
        return x

    def __getitem__(self, index: int | slice) -> Any:
        items = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*items[index])
        return items[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self)), module)
        return self


class ModuleList(Module):
    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        for module in modules or ():
            self.append(module)

    def append(self, module: Module) -> ModuleList:
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        for module in modules:
            self.append(module)
        return self

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


class ModuleDict(Module):
    def __init__(self, modules: Mapping[str, Module] | None = None) -> None:
        super().__init__()
        for name, module in (modules or {}).items():
            self.add_module(name, module)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __contains__(self, key: str) -> bool:
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()
