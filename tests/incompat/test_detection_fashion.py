"""The real engine finds a real planted backdoor: Fashion-MNIST, `pattern` trigger, `tiny` preset.

The bounds come from this exact setup over seeds 0-5
(`python bench/detection.py --preset tiny --samples 3000 --only "pattern Trouser->Sneaker eps=0.10"
--seeds 0 1 2 3 4 5`): recall 1.000 on every seed, clean-flag rate 4.1-7.1 %.
"""

from __future__ import annotations

import pytest

from incompat import detect
from incompat.attacks import poison
from incompat.datasets import balanced_subset
from incompat.metrics import detection_metrics

SAMPLES = 3000
MIN_RECALL = 0.9
MAX_CLEAN_FLAG_RATE = 0.10


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_preset_finds_a_planted_pattern_backdoor(fashion_mnist, seed: int) -> None:
    images, labels = fashion_mnist
    subset = balanced_subset(labels, SAMPLES, seed=seed)
    planted = poison(images[subset], labels[subset], source=1, target=7, eps=0.1,
                     shape="pattern", seed=seed)  # fmt: skip
    result = detect(planted.images, planted.labels, config="tiny", seed=seed, device="cpu")
    metrics = detection_metrics(result.is_flagged, planted.is_poison)
    assert metrics.n_poisons == 30
    assert metrics.recall >= MIN_RECALL, metrics
    assert metrics.clean_flag_rate <= MAX_CLEAN_FLAG_RATE, metrics
    # The audit points back at the attack: the target class's flagged samples were voted source.
    target = next(c for c in result.class_summary if c.label == 7)
    assert target.flagged_voted_label == 1
    # The most suspicious samples are the poisons (0.97-1.00 of the top 30 on seeds 0-3).
    top = result.most_suspicious(metrics.n_poisons)
    assert planted.is_poison[top].mean() >= 0.8
