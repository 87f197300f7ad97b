"""Pass speed: every semantics-preserving pass (cnnir.passes.manager.semantics_preserving(),
``-O`` plus linear-to-conv1x1) on ResNet-152 at 1x3x224x224, as ``cnnir.api.run_passes`` runs it:
copy of the graph, each pass, verification after each one. Target: median < 1 s.

Also times the ``-O`` pipeline, each pass alone, and a run that reads every folded weight
(BN folding is lazy: the pass derives nothing until a backend or an exporter reads it).

    python benchmarks/bench_passes.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import runpy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cnnir
from cnnir.api import run_passes
from cnnir.passes.manager import DEFAULT_INFERENCE_PIPELINE, semantics_preserving

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 1.0


def median_time(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def materialize(graph: cnnir.Graph) -> None:
    for value in graph.constants.values():
        value.const.array  # noqa: B018  (reading makes the lazy weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    model = runpy.run_path(str(ROOT / "examples" / "resnet.py"))["resnet152"]()
    graph = cnnir.trace(model.eval(), (1, 3, 224, 224))
    materialize(graph)  # the model's own weights, once; passes never draw them
    names = semantics_preserving()
    run_passes(graph, names)  # warm-up: imports the pass modules and the reference kernels
    print(f"ResNet-152, {len(graph.nodes)} nodes; pipeline: {', '.join(names)}")
    med, best = median_time(lambda: run_passes(graph, names), args.repeat)
    verdict = "meets" if med < TARGET_S else "MISSES"
    print(f"all semantics-preserving passes: median {med:.3f} s, min {best:.3f} s over "
          f"{args.repeat} runs ({verdict} the {TARGET_S:.0f} s target)")
    med, _ = median_time(lambda: run_passes(graph, DEFAULT_INFERENCE_PIPELINE), args.repeat)
    print(f"-O pipeline: median {med:.3f} s")
    med, _ = median_time(lambda: run_passes(graph, names, verify_each=False), args.repeat)
    print(f"same without verify_each: median {med:.3f} s")
    med, _ = median_time(lambda: materialize(run_passes(graph, names).graph), args.repeat)
    print(f"same, then reading every folded weight: median {med:.3f} s")
    print(f"{'pass':<34}{'median s':>10}")
    for name in names:
        med, _ = median_time(lambda n=name: run_passes(graph, [n]), args.repeat)
        print(f"{name:<34}{med:>10.3f}")


if __name__ == "__main__":
    main()
