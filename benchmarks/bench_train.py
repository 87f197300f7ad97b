"""Training step latency: cnnir (Numba CPU) against PyTorch eager, each engine alone in its
own process.

Rows per model: ``grad`` (forward + backward: ``value_and_grad`` against ``loss.backward()``)
and the full step with an optimizer (``sgd``: momentum 0.9; ``adam``): ``compile_train``
against ``loss.backward()`` + ``optimizer.step()``. Both engines run the same network,
weights and data, with cross-entropy on class targets and the model in training mode
(BatchNorm on batch statistics): SmallCIFAR at batch 64 (32×32) and ResNet-18 at batch 8
(224×224). PyTorch runs the graph cnnir traced, op by op, with autograd
(benchmarks/torch_peer.py), so no modelling difference enters. Each measurement is a fresh
process that builds its engine, warms it up and reports the median of ``--runs`` steps;
processes alternate over ``--rounds`` rounds and the best median is kept. Printed: ms per
step, GFLOP/s on the step's forward + backward MACs (cnnir's count of the generated graph, 2
FLOPs per MAC), and cnnir / PyTorch.

``--digits`` adds the wall time of one epoch of the digits example (docs/semantics.md §11's network,
1,437 training images, batch 32 shuffled, Adam 3e-3; the last batch of 29 included).

    python benchmarks/bench_train.py [--runs 10] [--rounds 2] [--models small_cifar,resnet18]
                                     [--optimizers grad,sgd,adam] [--digits]
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
from cnnir import nn, optim

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import build, isa, sgemm_peak  # noqa: E402

CONFIGS = {"small_cifar": (64, (3, 32, 32)), "resnet18": (8, (3, 224, 224))}
ENGINES = ("cnnir", "torch-eager")
CLASSES = 10
CNNIR_OPTIMIZERS = {
    "sgd": lambda params: optim.SGD(params, lr=0.01, momentum=0.9),
    "adam": lambda params: optim.Adam(params, lr=1e-3),
}


def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
    n, shape = CONFIGS[name]
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, *shape)).astype(np.float32),
            rng.integers(0, CLASSES, n).astype(np.int64))


def step_fn(engine: str, model: nn.Module, inputs: tuple, targets: tuple, mode: str):
    """One training step of the engine (``mode`` "grad": forward + backward; else the full
    step with that optimizer), or None if the engine is not installed."""
    loss = nn.CrossEntropyLoss()
    if engine == "cnnir":
        if mode == "grad":
            vg = cnnir.value_and_grad(model, loss, inputs=inputs, targets=targets)
            return lambda x, y: vg(x, y)
        return cnnir.compile_train(model, loss, CNNIR_OPTIMIZERS[mode](model.parameters()),
                                   inputs=inputs, targets=targets)
    try:
        from torch_peer import torch_trainer
    except ImportError:
        return None
    from cnnir.grad import loss_graph

    return torch_trainer(loss_graph(model, loss, inputs, targets),
                         None if mode == "grad" else mode)


def worker(engine: str, name: str, mode: str, runs: int) -> None:
    if name == "digits":
        print(json.dumps({"ms": digits_epoch(engine, runs)}))
        return
    x, y = batch(name)
    n, shape = CONFIGS[name]
    fn = step_fn(engine, build(name).train(), (n, *shape), (n,), mode)
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


class DigitsNet(nn.Module):
    """docs/semantics.md §11: conv8-BN-ReLU-pool → conv16-BN-ReLU-pool → linear (1,946
    parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def digits_epoch(engine: str, runs: int) -> float | None:
    """Median ms of one shuffled epoch over 80 % of the digits, after a warm-up epoch."""
    data = cnnir.data.load_digits()
    x, _, y, _ = cnnir.data.split(data.x, data.y, 0.2, seed=0)
    model = DigitsNet()
    if engine == "cnnir":
        fn = cnnir.compile_train(model, nn.CrossEntropyLoss(),
                                 optim.Adam(model.parameters(), lr=3e-3),
                                 inputs=("N", 1, 8, 8), targets=("N",))
    else:
        fn = step_fn(engine, model, ("N", 1, 8, 8), ("N",), "adam-3e-3")
        if fn is None:
            return None
    times = []
    for epoch in range(runs + 1):
        start = time.perf_counter()
        for xb, yb in cnnir.data.batches(x, y, batch_size=32, shuffle=True, seed=epoch):
            fn(xb, yb)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[1:])


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
    parser.add_argument("--optimizers", default="grad,sgd,adam")
    parser.add_argument("--digits", action="store_true")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        engine, name, mode, runs = args.worker
        worker(engine, name, mode, int(runs))
        return
    peak = sgemm_peak()
    print(f"machine: {os.cpu_count()} cores, {isa()}, numpy sgemm 2048^3 peak {peak:.0f} "
          f"GFLOP/s; each engine alone in its own process, best median of {args.rounds} "
          f"rounds of {args.runs} steps (cross-entropy; grad = forward + backward, sgd/adam "
          f"= the full step with that optimizer)")
    print(f"{'model':<12}{'batch':>6} {'step':<6} {'engine':<12}{'ms/step':>9}{'GFLOP/s':>9}"
          f"{'cnnir/torch':>13}")
    rows = [(name, mode) for name in args.models.split(",") if name
            for mode in args.optimizers.split(",")]
    for name, mode in rows + ([("digits", "adam")] if args.digits else []):
        macs = step_macs(name) if name in CONFIGS else 0
        best = measure(name, mode, args.runs, args.rounds)
        for engine, ms in best.items():
            ratio = (f"{best['cnnir'] / best['torch-eager']:>13.2f}"
                     if engine == "cnnir" and "torch-eager" in best else "")
            if name == "digits":
                print(f"{'digits':<12}{32:>6} {'epoch':<6} {engine:<12}{ms:>9.1f}"
                      f"{'':>9}{ratio}   (ms per epoch, Adam)")
                continue
            print(f"{name:<12}{CONFIGS[name][0]:>6} {mode:<6} {engine:<12}{ms:>9.2f}"
                  f"{2 * macs / (ms / 1e3) / 1e9:>9.1f}{ratio}")


def measure(name: str, mode: str, runs: int, rounds: int) -> dict[str, float]:
    """Best median ms per engine over alternating single-engine processes."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for engine in ENGINES:
            out = subprocess.run([sys.executable, __file__, "--worker", engine, name, mode,
                                  str(runs)], capture_output=True, text=True, check=True)
            ms = json.loads(out.stdout.strip().splitlines()[-1])["ms"]
            if ms is not None:
                best[engine] = min(best.get(engine, float("inf")), ms)
    return best


if __name__ == "__main__":
    main()
