"""The cost model against the engine: its pass count is the engine's own, its seconds scale with
the data, and a learnt throughput reproduces the run it was learnt from."""

from __future__ import annotations

import pytest

from incompat import InvalidDatasetError, detect, get_preset
from incompat.cost import THROUGHPUT, device_bytes, estimate, passes, throughput_of


@pytest.mark.parametrize("preset", ["tiny", "fast"])
def test_the_pass_count_is_the_engines(small_fashion, preset: str) -> None:
    images, labels = small_fashion
    result = detect(images, labels, config=preset, seed=0, device="cpu")
    predicted = passes(get_preset(preset), labels.size).train
    assert predicted == pytest.approx(result.epoch_equivalents, rel=0.15)


def test_seconds_grow_linearly_with_samples_and_pixels() -> None:
    fast = get_preset("fast")
    # Past 38,400 samples the probe makes its floor of 2 epochs: everything is proportional.
    small = estimate(fast, 40_000, (28, 28, 1))
    large = estimate(fast, 80_000, (28, 28, 1))
    assert small.seconds is not None
    assert large.seconds is not None
    assert large.seconds == pytest.approx(2 * small.seconds)
    colour = estimate(fast, 40_000, (56, 56, 3))
    assert colour.seconds == pytest.approx(4 * small.seconds)
    assert small.seconds == pytest.approx(
        small.passes.weighted * 40_000 / THROUGHPUT[("cpu", "small_cnn")]
    )


def test_device_memory_holds_the_dataset_and_grows_with_the_image() -> None:
    fast = get_preset("fast")
    grey, colour = device_bytes(fast, 100_000, (28, 28)), device_bytes(fast, 100_000, (28, 28, 3))
    assert colour - grey == 2 * 100_000 * 28 * 28
    assert device_bytes(fast, 100_000, (64, 64, 3)) > colour


def test_a_device_without_a_figure_gets_no_seconds_until_one_is_learnt() -> None:
    fast = get_preset("fast")
    unknown = estimate(fast, 10_000, (32, 32, 3), device_kind="cuda")
    assert unknown.seconds is None
    learnt = throughput_of(fast, 5_000, (32, 32, 3), seconds=20.0)
    assert estimate(fast, 5_000, (32, 32, 3), device_kind="cuda", throughput=learnt).seconds == (
        pytest.approx(20.0)
    )


def test_a_dataset_the_device_has_no_room_for_is_refused_before_the_run(
    small_fashion, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, labels = small_fashion
    monkeypatch.setattr("incompat.engine.free_bytes", lambda device: 2**20)
    with pytest.raises(InvalidDatasetError, match=r"needs about 0\.\d GiB on cpu, which has 0\.0"):
        detect(images, labels, config="tiny", device="cpu")
