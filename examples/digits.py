"""A small CNN for scikit-learn's 8x8 digits (docs/semantics.md §11): 1,946 parameters.

conv3x3(8, padding 1) - BN - ReLU - maxpool 2 -> conv3x3(16, padding 1) - BN - ReLU - maxpool 2
-> linear(64 -> 10). Ten epochs of Adam (lr 3e-3, batch 32) on a stratified 80/20 split reach
about 98 % test accuracy (PyTorch: 0.982).

    python examples/digits.py                  # trains with cnnir.compile_train, prints accuracy
    cnnir train examples/digits.py --epochs 10 --checkpoint run/ckpt.npz --plot run/curves.png
    cnnir analyze examples/digits.py
"""

from __future__ import annotations

import time

import cnnir
from cnnir import nn, optim


def conv_block(in_channels: int, out_channels: int, batch_norm: bool = True) -> nn.Sequential:
    """conv3x3 (padding 1) - [BN] - ReLU - 2x2 max-pool: halves the image side."""
    norm = [nn.BatchNorm2d(out_channels)] if batch_norm else []
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), *norm, nn.ReLU(),
                         nn.MaxPool2d(2))


class DigitsNet(nn.Module):
    """Two conv blocks (8 and 16 channels) on a ``side``x``side`` image, then a linear layer."""

    def __init__(self, side: int = 8, num_classes: int = 10, batch_norm: bool = True) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_block(1, 8, batch_norm),
                                      conv_block(8, 16, batch_norm))
        self.fc = nn.Linear(16 * (side // 4) ** 2, num_classes)

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        return self.fc(cnnir.flatten(self.features(x), 1))


def digits_net() -> nn.Module:
    """The 8x8 digits network with BatchNorm."""
    return DigitsNet()


model = digits_net
input_shape = (1, 1, 8, 8)


def train(data: str, net: nn.Module, epochs: int, seed: int = 0) -> float:
    """Train ``net`` on 80 % of the data set ``data`` (a stratified split) with Adam (lr 3e-3,
    batch 32) and return its accuracy on the other 20 %, printing one line per epoch."""
    images = cnnir.data.load(data)
    x_train, x_test, y_train, y_test = cnnir.data.split(images.x, images.y, 0.2, seed=seed)
    shape = ("N", *x_train.shape[1:])
    opt = optim.Adam(net.parameters(), lr=3e-3)
    step = cnnir.compile_train(net, nn.CrossEntropyLoss(), opt, inputs=shape, targets=("N",),
                               tune=False)  # fixed kernels: reproducible
    for epoch in range(epochs):
        start, total = time.perf_counter(), 0.0
        for x, y in cnnir.data.batches(x_train, y_train, batch_size=32, shuffle=True,
                                       seed=epoch):
            total += step(x, y) * len(x)
        # the inference program folds BatchNorm at compile time: recompile after training
        predict = cnnir.compile(net.eval(), shape, tune=False)
        net.train()
        accuracy = float((predict(x_test).argmax(1) == y_test).mean())
        print(f"epoch {epoch + 1:2}  train loss {total / len(x_train):.4f}  "
              f"test accuracy {accuracy:.4f}  {time.perf_counter() - start:.2f} s")
    return accuracy


def main(epochs: int = 10, seed: int = 0) -> float:
    nn.manual_seed(seed)
    return train("digits", digits_net(), epochs, seed)


if __name__ == "__main__":
    print(f"digits test accuracy: {main():.4f}")
