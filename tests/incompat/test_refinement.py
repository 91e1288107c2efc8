"""What the refinement network learns from: the reference's self-training, or a trusted start that
admits a sample only once the network agrees with its label."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from incompat import get_preset
from incompat.data import DeviceData
from incompat.training import Evaluation, Learner
from incompat.voting import Vote, refine, refinement_start


class RecordingLearner(Learner):
    """A learner that records every training set and every evaluation it hands out."""

    def __init__(self, data: DeviceData, config) -> None:
        super().__init__(data, config)
        self.trained_on: list[torch.Tensor] = []
        self.evaluations: list[Evaluation] = []

    def train(self, mask: torch.Tensor, epochs: int) -> None:
        self.trained_on.append(mask.clone())
        super().train(mask, epochs)

    def evaluate(self, mask=None, data=None) -> Evaluation:
        evaluation = super().evaluate(mask, data)
        self.evaluations.append(evaluation)
        return evaluation


@pytest.fixture
def data() -> DeviceData:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    images = rng.integers(0, 256, (120, 8, 8, 1), dtype=np.uint8)
    images[labels == 1, :4] = 255  # two learnable classes, one of noise
    images[labels == 2, 4:] = 255
    return DeviceData.from_arrays(
        images, labels, 3, torch.device("cpu"), normalization="dataset", crop_padding=0, hflip=False
    )


def test_admission_trains_only_on_the_start_and_what_the_network_agreed_with(data) -> None:
    config = get_preset("tiny").replace(refine_rounds=4, refine_epochs=1, refine_admit_prob=0.5)
    learner = RecordingLearner(data, config)
    start = torch.zeros(data.n, dtype=torch.bool)
    start[::3] = True
    refine(learner, start, seed=0)
    assert torch.equal(learner.trained_on[0], start)
    for before, trained in zip(learner.evaluations, learner.trained_on[1:], strict=False):
        assert torch.equal(trained, start | (before.given_prob >= 0.5))


def test_reference_refinement_trains_on_what_it_keeps(data) -> None:
    config = get_preset("paper").replace(arch="small_cnn", refine_rounds=3, refine_epochs=1)
    assert config.refine_admit_prob is None
    assert config.refine_trust is None
    learner = RecordingLearner(data, config)
    start = torch.ones(data.n, dtype=torch.bool)
    confidence = torch.full((data.n,), 0.5)
    refine(learner, start, seed=0)
    for evaluation, trained in zip(learner.evaluations, learner.trained_on[1:], strict=False):
        agrees = (evaluation.prediction == data.labels).float()
        confidence = 0.2 * agrees + 0.8 * confidence
        assert torch.equal(trained, confidence > 0.5)


def test_trusted_start_is_the_kept_samples_that_few_voters_reject() -> None:
    against = torch.tensor([0.0, 0.2, 0.3, 0.5, 0.9])
    keep = against <= 0.5
    outcome = Vote(label=torch.zeros(5, dtype=torch.long), count=torch.ones(5, dtype=torch.long),
                   voters=torch.full((5,), 4), against=against, keep=keep)  # fmt: skip
    trusted = refinement_start(outcome, get_preset("fast").replace(refine_trust=0.25))
    assert trusted.tolist() == [True, True, False, False, False]
    assert torch.equal(refinement_start(outcome, get_preset("paper")), keep)
