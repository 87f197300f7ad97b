"""GPU inference latency: cnnir's CUDA backend against PyTorch CUDA eager (float32, TF32 off,
``cudnn.benchmark`` on), on the same graph and weights.

For ResNet-18 and MobileNetV2 at batch 1, 8 and 64: the median of ``--runs`` calls timed with
CUDA events (inputs already on the device, outputs left there), the achieved TFLOP/s on the
model's MACs (2 FLOPs per MAC) and cnnir / PyTorch. PyTorch runs the graph cnnir traced, op
by op (``torch_peer.TORCH_OPS``), so no modelling difference enters. Needs a GPU with
numba-cuda, CuPy-free: device arrays are numba's; PyTorch is optional (its rows are skipped
when it is missing or has no CUDA).

    python benchmarks/bench_cuda.py [--runs 50] [--models resnet18,mobilenet_v2]
                                    [--batches 1,8,64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

import cnnir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import build  # noqa: E402


def time_calls(call, runs: int, cuda) -> float:
    """Median ms of ``call()`` between two CUDA events, after warm-up calls."""
    for _ in range(3):
        call()
    cuda.synchronize()
    times = []
    for _ in range(runs):
        start, stop = cuda.event(), cuda.event()
        start.record()
        call()
        stop.record()
        stop.synchronize()
        times.append(cuda.event_elapsed_time(start, stop))
    return statistics.median(times)


def cnnir_ms(graph: cnnir.Graph, x: np.ndarray, runs: int) -> float:
    from numba import cuda

    run = cnnir.compile(graph, backend="cuda")
    x_dev = cuda.to_device(x)
    return time_calls(lambda: run(x_dev), runs, cuda)


def torch_ms(graph: cnnir.Graph, x: np.ndarray, runs: int) -> float | None:
    try:
        import torch
        from torch_peer import TORCH_OPS
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    from numba import cuda

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    consts = {id(v): torch.from_numpy(np.ascontiguousarray(v.const.array)).cuda()
              for v in graph.constants.values()}
    nodes = [(TORCH_OPS[n.op], n) for n in graph.nodes]
    x_dev = torch.from_numpy(x).cuda()

    def run():
        env = dict(consts)
        env[id(graph.inputs[0])] = x_dev
        with torch.inference_mode():
            for fn, node in nodes:
                env[id(node.output)] = fn(node.attrs, *[env[id(v)] if v is not None else None
                                                       for v in node.inputs])
        return env[id(graph.outputs[0])]

    return time_calls(run, runs, cuda)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--batches", default="1,8,64")
    args = parser.parse_args()
    from numba import cuda

    print(f"device: {cuda.get_current_device().name.decode()}; median of {args.runs} calls "
          f"(CUDA events), inputs and outputs on the device, float32, TF32 off")
    print(f"{'model':<14}{'batch':>6}  {'engine':<12}{'ms':>9}{'TFLOP/s':>9}{'cnnir/torch':>13}")
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            model = build(name).eval()
            graph = cnnir.trace(model, (batch, 3, 224, 224))
            macs = cnnir.analyze(graph).totals.macs
            x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(
                np.float32)
            rows = {"cnnir-cuda": cnnir_ms(graph, x, args.runs),
                    "torch-cuda": torch_ms(graph, x, args.runs)}
            for engine, ms in rows.items():
                if ms is None:
                    continue
                ratio = (f"{ms / rows['torch-cuda']:>13.2f}"
                         if engine == "cnnir-cuda" and rows["torch-cuda"] else "")
                print(f"{name:<14}{batch:>6}  {engine:<12}{ms:>9.3f}"
                      f"{2 * macs / (ms / 1e3) / 1e12:>9.2f}{ratio}")


if __name__ == "__main__":
    main()
