"""The paper's dirty-label backdoor attacks, to plant known poisons in any uint8 image dataset.

An eps share of the source class's images get a small trigger and the target label, replacing the
originals in place. The trigger's position and colour are drawn once per (source, target) pair;
each colour channel is uniform in 0..254.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

TriggerShape = Literal["pixel", "pattern", "ell"]

# Pixel offsets from the anchor (r, c) of each trigger shape.
_OFFSETS: dict[str, tuple[tuple[int, int], ...]] = {
    "pixel": ((0, 0),),
    "pattern": ((0, 0), (-1, -1), (-1, 1), (1, -1), (1, 1)),  # an X of 5 pixels
    "ell": ((0, 0), (1, 0), (0, 1)),  # an L of 3 pixels
}
TRIGGER_SHAPES: tuple[str, ...] = tuple(_OFFSETS)


@dataclass(frozen=True)
class Trigger:
    shape: str
    row: int
    col: int
    color: tuple[int, ...]  # one value per channel

    @property
    def pixels(self) -> list[tuple[int, int]]:
        return [(self.row + dr, self.col + dc) for dr, dc in _OFFSETS[self.shape]]

    def apply(self, images: np.ndarray) -> np.ndarray:
        """A copy of ``images`` (N x H x W or N x H x W x C, uint8) with the trigger stamped."""
        stamped = images.copy()
        rows, cols = zip(*self.pixels, strict=True)
        if stamped.ndim == 3:
            stamped[:, rows, cols] = self.color[0]
        else:
            stamped[:, rows, cols, :] = np.asarray(self.color, np.uint8)
        return stamped


@dataclass(frozen=True)
class PoisonedDataset:
    images: np.ndarray
    labels: np.ndarray
    is_poison: np.ndarray  # bool N
    trigger: Trigger
    source: int
    target: int

    @property
    def poison_indices(self) -> np.ndarray:
        return np.flatnonzero(self.is_poison)


def make_trigger(
    shape: str, height: int, width: int, channels: int, source: int, target: int, seed: int = 0
) -> Trigger:
    """The trigger for one (source, target) pair: a position where every pixel fits, a colour."""
    if shape not in _OFFSETS:
        raise ValueError(f"unknown trigger shape {shape!r}; choose one of {TRIGGER_SHAPES}")
    offsets = np.array(_OFFSETS[shape])
    low, high = -offsets.min(0), np.array([height, width]) - offsets.max(0)
    rng = np.random.default_rng([seed, source, target])
    row = int(rng.integers(low[0], high[0]))
    col = int(rng.integers(low[1], high[1]))
    color = tuple(int(v) for v in rng.integers(0, 255, size=channels))
    return Trigger(shape=shape, row=row, col=col, color=color)


def poison(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    source: int,
    target: int,
    eps: float,
    shape: str = "pattern",
    seed: int = 0,
    trigger: Trigger | None = None,
) -> PoisonedDataset:
    """Stamp the trigger on round(eps * n_source) random source images and relabel them target."""
    if source == target:
        raise ValueError("source and target must differ")
    if not 0 < eps <= 1:
        raise ValueError("eps must be in (0, 1]")
    source_index = np.flatnonzero(labels == source)
    if source_index.size == 0:
        raise ValueError(f"no images of source class {source}")
    if trigger is None:
        channels = 1 if images.ndim == 3 else images.shape[-1]
        trigger = make_trigger(
            shape, images.shape[1], images.shape[2], channels, source, target, seed
        )
    rng = np.random.default_rng([seed, source, target, 1])
    count = round(eps * source_index.size)
    chosen = np.sort(rng.choice(source_index, size=count, replace=False))
    poisoned_images = images.copy()
    poisoned_images[chosen] = trigger.apply(images[chosen])
    poisoned_labels = labels.copy()
    poisoned_labels[chosen] = target
    is_poison = np.zeros(labels.shape[0], bool)
    is_poison[chosen] = True
    return PoisonedDataset(poisoned_images, poisoned_labels, is_poison, trigger, source, target)
