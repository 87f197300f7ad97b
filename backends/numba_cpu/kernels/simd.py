"""A register-blocked float32 GEMM micro-kernel, written as explicit LLVM vector IR.

Numba's auto-vectorizer cannot keep a block of accumulators in registers across a reduction
(a 16-lane channel loop written in Numba became scalar FMAs), so the innermost tile is emitted
directly with llvmlite through ``numba.extending.intrinsic``: ``MR`` rows × ``vectors``
vectors of accumulators stay in registers for the whole K loop, each step loading ``vectors``
vectors of B (and prefetching further along its row), broadcasting ``MR`` scalars of A and
issuing ``MR·vectors`` fused multiply-adds.

A is pre-packed (``pack_rows``) as ``[row block][k][MR]``, so the broadcasts of one step are
adjacent; B is read in place, one row of ``vectors·LANES`` contiguous floats per step, ``ldb``
apart, so neither an image nor an im2col buffer needs repacking. The gathering variant
(``gather_tile_intrinsic``) reads A in place instead, each step's MR scalars a fixed stride
apart from an offset looked up per step (an image and its taps: ``pixel_gemm``, whose B, the
weights, is packed by ``pack_columns``).

The vector width and the tile come from the host profile (``host.HOST``): the accumulators,
the B vectors of a step and a broadcast must fit the vector registers (``tile_shape``), or
the K loop spills. AVX-512 gets 16-lane vectors and an 8 × 48 tile (24 accumulators of its
32 registers), AVX2 8-lane vectors and a 6 × 16 tile (12 of its 16: on code generated for
an AVX2 CPU, ResNet-18 ran 23.5 ms with it, 24.8 with 8 × 8 and 29.8 with the 8 × 24 tile
of AVX-512VL's registers, which spills).
"""

from __future__ import annotations

import functools
import operator

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

from cnnir.backends.numba_cpu.kernels.host import HOST, HostProfile


def tile_shape(host: HostProfile) -> tuple[int, int]:
    """(rows of A, vectors of B) of the micro-kernel's full tile on ``host``: as many
    accumulators as fit the registers with the step's B vectors and one broadcast."""
    return (8, 3) if host.registers >= 32 else (6, 2)


LANES = HOST.lanes  # floats per vector
MR, TILE_VECTORS = tile_shape(HOST)  # rows of A per tile (output channels); vectors of B
NR = TILE_VECTORS * LANES  # columns of B per full tile: output pixels
# Each step also prefetches its B row this far ahead: the tiles to the right read it next, and
# B rows (image channels) lie far apart, more streams than the hardware prefetcher follows.
# Measured on 8×12544-pixel 1x1 convs: 1.7× on 32→16 channels, 1.3× on 144→24.
PREFETCH_FLOATS = 128
# Independent accumulators a column tile keeps per column group: an FMA's result is ready
# four cycles after it starts, so one accumulator alone would stall each step on the last.
FMA_CHAINS = 4

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_VEC = ir.VectorType(_F32, LANES)
# AVX-512 loads and stores under a mask register at a plain load's cost; code generated for
# AVX2 emulates them (a kernel built on them ran 4-8x slower there)
MASKED_LOADS_NATIVE = HOST.isa == "avx512"
_MASK = ir.VectorType(ir.IntType(1), LANES)


def _element_ptr(builder, base, index):
    return builder.gep(base, [index], source_etype=_F32)


def _at(builder, base, index: int):
    return _element_ptr(builder, base, ir.Constant(_I64, index))


def _data_ptr(context, builder, array_type, array, offset):
    data = context.make_array(array_type)(context, builder, array).data
    return _element_ptr(builder, data, offset)


def _load(builder, ptr, typ):
    if getattr(ptr.type, "is_opaque", False):
        return builder.load(ptr, typ=typ, align=4)
    return builder.load(builder.bitcast(ptr, typ.as_pointer()), align=4)


def _store(builder, value, ptr):
    if not getattr(ptr.type, "is_opaque", False):
        ptr = builder.bitcast(ptr, value.type.as_pointer())
    builder.store(value, ptr, align=4)


