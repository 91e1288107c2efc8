"""Attack success of a model retrained on the samples an audit kept (ENGINE_SPEC's measure)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from incompat.attacks import PoisonedDataset
from incompat.config import EngineConfig, get_preset
from incompat.data import DeviceData
from incompat.engine import resolve_device
from incompat.metrics import attack_success
from incompat.training import Learner
from incompat.validation import validate


@dataclass(frozen=True)
class RetrainOutcome:
    clean_accuracy: float  # on the whole clean test set
    attack_success: float  # source test images: correct when clean, target when triggered


def retrained_attack_success(
    planted: PoisonedDataset,
    keep: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    epochs: int = 20,
    config: EngineConfig | str = "fast",
    seed: int = 0,
    device: str | torch.device | None = None,
) -> RetrainOutcome:
    """Train a fresh network on ``planted`` restricted to ``keep`` (e.g. ``~result.is_flagged``;
    all True for no defence), then measure clean accuracy and attack success on the test set."""
    if isinstance(config, str):
        config = get_preset(config)
    train = validate(planted.images, planted.labels, config)
    test = validate(test_images, test_labels, config)
    if not np.array_equal(train.classes, test.classes):
        raise ValueError("the test set's classes differ from the training set's")
    torch_device = resolve_device(device)
    data = DeviceData.from_arrays(
        train.images, train.labels, train.num_classes, torch_device,
        normalization=config.normalization, crop_padding=config.crop_padding, hflip=config.hflip,
    )  # fmt: skip
    learner = Learner(data, config.replace(balance_classes=False))
    learner.reset(seed)
    learner.train(torch.from_numpy(np.asarray(keep, bool)).to(torch_device), epochs)

    def predict(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        evaluation = learner.evaluate(data=data.with_images(images, labels))
        predicted: np.ndarray = train.classes[evaluation.prediction.cpu().numpy()]
        return predicted

    clean = predict(test.images, test.labels)
    source = test_labels == planted.source
    triggered = predict(planted.trigger.apply(test.images[source]), test.labels[source])
    return RetrainOutcome(
        clean_accuracy=float((clean == test_labels).mean()),
        attack_success=attack_success(clean[source], triggered, planted.source, planted.target),
    )
