"""Data-parallel training over MPI, through mpi4py (the ``cnnir[mpi]`` extra).

Every rank holds the whole model and trains on its own shard of each batch; the gradients
are averaged across ranks as the backward produces them (``GradientAverage``: non-blocking
``Iallreduce`` calls on contiguous buckets of one flat buffer) and every rank applies the
same update, so the parameters stay identical without ever being sent again. At the start
rank 0's parameters, buffers and optimizer state are broadcast. No barrier is needed in the
steady state: the collectives themselves keep the ranks in step.

    from cnnir import distributed as dist
    comm = dist.init()                       # MPI.COMM_WORLD; comm.rank, comm.size
    step = cnnir.compile_train(model, loss_fn, opt, inputs=("N", 1, 8, 8), targets=("N",),
                               comm=comm)
    for x, y in cnnir.data.batches(X, Y, batch_size=32, shuffle=True, seed=epoch,
                                   num_replicas=comm.size, rank=comm.rank):
        loss = step(x, y)                    # this rank's loss; gradients averaged

Run it with ``mpiexec -n 4 python train.py``. BatchNorm keeps per-rank batch statistics, as
PyTorch's DistributedDataParallel does; ``nn.SyncBatchNorm`` reduces them over the active
communicator (``init``'s), with ``Communicator.moments`` and ``reduce_sum``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnir.errors import CnnirError, optional_module

EXTRA = "cnnir[mpi]"
ABORT_GRACE_S = 0.5  # between a failed rank's message and MPI_Abort (``abort_on_error``)


def mpi() -> Any:
    """mpi4py's ``MPI`` module, or a CnnirError naming the extra that provides it."""
    return optional_module("mpi4py.MPI", "cnnir.distributed",
                           f"pip install '{EXTRA}' (mpi4py and MPICH from wheels), or build "
                           "mpi4py against your cluster's MPI")


@dataclass
class Communicator:
    """An MPI communicator with the collectives data-parallel training needs. ``rank`` and
    ``size`` are this process's place in it."""

    comm: Any
    rank: int
    size: int
    reduce_seconds: float = 0.0  # spent averaging gradients so far (not hidden by compute)
    _buckets: dict[tuple, np.ndarray] = field(default_factory=dict, repr=False)

    def broadcast(self, arrays: Sequence[np.ndarray], root: int = 0) -> None:
        """Overwrite every array, in place, with ``root``'s values."""
        if self.size == 1:
            return
        for group in _by_dtype(arrays):
            bucket = self._bucket(group)
            _pack(bucket, group)
            self.comm.Bcast(bucket, root=root)
            _unpack(bucket, group)

    def sum_in_place(self, array: np.ndarray) -> None:
        """``array`` (contiguous) replaced by its sum over the ranks."""
        if self.size > 1:
            self.comm.Allreduce(mpi().IN_PLACE, array, op=mpi().SUM)

    def moments(self, moments: np.ndarray, count: int) -> int:
        """``moments`` ([2, C] float64: the per-channel mean and biased variance of ``count``
        values of this rank) replaced by those of every rank's values together (SyncBatchNorm's
        batch statistics, exactly: the variance from each rank's spread about the global
        mean); returns the total count."""
        if self.size == 1:
            return count
        channels = moments.shape[1]
        part = np.empty(channels + 1)
        part[:channels], part[channels] = count * moments[0], count
        self.sum_in_place(part)
        total = part[channels]
        mean = part[:channels] / total
        spread = count * (moments[1] + (moments[0] - mean) ** 2)
        self.sum_in_place(spread)
        moments[0], moments[1] = mean, spread / total
        return int(total)

    def from_root(self, value: Any, root: int = 0) -> Any:
        """``root``'s ``value`` (a few numbers: it travels pickled), on every rank."""
        return value if self.size == 1 else self.comm.bcast(value, root=root)

    def abort(self, code: int = 1) -> None:
        """End every rank of the job (a failed rank must never leave the others waiting)."""
        self.comm.Abort(code)

    def _bucket(self, group: list[np.ndarray]) -> np.ndarray:
        key = (group[0].dtype.str, *(a.size for a in group))
        if key not in self._buckets:
            self._buckets[key] = np.empty(sum(a.size for a in group), group[0].dtype)
        return self._buckets[key]


