"""Analysis speed: `cnnir analyze` wall time on ResNet-152, and trace+analyze time of
synthetic conv/BN/ReLU chains of 1,000 to 20,000 layers (time per layer should stay flat).

    python benchmarks/bench_analyze.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cnnir
from cnnir import nn

ROOT = Path(__file__).resolve().parents[1]


def cli_wall_times(repeat: int) -> list[float]:
    cmd = [sys.executable, "-m", "cnnir.cli", "analyze",
           str(ROOT / "examples" / "resnet.py") + ":resnet152", "--format", "json"]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd="/")
        times.append(time.perf_counter() - start)
    return times


def chain(layers: int) -> nn.Module:
    """``layers`` layers: repeated conv3x3(16->16) -> BN -> ReLU triples."""
    blocks = []
    for _ in range(layers // 3):
        blocks += [nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    return nn.Sequential(*blocks)


def chain_time(layers: int, repeat: int) -> float:
    model = chain(layers)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        cnnir.analyze(model, (1, 16, 8, 8))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    walls = cli_wall_times(args.repeat)
    print(f"cnnir analyze resnet152 --format json (incl. interpreter start): "
          f"median {statistics.median(walls):.3f} s, min {min(walls):.3f} s over {len(walls)}")
    print(f"{'layers':>8} {'trace+analyze s':>16} {'us/layer':>10}")
    for layers in (1_000, 2_000, 5_000, 10_000, 20_000):
        t = chain_time(layers, max(1, args.repeat // 2))
        print(f"{layers:>8} {t:>16.3f} {1e6 * t / layers:>10.1f}")


if __name__ == "__main__":
    main()
