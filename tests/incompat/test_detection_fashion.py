"""The real engine finds real planted backdoors of each trigger family: Fashion-MNIST, `tiny`.

The bounds come from these exact setups (3,000 images): a local stamp (recall 1.000 on seeds 0-5
at a 4.1-7.1 % clean-flag rate before trigger groups), a noise image blended over the whole image
(recall 1.000 on seeds 0 and 1, clean flagged 5.4 % and 6.0 %) and an all-to-one corner patch
(recall 1.000 on seeds 0 and 1, clean flagged 8.1 % and 5.9 %). The last two are found by trigger
groups: without them `tiny` kept 27 % and 17 % of the blend's poisons on those seeds. The same
images with no poisons: 4.7 % flagged, no trigger group (seed 0).
"""

from __future__ import annotations

from typing import Any

import pytest

from incompat import detect
from incompat.attacks import poison
from incompat.datasets import balanced_subset
from incompat.metrics import detection_metrics

SAMPLES = 3000
MIN_RECALL = 0.9
MAX_CLEAN_FLAG_RATE = 0.10

FAMILIES: dict[str, dict[str, Any]] = {
    # the paper's X of 5 pixels, trouser -> sneaker
    "stamp": {"source": 1, "target": 7, "eps": 0.1, "shape": "pattern"},
    # a fixed noise image blended over dresses at opacity 0.15, relabelled trouser
    "blend": {"source": 3, "target": 1, "eps": 0.1, "shape": "blend_noise", "opacity": 0.15},
    # a 3x3 corner patch on 3 % of every other class, relabelled T-shirt
    "all-to-one": {"sources": "all", "target": 0, "eps": 0.03, "shape": "patch", "size": 3,
                   "placement": "corner"},
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("family", "seed", "top_precision"),
    # All-to-one: 0.72 of the top 81 (seed 1, 2 threads). `tiny`'s vote (about three voters per
    # sample) can make a false group too, which ranks with the true one (coats, on seed 0).
    [("stamp", 0, 0.8), ("stamp", 1, 0.8), ("blend", 0, 0.8), ("all-to-one", 1, 0.6)],
)
def test_tiny_preset_finds_a_planted_backdoor(
    fashion_mnist, family: str, seed: int, top_precision: float
) -> None:
    images, labels = fashion_mnist
    subset = balanced_subset(labels, SAMPLES, seed=seed)
    planted = poison(images[subset], labels[subset], seed=seed, **FAMILIES[family])
    result = detect(planted.images, planted.labels, config="tiny", seed=seed, device="cpu")
    metrics = detection_metrics(result.is_flagged, planted.is_poison)
    assert metrics.recall >= MIN_RECALL, metrics
    assert metrics.clean_flag_rate <= MAX_CLEAN_FLAG_RATE, metrics
    # The audit points at the attack: the target class's flagged samples were voted to a source.
    target = next(c for c in result.class_summary if c.label == planted.target)
    assert target.flagged_voted_label in planted.sources
    # The most suspicious samples are the poisons.
    top = result.most_suspicious(metrics.n_poisons)
    assert planted.is_poison[top].mean() >= top_precision
