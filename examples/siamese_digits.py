"""A Siamese network on the 8x8 digits, trained with the contrastive loss.

One embedding tower (conv3x3(8)-ReLU-pool -> conv3x3(16)-ReLU-pool -> linear(64 -> 16)) embeds
both images of a pair; its weights are shared, so the gradients of the two calls add up.
``nn.ContrastiveLoss`` pulls pairs of one class together and pushes pairs of two classes at
least ``margin`` apart (label 0 = same class, 1 = different). Each epoch pairs every training
image with a random partner, of its own class half of the time. The test accuracy printed is
that of nearest-neighbour classification: a test image takes the label of the closest
training image in embedding space (about 97 % after 10 epochs).

    python examples/siamese_digits.py          # trains with cnnir.compile_train
    cnnir analyze examples/siamese_digits.py   # two 1x1x8x8 inputs, one shared tower
"""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np

import cnnir
from cnnir import nn, optim

DIGIT_SHAPE = (1, 1, 8, 8)
here = Path(__file__).parent
digits = runpy.run_path(str(here / "digits.py"), run_name="digits")
SiameseNet = runpy.run_path(str(here / "siamese.py"), run_name="siamese")["SiameseNet"]


def embedding_net(dim: int = 16) -> nn.Module:
    """The digits network of ``digits.py`` without BatchNorm, its last layer giving a
    ``dim``-dimensional embedding."""
    return digits["DigitsNet"](num_classes=dim, batch_norm=False)


def siamese() -> nn.Module:
    """The Siamese network: forward(x1, x2) returns the two embeddings."""
    return SiameseNet(embedding_net())


model = siamese
input_shape = [DIGIT_SHAPE] * 2


def pairs(y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A partner for every example, of the same class for a random half, and the contrastive
    labels (0 same class, 1 different)."""
    by_class = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    same = rng.random(len(y)) < 0.5
    partner = rng.integers(0, len(y), len(y))  # a random example, rarely of the same class
    for i in np.flatnonzero(same):
        partner[i] = rng.choice(by_class[y[i]])
    return partner, (y[partner] != y).astype(np.float32)


def nearest_neighbour_accuracy(embed, x_train: np.ndarray, y_train: np.ndarray,
                               x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Accuracy of labelling each test image like its nearest training image."""
    gallery, queries = embed(x_train), embed(x_test)
    distances = ((queries[:, None, :] - gallery[None, :, :]) ** 2).sum(-1)
    return float((y_train[distances.argmin(1)] == y_test).mean())


def main(epochs: int = 10, seed: int = 0) -> float:
    """Train on 80 % of the digits; nearest-neighbour accuracy on the other 20 %."""
    digits = cnnir.data.load("digits")
    x_train, x_test, y_train, y_test = cnnir.data.split(digits.x, digits.y, 0.2, seed=seed)
    nn.manual_seed(seed)
    net = siamese()
    opt = optim.Adam(net.parameters(), lr=3e-3)
    contrastive = nn.ContrastiveLoss(margin=1.0)

    def pair_loss(embeddings, label):
        return contrastive(*embeddings, label)

    step = cnnir.compile_train(net, pair_loss, opt, inputs=[("N", 1, 8, 8)] * 2,
                               targets=("N",), tune=False)
    for epoch in range(epochs):
        partner, label = pairs(y_train, np.random.default_rng([seed, epoch]))
        total = 0.0
        for x1, x2, t in cnnir.data.batches(x_train, x_train[partner], label, batch_size=32,
                                            shuffle=True, seed=epoch):
            total += step(x1, x2, t) * len(t)
        embed = cnnir.compile(net.embedding.eval(), ("N", 1, 8, 8), tune=False)
        net.train()
        accuracy = nearest_neighbour_accuracy(embed, x_train, y_train, x_test, y_test)
        print(f"epoch {epoch + 1:2}  contrastive loss {total / len(label):.4f}  "
              f"nearest-neighbour test accuracy {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    print(f"siamese digits nearest-neighbour test accuracy: {main():.4f}")
