"""Long ONNX-importer fuzzing run (``tests/fuzz/onnx_mutations.py``): mutated valid models,
each imported in a worker process capped at ``--memory-mb`` of address space and killed
after twice ``--seconds``; every file must be imported or refused with a CnnirError within
the bounds. Prints the counts and each failure (file i is reproducible from --seed and i).

    python benchmarks/fuzz_onnx_import.py --files 20000 [--seed 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))

from onnx_mutations import Result, Worker, campaign  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--memory-mb", type=int, default=400)
    parser.add_argument("--keep", help="keep every mutated file in this folder (by default only "
                                       "the failing ones stay, in a temp folder)")
    args = parser.parse_args()
    counts: collections.Counter = collections.Counter()
    slowest, grown = [0.0], [0]
    start = time.perf_counter()

    def report(result: Result) -> None:
        counts[result.outcome] += 1
        slowest[0] = max(slowest[0], result.seconds)
        grown[0] = max(grown[0], result.grown_kb)
        if result.outcome not in ("imported", "refused"):
            print(f"FAILURE {result.outcome} [{result.mutation}] {result.path}\n"
                  f"{result.detail}\n", flush=True)
        done = sum(counts.values())
        if done % 1000 == 0:
            print(f"{done} files: {dict(counts)}, {time.perf_counter() - start:.0f} s",
                  flush=True)

    folder = Path(args.keep or tempfile.mkdtemp(prefix="cnnir-onnx-fuzz-"))
    with Worker(args.memory_mb, args.seconds) as worker:
        campaign(args.files, args.seed, folder, worker, report, keep=bool(args.keep))
    print(f"failing files (if any) are kept in {folder}")
    failures = sum(v for k, v in counts.items() if k not in ("imported", "refused"))
    print(f"done: {sum(counts.values())} mutated files, {counts['imported']} imported, "
          f"{counts['refused']} refused, {failures} failures (crash, hang, memory or other "
          f"exception), slowest {slowest[0]:.2f} s, peak memory growth "
          f"{grown[0] / 1024:.0f} MB (bounds {args.seconds} s, {args.memory_mb} MB), "
          f"{time.perf_counter() - start:.0f} s")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
