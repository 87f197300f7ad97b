"""The one place that configures Numba for cnnir's CPU kernels.

Kernels live in importable modules and are cached on disk, so a second process loads machine
code instead of compiling. Numba's own ``cache=True`` is not enough: it invalidates a kernel
only when the kernel's own file changes, yet kernels bake in constants and inlined helpers from
sibling modules (``simd.LANES``, ``activation.act_row``), so editing or upgrading only those
would run stale code. Every kernel made here is therefore cached under a folder salted with a
hash of all the ``*.py`` files of its package directory (plus this file and Numba's version),
and that hash also stamps each cache index, so a stale entry is never loaded.

Heavy code is compiled once: a tile kernel is called by address from the kernels that run it,
not linked into each (see "tile kernels" below), the inference kernels share one parallel
loop (``run_jobs``, "jobs over the threads" below) instead of compiling one each, and a
kernel is compiled by one process at a time (see "one compile of a kernel at a time").

fastmath allows contraction and reassociation (vectorized reductions) but not
``nnan``/``ninf``: NaN must propagate as in PyTorch.

Kernels are compiled without Numba's reference counting (NRT) unless they allocate. An array
argument is borrowed for the whole call, so counting its references is pure overhead, and
Numba's pass that pairs the increments with the decrements off misses those of an inlined
helper that uses an array only in a branch: an atomic increment and decrement per vector
were left in the 3×3 depthwise kernels' inner loops, which then ran 2.6× slower. A kernel
that allocates an array (a GEMM's panel) says so with ``allocates=True`` and leaves its
heaviest loops to a tile kernel that does not (``gemm.gemm_panel_block``); helpers inline into
their callers and follow them.

Numba's OpenMP workers keep libgomp's default wait policy: they spin briefly after a parallel
loop, then sleep. A model runs dozens of short parallel kernels back to back, and waking a
sleeping worker costs about 46 µs on this machine against 1.5 µs for a spinning one, which is
most of a small layer (``OMP_WAIT_POLICY=PASSIVE``, the earlier setting, cost MobileNetV2 about
3 ms per call). The spinning is safe because the float32 hot path runs no BLAS: GEMMs are
cnnir's own micro-kernel, so no OpenBLAS threads compete for the cores (the thread-pool
clash). The float64 path still calls BLAS, single-threaded (``blas.single_threaded_blas``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import os
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows: no lock, at worst a kernel compiled twice
    fcntl = None

import llvmlite.binding as llvm
import llvmlite.ir as llvm_ir
import numba
from numba.core import caching, cgutils, sigutils, typing
from numba.core import types as numba_types
from numba.core.dispatcher import Dispatcher
from numba.core.errors import NumbaPerformanceWarning
from numba.core.typing.templates import infer, infer_global, make_intrinsic_template
from numba.extending import intrinsic

from cnnir.backends.numba_cpu.kernels.host import AVX2_CPU, HOST

if HOST.forced:  # generate for an AVX2-only CPU: set before Numba's CPU target first compiles
    numba.config.CPU_NAME, numba.config.CPU_FEATURES = AVX2_CPU, ""

# Start Numba's thread pool now: cached kernels that call numba.get_thread_id() crash if the
# first one to run in a process is a serial build loaded from the cache.
numba.get_num_threads()

FASTMATH = {"contract", "arcp", "reassoc", "nsz", "afn"}


PARALLEL_MIN_ELEMENTS = 1 << 16  # below this, starting Numba's threads costs more


# --- the package-keyed disk cache -------------------------------------------------------------
# Numba has no public hook for this. We rely on its caching internals: FunctionCache and its
# `_impl_class`, CompileResultCacheImpl and its `_locator_classes`, the locators'
# get_cache_path/get_source_stamp, and the dispatcher's private `_cache` attribute (what
# Dispatcher.enable_caching() sets). Older Numba versions spell the locators with a leading
# underscore.


@functools.cache
def _source_digest(directory: str) -> str:
    """sha256 (hex) of Numba's version, the host profile (the kernels are generated for it),
    this file (its options shape every kernel) and every ``*.py`` file in ``directory`` (a
    dangling link is skipped). Computed once per directory and process."""
    here = Path(__file__).resolve()
    files = sorted({p for p in Path(directory).resolve().glob("*.py") if p.is_file()} | {here})
    digest = hashlib.sha256(f"{numba.__version__}\0{HOST.key}".encode())
    for path in files:
        source = path.read_bytes()
        digest.update(f"\0{path.name}\0{len(source)}\0".encode())
        digest.update(source)
    return digest.hexdigest()


class _SaltedLocator:
    """Mixin over one of Numba's source-file locators: caches in a sub-folder named after the
    package's source digest, and stamps the index with that digest."""

    _digest: str

    def __init__(self, py_func: Callable, py_file: str) -> None:
        super().__init__(py_func, py_file)
        self._digest = _source_digest(os.path.dirname(os.path.abspath(py_file)))

    def get_cache_path(self) -> str:
        return os.path.join(super().get_cache_path(), "cnnir-" + self._digest[:16])

    def get_source_stamp(self) -> object:
        return (super().get_source_stamp(), self._digest)


