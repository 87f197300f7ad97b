"""Inference latency: cnnir (Numba CPU) vs onnxruntime vs PyTorch eager, each engine alone in
its own process, as deployed, on each of cnnir's ISA paths.

For ResNet-18, MobileNetV2 and SmallCIFAR at batch 1 and 8, every engine runs the same
network and weights (onnxruntime on cnnir's own ONNX export with all graph optimizations and
intra-op threads = cores; PyTorch eager if installed, on the same graph and weights). Each
measurement is a fresh process that builds its engine, warms it up and reports the median of
``--runs`` calls; processes alternate between engines over ``--rounds`` rounds and the best
median per engine is kept (two engines in one process fight over the cores with their
spinning thread pools, so that figure, ``--interleaved``, is a robustness number, not the
speed). Printed: the ISA (LLVM's CPU name and vector width), the machine's numpy sgemm peak,
GFLOP/s (2·MACs / time), the fraction of the peak, and cnnir / ORT: of the best medians, and
within each round, whose two processes ran back to back (a shared host's slow phases last
minutes: one can span every round of one engine and none of the other's, while a round's
ratio shares its phase; the order alternates between rounds). ``--isa auto,avx2`` also
runs cnnir on the forced AVX2 path (``CNNIR_ISA=avx2``: 8-lane kernels, code for an AVX2 CPU;
onnxruntime keeps its AVX-512 kernels, so that row's ratio is not like for like).

The compile tunes each layer's algorithm by timing and remembers the choice on disk; a choice
made while the machine was disturbed (another job, a slow phase of a shared host) stays.
``--retune`` forgets the remembered choices of each ISA path first, so that the figures come
from choices made in this run's first cnnir process.

``--interleaved`` adds, per row, cnnir's latency in one process with onnxruntime called
between its calls (default ORT options, whose workers spin for about 50 ms after each call;
with ``session.force_spinning_stop = 1``, which stops them when the call returns; with
``session.intra_op.allow_spinning = 0``, which never lets them spin) and with a numpy BLAS
call (512² sgemm) between its calls, each against cnnir's solo latency in that same process,
and ORT's own solo latency there with each of those options. Then the fixed cost of a call
(a compiled Identity), and cold compile (empty kernel cache) and warm start (a second
process) for ResNet-18, ``--startup-runs`` times each (2 by default: one cold compile on a
shared 2-core host measured anywhere from 13.5 to 21.0 s).

    python benchmarks/bench_inference.py [--runs 30] [--rounds 2] [--batches 1,8]
        [--models resnet18,mobilenet_v2,small_cifar] [--isa auto,avx2] [--no-startup]
        [--startup-runs 2] [--interleaved] [--profile] [--retune]
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
    """LLVM's name for this CPU, the widest float vector it offers, and cnnir's path on it."""
    import llvmlite.binding as llvm

    from cnnir.backends.numba_cpu.kernels import simd
    from cnnir.backends.numba_cpu.kernels.host import HOST

    features = llvm.get_host_cpu_features()
    width = 512 if features.get("avx512f") else 256 if features.get("avx2") else 128
    return (f"{llvm.get_host_cpu_name()}, {width}-bit vectors; cnnir path {HOST.isa} "
            f"({simd.LANES} lanes, {simd.MR}x{simd.NR} micro-tile, L1 {HOST.l1_bytes >> 10} "
            f"KiB, L2 {HOST.l2_bytes >> 10} KiB, L3 {HOST.l3_bytes >> 20} MiB)")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ORT's thread-pool options for running beside another engine: its intra-op workers spin
# between the parallel sections of a call and, by default, for about 50 ms after it
ORT_SPIN = {
    "default": {},
    "stop": {"session.force_spinning_stop": "1"},  # stop spinning when Run() returns
    "off": {"session.intra_op.allow_spinning": "0"},  # never spin
}


def ort_session(model, shape, tmp: str, spin: str = "default", profiled: bool = False):
    """ORT's callable on cnnir's ONNX export of ``model``, its workers spinning as ``spin``
    says (``ORT_SPIN``; with ``profiled``, the session too, profiling every run)."""
    import onnxruntime as ort

    path = os.path.join(tmp, "model.onnx")
    cnnir.export_onnx(model, path, shape)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = os.cpu_count() or 1
    for key, value in ORT_SPIN[spin].items():
        opts.add_session_config_entry(key, value)
    if profiled:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort-profile")
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    run = lambda x: sess.run(None, {name: x})  # noqa: E731
    return (run, sess) if profiled else run


def family(op: str, shapes: list) -> str:
    """A layer's kind, to compare where two engines spend their time: convolutions by kernel,
    stride and depthwise-ness (from their input, weight and output shapes), other ops by
    name."""
    if op.lower().startswith("conv") and len(shapes) >= 3 and len(shapes[1]) == 4:
        x, w, y = shapes[0], shapes[1], shapes[-1]
        depthwise = "depthwise " if w[1] == 1 and x[1] > 1 else ""
        return f"{depthwise}conv{w[2]}x{w[3]}/{max(1, round(x[2] / y[2]))}"
    return op


def cnnir_profile(run, x: np.ndarray, repeat: int = 10) -> dict[str, float]:
    """Milliseconds per run in each layer kind (``family``), with the algorithms cnnir chose
    for it."""
    from cnnir.backends.numba_cpu.program import elapsed

    program = run.program((x.shape,))
    totals: dict[str, float] = {}
    chosen: dict[str, set] = {}
    for _ in range(repeat):
        program.copy_in([x])
        for node, step in program.schedule:
            kind = family(node.op.name, [tuple(v.type.shape) for v in node.inputs if v]
                          + [tuple(node.outputs[0].type.shape)])
            totals[kind] = totals.get(kind, 0.0) + 1e3 * elapsed(step) / repeat
            if node.name in program.builder.choices:
                chosen.setdefault(kind, set()).add(program.builder.choices[node.name])
    named = {f"{k} ({', '.join(sorted(chosen[k]))})" if k in chosen else k: v
             for k, v in totals.items()}
    return dict(sorted(named.items(), key=lambda kv: -kv[1]))


def ort_profile(model, x: np.ndarray, tmp: str, repeat: int = 10) -> dict[str, float]:
    """Milliseconds per run in each layer kind (``family``) as ORT runs it, from its own
    profiler (after its graph optimizations: layout-changing nodes appear under their own
    names); the last ``repeat`` of the runs count."""
    run, sess = ort_session(model, x.shape, tmp, profiled=True)
    for _ in range(3 + repeat):
        run(x)
    with open(sess.end_profiling()) as f:
        events = [e for e in json.load(f) if e.get("cat") == "Node"
                  and e.get("name", "").endswith("_kernel_time")]
    by_node: dict[str, list[float]] = {}
    op_of: dict[str, str] = {}
    for e in events:
        by_node.setdefault(e["name"], []).append(e["dur"])
        shapes = [next(iter(d.values())) for d in e["args"]["input_type_shape"]
                  + e["args"]["output_type_shape"]]
        op_of[e["name"]] = family(e["args"]["op_name"], shapes)
    totals: dict[str, float] = {}
    for node, durations in by_node.items():
        op = op_of[node]
        totals[op] = totals.get(op, 0.0) + 1e-3 * sum(durations[-repeat:]) / repeat
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


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
        if profile and engine != "torch-eager" and fn is not None:
            times = (cnnir_profile(fn, x) if engine == "cnnir"
                     else ort_profile(build(name), x, tmp))
            result["profile"] = {k: v for k, v in times.items() if v >= 0.05}
    print(json.dumps(result))


def run_worker(args: list[str], isa: str = "auto") -> dict:
    env = {**os.environ, "CNNIR_ISA": isa}
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def forget_tuning(isa: str) -> None:
    """Delete the tuner's remembered choices of this ISA path (its own process: the kernel
    cache folder depends on the host profile, read at import)."""
    code = ("from cnnir.backends.numba_cpu import tuning, warm; "
            "folder = warm.kernel_cache_folder(); "
            "folder and (folder / tuning.FILE).unlink(missing_ok=True)")
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "CNNIR_ISA": isa},
                   check=True)


def measure_apart(name: str, batch: int, runs: int, rounds: int, profile: bool,
                  isas: list[str]) -> dict:
    """Best median per engine (cnnir once per ISA path) over ``rounds`` rounds of one process
    per engine, and each round's medians (the engines' order reversed every other round, so
    that neither always runs first)."""
    best: dict[str, float] = {}
    each_round: list[dict[str, float]] = []
    profiles: dict[str, dict[str, float]] = {}
    runs_of = [(e, "auto") for e in ENGINES if e != "cnnir"]
    runs_of = [("cnnir", isa) for isa in isas] + runs_of
    for r in range(rounds):
        each_round.append({})
        for engine, isa in runs_of if r % 2 == 0 else runs_of[::-1]:
            result = run_worker(["--worker", engine, name, str(batch), str(runs),
                                 str(int(profile))], isa)
            label = engine if isa == "auto" else f"{engine}[{isa}]"
            if result["ms"] is not None:
                best[label] = min(best.get(label, float("inf")), result["ms"])
                each_round[-1][label] = result["ms"]
                if isa == "auto" and "profile" in result:
                    profiles[engine] = result["profile"]
    return {"ms": best, "rounds": each_round, "profile": profiles}


def beside(target, others: dict, x: np.ndarray, runs: int) -> dict[str, float]:
    """``target``'s median latency (ms) with each of ``others`` called between its calls, the
    better of two rounds, the second in reverse order (solo measured once, first, read 1.4x
    its later self: ResNet-18 at batch 8 in a slow phase)."""
    result: dict[str, float] = {}
    for order in (list(others), list(others)[::-1]):
        for key in order:
            other = others[key]
            other(x)
            for _ in range(3):
                target(x)
            times = []
            for _ in range(runs):
                other(x)
                times.append(_timed(lambda: target(x)))
            result[key] = min(result.get(key, float("inf")), 1e3 * statistics.median(times))
    return result


def interleaved_worker(name: str, batch: int, runs: int) -> None:
    """In this one process: cnnir's median latency alone, then with another engine called
    between its calls (ORT with each ``ORT_SPIN`` option, a numpy sgemm); ORT's own (default
    options) alone, beside a second ORT session and beside cnnir; and ORT's solo latency with
    each option: prints a JSON line (ms)."""
    x = np.random.default_rng(0).standard_normal((batch, *MODELS[name][1])).astype(np.float32)
    a = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        run = runner("cnnir", name, batch, tmp)
        model = build(name)
        shape = (batch, *MODELS[name][1])
        orts = {spin: ort_session(model, shape, tmp, spin) for spin in ORT_SPIN}
        second_ort = ort_session(model, shape, tmp)
        solo = {"solo": lambda x: None}
        result = {
            "cnnir": beside(run, {**solo, **{("ort" if spin == "default" else
                                              f"ort-{spin}-spin"): ort
                                             for spin, ort in orts.items()},
                                  "blas": lambda x: a @ a}, x, runs),
            "ort-beside": beside(orts["default"], {**solo, "a second ort session": second_ort,
                                                   "cnnir": run}, x, runs),
            "ort": {spin: median_ms(ort, x, runs) for spin, ort in orts.items()},
        }
    print(json.dumps(result))


def call_overhead_us() -> float:
    """The fixed cost of a call: a compiled Identity on a [1, 4] array (median, µs)."""
    from cnnir import nn

    run = cnnir.compile(nn.Identity(), (1, 4))
    x = np.zeros((1, 4), np.float32)
    for _ in range(100):
        run(x)
    return 1e6 * statistics.median(_timed(lambda: run(x)) for _ in range(2000))


def startup_times() -> tuple[float, float]:
    """Cold compile (empty numba cache, with the warm-up process cnnir starts then) and warm
    start (a second process, once the warm-up has finished) of ResNet-18, with Python's
    bytecode cache on."""
    code = ("import time; t = time.perf_counter(); import numpy as np, runpy, cnnir; "
            f"m = runpy.run_path({str(ROOT / 'examples' / 'resnet.py')!r})['resnet18']().eval(); "
            "run = cnnir.compile(m, (1, 3, 224, 224)); run(np.zeros((1, 3, 224, 224), "
            "np.float32)); print(time.perf_counter() - t)")
    with tempfile.TemporaryDirectory() as cache:
        # bytecode cached as in a pip install (which compiles it): a host that sets
        # PYTHONDONTWRITEBYTECODE recompiles every module each start, 0.25 s of ResNet-18's
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["NUMBA_CACHE_DIR"] = cache
        cold = float(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                    capture_output=True, text=True).stdout)
        wait_for_warm_up(Path(cache))
        warm = float(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                    capture_output=True, text=True).stdout)
    return cold, warm


def wait_for_warm_up(cache: Path, limit_s: float = 300.0) -> None:
    """Until the warm-up process a cold compile started has finished (or ``limit_s``): it
    runs at the lowest priority, but it would still share the cores with what is timed."""
    from cnnir.backends.numba_cpu import warm

    deadline = time.perf_counter() + limit_s
    while (os.environ.get(warm.WARM_VARIABLE, "1") != "0"
           and not any(cache.rglob(warm.DONE)) and time.perf_counter() < deadline):
        time.sleep(0.5)


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
    parser.add_argument("--isa", default="auto",
                        help="cnnir's ISA paths to time (CNNIR_ISA values), e.g. auto,avx2")
    parser.add_argument("--no-startup", action="store_true")
    parser.add_argument("--startup-runs", type=int, default=2,
                        help="cold and warm starts to time, each cold one on an empty cache "
                        "(one start varies by a third with the phase of a shared host)")
    parser.add_argument("--interleaved", action="store_true",
                        help="also time cnnir and ORT alternating in one process")
    parser.add_argument("--profile", action="store_true",
                        help="also print where the time goes: cnnir's per algorithm, "
                        "onnxruntime's per op type (its profiler)")
    parser.add_argument("--retune", action="store_true",
                        help="forget the tuner's remembered algorithm choices first")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--interleaved-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        engine, name, batch, runs, profile = args.worker
        worker(engine, name, int(batch), int(runs), profile == "1")
        return
    if args.interleaved_worker:
        name, batch, runs = args.interleaved_worker
        interleaved_worker(name, int(batch), int(runs))
        return
    if args.retune:
        for isa_path in args.isa.split(","):
            forget_tuning(isa_path)
    peak = sgemm_peak()
    print(f"machine: {os.cpu_count()} cores, {isa()}, numpy sgemm 2048^3 peak {peak:.0f} "
          f"GFLOP/s; each engine alone in its own process, best median of {args.rounds} "
          f"rounds of {args.runs} calls")
    print(f"{'model':<14}{'batch':>5}  {'engine':<12}{'ms':>9}{'GFLOP/s':>9}{'%peak':>7}"
          f"{'cnnir/ORT':>11}")
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            macs = cnnir.analyze(build(name), (batch, *MODELS[name][1])).totals.macs
            result = measure_apart(name, batch, args.runs, args.rounds, args.profile,
                                   args.isa.split(","))
            med = result["ms"]
            for engine, ms in med.items():
                ratio = (f"{ms / med['onnxruntime']:>11.2f}"
                         if engine.startswith("cnnir") and "onnxruntime" in med else "")
                print(report_row(name, batch, engine, ms, macs, peak, ratio))
            ratios = [r["cnnir"] / r["onnxruntime"] for r in result["rounds"]
                      if "cnnir" in r and "onnxruntime" in r]
            if ratios:
                print("    cnnir/ORT within each round: " + ", ".join(f"{x:.2f}" for x in ratios))
            for engine, profile in result["profile"].items():
                print(f"    {engine} profile (ms per run): " + ", ".join(
                    f"{k} {v:.2f}" for k, v in profile.items()))
            if args.interleaved:
                both = run_worker(["--interleaved-worker", name, str(batch), str(args.runs)])
                solo = both["cnnir"].pop("solo")
                print(f"    cnnir in one process, solo {solo:.2f} ms; with a call between "
                      "its calls to " + ", ".join(f"{other} {ms:.2f} ms ({ms / solo:.2f}x)"
                                                   for other, ms in both["cnnir"].items()))
                print("    ORT solo in that process, by spin option: " + ", ".join(
                    f"{spin} {ms:.2f} ms" for spin, ms in both["ort"].items()))
                alone = both["ort-beside"].pop("solo")
                print(f"    ORT (default options) there, solo {alone:.2f} ms; with a call "
                      "between its calls to " + ", ".join(
                          f"{other} {ms:.2f} ms ({ms / alone:.2f}x)"
                          for other, ms in both["ort-beside"].items()))
    print(f"fixed cost of a call (compiled Identity on [1, 4]): {call_overhead_us():.1f} us")
    if not args.no_startup:
        starts = [startup_times() for _ in range(args.startup_runs)]
        print("resnet18 start (import + compile + first inference): cold "
              + ", ".join(f"{cold:.1f}" for cold, _ in starts) + " s (empty kernel cache), "
              "warm " + ", ".join(f"{warm:.2f}" for _, warm in starts)
              + " s (second process)")


if __name__ == "__main__":
    main()
