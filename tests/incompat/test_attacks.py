from __future__ import annotations

import numpy as np
import pytest

from incompat.attacks import make_trigger, poison


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
    trigger = planted.trigger
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
            first = make_trigger(shape, 8, 10, 3, source, target, seed=2)
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
    r, c = planted.trigger.pixels[0]
    assert (planted.images[planted.is_poison, r, c] == planted.trigger.color).all()
    assert planted.is_poison.sum() == 10


def test_triggered_test_set_uses_the_same_trigger(dataset) -> None:
    images, labels = dataset
    planted = poison(images, labels, source=0, target=1, eps=0.1, shape="pixel", seed=0)
    triggered = planted.trigger.apply(images[labels == 0])
    r, c = planted.trigger.pixels[0]
    assert (triggered[:, r, c] == planted.trigger.color[0]).all()


def test_bad_attack_arguments(dataset) -> None:
    images, labels = dataset
    with pytest.raises(ValueError, match="differ"):
        poison(images, labels, source=1, target=1, eps=0.1)
    with pytest.raises(ValueError, match="eps"):
        poison(images, labels, source=0, target=1, eps=0)
    with pytest.raises(ValueError, match="no images of source class"):
        poison(images, labels, source=9, target=1, eps=0.1)
    with pytest.raises(ValueError, match="unknown trigger shape"):
        poison(images, labels, source=0, target=1, eps=0.1, shape="star")
