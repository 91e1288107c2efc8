"""Dirty-label backdoor attacks, to plant known poisons in any uint8 image dataset.

An eps share of each source class's images get a trigger and the target label, replacing the
originals in place. One source is the paper's one-to-one attack; several sources make a
many-to-one attack, and every class but the target an all-to-one attack.

Trigger families (``make_trigger``):
- stamps, the paper's: ``pixel``, ``pattern`` (an X of 5 pixels), ``ell`` (an L of 3 pixels);
- ``patch``: a random binary k x k patch (Gu et al.'s BadNets), at a corner, the centre or anywhere;
- blends over the whole image (Chen et al. 2017): ``blend_noise`` (a fixed uniform-noise image),
  ``blend_image`` (a natural photograph), ``blend_grating`` (a periodic stripe pattern);
- ``signal``: a low-amplitude horizontal sinusoid added to the image (Barni et al.'s SIG).

Each trigger's parameters (position, colour, pattern) are drawn once per (source, target) pair and
seed, so every poison of one attack carries the same trigger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

TriggerFamily = Literal[
    "pixel", "pattern", "ell", "patch", "blend_noise", "blend_image", "blend_grating", "signal"
]
Placement = Literal["corner", "centre", "random"]

# Pixel offsets from the anchor (r, c) of each stamp shape.
_OFFSETS: dict[str, tuple[tuple[int, int], ...]] = {
    "pixel": ((0, 0),),
    "pattern": ((0, 0), (-1, -1), (-1, 1), (1, -1), (1, 1)),  # an X of 5 pixels
    "ell": ((0, 0), (1, 0), (0, 1)),  # an L of 3 pixels
}
TRIGGER_SHAPES: tuple[str, ...] = tuple(_OFFSETS)
TRIGGER_FAMILIES: tuple[str, ...] = (
    *TRIGGER_SHAPES, "patch", "blend_noise", "blend_image", "blend_grating", "signal",
)  # fmt: skip


@dataclass(frozen=True)
class Trigger:
    """A stamp: a few pixels of one colour at fixed positions (the paper's triggers)."""

    shape: str
    row: int
    col: int
    color: tuple[int, ...]  # one value per channel

    @property
    def pixels(self) -> list[tuple[int, int]]:
        return [(self.row + dr, self.col + dc) for dr, dc in _OFFSETS[self.shape]]

    @property
    def family(self) -> str:
        return self.shape

    def apply(self, images: np.ndarray) -> np.ndarray:
        """A copy of ``images`` (N x H x W or N x H x W x C, uint8) with the trigger stamped."""
        stamped = images.copy()
        rows, cols = zip(*self.pixels, strict=True)
        if stamped.ndim == 3:
            stamped[:, rows, cols] = self.color[0]
        else:
            stamped[:, rows, cols, :] = np.asarray(self.color, np.uint8)
        return stamped


@dataclass(frozen=True, eq=False)
class PatchTrigger:
    """A k x k patch (H x W x C uint8 values) pasted with its top-left corner at (row, col)."""

    row: int
    col: int
    patch: np.ndarray = field(repr=False)

    family = "patch"

    def apply(self, images: np.ndarray) -> np.ndarray:
        stamped = images.copy()
        k_rows, k_cols = self.patch.shape[:2]
        window = (
            slice(None),
            slice(self.row, self.row + k_rows),
            slice(self.col, self.col + k_cols),
        )
        stamped[window] = self.patch if stamped.ndim == 4 else self.patch[..., 0]
        return stamped


@dataclass(frozen=True, eq=False)
class BlendTrigger:
    """``(1 - opacity) * image + opacity * pattern`` over the whole image; with ``additive``,
    ``image + pattern`` (a signed pattern, clipped to 0..255) instead."""

    family: str
    pattern: np.ndarray = field(repr=False)  # float32 H x W x C
    opacity: float
    additive: bool = False

    def apply(self, images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float32)
        pattern = self.pattern if images.ndim == 4 else self.pattern[..., 0]
        mixed = x + pattern if self.additive else (1 - self.opacity) * x + self.opacity * pattern
        return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


AnyTrigger = Trigger | PatchTrigger | BlendTrigger


@dataclass(frozen=True)
class PoisonedDataset:
    images: np.ndarray
    labels: np.ndarray
    is_poison: np.ndarray  # bool N
    trigger: AnyTrigger
    sources: tuple[int, ...]
    target: int

    @property
    def source(self) -> int:
        """The source class of a one-to-one attack."""
        if len(self.sources) != 1:
            raise ValueError(f"the attack has {len(self.sources)} source classes")
        return self.sources[0]

    @property
    def poison_indices(self) -> np.ndarray:
        return np.flatnonzero(self.is_poison)


def make_trigger(
    family: str,
    height: int,
    width: int,
    channels: int,
    source: int,
    target: int,
    seed: int = 0,
    *,
    size: int = 3,
    placement: Placement = "random",
    opacity: float = 0.15,
    amplitude: float = 20.0,
) -> AnyTrigger:
    """The trigger of one family for one (source, target) pair.

    ``size`` and ``placement`` shape a ``patch``; ``opacity`` a blend; ``amplitude`` (in grey
    levels) a ``signal``.
    """
    rng = np.random.default_rng([seed, source, target])
    if family in _OFFSETS:
        offsets = np.array(_OFFSETS[family])
        low, high = -offsets.min(0), np.array([height, width]) - offsets.max(0)
        row = int(rng.integers(low[0], high[0]))
        col = int(rng.integers(low[1], high[1]))
        color = tuple(int(v) for v in rng.integers(0, 255, size=channels))
        return Trigger(shape=family, row=row, col=col, color=color)
    if family == "patch":
        return _patch(rng, height, width, channels, size, placement)
    if family.startswith("blend_"):
        return BlendTrigger(family, _blend_pattern(family, rng, height, width, channels), opacity)
    if family == "signal":
        frequency = 6  # periods across the image, as in Barni et al.
        wave = amplitude * np.sin(2 * np.pi * frequency * np.arange(width) / width)
        pattern = np.broadcast_to(wave[None, :, None], (height, width, channels))
        return BlendTrigger(family, pattern.astype(np.float32), opacity=0.0, additive=True)
    raise ValueError(f"unknown trigger family {family!r}; choose one of {TRIGGER_FAMILIES}")


def _patch(
    rng: np.random.Generator, height: int, width: int, channels: int, size: int, where: Placement
) -> PatchTrigger:
    if not 1 <= size <= min(height, width):
        raise ValueError(f"a patch of {size} px does not fit a {height}x{width} image")
    # Binary pixels, each channel black or white; never all one value, so the patch has a shape.
    bits = rng.integers(0, 2, size=(size, size, channels))
    bits.flat[0], bits.flat[-1] = 0, 1
    if where == "corner":
        corner = int(rng.integers(4))
        row = 0 if corner < 2 else height - size
        col = 0 if corner % 2 == 0 else width - size
    elif where == "centre":
        row, col = (height - size) // 2, (width - size) // 2
    else:
        row = int(rng.integers(0, height - size + 1))
        col = int(rng.integers(0, width - size + 1))
    return PatchTrigger(row, col, (bits * 255).astype(np.uint8))


def _blend_pattern(
    family: str, rng: np.random.Generator, height: int, width: int, channels: int
) -> np.ndarray:
    if family == "blend_noise":
        return rng.uniform(0, 255, size=(height, width, channels)).astype(np.float32)
    if family == "blend_grating":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(3.0, 6.0)  # pixels
        r, c = np.mgrid[0:height, 0:width]
        phase = 2 * np.pi * (r * np.sin(angle) + c * np.cos(angle)) / period
        wave = 127.5 * (1 + np.sin(phase))
        return np.repeat(wave[..., None], channels, axis=2).astype(np.float32)
    if family == "blend_image":
        return _natural_image(rng, height, width, channels)
    raise ValueError(f"unknown blend {family!r}")


def _natural_image(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    """A random crop of a photograph that ships with scikit-learn, resized to the images' size."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    photo = load_sample_image(str(rng.choice(["china.jpg", "flower.jpg"])))
    side = min(photo.shape[:2]) // 2
    top = int(rng.integers(0, photo.shape[0] - side + 1))
    left = int(rng.integers(0, photo.shape[1] - side + 1))
    crop = Image.fromarray(photo[top : top + side, left : left + side])
    crop = crop.resize((width, height), Image.Resampling.BILINEAR)
    if channels == 1:
        return np.asarray(crop.convert("L"), np.float32)[..., None]
    return np.asarray(crop, np.float32)


def poison(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    target: int,
    source: int | None = None,
    sources: tuple[int, ...] | list[int] | Literal["all"] | None = None,
    eps: float,
    shape: str = "pattern",
    seed: int = 0,
    trigger: AnyTrigger | None = None,
    **trigger_options: object,
) -> PoisonedDataset:
    """Plant a backdoor: the trigger on round(eps * n) random images of each source class, which
    then carry the ``target`` label.

    Give ``source`` (one-to-one) or ``sources`` (several, or ``"all"`` but the target).
    ``shape`` names the trigger family (``make_trigger``, with ``trigger_options``), unless a
    ``trigger`` is given.
    """
    if (source is None) == (sources is None):
        raise ValueError("give exactly one of source and sources")
    if source is not None:
        chosen_sources: tuple[int, ...] = (source,)
    elif sources == "all":
        chosen_sources = tuple(int(c) for c in np.unique(labels) if c != target)
    else:
        assert sources is not None
        chosen_sources = tuple(int(c) for c in sources)
    if target in chosen_sources:
        raise ValueError("source and target must differ")
    if not 0 < eps <= 1:
        raise ValueError("eps must be in (0, 1]")
    if trigger is None:
        channels = 1 if images.ndim == 3 else images.shape[-1]
        # A many-to-one attack draws its trigger from the set of its sources.
        key = (
            chosen_sources[0]
            if len(chosen_sources) == 1
            else sum(1 << (16 + s) for s in chosen_sources)
        )
        trigger = make_trigger(
            shape, images.shape[1], images.shape[2], channels, key, target, seed,
            **trigger_options,  # type: ignore[arg-type]
        )  # fmt: skip
    is_poison = np.zeros(labels.shape[0], bool)
    for cls in chosen_sources:
        source_index = np.flatnonzero(labels == cls)
        if source_index.size == 0:
            raise ValueError(f"no images of source class {cls}")
        rng = np.random.default_rng([seed, cls, target, 1])
        count = round(eps * source_index.size)
        is_poison[rng.choice(source_index, size=count, replace=False)] = True
    poisoned_images = images.copy()
    poisoned_images[is_poison] = trigger.apply(images[is_poison])
    poisoned_labels = labels.copy()
    poisoned_labels[is_poison] = target
    return PoisonedDataset(
        poisoned_images, poisoned_labels, is_poison, trigger, chosen_sources, target
    )
