"""Tiny fx-traceable CNNs for the fault tests (``model=custom model.target=tests.nets:small``).

``small`` is one conv + ReLU (one predictable 28x28 layer) and a linear head on 1x28x28 images.
With ``CNP_TEST_PAUSE=S`` in the environment every evaluation batch (more than one image) waits S
seconds, so a test can signal a job while its run is RUNNING; the one-image shape probes run before
the run exists and do not wait. The variable is not part of the config, so a rerun without it has
the same identity and is fast.
"""

from __future__ import annotations

import os
import time

import torch
from torch import Tensor, nn


def pause(x: Tensor) -> Tensor:
    """Wait ``CNP_TEST_PAUSE`` seconds on a batch of more than one image."""
    seconds = float(os.environ.get("CNP_TEST_PAUSE", "0"))
    if seconds and x.shape[0] > 1:
        time.sleep(seconds)
    return x


torch.fx.wrap("pause")  # a call in the traced graph, not run once at trace time


class Small(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 28 * 28, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(pause(torch.relu(self.conv(x))).flatten(1))


def small(classes: int = 10) -> nn.Module:
    return Small(classes)


class Rgb(nn.Module):
    """One conv + ReLU on 3-channel images of any size, global average pooling, a linear head."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def rgb(classes: int = 2) -> nn.Module:
    return Rgb(classes)


class Branchy(Small):
    """Data-dependent control flow in forward: torch.fx cannot trace it."""

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.conv(x))
        if y.sum() > 0:
            y = y * 2
        return self.fc(y.flatten(1))


def branchy() -> nn.Module:
    return Branchy()


class Gate(nn.Module):
    """Data-dependent control flow (not fx-traceable): conv + ReLU, doubled when the mean is positive."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.conv(x))
        if y.mean() > 0:
            y = y * 2
        return y


class Gated(nn.Module):
    """conv + ReLU (a predictable layer), a :class:`Gate` (traceable only as a leaf), a linear head."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.gate = Gate()
        self.fc = nn.Linear(4 * 28 * 28, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.gate(torch.relu(self.conv(x))).flatten(1))


def gated(classes: int = 10) -> nn.Module:
    return Gated(classes)
