"""Training step latency, forward + backward: cnnir ``value_and_grad`` (Numba CPU) against
PyTorch eager (``loss.backward()``), each engine alone in its own process.

Both engines run the same network, weights and data, with cross-entropy on class targets and
the model in training mode (BatchNorm on batch statistics): SmallCIFAR at batch 64 (32×32)
and ResNet-18 at batch 8 (224×224). PyTorch runs the graph cnnir traced, op by op, with
autograd (benchmarks/torch_peer.py), so no modelling difference enters. Each measurement is
a fresh process that builds its engine, warms it up and reports the median of ``--runs``
steps; processes alternate over ``--rounds`` rounds and the best median is kept. Printed: ms
per step, GFLOP/s on the step's forward + backward MACs (cnnir's count of the generated
graph, 2 FLOPs per MAC), and cnnir / PyTorch.

    python benchmarks/bench_train.py [--runs 10] [--rounds 2] [--models small_cifar,resnet18]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import cnnir
from cnnir import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import build, isa, sgemm_peak  # noqa: E402

CONFIGS = {"small_cifar": (64, (3, 32, 32)), "resnet18": (8, (3, 224, 224))}
ENGINES = ("cnnir", "torch-eager")
CLASSES = 10


def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
    n, shape = CONFIGS[name]
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, *shape)).astype(np.float32),
            rng.integers(0, CLASSES, n).astype(np.int64))


def step_fn(engine: str, name: str):
    """One training step (forward + backward) of the engine, or None if not installed."""
    n, shape = CONFIGS[name]
    model = build(name).train()
    if engine == "cnnir":
        vg = cnnir.value_and_grad(model, nn.CrossEntropyLoss(), inputs=(n, *shape),
                                  targets=(n,))
        return lambda x, y: vg(x, y)
    try:
        from torch_peer import torch_trainer
    except ImportError:
        return None
    from cnnir.grad import loss_graph

    return torch_trainer(loss_graph(model, nn.CrossEntropyLoss(), (n, *shape), (n,)))


def worker(engine: str, name: str, runs: int) -> None:
    x, y = batch(name)
    fn = step_fn(engine, name)
    if fn is None:
        print(json.dumps({"ms": None}))
        return
    for _ in range(2):
        fn(x, y)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(x, y)
        times.append(time.perf_counter() - start)
    print(json.dumps({"ms": 1e3 * statistics.median(times)}))


def step_macs(name: str) -> int:
    n, shape = CONFIGS[name]
    graph = cnnir.grad_graph(build(name).train(), nn.CrossEntropyLoss(), inputs=(n, *shape),
                             targets=(n,))
    cost = cnnir.analyze(graph).training
    return cost.forward_macs + cost.backward_macs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", default=",".join(CONFIGS))
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        engine, name, runs = args.worker
        worker(engine, name, int(runs))
        return
    peak = sgemm_peak()
    print(f"machine: {os.cpu_count()} cores, {isa()}, numpy sgemm 2048^3 peak {peak:.0f} "
          f"GFLOP/s; each engine alone in its own process, best median of {args.rounds} "
          f"rounds of {args.runs} steps (forward + backward, cross-entropy)")
    print(f"{'model':<12}{'batch':>6}  {'engine':<12}{'ms/step':>9}{'GFLOP/s':>9}"
          f"{'cnnir/torch':>13}")
    for name in args.models.split(","):
        macs = step_macs(name)
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for engine in ENGINES:
                out = subprocess.run([sys.executable, __file__, "--worker", engine, name,
                                      str(args.runs)], capture_output=True, text=True,
                                     check=True)
                ms = json.loads(out.stdout.strip().splitlines()[-1])["ms"]
                if ms is not None:
                    best[engine] = min(best.get(engine, float("inf")), ms)
        for engine, ms in best.items():
            ratio = (f"{best['cnnir'] / best['torch-eager']:>13.2f}"
                     if engine == "cnnir" and "torch-eager" in best else "")
            print(f"{name:<12}{CONFIGS[name][0]:>6}  {engine:<12}{ms:>9.2f}"
                  f"{2 * macs / (ms / 1e3) / 1e9:>9.1f}{ratio}")


if __name__ == "__main__":
    main()
