"""Siamese and triplet networks: one embedding net applied to several inputs.

The embedding net is a single module instance called once per input, so its weights are shared:
the parameters are counted once while the MACs are counted per call (2x for the Siamese pair,
3x for the triplet). Pair the outputs with ``nn.ContrastiveLoss`` or ``nn.TripletMarginLoss``.

    cnnir analyze examples/siamese.py                   # siamese, two 1x1x28x28 inputs
    cnnir analyze examples/siamese.py:triplet           # anchor, positive, negative
    cnnir analyze examples/siamese.py:embedding_net     # the shared tower alone
"""

from __future__ import annotations

import cnnir
from cnnir import nn

MNIST_SHAPE = (1, 1, 28, 28)


class EmbeddingNet(nn.Module):
    """Maps a 28x28 grayscale image to a 64-dimensional embedding."""

    def __init__(self, embedding_dim: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Linear(64 * 4 * 4, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, embedding_dim),
        )

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        return self.head(cnnir.flatten(self.features(x), 1))


class SiameseNet(nn.Module):
    """Embeds two images with the same tower; returns both embeddings."""

    def __init__(self, embedding: nn.Module) -> None:
        super().__init__()
        self.embedding = embedding

    def forward(self, x1: cnnir.Tensor, x2: cnnir.Tensor) -> tuple[cnnir.Tensor, cnnir.Tensor]:
        return self.embedding(x1), self.embedding(x2)


class TripletNet(nn.Module):
    """Embeds an anchor, a positive and a negative image with the same tower."""

    def __init__(self, embedding: nn.Module) -> None:
        super().__init__()
        self.embedding = embedding

    def forward(
        self, anchor: cnnir.Tensor, positive: cnnir.Tensor, negative: cnnir.Tensor
    ) -> tuple[cnnir.Tensor, cnnir.Tensor, cnnir.Tensor]:
        return self.embedding(anchor), self.embedding(positive), self.embedding(negative)


def embedding_net() -> nn.Module:
    """The shared tower on its own."""
    return EmbeddingNet()


def siamese() -> nn.Module:
    """Siamese network: forward(x1, x2) returns the two embeddings."""
    return SiameseNet(EmbeddingNet())


def triplet() -> nn.Module:
    """Triplet network: forward(anchor, positive, negative) returns three embeddings."""
    return TripletNet(EmbeddingNet())


embedding_net.input_shape = MNIST_SHAPE
triplet.input_shape = [MNIST_SHAPE] * 3

model = siamese
input_shape = [MNIST_SHAPE] * 2
