"""Inference latency: cnnir (Numba CPU) vs onnxruntime vs PyTorch eager, same process.

For ResNet-18, MobileNetV2 and SmallCIFAR at batch 1 and 8: every engine runs the same
network and weights (onnxruntime on cnnir's own ONNX export, all graph optimizations,
intra-op threads = cores; PyTorch eager if installed, running the same graph and weights),
calls are interleaved in blocks and the medians of many runs are reported with achieved GFLOP/s
(2·MACs / time), the fraction of this machine's measured sgemm peak, and cnnir / ORT.
Then cold compile (empty kernel cache) and warm start (a second process) for ResNet-18.

    python benchmarks/bench_inference.py [--runs 30] [--models resnet18,mobilenet_v2,small_cifar]
                                         [--batches 1,8] [--no-startup] [--profile]
"""

from __future__ import annotations

import argparse
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import cnnir

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "resnet18": ("resnet.py", (3, 224, 224)),
    "mobilenet_v2": ("mobilenet.py", (3, 224, 224)),
    "small_cifar": ("cifar.py", (3, 32, 32)),
}


def build(name: str):
    file, _ = MODELS[name]
    return runpy.run_path(str(ROOT / "examples" / file))[name]().eval()


def sgemm_peak() -> float:
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(5))
    return 2 * 2048**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ort_session(model, shape, tmp: str):
    import onnxruntime as ort

    path = os.path.join(tmp, "model.onnx")
    cnnir.export_onnx(model, path, shape)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = os.cpu_count() or 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})


def engines(name: str, batch: int, tmp: str) -> tuple[dict, int]:
    model = build(name)
    shape = (batch, *MODELS[name][1])
    rep = cnnir.analyze(model, shape)
    runners = {"cnnir": cnnir.compile(model, shape)}
    try:
        runners["onnxruntime"] = ort_session(model, shape, tmp)
    except Exception as e:  # noqa: BLE001 - a missing peer is reported, not fatal
        print(f"  (onnxruntime unavailable: {e})")
    torch_fn = torch_eager(model, shape)
    if torch_fn is not None:
        runners["torch-eager"] = torch_fn
    return runners, rep.totals.macs


def torch_eager(model, shape):
    """PyTorch eager on the same graph and weights (benchmarks/torch_peer.py), if installed."""
    try:
        from torch_peer import torch_runner
    except ImportError:
        return None
    return torch_runner(cnnir.trace(model, shape))


def measure(runners: dict, x: np.ndarray, runs: int, block: int = 5) -> dict[str, float]:
    """Medians over ``runs`` calls per engine, interleaved in blocks of ``block`` calls.

    Calls are interleaved block-wise rather than one by one: onnxruntime's (and OpenBLAS's)
    idle threads keep spinning for a while after a call and would otherwise tax whichever
    engine runs next. The first call of each block is untimed for the same reason."""
    for fn in runners.values():
        fn(x)
        fn(x)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(max(1, runs // block)):
        for key, fn in runners.items():
            fn(x)
            times[key].extend(_timed(lambda fn=fn: fn(x)) for _ in range(block))
    return {k: statistics.median(v) for k, v in times.items()}


def print_profile(compiled, x: np.ndarray) -> None:
    """Milliseconds per algorithm (summed over the nodes that run it) in cnnir's plan."""
    profile = compiled.program((x.shape,)).profile(repeat=10)
    print("    cnnir profile: " + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in profile.items()
                                           if v >= 5e-5))


def startup_times() -> tuple[float, float]:
    """Cold compile (empty numba cache) and warm start (second process) of ResNet-18."""
    code = ("import time; t = time.perf_counter(); import numpy as np, runpy, cnnir; "
            f"m = runpy.run_path({str(ROOT / 'examples' / 'resnet.py')!r})['resnet18']().eval(); "
            "run = cnnir.compile(m, (1, 3, 224, 224)); run(np.zeros((1, 3, 224, 224), "
            "np.float32)); print(time.perf_counter() - t)")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        cold = float(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                    capture_output=True, text=True).stdout)
        warm = float(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                    capture_output=True, text=True).stdout)
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--no-startup", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="also print where cnnir's time goes, per algorithm")
    args = parser.parse_args()
    peak = sgemm_peak()
    print(f"machine: {os.cpu_count()} cores, numpy sgemm 2048^3 peak {peak:.0f} GFLOP/s")
    header = f"{'model':<14}{'batch':>5}  {'engine':<12}{'ms':>9}{'GFLOP/s':>9}{'%peak':>7}"
    print(header + f"{'cnnir/ORT':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                runners, macs = engines(name, batch, tmp)
                x = np.random.default_rng(0).standard_normal(
                    (batch, *MODELS[name][1])).astype(np.float32)
                med = measure(runners, x, args.runs)
                for key, t in med.items():
                    gflops = 2 * macs / t / 1e9
                    ratio = (f"{med['cnnir'] / med['onnxruntime']:>11.2f}"
                             if key == "cnnir" and "onnxruntime" in med else "")
                    print(f"{name:<14}{batch:>5}  {key:<12}{t * 1e3:>9.2f}{gflops:>9.1f}"
                          f"{100 * gflops / peak:>6.0f}%{ratio}")
                if args.profile:
                    print_profile(runners["cnnir"], x)
    if not args.no_startup:
        cold, warm = startup_times()
        print(f"resnet18 start (import + compile + first inference): cold {cold:.1f} s "
              f"(empty kernel cache), warm {warm:.2f} s (second process)")


if __name__ == "__main__":
    main()
