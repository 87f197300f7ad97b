"""Inference latency: cnnir (Numba CPU) vs onnxruntime vs PyTorch eager, each engine alone in
its own process, as deployed.

For ResNet-18, MobileNetV2 and SmallCIFAR at batch 1 and 8, every engine runs the same
network and weights (onnxruntime on cnnir's own ONNX export with all graph optimizations and
intra-op threads = cores; PyTorch eager if installed, on the same graph and weights). Each
measurement is a fresh process that builds its engine, warms it up and reports the median of
``--runs`` calls; processes alternate between engines over ``--rounds`` rounds and the best
median per engine is kept (two engines in one process fight over the cores with their
spinning thread pools, so that figure, ``--interleaved``, is a robustness number, not the
speed). Printed: the ISA (LLVM's CPU name and vector width), the machine's numpy sgemm peak,
GFLOP/s (2·MACs / time), the fraction of the peak, and cnnir / ORT. Then cold compile (empty
kernel cache) and warm start (a second process) for ResNet-18.

    python benchmarks/bench_inference.py [--runs 30] [--rounds 2] [--batches 1,8]
        [--models resnet18,mobilenet_v2,small_cifar] [--no-startup] [--interleaved]
        [--profile]
"""

from __future__ import annotations

import argparse
import json
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
ENGINES = ("cnnir", "onnxruntime", "torch-eager")


def build(name: str):
    file, _ = MODELS[name]
    return runpy.run_path(str(ROOT / "examples" / file))[name]().eval()


def sgemm_peak() -> float:
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(5))
    return 2 * 2048**3 / best / 1e9


def isa() -> str:
    """LLVM's name for this CPU and the widest float vector it offers."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    width = 512 if features.get("avx512f") else 256 if features.get("avx2") else 128
    return f"{llvm.get_host_cpu_name()}, {width}-bit vectors"


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


def torch_eager(model, shape):
    """PyTorch eager on the same graph and weights (benchmarks/torch_peer.py), if installed."""
    try:
        from torch_peer import torch_runner
    except ImportError:
        return None
    return torch_runner(cnnir.trace(model, shape))


def runner(engine: str, name: str, batch: int, tmp: str):
    """The engine's callable on this model and batch, or None when it is not installed."""
    model = build(name)
    shape = (batch, *MODELS[name][1])
    if engine == "cnnir":
        return cnnir.compile(model, shape)
    if engine == "onnxruntime":
        try:
            return ort_session(model, shape, tmp)
        except ImportError:
            return None
    return torch_eager(model, shape)


def median_ms(fn, x: np.ndarray, runs: int) -> float:
    for _ in range(3):
        fn(x)
    return 1e3 * statistics.median(_timed(lambda: fn(x)) for _ in range(runs))


def worker(engine: str, name: str, batch: int, runs: int, profile: bool) -> None:
    """One measurement, in this process alone: prints a JSON line."""
    x = np.random.default_rng(0).standard_normal((batch, *MODELS[name][1])).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        fn = runner(engine, name, batch, tmp)
        result = {"ms": None if fn is None else median_ms(fn, x, runs)}
        if profile and engine == "cnnir":
            times = fn.program((x.shape,)).profile([x], repeat=10)
            result["profile"] = {k: 1e3 * v for k, v in times.items() if v >= 5e-5}
    print(json.dumps(result))


def measure_apart(name: str, batch: int, runs: int, rounds: int, profile: bool) -> dict:
    """Best median per engine over ``rounds`` rounds of one process per engine."""
    best: dict[str, float] = {}
    profiles: dict[str, float] = {}
    for _ in range(rounds):
        for engine in ENGINES:
            out = subprocess.run([sys.executable, __file__, "--worker", engine, name,
                                  str(batch), str(runs), str(int(profile))],
                                 capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if result["ms"] is not None:
                best[engine] = min(best.get(engine, float("inf")), result["ms"])
                profiles = result.get("profile", profiles)
    return {"ms": best, "profile": profiles}


def measure_interleaved(name: str, batch: int, runs: int) -> dict[str, float]:
    """cnnir and ORT in one process, alternating call by call: the robustness figure."""
    x = np.random.default_rng(0).standard_normal((batch, *MODELS[name][1])).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        fns = {e: runner(e, name, batch, tmp) for e in ENGINES[:2]}
        fns = {e: f for e, f in fns.items() if f is not None}
        for fn in fns.values():
            fn(x)
        times: dict[str, list[float]] = {e: [] for e in fns}
        for _ in range(runs):
            for engine, fn in fns.items():
                times[engine].append(_timed(lambda fn=fn: fn(x)))
    return {e: 1e3 * statistics.median(t) for e, t in times.items()}


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


def report_row(name: str, batch: int, engine: str, ms: float, macs: int, peak: float,
               ratio: str = "") -> str:
    gflops = 2 * macs / (ms / 1e3) / 1e9
    return (f"{name:<14}{batch:>5}  {engine:<12}{ms:>9.2f}{gflops:>9.1f}"
            f"{100 * gflops / peak:>6.0f}%{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--no-startup", action="store_true")
    parser.add_argument("--interleaved", action="store_true",
                        help="also time cnnir and ORT alternating in one process")
    parser.add_argument("--profile", action="store_true",
                        help="also print where cnnir's time goes, per algorithm")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        engine, name, batch, runs, profile = args.worker
        worker(engine, name, int(batch), int(runs), profile == "1")
        return
    peak = sgemm_peak()
    print(f"machine: {os.cpu_count()} cores, {isa()}, numpy sgemm 2048^3 peak {peak:.0f} "
          f"GFLOP/s; each engine alone in its own process, best median of {args.rounds} "
          f"rounds of {args.runs} calls")
    print(f"{'model':<14}{'batch':>5}  {'engine':<12}{'ms':>9}{'GFLOP/s':>9}{'%peak':>7}"
          f"{'cnnir/ORT':>11}")
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            macs = cnnir.analyze(build(name), (batch, *MODELS[name][1])).totals.macs
            result = measure_apart(name, batch, args.runs, args.rounds, args.profile)
            med = result["ms"]
            for engine, ms in med.items():
                ratio = (f"{med['cnnir'] / med['onnxruntime']:>11.2f}"
                         if engine == "cnnir" and "onnxruntime" in med else "")
                print(report_row(name, batch, engine, ms, macs, peak, ratio))
            if result["profile"]:
                print("    cnnir profile (ms): " + ", ".join(
                    f"{k} {v:.2f}" for k, v in result["profile"].items()))
            if args.interleaved:
                both = measure_interleaved(name, batch, args.runs)
                print("    interleaved in one process (robustness, not speed): " + ", ".join(
                    f"{e} {ms:.2f} ms" for e, ms in both.items()))
    if not args.no_startup:
        cold, warm = startup_times()
        print(f"resnet18 start (import + compile + first inference): cold {cold:.1f} s "
              f"(empty kernel cache), warm {warm:.2f} s (second process)")


if __name__ == "__main__":
    main()