def _numba_locator(name: str) -> type:
    """Numba's locator class ``name`` (``_name`` in older versions)."""
    return getattr(caching, name, None) or getattr(caching, "_" + name)


class _UserProvidedLocator(_SaltedLocator, _numba_locator("UserProvidedCacheLocator")):
    """Under ``$NUMBA_CACHE_DIR``, when it is set."""


class _InTreeLocator(_SaltedLocator, _numba_locator("InTreeCacheLocator")):
    """Else in the package's ``__pycache__``, when it is writable."""


class _UserWideLocator(_SaltedLocator, _numba_locator("UserWideCacheLocator")):
    """Else in the user-wide cache directory."""


class _PackageCacheImpl(caching.CompileResultCacheImpl):
    _locator_classes = [_UserProvidedLocator, _InTreeLocator, _UserWideLocator]


class _PackageCache(caching.FunctionCache):
    """Numba's per-function disk cache, located by the salted locators above."""

    _impl_class = _PackageCacheImpl


def _njit(fn: Callable, allocates: bool = False, **options) -> Dispatcher:
    """``numba.njit`` with cnnir's options and the package-keyed disk cache, reference
    counting only for a kernel that ``allocates``. A function with no source file or no
    writable cache folder compiles without a disk cache."""
    dispatcher = numba.njit(cache=False, fastmath=FASTMATH, nogil=True, _nrt=allocates,
                            **options)(fn)
    if isinstance(dispatcher, Dispatcher):  # not when NUMBA_DISABLE_JIT is set
        try:
            dispatcher._cache = _PackageCache(fn)
        except RuntimeError:  # no locator applies
            pass
        else:
            _compile_once(dispatcher)
    return dispatcher


# --- one compile of a kernel at a time, across processes --------------------------------------
# A compile and the warm-up process beside it (``warm``) often need the same kernel, and
# Numba looks in the disk cache before it compiles, not while another process compiles: both
# would compile it. A compile therefore holds an exclusive lock on a file in the cache folder
# named after the kernel and its signature; a process that finds the lock taken waits, then
# loads what the holder saved. A lock is released when its holder finishes, fails or exits.

LOCK_POLL_S = 0.02
LOCK_WAIT_S = 300.0  # a holder that takes longer than any compile: compile anyway
_held_locks: set[str] = set()  # this process's, so that it never waits for itself


