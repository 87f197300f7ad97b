"""Compiling kernels in a second process while the first compile runs.

With an empty disk cache, a network's first compile spends most of its time in Numba,
compiling the kernels its layers need one after another on one core (about 20 s for
ResNet-18). Importing the backend with a cold cache therefore starts
``warm.main()`` in a new Python process (``start_if_cold``): at the lowest CPU priority it
compiles the kernels of typical CNN layers into the same disk cache, starting with the max
pool after a stem, F(4×4)'s Winograd transforms and then a network's last layers (``_layers``
says why in that order), while the compile that started it goes
from the stem; each loads from the cache what the other has already finished (Numba looks in
the cache before compiling and writes its entries atomically). At the lowest priority it
takes only what the first process leaves idle; the tuner's timings of microsecond kernels
still feel it a little (SmallCIFAR tuned 15 times with the tuning cache off chose differently
4 times beside a lowest-priority busy loop, never on an idle core), and a choice it spoils
stays remembered. On a 2-core Zen 4, in alternating runs, ResNet-18's first compile measured
11.9–14.2 s with it and 19.7–23.0 s without it (the spread is the host's: Numba's compile
speed varies that much from minute to minute). The two processes' needs overlap; ``jit``'s
per-kernel lock makes the second to want a kernel wait for the first instead of compiling it
twice. Where they meet decides the time. When the list went from F(4×4) on to F(2×2), the
first process, done with the stem and the max pool, waited 2.6–3.1 s for F(2×2)'s two
transforms (its one core idle meanwhile); now the first process compiles F(2×2) itself while
the child compiles the head and the pixel-gemm that the first process wants after it, and
nobody waits: ResNet-18's cold compile 13.0–14.7 s before, 11.9–13.2 s after (alternating
runs). Starting from the head it waited 0.2 s and 7.9 s, and starting with the GEMM block, as
the list did before Winograd's variants shared their kernels, 10.9 s: the child was
compiling what the first process wanted next.

Handing the child the network being compiled (lowered from its last node, or from its
first with the child skipping kernels the first process holds) compiles exactly that
network's kernels, yet measured no faster on ResNet-18 or MobileNetV2 (three alternating
pairs on ResNet-18: 14.5–21.3 s against 13.5–18.7 s with this list, which already holds
what those networks need first).

``CNNIR_WARM=0`` turns it off. It starts once per cache folder (a marker file), never when
Numba's JIT is disabled or the cache folder cannot be written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WARM_VARIABLE = "CNNIR_WARM"
TUNING_VARIABLE = "CNNIR_TUNING_CACHE"  # tuning.VARIABLE (tuning imports this module)
MARKER = "warm-started"
DONE = "warm-done"  # written when the warm-up has compiled every layer (benchmarks wait for it)
MARKER_MAX_AGE_S = 600  # an older marker is from a warm-up that died: start another


def kernel_cache_folder() -> Path | None:
    """The folder of this host profile's kernel cache (``jit``'s salted locator)."""
    from cnnir.backends.numba_cpu.kernels import gemm, jit

    path = jit.cache_folder(gemm.gemm_block.dispatcher)
    return None if path is None else Path(path)


def _claim(folder: Path) -> bool:
    """Create the marker, unless a recent one says a warm-up already ran or runs."""
    marker = folder / MARKER
    try:
        if time.time() - marker.stat().st_mtime < MARKER_MAX_AGE_S:
            return False
        marker.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except OSError:
        return False
    return True


_started: list[subprocess.Popen] = []


def start_if_cold() -> None:
    """Start the warm-up process if this profile's kernel cache holds no GEMM kernel yet."""
    if os.environ.get(WARM_VARIABLE, "1") == "0" or _started:
        return
    folder = kernel_cache_folder()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    if any(folder.glob("gemm.gemm_block-*.nbi")) or not _claim(folder):
        return
    # Same session: the kernel's automatic group scheduling gives each session an equal
    # share of the CPU whatever its nice value, so a new session would not be low priority.
    # The child imports cnnir from where this process did (its sys.path, not its working
    # directory's packages): the cache folder is named after the kernels' source files.
    # Its timings, taken at the lowest priority beside a compile, are not worth remembering.
    env = {**os.environ, WARM_VARIABLE: "0", TUNING_VARIABLE: "0",
           "CNNIR_WARM_PATH": json.dumps(sys.path)}
    code = ("import json, os, sys; sys.path[:] = json.loads(os.environ['CNNIR_WARM_PATH']); "
            "from cnnir.backends.numba_cpu import warm; warm.main()")
    _started.append(subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def _layers() -> list[tuple[object, tuple[int, ...], bool | str]]:
    """Typical layers, in the order they are compiled: (module, input shape, ``tune``)."""
    from cnnir import nn

    class Block(nn.Module):
        """conv-BN-ReLU, conv-BN, + shortcut (a 1x1 strided projection when it changes
        shape), ReLU: ResNet's basic block."""

        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.project = stride != 1 or cin != cout
            if self.project:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))
            self.relu = nn.ReLU()

        def forward(self, x):
            y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(y + (self.down(x) if self.project else x))

    def inverted(cin: int, cout: int, stride: int, expand: int) -> nn.Module:
        mid = cin * expand
        return nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU6(), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000))
    stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1))
    # The first process compiles a network from its stem (the GEMM block, im2col and the
    # direct kernel) and F(2×2)'s rows of tiles, while the warm-up starts with the max pool
    # the first process wants right after its stem, then F(4×4)'s chunks of tiles, then what
    # it needs last: the head (and, on 16 lanes, the pixel-gemm of the narrow strided
    # layers); then the layers of other networks. Where the two meet, one waits for the
    # other's kernel (``jit``'s lock). On an AVX2 Zen 3 the max pool ahead of F(4×4) took
    # ResNet-18's first compile from 11.6-12.8 s to 11.3-11.8 s (the first process no
    # longer compiles it between its stem and F(2×2)).
    from cnnir.backends.numba_cpu.kernels.simd import LANES
    from cnnir.backends.numba_cpu.lower_conv import PIXEL_GEMM_MIN_LANES

    layers = [
        (nn.MaxPool2d(3, 2, 1), (1, 64, 112, 112), True),
        (Block(64, 64, 1), (1, 64, 56, 56), "winograd-f4x4-3x3"),
        (head, (1, 512, 7, 7), True),
        (Block(512, 512, 1), (1, 512, 7, 7), "winograd-f2x2-3x3"),
        (Block(128, 256, 2), (1, 128, 28, 28), True),
        (inverted(24, 24, 1, 6), (1, 24, 56, 56), True),
        (inverted(96, 160, 2, 6), (1, 96, 14, 14), True),
        (stem, (1, 3, 224, 224), True),
    ]
    if LANES >= PIXEL_GEMM_MIN_LANES:  # only where the tuner offers it
        layers.insert(3, (Block(256, 512, 2), (1, 256, 14, 14), "pixel-gemm-microkernel"))
    return layers


def main() -> None:
    import cnnir

    os.nice(19)
    for module, shape, tune in _layers():
        run = cnnir.compile(module.eval(), shape, tune=tune)
        run(np.zeros(shape, np.float32))
    folder = kernel_cache_folder()
    if folder is not None:
        (folder / DONE).touch()