class GradientAverage:
    """The mean over the ranks of one step's gradients, reduced while the backward still
    runs: ``ready(k, g)`` as gradient k becomes final (every rank in the same order) copies it
    into a flat buffer; each time the gradients not yet sent reach ``BUCKET_BYTES`` (or the
    last one arrives) that contiguous bucket starts a non-blocking ``Iallreduce``, and every
    ``ready`` call also lets MPI progress the buckets in flight. ``finish()`` waits for them
    and returns the means, as views of the buffer."""

    # PyTorch DDP's bucket_cap_mb. On 2 cores, two ranks' SmallCIFAR gradients (0.4 MB)
    # in 64 KiB buckets left 1.7-4.4 ms a step unhidden against 1.9-2.2 ms in one bucket
    # (three runs): there the copies are CPU work on busy cores; across machines the NICs
    # move the bytes.
    BUCKET_BYTES = 25 << 20

    def __init__(self, comm: Communicator, sizes: Sequence[int], dtype: np.dtype) -> None:
        self.comm, self.sizes = comm, list(sizes)
        self.buffer = np.empty(sum(self.sizes), dtype)
        self.offsets: dict[int, int] = {}
        self.filled = self.sent = 0  # elements copied in, elements in buckets started
        self.requests: list[Any] = []

    def ready(self, k: int, gradient: np.ndarray) -> None:
        start = time.perf_counter()
        at, n = self.filled, self.sizes[k]
        self.buffer[at:at + n] = gradient.reshape(-1)
        self.offsets[k], self.filled = at, at + n
        last = len(self.offsets) == len(self.sizes)
        if self.comm.size > 1:
            if last or (self.filled - self.sent) * self.buffer.itemsize >= self.BUCKET_BYTES:
                bucket = self.buffer[self.sent:self.filled]
                self.requests.append(self.comm.comm.Iallreduce(mpi().IN_PLACE, bucket,
                                                               op=mpi().SUM))
                self.sent = self.filled
            elif self.requests:
                mpi().Request.Testall(self.requests)
        self.comm.reduce_seconds += time.perf_counter() - start

    def finish(self) -> list[np.ndarray]:
        """The means, gradient k at position k (all must have been ``ready``)."""
        start = time.perf_counter()
        if self.requests:
            mpi().Request.Waitall(self.requests)
            self.buffer *= self.buffer.dtype.type(1.0 / self.comm.size)
        self.comm.reduce_seconds += time.perf_counter() - start
        return [self.buffer[self.offsets[k]:self.offsets[k] + n]
                for k, n in enumerate(self.sizes)]


def _by_dtype(arrays: Iterable[np.ndarray]) -> list[list[np.ndarray]]:
    groups: dict[str, list[np.ndarray]] = {}
    for a in arrays:
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
            raise CnnirError(f"a collective needs C-contiguous numpy arrays, got "
                             f"{type(a).__name__}")
        groups.setdefault(a.dtype.str, []).append(a)
    return list(groups.values())


def _pack(bucket: np.ndarray, group: list[np.ndarray]) -> None:
    at = 0
    for a in group:
        bucket[at:at + a.size] = a.reshape(-1)
        at += a.size


def _unpack(bucket: np.ndarray, group: list[np.ndarray]) -> None:
    at = 0
    for a in group:
        a.reshape(-1)[:] = bucket[at:at + a.size]
        at += a.size


_active: Communicator | None = None


def init(comm: Any = None) -> Communicator:
    """The communicator to train over: ``comm`` (an mpi4py communicator) or
    ``MPI.COMM_WORLD``. MPI starts on first use (mpi4py initializes it on import). Ranks
    sharing a machine share its cores (``share_cores``). It becomes the active
    communicator, the one SyncBatchNorm reduces over (PyTorch's default process group)."""
    global _active
    if not isinstance(comm, Communicator):
        if comm is None:
            comm = mpi().COMM_WORLD
        share_cores()
        comm = Communicator(comm, comm.Get_rank(), comm.Get_size())
    _active = comm
    return comm


def active() -> Communicator | None:
    """The communicator ``init`` made active, or None in a process that never called it
    (then SyncBatchNorm is BatchNorm)."""
    return _active


def local_ranks() -> int:
    """How many ranks of this job run on this machine, as the launcher says (MPICH, Open
    MPI); 1 when it does not say."""
    for name in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def share_cores() -> None:
    """Give each of the ranks on this machine its share of the cores for the kernels'
    threads, unless ``NUMBA_NUM_THREADS`` says otherwise: two ranks of two threads each on
    two cores fight over them (MPI's waits spin): a digits epoch took 1.3 s, against under
    0.05 s with one thread a rank."""
    ranks = local_ranks()
    if ranks <= 1 or "NUMBA_NUM_THREADS" in os.environ:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // ranks)
    os.environ["NUMBA_NUM_THREADS"] = str(threads)
    numba = sys.modules.get("numba")
    if numba is not None:  # already started: use fewer of its threads
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def reduce_moments(moments: np.ndarray, count: int) -> int:
    """``Communicator.moments`` over the active communicator (SyncBatchNorm's statistics,
    for the backends); unchanged, and ``count`` back, without one."""
    return count if _active is None else _active.moments(moments, count)


def reduce_sum(array: np.ndarray) -> None:
    """``array`` summed over the active communicator's ranks, in place (no-op without one)."""
    if _active is not None:
        _active.sum_in_place(array)


@contextmanager
def abort_on_error(comm: Communicator) -> Iterator[None]:
    """Run the block; if it raises on one rank of several, write that rank and the error to
    stderr and abort the whole job (the other ranks would otherwise wait in their next
    collective forever)."""
    try:
        yield
    except BaseException as e:
        if comm.size > 1:
            sys.stderr.write(f"cnnir: rank {comm.rank} of {comm.size} failed: "
                             f"{type(e).__name__}: {e}\n")
            sys.stderr.flush()
            # The launcher forwards a rank's output through its own proxy, which the abort
            # kills: without a moment's grace the message was lost once in a CI run.
            time.sleep(ABORT_GRACE_S)
            comm.abort(1)
        raise


def launched_by_mpi() -> bool:
    """True in a process started by ``mpiexec`` with more than one rank (MPICH's, Open
    MPI's and Intel MPI's launchers set these), without initializing MPI."""
    import os

    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS"):
        if os.environ.get(name, "1").strip() not in ("", "0", "1"):
            return True
    return False


__all__ = ["EXTRA", "Communicator", "abort_on_error", "active", "init", "launched_by_mpi",
           "local_ranks", "mpi", "reduce_moments", "reduce_sum", "share_cores"]
