from __future__ import annotations

import numpy as np
import pytest

from incompat.research.attacks import (
    AnyTrigger,
    BlendTrigger,
    PatchTrigger,
    Trigger,
    make_trigger,
    poison,
)


def stamp(trigger: AnyTrigger) -> Trigger:
    assert isinstance(trigger, Trigger)
    return trigger


@pytest.fixture
def dataset() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (300, 16, 16), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 100)
    return images, labels


@pytest.mark.parametrize(("eps", "count"), [(0.05, 5), (0.10, 10), (0.20, 20), (0.125, 12)])
def test_poisons_an_eps_share_of_the_source_class(dataset, eps, count) -> None:
    images, labels = dataset
    planted = poison(images, labels, source=0, target=2, eps=eps, shape="pattern", seed=3)
    assert planted.is_poison.sum() == count
    assert (labels[planted.is_poison] == 0).all(), "poisons come from the source class"
    assert (planted.labels[planted.is_poison] == 2).all(), "and carry the target label"
    assert (planted.labels[~planted.is_poison] == labels[~planted.is_poison]).all()
    assert planted.images.shape == images.shape, "poisons replace originals in place"
    assert (planted.images[~planted.is_poison] == images[~planted.is_poison]).all()
    assert (images == dataset[0]).all(), "the input is not modified"


@pytest.mark.parametrize(
    ("shape", "offsets"),
    [
        ("pixel", {(0, 0)}),
        ("pattern", {(0, 0), (-1, -1), (-1, 1), (1, -1), (1, 1)}),
        ("ell", {(0, 0), (1, 0), (0, 1)}),
    ],
)
def test_trigger_shapes_stamp_exactly_their_pixels(dataset, shape, offsets) -> None:
    images, labels = dataset
    planted = poison(images, labels, source=1, target=0, eps=0.2, shape=shape, seed=5)
    trigger = stamp(planted.trigger)
    expected = {(trigger.row + dr, trigger.col + dc) for dr, dc in offsets}
    assert set(trigger.pixels) == expected
    mask = np.zeros((16, 16), bool)
    for r, c in expected:
        mask[r, c] = True
    stamped = planted.images[planted.is_poison]
    assert (stamped[:, mask] == trigger.color[0]).all()
    original = images[planted.is_poison]
    assert (stamped[:, ~mask] == original[:, ~mask]).all(), "nothing else changes"


def test_trigger_is_drawn_once_per_pair_and_fits_the_image() -> None:
    for source, target in [(0, 1), (1, 0), (3, 7)]:
        for shape in ("pixel", "pattern", "ell"):
            first = stamp(make_trigger(shape, 8, 10, 3, source, target, seed=2))
            assert first == make_trigger(shape, 8, 10, 3, source, target, seed=2)
            assert all(0 <= r < 8 and 0 <= c < 10 for r, c in first.pixels)
            assert len(first.color) == 3
            assert all(0 <= v <= 254 for v in first.color)
    triggers = {
        make_trigger("pattern", 32, 32, 3, s, t) for s in range(4) for t in range(4) if s != t
    }
    assert len(triggers) > 1, "different pairs get different triggers"


def test_colour_triggers_on_rgb_images() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(40) % 2
    planted = poison(images, labels, source=0, target=1, eps=0.5, shape="ell", seed=0)
    trigger = stamp(planted.trigger)
    r, c = trigger.pixels[0]
    assert (planted.images[planted.is_poison, r, c] == trigger.color).all()
    assert planted.is_poison.sum() == 10


def test_triggered_test_set_uses_the_same_trigger(dataset) -> None:
    images, labels = dataset
    planted = poison(images, labels, source=0, target=1, eps=0.1, shape="pixel", seed=0)
    trigger = stamp(planted.trigger)
    triggered = trigger.apply(images[labels == 0])
    r, c = trigger.pixels[0]
    assert (triggered[:, r, c] == trigger.color[0]).all()


