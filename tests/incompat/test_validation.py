from __future__ import annotations

import numpy as np
import pytest

from incompat import EngineConfig, detect, get_preset
from incompat.validation import min_samples, validate

TINY = get_preset("tiny")


def _data(
    n: int = 400, shape: tuple[int, ...] = (12, 12), classes: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), np.arange(n) % classes


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((400, 12, 12), np.float32), np.arange(400) % 2, "uint8"),
        (np.zeros((400, 12), np.uint8), np.arange(400) % 2, "N x H x W"),
        (np.zeros((400, 12, 12, 4), np.uint8), np.arange(400) % 2, "C = 1 or 3"),
        (np.zeros((400, 4, 12), np.uint8), np.arange(400) % 2, "at least 8x8"),
        (np.zeros((400, 12, 12), np.uint8), np.arange(399) % 2, "400 images but 399 labels"),
        (np.zeros((400, 12, 12), np.uint8), np.zeros(400, np.int64), "at least 2 classes"),
        (np.zeros((400, 12, 12), np.uint8), np.array(["a", "b"] * 200), "integers"),
        (
            np.zeros((400, 12, 12), np.uint8),
            (np.arange(800) % 2).reshape(400, 2),
            "one-dimensional",
        ),
        (np.zeros((20, 12, 12), np.uint8), np.arange(20) % 2, "need at least"),
        ([[0]], np.arange(1), "numpy array"),
    ],
)
def test_invalid_inputs_are_refused_with_a_clear_message(images, labels, message) -> None:
    with pytest.raises(ValueError, match=message):
        validate(images, labels, TINY)


def test_detect_validates_before_doing_any_work() -> None:
    images, labels = _data()
    with pytest.raises(ValueError, match="400 images but 10 labels"):
        detect(images, labels[:10], config="tiny")


def test_labels_of_any_values_are_reindexed() -> None:
    images, _ = _data()
    labels = np.where(np.arange(400) % 2 == 0, -3, 17)
    dataset = validate(images, labels, TINY)
    assert dataset.num_classes == 2
    assert dataset.classes.tolist() == [-3, 17]
    assert set(dataset.labels.tolist()) == {0, 1}
    assert dataset.images.shape == (400, 12, 12, 1)


def test_integral_float_labels_are_accepted_and_fractional_ones_refused() -> None:
    images, labels = _data()
    assert validate(images, labels.astype(np.float64), TINY).num_classes == 2
    with pytest.raises(ValueError, match="integers"):
        validate(images, labels + 0.5, TINY)


def test_minimum_sample_count_follows_the_cluster_size() -> None:
    assert min_samples(TINY.replace(cluster_frac=0.5)) < min_samples(TINY.replace(cluster_frac=0.1))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": 0}, "lr"),
        ({"cluster_frac": 1.5}, "cluster_frac"),
        ({"beta": 0.5}, "beta"),
        ({"bags": 0}, "bags"),
        ({"agree_prob": 1.0}, "agree_prob"),
    ],
)
def test_invalid_configs_are_refused(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        EngineConfig().replace(**changes)


def test_unknown_preset_and_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="unknown EngineConfig fields"):
        EngineConfig.from_dict({"alpha": 8})


def test_cuda_refused_where_absent() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    images, labels = _data()
    with pytest.raises(ValueError, match="CUDA is not available"):
        detect(images, labels, config="tiny", device="cuda")


def test_errors_say_whose_move_it_is() -> None:
    """A dataset's fault, the configuration's, or the machine's: each its own type, so that the
    service tells the dataset's owner, the operator or the worker's keeper."""
    import torch

    from incompat import DeviceUnavailableError, InvalidConfigError, InvalidDatasetError

    images, labels = _data()
    with pytest.raises(InvalidDatasetError):
        detect(images[:10], labels[:10], config="tiny")
    with pytest.raises(InvalidConfigError):
        detect(images, labels, config="huge")
    with pytest.raises(InvalidConfigError):
        detect(images, labels, config="tiny", device="gpu")
    if torch.cuda.device_count() < 8:
        with pytest.raises(DeviceUnavailableError):
            detect(images, labels, config="tiny", device="cuda:7")
