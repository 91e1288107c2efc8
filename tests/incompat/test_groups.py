"""Trigger groups on synthetic features: a small cluster the vote rejects is a group; a small
cluster it does not reject, or a natural split of a class, is not."""

from __future__ import annotations

import torch

from incompat.groups import find_groups

MAX_SHARE, MIN_CONTRAST = 0.35, 0.3


def features_and_labels(shifted: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of 300 Gaussian features; the first ``shifted`` samples of class 2 moved far
    along one axis (a shared trigger feature)."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(900, 32, generator=generator)
    labels = torch.arange(3).repeat_interleave(300)
    features[600 : 600 + shifted, 5] += 10.0
    return features, labels


def groups(features, labels, rejected):
    generator = torch.Generator().manual_seed(1)
    return find_groups(features, labels, rejected, 3, max_share=MAX_SHARE,
                       min_contrast=MIN_CONTRAST, generator=generator)  # fmt: skip


def test_a_small_separate_cluster_that_the_vote_rejects_is_a_group() -> None:
    features, labels = features_and_labels(shifted=40)
    rejected = torch.zeros(900, dtype=torch.bool)
    rejected[600:630] = True  # the vote caught 30 of the 40 poisons
    rejected[::50] = True  # and rejects a few samples everywhere
    found = groups(features, labels, rejected)
    assert [g.cls for g in found] == [2]
    group = found[0]
    assert group.members[600:640].all(), "the poisons the vote kept are flagged too"
    assert int(group.members.sum()) == 40
    assert group.share == 40 / 300
    assert abs(group.rejected - 30 / 40) < 1e-6
    assert group.contrast >= MIN_CONTRAST


def test_a_cluster_the_vote_accepts_is_not_a_group() -> None:
    features, labels = features_and_labels(shifted=40)
    rejected = torch.zeros(900, dtype=torch.bool)
    rejected[::20] = True
    assert groups(features, labels, rejected) == []


def test_a_natural_split_of_a_class_is_not_a_group() -> None:
    features, labels = features_and_labels(shifted=150)  # half the class: sleeves or none
    rejected = torch.zeros(900, dtype=torch.bool)
    rejected[600:750] = True
    assert groups(features, labels, rejected) == []


def test_the_group_is_narrowed_to_the_half_that_stands_out() -> None:
    features, labels = features_and_labels(shifted=0)
    # A small cluster of 60: 30 poisons far out on one axis, 30 clean samples out on another.
    features[600:630, 5] += 12.0
    features[630:660, 5] += 6.0
    features[630:660, 9] += 6.0
    rejected = torch.zeros(900, dtype=torch.bool)
    rejected[600:628] = True
    found = groups(features, labels, rejected)
    assert len(found) == 1
    members = found[0].members
    assert members[600:630].all()
    assert not members[630:660].any(), "the clean half, rejected like the rest, is dropped"
