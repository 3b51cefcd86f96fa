"""Small reference models, as importable factories (so stages that use them can be saved).

Use with ``functools.partial``: ``TorchEstimator(model=partial(mlp, 64, [128], 10))``.
Importing this module imports torch.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn

__all__ = ["mlp", "small_cnn", "SmallCNN"]


def mlp(in_features: int, hidden: Sequence[int] = (128,), out_features: int = 1, dropout: float = 0.0) -> nn.Module:
    """Fully connected ReLU network ``in_features -> hidden... -> out_features``.

    Input ``(n, in_features)`` float32; output ``(n, out_features)`` raw scores (logits)."""
    layers, width = [], in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Two blocks of 3x3 conv + ReLU + 2x2 max-pool (``width`` and ``2 * width`` channels), then one
    linear layer.  Input ``(n, channels, image_size, image_size)`` float32 (e.g. ``inputShape=[1, 28, 28]``);
    output ``(n, num_classes)`` logits.  Parameter groups ``features`` and ``classifier`` (names for
    ``frozenLayers``)."""

    def __init__(self, num_classes: int = 10, channels: int = 1, width: int = 16, image_size: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Linear(2 * width * side * side, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def small_cnn(num_classes: int = 10, channels: int = 1, width: int = 16, image_size: int = 28) -> nn.Module:
    """A :class:`SmallCNN` (factory form)."""
    return SmallCNN(num_classes, channels, width, image_size)
