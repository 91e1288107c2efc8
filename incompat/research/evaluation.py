"""Attack success of a model retrained on the samples an audit kept (ENGINE_SPEC's measure), and
the penultimate-layer features that the baseline defences read from a model trained on everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from incompat.config import EngineConfig, get_preset
from incompat.data import DeviceData
from incompat.devices import resolve_device
from incompat.research.attacks import PoisonedDataset
from incompat.research.metrics import attack_success
from incompat.training import Learner, penultimate_features
from incompat.validation import validate


@dataclass(frozen=True)
class RetrainOutcome:
    clean_accuracy: float  # on the whole clean test set
    attack_success: float  # source test images: correct when clean, target when triggered


class RetrainedModel:
    """A fresh network trained on the planted set restricted to ``keep``."""

    def __init__(
        self,
        planted: PoisonedDataset,
        keep: np.ndarray,
        *,
        epochs: int = 20,
        config: EngineConfig | str = "fast",
        seed: int = 0,
        device: str | torch.device | None = None,
    ) -> None:
        if isinstance(config, str):
            config = get_preset(config)
        self.planted = planted
        self.config = config
        train = validate(planted.images, planted.labels, config)
        self.classes = train.classes
        self.data = DeviceData.from_arrays(
            train.images, train.labels, train.num_classes, resolve_device(device),
            normalization=config.normalization, crop_padding=config.crop_padding,
            hflip=config.hflip,
        )  # fmt: skip
        self.learner = Learner(self.data, config.replace(balance_classes=False))
        self.learner.reset(seed)
        mask = torch.from_numpy(np.asarray(keep, bool)).to(self.data.device)
        self.learner.train(mask, epochs)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted classes (input label space) of uint8 images shaped like the training set."""
        evaluation = self.learner.evaluate(data=self._data_of(images))
        predicted: np.ndarray = self.classes[evaluation.prediction.cpu().numpy()]
        return predicted

    @torch.no_grad()
    def features(self, images: np.ndarray | None = None) -> np.ndarray:
        """Penultimate-layer activations (the head's input), N x D float32; of the training set
        when ``images`` is None."""
        data = None if images is None else self._data_of(images)
        features: np.ndarray = penultimate_features(self.learner, data).cpu().numpy()
        return features

    def outcome(self, test_images: np.ndarray, test_labels: np.ndarray) -> RetrainOutcome:
        """Clean accuracy on the test set, and attack success on its source-class images."""
        test = validate(test_images, test_labels, self.config)
        if not np.array_equal(self.classes, test.classes):
            raise ValueError("the test set's classes differ from the training set's")
        clean = self.predict(test_images)
        source = np.isin(test_labels, self.planted.sources)
        triggered = self.predict(self.planted.trigger.apply(test_images[source]))
        return RetrainOutcome(
            clean_accuracy=float((clean == test_labels).mean()),
            attack_success=attack_success(
                clean[source], triggered, test_labels[source], self.planted.target
            ),
        )

    def _data_of(self, images: np.ndarray) -> DeviceData:
        shaped = images if images.ndim == 4 else images[..., None]
        return self.data.with_images(shaped, np.zeros(len(images), np.int64))


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
    model = RetrainedModel(planted, keep, epochs=epochs, config=config, seed=seed, device=device)
    return model.outcome(test_images, test_labels)
