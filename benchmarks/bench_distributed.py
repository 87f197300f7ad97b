"""Data-parallel training over MPI: measured on this machine, projected to many.

Measured, each configuration its own ``mpiexec`` job (SmallCIFAR, cross-entropy, SGD with
momentum 0.9, ``--batch`` examples a rank, median of ``--steps`` steps after two warm-up
steps): one rank with all the cores' threads against one rank a core with one thread each,
the gradients in one bucket reduced after the backward, or in 64 KiB buckets reduced while
it runs. Printed: ms per step, examples/s over all ranks, and the time the step spent on the
gradients' averaging that compute did not hide (copies into the buckets, starting and
progressing the Iallreduce calls, and the final wait), with its share of the step.

Projected: for ResNet-18 and MobileNetV2 (and SmallCIFAR), the bytes reduced per step (the
float32 gradient of every parameter), the compute time per example measured here (one
process on all cores, ``--project-batch`` examples at 224×224, a full training step), and a
ring allreduce cost model:

    t_allreduce(P) = 2·(P − 1)/P · bytes / bandwidth + 2·(P − 1)·latency
    t_step(P) = B·t_example + t_allreduce(P)     (no overlap: cnnir reduces after the backward)
    throughput = P·B / t_step(P),  efficiency = B·t_example / t_step(P)

for P = 2 … 64 machines like this one at 10 Gb/s (latency 25 µs a message, TCP) and
100 Gb/s (latency 3 µs, RDMA), B = ``--project-batch`` examples a machine. The model leaves out
the optimizer's update (the same on every machine, inside t_example here) and contention from
other jobs; bandwidth is the link's nominal rate.

    python benchmarks/bench_distributed.py [--batch 32] [--steps 20] [--project-batch 8]
        [--no-projection]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import cnnir
from cnnir import distributed as dist
from cnnir import nn, optim

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import MODELS, build, isa  # noqa: E402

LINKS = ((10e9, 25e-6, "10 Gb/s"), (100e9, 3e-6, "100 Gb/s"))  # bits/s, s a message
MACHINES = (2, 4, 8, 16, 32, 64)
ONE_BUCKET = 1 << 40  # every gradient in one bucket, sent when the backward has finished
SMALL_BUCKETS = 64 << 10  # SmallCIFAR's 0.4 MB in about six, sent as the backward goes
CLASSES = 10


def worker(name: str, batch: int, steps: int, bucket_bytes: int) -> None:
    """Under mpiexec (or alone): time ``steps`` data-parallel training steps; rank 0 prints a
    JSON line."""
    dist.GradientAverage.BUCKET_BYTES = bucket_bytes
    comm = dist.init() if dist.launched_by_mpi() else None
    model = build(name).train()
    shape = (batch, *MODELS[name][1])
    rng = np.random.default_rng(comm.rank if comm else 0)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, CLASSES, batch).astype(np.int64)
    step = cnnir.compile_train(model, nn.CrossEntropyLoss(),
                               optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                               inputs=shape, targets=(batch,), comm=comm)
    for _ in range(2):
        step(x, y)
    if comm is not None:
        comm.reduce_seconds = 0.0
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - start)
    if comm is None or comm.rank == 0:
        reduce = comm.reduce_seconds / steps if comm is not None else 0.0
        print(json.dumps({"ms": 1e3 * statistics.median(times), "reduce_ms": 1e3 * reduce,
                          "ranks": comm.size if comm else 1}))


def run(name: str, batch: int, steps: int, ranks: int, threads: int,
        bucket_bytes: int = dist.GradientAverage.BUCKET_BYTES) -> dict:
    env = {**os.environ, "NUMBA_NUM_THREADS": str(threads), "CNNIR_WARM": "0"}
    command = [sys.executable, __file__, "--worker", name, str(batch), str(steps),
               str(bucket_bytes)]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"
        command = [mpiexec, "-n", str(ranks), *command]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def gradient_bytes(name: str) -> int:
    return sum(p.data.size * 4 for p in build(name).parameters())


def ring_allreduce_seconds(nbytes: int, machines: int, bits_per_s: float,
                           latency: float) -> float:
    p = machines
    return 2 * (p - 1) / p * nbytes * 8 / bits_per_s + 2 * (p - 1) * latency


def measured(batch: int, steps: int) -> None:
    cores = len(os.sched_getaffinity(0))
    print(f"measured: SmallCIFAR, SGD momentum, batch {batch} a rank, median of {steps} "
          f"steps, {cores} cores")
    print(f"{'ranks x threads':<17}{'ms/step':>9}{'examples/s':>12}{'allreduce ms':>14}"
          f"{'share':>7}")
    base = None
    configs = [(1, cores, ONE_BUCKET, ""), (cores, 1, ONE_BUCKET, "one bucket after the backward"),
               (cores, 1, SMALL_BUCKETS, f"{SMALL_BUCKETS >> 10} KiB buckets during it")]
    for ranks, threads, bucket_bytes, note in configs:
        r = run("small_cifar", batch, steps, ranks, threads, bucket_bytes)
        rate = ranks * batch / (r["ms"] / 1e3)
        base = base or rate
        print(f"{f'{ranks} x {threads}':<17}{r['ms']:>9.2f}{rate:>12.0f}{r['reduce_ms']:>14.3f}"
              f"{100 * r['reduce_ms'] / r['ms']:>6.1f}%   ({rate / base:.2f}x the first row"
              f"{'; ' + note if note else ''})")


def projected(batch: int) -> None:
    print(f"\nprojected: ring allreduce model (see the docstring), {batch} examples a machine, "
          f"each machine like this one, no overlap of communication and backward")
    for name in ("resnet18", "mobilenet_v2", "small_cifar"):
        nbytes = gradient_bytes(name)
        per_example = run(name, batch, 3, 1, len(os.sched_getaffinity(0)))["ms"] / 1e3 / batch
        compute = batch * per_example
        print(f"\n{name}: {nbytes / 1e6:.1f} MB of float32 gradients reduced a step; "
              f"{1e3 * per_example:.1f} ms of compute an example here "
              f"({batch / compute:.1f} examples/s on one machine)")
        print(f"{'machines':>9}" + "".join(f"{label + ' ex/s':>17}{'eff':>6}"
                                           for _, _, label in LINKS))
        for p in MACHINES:
            cells = ""
            for bits, latency, _ in LINKS:
                t = compute + ring_allreduce_seconds(nbytes, p, bits, latency)
                cells += f"{p * batch / t:>17.1f}{100 * compute / t:>5.0f}%"
            print(f"{p:>9}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--project-batch", type=int, default=8)
    parser.add_argument("--no-projection", action="store_true")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, batch, steps, bucket_bytes = args.worker
        worker(name, int(batch), int(steps), int(bucket_bytes))
        return
    dist.mpi()  # a clear error without the cnnir[mpi] extra
    print(f"machine: {os.cpu_count()} cores, {isa()}")
    measured(args.batch, args.steps)
    if not args.no_projection:
        projected(args.project_batch)


if __name__ == "__main__":
    main()
