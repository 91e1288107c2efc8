"""The real engine finds real planted backdoors and says so in its verdict: Fashion-MNIST, `tiny`.

The two families the vote alone misses (docs/ENGINE.md, finding 6), 3,000 images: a noise image
blended over dresses relabelled trouser (seed 0: recall 1.000, 6.5 % of samples flagged, the
verdict implicates trouser through a trigger group, suspected-poison precision 0.83) and an
all-to-one corner patch (seed 1: recall 1.000, the verdict implicates T-shirt, precision 1.00).
A local stamp, and the same images with no poisons, are the CI gate's own test
(tests/e2e/test_ci_hook.py); the statistic itself is tests/incompat/test_verdict.py's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from incompat import detect
from incompat.research.attacks import poison
from incompat.research.datasets import balanced_subset
from incompat.research.metrics import detection_metrics

SAMPLES = 3000
MIN_RECALL = 0.9
MAX_CLEAN_FLAG_RATE = 0.10

FAMILIES: dict[str, dict[str, Any]] = {
    # a fixed noise image blended over dresses at opacity 0.15, relabelled trouser
    "blend": {"source": 3, "target": 1, "eps": 0.1, "shape": "blend_noise", "opacity": 0.15},
    # a 3x3 corner patch on 3 % of every other class, relabelled T-shirt
    "all-to-one": {"sources": "all", "target": 0, "eps": 0.03, "shape": "patch", "size": 3,
                   "placement": "corner"},
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("family", "seed"), [("blend", 0), ("all-to-one", 1)])
def test_tiny_preset_finds_a_planted_backdoor(fashion_mnist, family: str, seed: int) -> None:
    images, labels = fashion_mnist
    subset = balanced_subset(labels, SAMPLES, seed=seed)
    planted = poison(images[subset], labels[subset], seed=seed, **FAMILIES[family])
    result = detect(planted.images, planted.labels, config="tiny", seed=seed, device="cpu")
    metrics = detection_metrics(result.is_flagged, planted.is_poison)
    assert metrics.recall >= MIN_RECALL, metrics
    assert metrics.clean_flag_rate <= MAX_CLEAN_FLAG_RATE, metrics
    # The verdict names the target, and its suspected poisons are the poisons.
    assert result.verdict.status == "poisoned"
    assert [g.target for g in result.verdict.implicated] == [planted.target]
    suspected = detection_metrics(result.is_suspected_poison, planted.is_poison)
    assert suspected.recall >= MIN_RECALL, suspected
    assert suspected.precision >= 0.8, suspected
    # They rank first.
    top = result.most_suspicious(int(result.is_suspected_poison.sum()))
    assert result.is_suspected_poison[top].all()
    # The score is continuous: ties only where two values meet within float32's resolution
    # (the `rank` of the API and most_suspicious() are strict orders).
    flagged_scores = result.score[result.is_flagged]
    assert np.unique(flagged_scores).size >= 0.98 * flagged_scores.size
