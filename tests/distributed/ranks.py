"""Run under ``mpiexec -n 2`` by ``test_distributed.py``: data-parallel training checked step
by step against one process training on the ranks' batches together.

    mpiexec -n 2 python tests/distributed/ranks.py equivalence sgd float64 [syncbn] [reference]
        [small-buckets]

Each rank trains on its shard of every batch (``batches(..., num_replicas=2, rank=r)``);
rank 0 also trains a copy of the model alone, on both shards of each batch at once (the
gradient of the mean loss over 2b examples is the mean of the two ranks' gradients over b).
After every step the parameters must agree with that reference (float64: 1e-12, float32:
1e-5 relative to their size) and be bit-identical on both ranks. With ``syncbn`` the network
has a SyncBatchNorm, and the reference the same layer as a BatchNorm over the 2b examples;
their running statistics must agree too. ``small-buckets`` makes every 256 bytes of
gradients a bucket of its own: many Iallreduce calls in flight during the backward.
``fail`` raises on rank 1 mid-epoch: the job must end with that rank named, not hang.
Prints ``OK`` on success.
"""

from __future__ import annotations

import sys

import numpy as np

import cnnir
from cnnir import distributed as dist
from cnnir import nn, optim

OPTIMIZERS = {"sgd": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3),
              "adam": lambda ps: optim.Adam(ps, lr=0.01)}
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
STEPS, BATCH = 6, 8  # per rank


def small_net(norm: type | None = None) -> nn.Module:
    nn.manual_seed(0)
    # no conv bias before a BatchNorm: its gradient is zero up to rounding, which Adam's
    # first step, g/(|g| + eps), would turn into differences of 1e-11
    layers = [nn.Conv2d(1, 4, 3, padding=1, bias=norm is None), *([norm(4)] if norm else []),
              nn.ReLU(),
              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)]
    return nn.Sequential(*layers)


def state(net: nn.Module) -> np.ndarray:
    """Parameters and floating-point buffers, flat."""
    return np.concatenate([a.reshape(-1) for a in net.state_dict().values()
                           if a.dtype.kind == "f"])


def equivalence(comm: dist.Communicator, optimizer: str, dtype: str, sync: bool,
                backend: str) -> None:
    options = {"backend": backend, **({"tune": False} if backend == "numba" else {})}
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((STEPS * BATCH * comm.size, 1, 8, 8)) * 2 + 0.5).astype(dtype)
    y = rng.integers(0, 3, len(x))
    net = small_net(nn.SyncBatchNorm if sync else None).to(dtype=np.dtype(dtype))
    alone = None
    if comm.rank == 0:
        alone = small_net(nn.BatchNorm2d if sync else None).to(dtype=np.dtype(dtype))
        alone.load_state_dict(net.state_dict())
    if comm.rank == 1:  # a different start: the broadcast must replace it
        for p in net.parameters():
            p.data[...] = 7.0
    step = cnnir.compile_train(net, nn.CrossEntropyLoss(), OPTIMIZERS[optimizer](
        net.parameters()), inputs=("N", 1, 8, 8), targets=("N",), comm=comm, **options)
    if alone is not None:
        ref = cnnir.compile_train(alone, nn.CrossEntropyLoss(), OPTIMIZERS[optimizer](
            alone.parameters()), inputs=("N", 1, 8, 8), targets=("N",), **options)
        together = cnnir.data.batches(x, y, batch_size=BATCH * comm.size, shuffle=True, seed=3)
    shard = cnnir.data.batches(x, y, batch_size=BATCH, shuffle=True, seed=3,
                               num_replicas=comm.size, rank=comm.rank)
    assert len(shard) == STEPS
    pairs = zip(shard, together) if alone is not None else ((b, None) for b in shard)
    for i, ((xs, ys), whole) in enumerate(pairs):
        step(xs, ys)
        flat = state(net)
        gathered = comm.comm.allgather(flat)
        assert all(np.array_equal(gathered[0], g) for g in gathered), f"ranks differ at {i}"
        if alone is not None:
            ref(*whole)
            want = state(alone)
            err = np.abs(flat - want).max() / max(1.0, np.abs(want).max())
            assert err <= TOLERANCE[dtype], f"step {i}: {err:.3g} from one process"
            if i == 0:
                moved = np.abs(want - state(small_net(nn.BatchNorm2d if sync else None))).max()
                assert moved > 1e-3, "the reference did not train"


def fail(comm: dist.Communicator) -> None:
    """Rank 1 raises in its third step while rank 0 goes on into the collective."""
    net = small_net()
    step = cnnir.compile_train(net, nn.CrossEntropyLoss(), optim.SGD(net.parameters(), 0.1),
                               inputs=("N", 1, 8, 8), targets=("N",), tune=False, comm=comm)
    x = np.zeros((BATCH, 1, 8, 8), np.float32)
    y = np.zeros(BATCH, np.int64)
    with dist.abort_on_error(comm):
        for i in range(10):
            if comm.rank == 1 and i == 2:
                raise RuntimeError("injected failure")
            step(x, y)


if __name__ == "__main__":
    world = dist.init()
    if "small-buckets" in sys.argv:
        dist.GradientAverage.BUCKET_BYTES = 256
    if sys.argv[1] == "equivalence":
        equivalence(world, sys.argv[2], sys.argv[3], "syncbn" in sys.argv[4:],
                    "reference" if "reference" in sys.argv[4:] else "numba")
    else:
        fail(world)
    if world.rank == 0:
        print("OK")
