"""Architectures: a small CNN, CIFAR-style ResNet-20/32, PreAct-ResNet-18.

Each takes any channel count (1 or 3) and class count, and any image size from 8x8 up: the heads
pool globally, so no layer depends on the input size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from incompat.config import Arch
from incompat.errors import InvalidConfigError


class SmallCNN(nn.Module):
    """Three conv blocks (16, 32, 64 channels) and a global-max-pool head; about 24k parameters."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(in_channels, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 4 * width),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(x))
        return logits


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        shortcut: torch.Tensor = self.shortcut(x)
        return F.relu(self.bn2(self.conv2(out)) + shortcut)


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet (6n+2 layers, widths 16/32/64)."""

    def __init__(self, depth: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise InvalidConfigError("CIFAR ResNet depth must be 6n+2")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        layers: list[nn.Module] = []
        cin = 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(n):
                layers.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        logits: torch.Tensor = self.head(F.adaptive_avg_pool2d(out, 1).flatten(1))
        return logits


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut: torch.Tensor = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        residual: torch.Tensor = self.conv2(F.relu(self.bn2(out)))
        return residual + shortcut


class PreActResNet18(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        cin = 64
        for stage, cout in enumerate((64, 128, 256, 512)):
            for i in range(2):
                layers.append(PreActBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(512)
        self.head = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.layers(self.stem(x))))
        logits: torch.Tensor = self.head(F.adaptive_avg_pool2d(out, 1).flatten(1))
        return logits


_BUILDERS: dict[str, Callable[[int, int], nn.Module]] = {
    "small_cnn": SmallCNN,
    "resnet20": lambda c, k: CifarResNet(20, c, k),
    "resnet32": lambda c, k: CifarResNet(32, c, k),
    "preact_resnet18": PreActResNet18,
}


def build_model(arch: Arch, in_channels: int, num_classes: int) -> nn.Module:
    try:
        builder = _BUILDERS[arch]
    except KeyError:
        raise InvalidConfigError(
            f"unknown architecture {arch!r}; choose one of {sorted(_BUILDERS)}"
        ) from None
    return builder(in_channels, num_classes)