def _lane_mask(builder, lo, hi):
    """Lanes i with lo ≤ i < hi (signed: any bounds, an empty mask when hi ≤ lo), built as
    the integer (1 << hi) − (1 << lo) of the bounds clamped to [0, LANES] (a mask register's
    bits; a vector compare per bound costs several instructions more a load)."""

    def clamped(bound, floor):
        bound = builder.select(builder.icmp_signed("<", bound, floor), floor, bound)
        top = ir.Constant(_I64, LANES)
        return builder.select(builder.icmp_signed(">", bound, top), top, bound)

    lo = clamped(lo, ir.Constant(_I64, 0))
    hi = clamped(hi, lo)
    one = ir.Constant(_I64, 1)
    bits = builder.sub(builder.shl(one, hi), builder.shl(one, lo))
    return builder.bitcast(builder.trunc(bits, ir.IntType(LANES)), _MASK)


def _masked_load(builder, ptr, mask):
    """The lanes of ``mask`` from ``ptr``, 0.0 elsewhere (no other lane is read)."""
    load = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_VEC, [ptr.type, _I32, _MASK, _VEC]),
        f"llvm.masked.load.v{LANES}f32.p0")
    return builder.call(load, [ptr, ir.Constant(_I32, 4), mask, ir.Constant(_VEC, [0.0] * LANES)])


def _masked_store(builder, value, ptr, mask):
    store = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [_VEC, ptr.type, _I32, _MASK]),
        f"llvm.masked.store.v{LANES}f32.p0")
    builder.call(store, [value, ptr, ir.Constant(_I32, 4), mask])


def _splat(builder, scalar, lanes=LANES):
    """``scalar`` in all lanes (LLVM folds a splat of a load into one broadcast)."""
    undef = ir.Constant(ir.VectorType(_F32, lanes), ir.Undefined)
    one = builder.insert_element(undef, scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(_I32, lanes),
                                                          [0] * lanes))


def _fma(builder, a, b, c):
    """``a·b + c``, fused, on scalars or vectors of any width."""
    typ = a.type
    name = f"llvm.fma.v{typ.count}f32" if isinstance(typ, ir.VectorType) else "llvm.fma.f32"
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(typ, [typ] * 3), name)
    return builder.call(fma, [a, b, c])


def _clamp(builder, value, lo, hi):
    """Two selects, not min/max: NaN passes through, as in PyTorch."""
    value = builder.select(builder.fcmp_ordered("<", value, lo), lo, value)
    return builder.select(builder.fcmp_ordered(">", value, hi), hi, value)


def _float32_array(t) -> bool:
    return isinstance(t, types.Array) and t.dtype == types.float32