def test_bad_attack_arguments(dataset) -> None:
    images, labels = dataset
    with pytest.raises(ValueError, match="differ"):
        poison(images, labels, source=1, target=1, eps=0.1)
    with pytest.raises(ValueError, match="eps"):
        poison(images, labels, source=0, target=1, eps=0)
    with pytest.raises(ValueError, match="no images of source class"):
        poison(images, labels, source=9, target=1, eps=0.1)
    with pytest.raises(ValueError, match="unknown trigger family"):
        poison(images, labels, source=0, target=1, eps=0.1, shape="star")


@pytest.mark.parametrize(
    ("placement", "corner"),
    [("centre", (6, 6)), ("corner", None), ("random", None)],
)
def test_patch_is_a_binary_square_that_fits(dataset, placement, corner) -> None:
    images, labels = dataset
    planted = poison(images, labels, source=0, target=1, eps=0.1, shape="patch", size=4,
                     placement=placement, seed=1)  # fmt: skip
    trigger = planted.trigger
    assert isinstance(trigger, PatchTrigger)
    assert trigger.family == "patch"
    row, col = trigger.row, trigger.col
    assert 0 <= row <= 12
    assert 0 <= col <= 12
    if corner is not None:
        assert (row, col) == corner
    if placement == "corner":
        assert row in (0, 12)
        assert col in (0, 12)
    window = planted.images[planted.is_poison, row : row + 4, col : col + 4]
    assert set(np.unique(window)) == {0, 255}, "black and white pixels"
    assert (window == window[0]).all(), "the same patch on every poison"
    outside = np.ones((16, 16), bool)
    outside[row : row + 4, col : col + 4] = False
    assert (
        planted.images[planted.is_poison][:, outside] == images[planted.is_poison][:, outside]
    ).all()


@pytest.mark.parametrize("family", ["blend_noise", "blend_grating"])
def test_blend_mixes_a_fixed_pattern_over_the_whole_image(dataset, family) -> None:
    images, labels = dataset
    planted = poison(images, labels, source=2, target=0, eps=0.1, shape=family, opacity=0.2)
    trigger = planted.trigger
    assert isinstance(trigger, BlendTrigger)
    original = images[planted.is_poison].astype(np.float32)
    expected = np.rint(0.8 * original + 0.2 * trigger.pattern[..., 0])
    assert np.array_equal(planted.images[planted.is_poison], expected.astype(np.uint8))
    changed = (planted.images[planted.is_poison] != images[planted.is_poison]).mean()
    assert changed > 0.5, "a global trigger touches most pixels"


def test_signal_adds_a_low_amplitude_sinusoid(dataset) -> None:
    images = np.full((100, 16, 16), 128, np.uint8)
    labels = np.repeat(np.arange(2), 50)
    planted = poison(images, labels, source=0, target=1, eps=0.2, shape="signal", amplitude=10)
    delta = planted.images[planted.is_poison].astype(int) - 128
    assert np.abs(delta).max() == 10
    assert (delta == delta[:, :1, :]).all(), "constant down each column"


def test_natural_image_blend_on_colour_images() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 12, 12, 3), dtype=np.uint8)
    labels = np.arange(40) % 4
    planted = poison(images, labels, source=1, target=2, eps=0.5, shape="blend_image", opacity=0.1)
    assert isinstance(planted.trigger, BlendTrigger)
    assert planted.trigger.pattern.shape == (12, 12, 3)
    assert planted.images.shape == images.shape


def test_all_to_one_poisons_every_other_class(dataset) -> None:
    images, labels = dataset
    planted = poison(images, labels, sources="all", target=2, eps=0.1, shape="patch", seed=0)
    assert planted.sources == (0, 1)
    assert np.bincount(labels[planted.is_poison], minlength=3).tolist() == [10, 10, 0]
    assert (planted.labels[planted.is_poison] == 2).all()
    with pytest.raises(ValueError, match="source classes"):
        _ = planted.source
    again = poison(images, labels, sources=[0, 1], target=2, eps=0.1, shape="patch", seed=0)
    assert np.array_equal(again.images, planted.images), "the same trigger and samples"
    with pytest.raises(ValueError, match="exactly one"):
        poison(images, labels, source=0, sources=[1], target=2, eps=0.1)
