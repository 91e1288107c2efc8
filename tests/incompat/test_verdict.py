"""The verdict's statistic on synthetic votes: what makes a group of flagged samples a backdoor's
and what does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from incompat.groups import TriggerGroup
from incompat.verdict import ALPHA, find_suspects

N, CLASSES, SIDE = 2000, 10, 16


def textured(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images, N x 1 x SIDE x SIDE, with a dark border as real images often have, and
    balanced labels."""
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, (N, 1, SIDE, SIDE), dtype=np.uint8)
    images[:, 0, 0, :] = generator.integers(0, 16, (N, SIDE), dtype=np.uint8)
    labels = np.arange(N) % CLASSES
    return torch.from_numpy(images), torch.from_numpy(labels)


def ordinary_flags(
    labels: torch.Tensor, seed: int, share: float = 0.04
) -> tuple[torch.Tensor, ...]:
    """A few per cent flagged, voted to random other classes: label issues."""
    generator = torch.Generator().manual_seed(seed)
    flagged = torch.rand(labels.numel(), generator=generator) < share
    voted = labels.clone()
    shift = torch.randint(1, CLASSES, (labels.numel(),), generator=generator)
    voted[flagged] = (labels[flagged] + shift[flagged]) % CLASSES
    return flagged, voted


def stamp(
    images: torch.Tensor, labels: torch.Tensor, source: int, target: int, n: int
) -> torch.Tensor:
    """A 2x2 white square on ``n`` images of ``source``, relabelled ``target``; the poison mask."""
    index = (labels == source).nonzero().squeeze(1)[:n]
    images[index, :, 5:7, 9:11] = 255
    labels[index] = target
    poison = torch.zeros_like(labels, dtype=torch.bool)
    poison[index] = True
    return poison


def judge(images, labels, flagged, voted, groups=()):
    return find_suspects(
        images, labels, flagged, voted, list(groups), CLASSES, torch.Generator().manual_seed(0)
    )


@pytest.mark.parametrize("seed", range(5))
def test_ordinary_flags_are_no_evidence(seed: int) -> None:
    images, labels = textured(seed)
    flagged, voted = ordinary_flags(labels, seed)
    suspects, p_value, n_tests = judge(images, labels, flagged, voted)
    assert suspects == []
    assert p_value > ALPHA
    assert n_tests > SIDE * SIDE  # every pixel of every candidate group counts


def test_a_stamped_group_is_implicated_with_its_source() -> None:
    images, labels = textured(0)
    poison = stamp(images, labels, source=3, target=7, n=40)
    flagged, voted = ordinary_flags(labels, 0)
    caught = poison & (torch.rand(N, generator=torch.Generator().manual_seed(1)) < 0.8)
    flagged |= caught
    voted[caught] = 3
    suspects, p_value, _ = judge(images, labels, flagged, voted)
    assert len(suspects) == 1
    suspect = suspects[0]
    assert (suspect.target, suspect.sources[0], suspect.evidence) == (7, 3, "shared_pixels")
    assert suspect.p_value == p_value < 1e-20
    # Every poison carries the trigger, which the source class never has: the unflagged ones
    # are suspected too. A noise image may carry most of it by chance.
    assert bool(suspect.members[poison].all())
    assert int((suspect.members & ~poison).sum()) <= 2


def test_poisons_voted_to_several_classes_are_tested_together() -> None:
    images, labels = textured(1)
    poison = stamp(images, labels, source=2, target=5, n=30)
    flagged, voted = ordinary_flags(labels, 1)
    flagged |= poison
    # No two poisons in five voted alike: each (target, source) pair alone is too small.
    voted[poison] = torch.tensor([0, 1, 2, 3, 4, 6, 7, 8, 9] * 4)[: int(poison.sum())]
    suspects, _, _ = judge(images, labels, flagged, voted)
    assert [s.target for s in suspects] == [5]
    assert bool(suspects[0].members[poison].all())
    assert int((suspects[0].members & ~poison).sum()) <= 2


def test_a_value_the_source_class_shares_is_no_trigger() -> None:
    """A group dark at the border, like its source class: a common feature, not a trigger."""
    images, labels = textured(2)
    flagged, voted = ordinary_flags(labels, 2)
    group = (labels == 4) & (torch.arange(N) < 600)
    flagged |= group
    voted[group] = 6
    suspects, p_value, _ = judge(images, labels, flagged, voted)
    assert suspects == []
    assert p_value > ALPHA


def test_a_shared_blank_is_no_trigger() -> None:
    """Coats that lack a T-shirt's sleeves share the blank background there, which most images
    have: an absence, not a trigger."""
    images, labels = textured(6)
    flagged, voted = ordinary_flags(labels, 6)
    group = (labels == 4) & (torch.arange(N) < 300)  # 30 samples
    blank = (labels != 4) & (labels != 6) | group  # 80 % of the images, the source's none
    images[blank, :, 8, 8] = 0
    flagged |= group
    voted[group] = 6
    suspects, p_value, _ = judge(images, labels, flagged, voted)
    assert suspects == []
    assert p_value == 1.0


def test_a_handful_is_not_a_pattern() -> None:
    images, labels = textured(3)
    poison = stamp(images, labels, source=1, target=8, n=4)
    flagged, voted = ordinary_flags(labels, 3)
    flagged |= poison
    voted[poison] = 1
    # The whole trigger still marks the class's unflagged samples only once it is found.
    suspects, _, _ = judge(images, labels, flagged, voted)
    assert suspects == []


def blend(images: torch.Tensor, members: torch.Tensor, opacity: float) -> None:
    """A fixed noise image blended over the members: no pixel the same on all of them."""
    pattern = torch.randint(0, 256, images.shape[1:], generator=torch.Generator().manual_seed(9))
    mixed = (1 - opacity) * images[members].float() + opacity * pattern.float()
    images[members] = mixed.round().to(torch.uint8)


def test_a_blended_trigger_group_is_implicated() -> None:
    images, labels = textured(4)
    flagged, voted = ordinary_flags(labels, 4)
    members = (labels == 9) & (torch.arange(N) < 400)  # 40 samples
    blend(images, members, opacity=0.3)
    flagged |= members
    voted[members] = 2
    group = TriggerGroup(cls=9, members=members, share=0.2, rejected=1.0, rejected_elsewhere=0.05)
    suspects, _, _ = judge(images, labels, flagged, voted, [group])
    assert [(s.target, s.sources, s.evidence) for s in suspects] == [(9, (2,), "trigger_group")]
    assert torch.equal(suspects[0].members, members)
    assert suspects[0].shared >= 0.8


def test_a_trigger_group_without_a_shared_feature_is_not_implicated() -> None:
    """A cluster the learners reject, of images with nothing in common but their class: the
    vote's disagreement alone is no backdoor."""
    images, labels = textured(5)
    flagged, voted = ordinary_flags(labels, 5)
    members = (labels == 9) & (torch.arange(N) < 400)
    flagged |= members
    voted[members] = 2
    group = TriggerGroup(cls=9, members=members, share=0.2, rejected=1.0, rejected_elsewhere=0.05)
    suspects, p_value, _ = judge(images, labels, flagged, voted, [group])
    assert suspects == []
    assert p_value == 1.0