def _emit_tile(builder, a_scalar, b_row, k, pc, ldc, rows, p_scale, p_shift, p_res, has_res,
               lo, hi, last_lanes=None, *, vectors, column=None):
    """The micro-kernel's body: ``a_scalar(step, r)`` loads A's element of row r at a step,
    ``b_row(step)`` points at the step's row of B. With ``last_lanes``, only that many lanes
    of the last vector column are read (B, the residual) and written (C). ``column = (a_row,
    t_row)`` adds one more column of C after the tile's, with A's rows in the lanes of one
    more accumulator (``_emit_column_tile``): ``a_row(step)`` points at the step's MR packed
    elements of A, ``t_row(step)`` at the column's element of B."""
    prefetch = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [pc.type, _I32, _I32, _I32]),
        "llvm.prefetch.p0")

    def at(base, index):
        return _at(builder, base, index)

    zero = ir.Constant(_VEC, [0.0] * LANES)
    acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(vectors)] for _ in range(MR)]
    mask = None if last_lanes is None else _lane_mask(builder, ir.Constant(_I64, 0), last_lanes)

    def load(ptr, j):
        return (_masked_load(builder, ptr, mask) if mask is not None and j == vectors - 1
                else _load(builder, ptr, _VEC))

    rows_in_lanes = ir.VectorType(_F32, MR)  # the extra column's accumulator, if any
    extra = None if column is None else cgutils.alloca_once_value(
        builder, ir.Constant(rows_in_lanes, [0.0] * MR))
    with cgutils.for_range(builder, k) as loop:
        b_at = b_row(loop.index)
        b_vecs = [load(at(b_at, LANES * j), j) for j in range(vectors)]
        builder.call(prefetch, [at(b_at, PREFETCH_FLOATS), ir.Constant(_I32, 0),
                                ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        for r in range(MR):
            a_vec = _splat(builder, a_scalar(loop.index, r))
            for j in range(vectors):
                total = _fma(builder, a_vec, b_vecs[j], builder.load(acc[r][j]))
                builder.store(total, acc[r][j])
        if column is not None:
            a_row, t_row = column
            t_vec = _splat(builder, _load(builder, t_row(loop.index), _F32), MR)
            a_rows = _load(builder, a_row(loop.index), rows_in_lanes)
            builder.store(_fma(builder, a_rows, t_vec, builder.load(extra)), extra)
    def store(y, ptr, j):
        if mask is not None and j == vectors - 1:
            _masked_store(builder, y, ptr, mask)
        else:
            _store(builder, y, ptr)

    ep = (p_scale, p_shift, p_res, has_res, lo, hi)
    _emit_epilogue(builder, (pc, ldc, rows), ep, LANES,
                   lambda r: [builder.load(acc[r][j]) for j in range(vectors)], load, store)
    if column is not None:  # lane r of the extra sums: row r's one more column
        one = ir.VectorType(_F32, 1)
        past = ir.Constant(_I64, vectors * LANES)
        _emit_epilogue(builder, (_element_ptr(builder, pc, past), ldc, rows),
                       (p_scale, p_shift, _element_ptr(builder, p_res, past), *ep[3:]), 1,
                       lambda r: [_lanes_of(builder, [extra], r)],
                       lambda ptr, j: _load(builder, ptr, one),
                       lambda y, ptr, j: _store(builder, y, ptr))


def _lanes_of(builder, column_sums, r):
    """Lane r of each column's sums (``column_sums``: accumulators with A's rows in their
    lanes) as one vector: row r's columns, adjacent as in C."""
    row = ir.Constant(ir.VectorType(_F32, len(column_sums)), ir.Undefined)
    for j, sums in enumerate(column_sums):
        lane = builder.extract_element(builder.load(sums), ir.Constant(_I32, r))
        row = builder.insert_element(row, lane, ir.Constant(_I32, j))
    return row


def _emit_epilogue(builder, c, ep, width, row_sums, load, store):
    """Each row r < rows (of MR) of a finished tile into C (``c = (pc, ldc, rows)``):
    ``clamp(scale[r]·y + shift[r] (+ the residual), lo, hi)`` (``ep = (p_scale, p_shift,
    p_res, has_res, lo, hi)``, the residual indexed like C), where ``row_sums(r)`` are the
    row's sums as vectors of ``width`` lanes, piece j from column j·width. ``load(ptr, j)``
    reads piece j of a residual row from ``ptr``, its start; ``store(y, ptr, j)`` writes
    one."""
    pc, ldc, rows = c
    p_scale, p_shift, p_res, has_res, lo, hi = ep
    lo_vec, hi_vec = _splat(builder, lo, width), _splat(builder, hi, width)
    for r in range(MR):
        valid = builder.icmp_signed(">", rows, ir.Constant(_I64, r))
        with builder.if_then(valid, likely=True):
            row_offset = builder.mul(ir.Constant(_I64, r), ldc)
            c_row = _element_ptr(builder, pc, row_offset)
            res_row = _element_ptr(builder, p_res, row_offset)
            scale = _splat(builder, _load(builder, _at(builder, p_scale, r), _F32), width)
            shift = _splat(builder, _load(builder, _at(builder, p_shift, r), _F32), width)
            for j, total in enumerate(row_sums(r)):
                y = cgutils.alloca_once_value(builder, _fma(builder, total, scale, shift))
                with builder.if_then(has_res):
                    residual = load(_at(builder, res_row, width * j), j)
                    builder.store(builder.fadd(builder.load(y), residual), y)
                store(_clamp(builder, builder.load(y), lo_vec, hi_vec),
                      _at(builder, c_row, width * j), j)


def _emit_column_tile(builder, a_row, b_row, k, pc, ldc, rows, p_scale, p_shift, p_res,
                      has_res, lo, hi, last_lanes=None, *, width):
    """A tile of ``width`` columns with A's MR rows in the lanes of one vector: each step
    loads the step's MR packed elements of A (``a_row(step)`` points at them) and multiplies
    them by a broadcast of each column's element of B, so no lane idles. The epilogue takes
    row r's columns as one vector of ``width`` lanes, gathered from lane r of each column's
    sums: a column's rows are ``ldc`` apart in C, a row's columns adjacent."""
    column = ir.VectorType(_F32, MR)
    chains = max(1, FMA_CHAINS // width)  # partial sums per column, over alternate steps
    acc = [[cgutils.alloca_once_value(builder, ir.Constant(column, [0.0] * MR))
            for _ in range(chains)] for _ in range(width)]

    def step(index, chain):
        a_vec = _load(builder, a_row(index), column)
        b_at = b_row(index)
        for j in range(width):
            b_vec = _splat(builder, _load(builder, _at(builder, b_at, j), _F32), MR)
            slot = acc[j][chain]
            builder.store(_fma(builder, a_vec, b_vec, builder.load(slot)), slot)

    rounds = builder.sdiv(k, ir.Constant(_I64, chains))
    with cgutils.for_range(builder, rounds) as loop:
        for chain in range(chains):
            first = builder.mul(loop.index, ir.Constant(_I64, chains))
            step(builder.add(first, ir.Constant(_I64, chain)), chain)
    done = builder.mul(rounds, ir.Constant(_I64, chains))
    with cgutils.for_range(builder, k, start=done) as loop:
        step(loop.index, 0)
    for sums in acc:
        builder.store(functools.reduce(builder.fadd, (builder.load(s) for s in sums)), sums[0])
    row = ir.VectorType(_F32, width)
    _emit_epilogue(builder, (pc, ldc, rows), (p_scale, p_shift, p_res, has_res, lo, hi), width,
                   lambda r: [_lanes_of(builder, [sums[0] for sums in acc], r)],
                   lambda ptr, j: _load(builder, ptr, row),
                   lambda y, ptr, j: _store(builder, y, ptr))


def _index_array(t) -> bool:
    return isinstance(t, types.Array) and t.dtype == types.int64


def _typed_tile(emit, a_types: tuple, rest: tuple, a_loader, masked: bool = False,
                column: tuple = ()):
    """The (signature, codegen) of a tile call whose body ``emit`` writes (``_emit_tile``,
    ``_emit_column_tile``): ``a_types`` the types of its A arguments (the array first),
    ``rest`` those of (b, b_off, ldb, k, c, c_off, ldc, rows, scale, shift, s_off, res,
    has_res, lo, hi); ``a_loader(context, builder, sig, args)`` returns the access to A that
    ``emit`` takes. ``masked``: a last argument, the lanes of the last vector
    column in use. ``column``: the types of three last arguments (t, t_off, ldt), one more
    column of B at ``t[t_off + step·ldt]`` (``_emit_tile``'s ``column``; A packed)."""
    b, c, scale, shift, res = rest[0], rest[4], rest[8], rest[9], rest[11]
    if not all(_float32_array(t) for t in (a_types[0], b, c, scale, shift, res)):
        return None
    if column and not _float32_array(column[0]):
        return None
    i = types.intp
    extra = (column[0], i, i) if column else ()
    sig = types.void(*a_types, b, i, i, i, c, i, i, i, scale, shift, i, res, types.boolean,
                     types.float32, types.float32, *[i] * masked, *extra)
    first = len(a_types)  # where B's arguments start

    def codegen(context, builder, sig, args):
        ty, arg = sig.args[first:], args[first:]
        pb = _data_ptr(context, builder, ty[0], arg[0], arg[1])

        def b_row(step):
            return _element_ptr(builder, pb, builder.mul(step, arg[2]))
        pc = _data_ptr(context, builder, ty[4], arg[4], arg[5])
        p_res = _data_ptr(context, builder, ty[11], arg[11], arg[5])
        p_scale = _data_ptr(context, builder, ty[8], arg[8], arg[10])
        p_shift = _data_ptr(context, builder, ty[9], arg[9], arg[10])
        more = {}
        if column:
            pt = _data_ptr(context, builder, ty[15], arg[15], arg[16])
            more["column"] = (_packed_rows(context, builder, sig, args),
                              lambda step: _element_ptr(builder, pt, builder.mul(step, arg[17])))
        emit(builder, a_loader(context, builder, sig, args), b_row, arg[3], pc, arg[6], arg[7],
             p_scale, p_shift, p_res, *arg[12:15], last_lanes=arg[15] if masked else None,
             **more)
        return context.get_dummy_value()

    return sig, codegen


def _packed_rows(context, builder, sig, args):
    """A ``pack_rows`` operand from its offset: ``a_row(step)``, the pointer to the step's
    MR elements."""
    pa = _data_ptr(context, builder, sig.args[0], args[0], args[1])
    return lambda step: _element_ptr(builder, pa, builder.mul(step, ir.Constant(_I64, MR)))


def _packed(context, builder, sig, args):
    """A ``pack_rows`` operand from its offset: ``a_scalar(step, r)``."""
    a_row = _packed_rows(context, builder, sig, args)
    return lambda step, r: _load(builder, _at(builder, a_row(step), r), _F32)


def _packed_tile(emit, a_loader, masked: bool = False):
    """The intrinsic of a tile whose A is a ``pack_rows`` operand: ``emit`` writes its body
    (``_typed_tile``), ``a_loader`` gives it A."""

    @intrinsic
    def tile(typingctx, a, a_off, b, b_off, ldb, k, c, c_off, ldc, rows, scale, shift, s_off,
             res, has_res, lo, hi):
        return _typed_tile(emit, (a, types.intp), (b, b_off, ldb, k, c, c_off, ldc, rows,
                                                   scale, shift, s_off, res, has_res, lo, hi),
                           a_loader)

    @intrinsic
    def tile_masked(typingctx, a, a_off, b, b_off, ldb, k, c, c_off, ldc, rows, scale, shift,
                    s_off, res, has_res, lo, hi, lanes):
        return _typed_tile(emit, (a, types.intp), (b, b_off, ldb, k, c, c_off, ldc, rows,
                                                   scale, shift, s_off, res, has_res, lo, hi),
                           a_loader, masked=True)

    return tile_masked if masked else tile


def tile_intrinsic(vectors: int, masked: bool = False):
    """``tile(a, a_off, b, b_off, ldb, k, c, c_off, ldc, rows, scale, shift, s_off, res,
    has_res, lo, hi)``: for r < rows (≤ MR) and j < vectors·LANES, with ``y = Σ_i a[a_off + i·MR
    + r] · b[b_off + i·ldb + j]``,
    ``c[c_off + r·ldc + j] = clamp(scale[s_off + r]·y + shift[s_off + r] (+ res[c_off + r·ldc
    + j]), lo, hi)``. The clamp lets NaN through (``_clamp``); it is ReLU with lo = 0,
    hi = inf and ReLU6 with hi = 6. Arrays are float32 of any rank, offsets in elements from
    their first element. ``masked`` adds a last argument, ``lanes``: then j < (vectors − 1)·LANES
    + lanes, and B, C and the residual are touched nowhere else (a row's last columns, read
    and written in place)."""
    return _packed_tile(functools.partial(_emit_tile, vectors=vectors), _packed, masked)


# Whether the widest tile has the registers for one more column (``tile_wide_column``): its
# MR·TILE_VECTORS accumulators, the step's B vectors and broadcast, and three more; on
# AVX2's 16 registers it would spill.
EXTRA_COLUMN = HOST.registers >= 32


@intrinsic
def tile_wide_column(typingctx, a, a_off, b, b_off, ldb, k, c, c_off, ldc, rows, scale, shift,
                     s_off, res, has_res, lo, hi, t, t_off, ldt):
    """``tile_wide`` and one more column of C right after its NR, B's at ``t[t_off +
    step·ldt]``, computed with A's rows in the lanes of one more accumulator: a row whose
    last column is one past a multiple of LANES (a 7x7 plane's 49 pixels) ends in the
    widest tile instead of a column tile of its own, which re-read A and B for that one
    column at about six times a full tile's cost per column (``gemm.sweep``). Needs the
    registers of AVX-512 (``EXTRA_COLUMN``)."""
    return _typed_tile(functools.partial(_emit_tile, vectors=TILE_VECTORS), (a, types.intp),
                       (b, b_off, ldb, k, c, c_off, ldc, rows, scale, shift, s_off, res,
                        has_res, lo, hi), _packed, column=(t, t_off, ldt))


def column_tile_intrinsic(width: int):
    """``tile_intrinsic``'s tile for ``width`` columns, computed with A's rows in the lanes
    (``_emit_column_tile``): a row's last few columns, where the broadcast-A tile spends a
    whole vector per row on each (the one column past 48 of a 7×7 plane cost a quarter of a
    1x1 layer)."""
    return _packed_tile(functools.partial(_emit_column_tile, width=width), _packed_rows)


def gather_tile_intrinsic(vectors: int):
    """``tile(a, a_off, a_index, a_step, b, ...)``: ``tile_intrinsic``'s tile with A read in
    place: row r's element of step i at ``a[a_off + a_index[i] + r·a_step]`` (an image:
    ``a_index`` holds each (channel, tap)'s offset, ``a_step`` the stride; nothing is
    packed)."""

    def gathered(context, builder, sig, args):
        pa = _data_ptr(context, builder, sig.args[0], args[0], args[1])
        index = context.make_array(sig.args[2])(context, builder, args[2]).data

        def a_scalar(step, r):
            offset = builder.load(builder.gep(index, [step]))
            lane = builder.mul(ir.Constant(_I64, r), args[3])
            return _load(builder, _element_ptr(builder, pa, builder.add(offset, lane)), _F32)

        return a_scalar

    @intrinsic
    def tile(typingctx, a, a_off, a_index, a_step, b, b_off, ldb, k, c, c_off, ldc, rows,
             scale, shift, s_off, res, has_res, lo, hi):
        if not (isinstance(a_index, types.Array) and a_index.dtype == types.int64):
            return None
        return _typed_tile(functools.partial(_emit_tile, vectors=vectors),
                           (a, types.intp, a_index, types.intp),
                           (b, b_off, ldb, k, c, c_off, ldc, rows, scale, shift, s_off, res,
                            has_res, lo, hi), gathered)

    return tile


@intrinsic
def row_offset(typingctx, ldb, step):
    """Where B's row ``step`` starts: ``step·ldb`` for a row stride, ``ldb[step]`` for an int64
    index array (a direct convolution's taps, each at its own offset in a padded image)."""
    if not (isinstance(step, types.Integer)
            and (_index_array(ldb) or isinstance(ldb, types.Integer))):
        return None

    def codegen(context, builder, sig, args):
        at = context.cast(builder, args[1], sig.args[1], types.intp)
        if _index_array(sig.args[0]):
            index = context.make_array(sig.args[0])(context, builder, args[0]).data
            return builder.load(builder.gep(index, [at]))
        return builder.mul(at, context.cast(builder, args[0], sig.args[0], types.intp))

    return types.intp(ldb, step), codegen


tile_wide = tile_intrinsic(TILE_VECTORS)  # MR × NR
tile_mid = tile_intrinsic(TILE_VECTORS - 1)  # for the last columns
tile_narrow = tile_intrinsic(1)  # MR × LANES
tile_part = tile_intrinsic(1, masked=True)  # MR × the first ``lanes`` of LANES
# MR × 4 or 1 columns, A's rows in the lanes: a row's last columns, up to COLUMN_TILE_MAX. A
# width-2 tile too saved 2-4 us on a 1x1 layer whose rows end in 2 columns (rare: 7x7 and
# 14x14 planes end in 1 and 4) and cost each gemm_block signature 0.15 s more to compile.
tile_columns4 = column_tile_intrinsic(4)
tile_columns1 = column_tile_intrinsic(1)
# Beyond this many last columns the masked broadcast-A tile is as fast: it does a whole
# vector's work per row and step, the column tiles one FMA per column (at MR lanes).
COLUMN_TILE_MAX = LANES // 2


def padded_rows(rows: int) -> int:
    return -(-rows // MR) * MR


def pack_rows(a: np.ndarray, groups: int = 1) -> np.ndarray:
    """``a`` [groups·m, k] as float32 ``[group][m_pad / MR][k][MR]``, flat, rows zero-padded to
    a multiple of MR within each group: the A operand of ``tile_*``."""
    rows, k = a.shape
    m = rows // groups
    m_pad = padded_rows(m)
    packed = np.zeros((groups, m_pad, k), np.float32)
    packed[:, :m] = a.reshape(groups, m, k)
    blocks = packed.reshape(groups, m_pad // MR, MR, k).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(blocks).reshape(-1)


def pack_columns(a: np.ndarray) -> np.ndarray:
    """The columns of ``a``ᵀ (``a`` [m, k]: one row per output channel) as float32 panels of
    up to NR: panel p, m-rows [p·NR, p·NR + w) with w = min(NR, m_pad − p·NR), at p·NR·k as
    ``[k][w]``, m zero-padded to whole vectors (m_pad): the B operand of ``tile_*`` with
    ``ldb = w``, one contiguous run per step (``gemm.pixel_gemm``)."""
    m, k = a.shape
    m_pad = -(-m // LANES) * LANES
    padded = np.zeros((m_pad, k), np.float32)
    padded[:m] = a
    return np.concatenate([np.ascontiguousarray(padded[p:p + NR].T).reshape(-1)
                           for p in range(0, m_pad, NR)])


class F32Vector(types.Type):
    """LANES float32 lanes in one register: the value type of the ``v*`` intrinsics below,
    for kernels whose loops are too short for LLVM's (4×16-lane) vectorized loop bodies."""

    def __init__(self) -> None:
        super().__init__(name=f"f32x{LANES}")


f32v = F32Vector()


@register_model(F32Vector)
class _F32VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:
        super().__init__(dmm, fe_type, _VEC)


@intrinsic
def vload(typingctx, array, offset):
    """The LANES floats from ``array``'s element ``offset`` (any rank; from its first element)."""
    if not _float32_array(array):
        return None

    def codegen(context, builder, sig, args):
        return _load(builder, _data_ptr(context, builder, sig.args[0], *args), _VEC)

    return f32v(array, types.intp), codegen


@intrinsic
def vstore(typingctx, array, offset, value):
    """Store LANES floats from ``array``'s element ``offset``."""
    if not (_float32_array(array) and value == f32v):
        return None

    def codegen(context, builder, sig, args):
        _store(builder, args[2], _data_ptr(context, builder, sig.args[0], args[0], args[1]))
        return context.get_dummy_value()

    return types.void(array, types.intp, f32v), codegen


@intrinsic
def vsplat(typingctx, scalar):
    """``scalar`` in all lanes."""
    if scalar != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return _splat(builder, args[0])

    return f32v(types.float32), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """``a·b + c`` lane by lane, fused."""
    if not (a == b == c == f32v):
        return None

    def codegen(context, builder, sig, args):
        return _fma(builder, *args)

    return f32v(f32v, f32v, f32v), codegen


@intrinsic
def vadd(typingctx, a, b):
    if not (a == b == f32v):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(*args)

    return f32v(f32v, f32v), codegen


@intrinsic
def vsub(typingctx, a, b):
    if not (a == b == f32v):
        return None

    def codegen(context, builder, sig, args):
        return builder.fsub(*args)

    return f32v(f32v, f32v), codegen


@overload(operator.add)
def _add_vectors(a, b):
    """``a + b`` of two vectors (so that a helper's arithmetic serves vectors and scalars)."""
    if a == b == f32v:
        return lambda a, b: vadd(a, b)
    return None


@overload(operator.sub)
def _subtract_vectors(a, b):
    if a == b == f32v:
        return lambda a, b: vsub(a, b)
    return None


@intrinsic
def vclamp(typingctx, value, lo, hi):
    """``lo`` where value < lo, ``hi`` where value > hi, else value: NaN passes through."""
    if not (value == lo == hi == f32v):
        return None

    def codegen(context, builder, sig, args):
        return _clamp(builder, *args)

    return f32v(f32v, f32v, f32v), codegen


@intrinsic
def vmax(typingctx, a, b):
    """The larger of a and b lane by lane, NaN where either is NaN (torch's max pooling)."""
    if not (a == b == f32v):
        return None

    def codegen(context, builder, sig, args):
        a, b = args
        larger = builder.select(builder.fcmp_ordered(">", a, b), a, b)  # b where b is NaN
        return builder.select(builder.fcmp_unordered("uno", a, a), a, larger)

    return f32v(f32v, f32v), codegen


class LaneMask(types.Type):
    """A predicate per lane (``vmask``), for the masked loads and stores below."""

    def __init__(self) -> None:
        super().__init__(name=f"mask{LANES}")


lane_mask = LaneMask()


@register_model(LaneMask)
class _LaneMaskModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:
        super().__init__(dmm, fe_type, _MASK)


@intrinsic
def vmask(typingctx, lo, hi):
    """The lanes i with lo ≤ i < hi (any integers; none when hi ≤ lo). Computed once and
    used by several loads: building one costs more than the load."""
    if not (isinstance(lo, types.Integer) and isinstance(hi, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        bounds = [context.cast(builder, a, t, types.int64) for a, t in zip(args, sig.args)]
        return _lane_mask(builder, *bounds)

    return lane_mask(lo, hi), codegen


@intrinsic
def vmask_bits(typingctx, bits):
    """The lanes i whose bit i is set in the integer ``bits`` (a precomputed mask)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.trunc(args[0], ir.IntType(LANES)), _MASK)

    return lane_mask(bits), codegen


def lane_bits(lanes) -> int:
    """The ``vmask_bits`` integer of an iterable of lane numbers."""
    return sum(1 << int(i) for i in lanes)


@intrinsic
def vload_masked(typingctx, array, offset, mask):
    """``vload`` of the lanes in ``mask`` only, the others 0.0: element offset + i is read
    only for those lanes, so the vector may start before the array or run past its end (a
    row's edges: zero padding without a padded copy)."""
    if not (_float32_array(array) and mask == lane_mask):
        return None

    def codegen(context, builder, sig, args):
        ptr = _data_ptr(context, builder, sig.args[0], args[0], args[1])
        return _masked_load(builder, ptr, args[2])

    return f32v(array, types.intp, lane_mask), codegen


@intrinsic
def vstore_masked(typingctx, array, offset, value, mask):
    """``vstore`` of the lanes in ``mask`` only (a row's last, partial vector)."""
    if not (_float32_array(array) and value == f32v and mask == lane_mask):
        return None

    def codegen(context, builder, sig, args):
        ptr = _data_ptr(context, builder, sig.args[0], args[0], args[1])
        _masked_store(builder, args[2], ptr, args[3])
        return context.get_dummy_value()

    return types.void(array, types.intp, f32v, lane_mask), codegen


def _interleaved(first: int):
    """The intrinsic picking lanes first, first + 2, … of the 2·LANES lanes of (a, b)."""

    @intrinsic
    def pick(typingctx, a, b):
        if not (a == b == f32v):
            return None

        def codegen(context, builder, sig, args):
            lanes = ir.Constant(ir.VectorType(_I32, LANES), list(range(first, 2 * LANES, 2)))
            return builder.shuffle_vector(args[0], args[1], lanes)

        return f32v(f32v, f32v), codegen

    return pick


veven = _interleaved(0)  # lanes 0, 2, 4, … of (a, b): a stride-2 row's even columns
vodd = _interleaved(1)  # lanes 1, 3, 5, …: its odd columns


def _zipped(first: int):
    """The intrinsic taking lanes first, first + 1, … of a and of b alternately: (a[first],
    b[first], a[first + 1], b[first + 1], …), LANES of them."""

    @intrinsic
    def zip_(typingctx, a, b):
        if not (a == b == f32v):
            return None

        def codegen(context, builder, sig, args):
            lanes = [first + i // 2 + (i % 2) * LANES for i in range(LANES)]
            return builder.shuffle_vector(args[0], args[1],
                                          ir.Constant(ir.VectorType(_I32, LANES), lanes))

        return f32v(f32v, f32v), codegen

    return zip_


vzip_low = _zipped(0)  # (a0, b0, a1, b1, …): even and odd columns back into a row
vzip_high = _zipped(LANES // 2)  # the same from lanes LANES/2 on