@contextlib.contextmanager
def _compile_lock(folder: str, name: str):
    if fcntl is None or name in _held_locks:
        yield
        return
    try:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(os.path.join(folder, name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # an unwritable cache: Numba will not save there either
        yield
        return
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(LOCK_POLL_S)
                    continue
            except OSError:  # a file system without locks: compile unlocked
                pass
            break
        _held_locks.add(name)
        yield
    finally:
        _held_locks.discard(name)
        os.close(fd)  # releases the lock


def _compile_once(dispatcher: Dispatcher) -> None:
    """Make ``dispatcher.compile`` take the signature's lock (above) when the signature is
    not compiled in this process yet."""
    compile_here = dispatcher.compile
    folder = cache_folder(dispatcher)
    qualname = dispatcher.py_func.__qualname__

    def compile_locked(sig):
        args, _ = sigutils.normalize_signature(sig)
        if tuple(args) in dispatcher.overloads:
            return compile_here(sig)
        text = f"{dispatcher.py_func.__module__}.{qualname}{tuple(args)}"
        name = qualname + "-" + hashlib.sha256(text.encode()).hexdigest()[:16]
        with _compile_lock(folder, name), warnings.catch_warnings():
            # a kernel whose parallel loop is ``launch_jobs``'s (``run_jobs``) has none of
            # its own, which Numba warns about in its parallel build
            warnings.filterwarnings("ignore", _NO_PARALLEL_LOOP, NumbaPerformanceWarning)
            return compile_here(sig)

    dispatcher.compile = compile_locked


_NO_PARALLEL_LOOP = r"\s*The keyword argument 'parallel=True' was specified but no transformation"


def cache_folder(dispatcher: Dispatcher) -> str | None:
    """The folder ``dispatcher``'s kernels are cached in, or None without a disk cache."""
    cache = getattr(dispatcher, "_cache", None)
    return getattr(cache, "_cache_path", None)


# --- the decorators ---------------------------------------------------------------------------


def prange_only() -> dict[str, bool]:
    """Numba's parallel options with only ``prange`` loops parallelized: the kernels say
    where to split, and the passes that look for other parallelism (array expressions,
    slice assignments, fusion, reductions of numpy calls) find nothing worth a thread
    launch yet cost compile time (im2col_gemm's parallel build: 6.9 → 6.2 s; ResNet-18
    compiled alone with an empty cache: about 32 → 30 s). A new dict per call: Numba
    consumes it."""
    return dict(prange=True, comprehension=False, reduction=False, inplace_binop=False,
                setitem=False, numpy=False, stencil=False, fusion=False)


class Kernel:
    """A shape-generic, cached kernel in two builds: parallel (its ``prange`` loops, or the
    jobs it gives ``run_jobs``, spread over Numba's threads) and serial (the same loops on
    the calling thread). Small tensors
    run ``serial``, where starting the threads would cost more than the work they share:
    ``kernel.sized(n)(...)``."""

    def __init__(self, fn: Callable, allocates: bool = False) -> None:
        self.parallel = _njit(fn, allocates, parallel=prange_only())
        serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                    fn.__defaults__, fn.__closure__)
        serial.__qualname__ = fn.__qualname__ + "_serial"  # its own on-disk cache entry
        self.serial = _njit(serial, allocates)
        self.__doc__ = fn.__doc__

    def __call__(self, *args):
        return self.parallel(*args)

    def sized(self, elements: int) -> Dispatcher:
        """The build to use for a call touching about ``elements`` output values."""
        return self.parallel if elements >= PARALLEL_MIN_ELEMENTS else self.serial

    def over(self, jobs: int) -> Dispatcher:
        """The build for a kernel whose ``prange`` runs ``jobs`` independent blocks, already
        sized for the threads: serial when there is only one."""
        return self.parallel if jobs > 1 else self.serial


def bound(dispatcher: Dispatcher, *args) -> Callable[[], object]:
    """A step calling ``dispatcher(*args)``, its arguments fixed when the step is made (arrays
    written in place): their types are resolved and the build compiled or loaded once, here,
    and each call goes straight to the compiled entry point. Numba's dispatch types every
    argument at every call, about 1 µs for a kernel of nine arguments with tuples among them,
    which a network of dozens of steps pays at each inference."""
    if not isinstance(dispatcher, Dispatcher):  # NUMBA_DISABLE_JIT: a Python function
        return functools.partial(dispatcher, *args)
    entry = dispatcher.compile(tuple(dispatcher.typeof_pyval(a) for a in args))
    return functools.partial(entry, *args)


def kernel(fn: Callable | None = None, *, allocates: bool = False) -> Kernel | Callable:
    """A parallel/serial pair of cached, shape-generic kernels (see ``Kernel``):
    ``@kernel``, or ``@kernel(allocates=True)`` for one that allocates arrays."""
    if fn is None:
        return functools.partial(Kernel, allocates=allocates)
    return Kernel(fn, allocates)


# --- tile kernels, called by address ---------------------------------------------------------
# When a kernel calls another, Numba links the callee's LLVM module into the caller's and
# optimizes and generates machine code for the whole again (so that LLVM may inline it); a
# parallel kernel does so twice, since its loop body is a function of its own. A heavy tile
# (the GEMM block, an im2col, a Winograd transform) was compiled once more for every kernel
# that ran it, in each of its two builds: most of a network's cold compile. A tile kernel is
# instead compiled once per signature and called through a symbol of its own, stable across
# processes, that names its entry point in this process (``llvm.add_symbol``); a cached
# caller re-binds the symbol before it is loaded (Numba's ``reload_init`` hooks, as its
# parfors use to start their thread pool). The call is an ordinary call of Numba's calling
# convention, errors propagated, only never inlined.


def _canonical(ty: numba_types.Type) -> numba_types.Type:
    """The type a tile kernel is compiled for when passed ``ty``: literals and integers of
    other widths as int64 (a prange index is unsigned, a literal has a type of its own), so
    that one compile serves every caller."""
    ty = numba_types.unliteral(ty)
    if isinstance(ty, numba_types.Integer):
        return numba_types.int64
    if isinstance(ty, numba_types.BaseTuple):
        return numba_types.Tuple([_canonical(t) for t in ty])
    return ty


_TILE_KERNELS: dict[str, Dispatcher] = {}  # by "module:name"


def _symbol(path: str, argtypes: tuple) -> str:
    text = f"{path}({', '.join(map(str, argtypes))})"
    return "cnnir_tile_" + hashlib.sha256(text.encode()).hexdigest()[:32]


def bind(path: str, argtypes: tuple) -> tuple[object, str]:
    """Compile (or load from the disk cache) tile kernel ``path`` (``module:name``) for
    ``argtypes``, point its symbol at the entry point and return (its compile result, the
    symbol). Module level, so that a cached caller's reload hook pickles by reference."""
    if path not in _TILE_KERNELS:  # a reload hook, before the caller's module ran
        importlib.import_module(path.partition(":")[0])
    dispatcher = _TILE_KERNELS[path]
    dispatcher.compile(argtypes)
    result = dispatcher.overloads[argtypes]
    symbol = _symbol(path, argtypes)
    llvm.add_symbol(symbol, result.library.get_pointer_to_function(result.fndesc.mangled_name))
    return result, symbol


def _call_tile(context, builder, result, symbol: str, argtypes: tuple, values: list):
    """Call the tile kernel compiled as ``result`` through ``symbol``: (status, value)."""
    native = result.fndesc
    fnty = context.call_conv.get_function_type(native.restype, native.argtypes)
    callee = cgutils.get_or_insert_function(builder.module, fnty, symbol)
    return context.call_conv.call_function(builder, callee, native.restype, argtypes, values)


def _address_call(path: str) -> Callable:
    """The typing of a call of tile kernel ``path``: an intrinsic that calls its symbol."""

    def typer(typingctx, *args):
        argtypes = tuple(_canonical(a) for a in args)
        result, symbol = bind(path, argtypes)
        restype = result.signature.return_type

        def codegen(context, builder, signature, values):
            context.active_code_library._reload_init.add(
                functools.partial(bind, path, argtypes))
            packed = values[0]
            cast = [context.cast(builder, builder.extract_value(packed, i), given, wanted)
                    for i, (given, wanted) in enumerate(zip(args, argtypes))]
            status, value = _call_tile(context, builder, result, symbol, argtypes, cast)
            with cgutils.if_unlikely(builder, status.is_error):
                context.call_conv.return_status_propagate(builder, status)
            return value

        return typing.signature(restype, numba_types.StarArgTuple.from_types(args)), codegen

    return typer


class TileKernel:
    """A serial, cached kernel that releases the GIL, compiled once per signature and called
    by address from other kernels (see above). From Python it is its dispatcher."""

    def __init__(self, fn: Callable, allocates: bool = False) -> None:
        self.dispatcher = _njit(fn, allocates)
        self.__doc__ = fn.__doc__
        path = f"{fn.__module__}:{fn.__qualname__}"
        _TILE_KERNELS[path] = self.dispatcher
        if isinstance(self.dispatcher, Dispatcher):  # kernels type a call as an intrinsic
            template = make_intrinsic_template(self, _address_call(path), fn.__name__)
            infer(template)
            infer_global(self, numba_types.Function(template))

    def __call__(self, *args):
        return self.dispatcher(*args)


def tile_kernel(fn: Callable | None = None, *,
                allocates: bool = False) -> TileKernel | Callable:
    """A serial, cached kernel that releases the GIL, run on its own tile: by several threads
    at once, or called by other kernels, which link to it by address (``TileKernel``);
    ``@tile_kernel(allocates=True)`` for one that allocates arrays."""
    if fn is None:
        return functools.partial(TileKernel, allocates=allocates)
    return TileKernel(fn, allocates)


# --- jobs over the threads, through one parallel launcher ------------------------------------
# A ``prange`` loop costs its kernel a second compile of the loop's body, as a gufunc with two
# wrappers, each a library of its own that LLVM optimizes again: a kernel whose loop only calls
# a tile kernel compiled in 0.6-0.7 s in parallel and 0.2 s serial, and a network's cold
# compile runs a dozen such kernels. ``run_jobs(job, count, args)`` instead calls tile kernel
# ``job(t, args)`` for t in range(count) through ``launch_jobs``, the one parallel loop,
# compiled once for every kernel: it runs, on each thread, an entry function the caller
# defines in its own module that unpacks ``args`` from the caller's stack and calls ``job``
# by address. ``job`` runs on the thread of its ``t``, as a ``prange`` body would (so
# ``numba.get_thread_id()`` picks its scratch); in a serial build the caller runs the jobs
# itself, in order, and a job's exception propagates as from any call. Worker threads cannot
# carry an exception back: a job that raised there makes the kernel raise RuntimeError.

_JOB_ENTRY = llvm_ir.FunctionType(llvm_ir.IntType(32),
                                  [llvm_ir.IntType(8).as_pointer(), llvm_ir.IntType(64)])


@intrinsic
def _call_entry(typingctx, entry, data, job):
    """``entry(data, job)`` for the addresses ``entry`` and ``data``: 1 if the job raised."""

    def codegen(context, builder, signature, values):
        function = builder.inttoptr(values[0], _JOB_ENTRY.as_pointer())
        pointer = builder.inttoptr(values[1], _JOB_ENTRY.args[0])
        index = context.cast(builder, values[2], signature.args[2], numba_types.int64)
        return builder.sext(builder.call(function, [pointer, index]), llvm_ir.IntType(64))

    return typing.signature(numba_types.int64, entry, data, job), codegen


def launch_jobs(entry, data, count):
    """Jobs [0, count) of ``entry`` over the threads; how many raised."""
    failed = 0
    for t in prange(count):
        failed += _call_entry(entry, data, t)
    return failed


_LAUNCH_PATH = f"{__name__}:launch_jobs"
_LAUNCH_TYPES = (numba_types.int64,) * 3
_TILE_KERNELS[_LAUNCH_PATH] = _njit(launch_jobs, allocates=True, parallel=prange_only())


def _job_entry(context, module, job: tuple, argtypes: tuple) -> llvm_ir.Function:
    """``module``'s entry function for ``job`` (its compile result and symbol): loads the
    arguments from its ``data`` and calls the job, returning 1 if it raised."""
    result, symbol = job
    name = "cnnir_jobs_" + symbol
    if name in module.globals:
        return module.globals[name]
    function = llvm_ir.Function(module, _JOB_ENTRY, name)
    function.linkage = "internal"
    builder = llvm_ir.IRBuilder(function.append_basic_block())
    data, index = function.args
    args = builder.load(builder.bitcast(data, context.get_value_type(argtypes[1]).as_pointer()))
    status, _ = _call_tile(context, builder, result, symbol, argtypes, [index, args])
    builder.ret(builder.zext(status.is_error, _JOB_ENTRY.return_type))
    return function


@intrinsic
def run_jobs(typingctx, job, count, args):
    """Tile kernel ``job(t, args)`` for t in range(``count``): over the threads in a parallel
    build, in order on the calling thread in a serial one (see above)."""
    tile = job.templates[0].key
    path = f"{tile.dispatcher.py_func.__module__}:{tile.dispatcher.py_func.__qualname__}"
    argtypes = (numba_types.int64, _canonical(args))
    compiled = bind(path, argtypes)

    def codegen(context, builder, signature, values):
        library = context.active_code_library
        library._reload_init.add(functools.partial(bind, path, argtypes))
        packed = context.cast(builder, values[2], signature.args[2], argtypes[1])
        jobs = context.cast(builder, values[1], signature.args[1], numba_types.int64)
        if not context.auto_parallel.enabled:
            with cgutils.for_range(builder, jobs) as loop:
                status, _ = _call_tile(context, builder, *compiled, argtypes,
                                       [loop.index, packed])
                with cgutils.if_unlikely(builder, status.is_error):
                    context.call_conv.return_status_propagate(builder, status)
            return context.get_dummy_value()
        launcher = bind(_LAUNCH_PATH, _LAUNCH_TYPES)  # (a serial build needs none)
        library._reload_init.add(functools.partial(bind, _LAUNCH_PATH, _LAUNCH_TYPES))
        entry = _job_entry(context, builder.module, compiled, argtypes)
        slot = cgutils.alloca_once_value(builder, packed)
        address = [builder.ptrtoint(entry, llvm_ir.IntType(64)),
                   builder.ptrtoint(slot, llvm_ir.IntType(64)), jobs]
        status, failed = _call_tile(context, builder, *launcher, _LAUNCH_TYPES, address)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        with cgutils.if_unlikely(builder, cgutils.is_not_null(builder, failed)):
            context.call_conv.return_user_exc(
                builder, RuntimeError, ("a job of a parallel kernel raised in a worker thread",))
        return context.get_dummy_value()

    return typing.signature(numba_types.none, job, count, args), codegen


def helper(fn: Callable) -> Dispatcher:
    """A small serial function inlined into kernels (cached like them, though only a direct
    call from Python compiles it on its own)."""
    return _njit(fn, allocates=True, inline="always")


prange = numba.prange

MAX_JOBS = 64  # enough for any thread count's static schedule to even out; a constant,
# since a kernel that asks Numba for its thread count cannot be cached


@helper
def job_count(items):
    """How many jobs to cut ``items`` (planes, rows) into for a ``prange`` whose body calls a
    tile kernel: each job a run of items, so that the call costs nothing next to the work
    (the arguments of a call take about as long as a 3×3 depthwise 7×7 plane)."""
    return min(items, MAX_JOBS)


@helper
def job_items(job, items):
    """Job ``job``'s share [first, last) of ``items``, of ``job_count(items)`` jobs."""
    jobs = job_count(items)
    return items * job // jobs, items * (job + 1) // jobs
