"""Trigger groups: poisons that share a feature their class lacks, confirmed by the vote.

A backdoor's poisons carry one trigger, so a network trained on the whole dataset (as the victim's
would be) gives them a shared feature: in that network's penultimate features they form a small,
separate cluster inside their given class (activation clustering's premise, Chen et al. 2018).
A class also splits naturally (sleeves or none), so a small cluster alone is no evidence. What
marks a backdoor is that the incompatible-cluster learners reject the cluster's members far more
often than the rest of their class: the group shares a feature *and* is incompatible with its
label. Both signals are needed; neither uses a clean reference set.

The vote alone misses poisons whose trigger a network learns from a handful of examples (a blend
over the whole image, all-to-one patches): the few the vote keeps teach the refinement network
the trigger, and then it keeps every poison (docs/ENGINE.md, finding 6). A confirmed group flags
all its members, whatever the refinement decided.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from incompat.cost import probe_epochs
from incompat.training import Learner, penultimate_features

_DIMS = 10  # principal components the clustering sees, as in activation clustering
_RESTARTS = 4
_ITERATIONS = 30


@dataclass(frozen=True)
class TriggerGroup:
    """A confirmed group inside one given class (class index, not the input label)."""

    cls: int
    members: torch.Tensor  # bool N
    share: float  # of its class
    rejected: float  # share of its members the vote rejects
    rejected_elsewhere: float  # share of the rest of its class the vote rejects

    @property
    def contrast(self) -> float:
        return self.rejected - self.rejected_elsewhere


def probe_features(learner: Learner, steps: int, seed: int) -> torch.Tensor:
    """Penultimate features (N x D) of a fresh network trained on every sample for about
    ``steps`` SGD steps."""
    learner.reset(seed)
    epochs = probe_epochs(steps, learner.data.n, learner.config.batch_size)
    learner.train(torch.ones(learner.data.n, dtype=torch.bool, device=learner.device), epochs)
    return penultimate_features(learner)


def find_groups(
    features: torch.Tensor,
    labels: torch.Tensor,
    rejected: torch.Tensor,
    num_classes: int,
    *,
    max_share: float,
    min_contrast: float,
    generator: torch.Generator,
) -> list[TriggerGroup]:
    """In each class, the smaller of two feature clusters when it holds at most ``max_share`` of
    the class and the vote rejects its members at least ``min_contrast`` more often than the
    rest; narrowed while one half of it is rejected like the rest of the class and the other
    half stands out."""
    groups = []
    for cls in range(num_classes):
        index = (labels == cls).nonzero().squeeze(1)
        if index.numel() < 4 * _DIMS:
            continue
        part = index[_smaller_cluster(features[index], generator)]
        rest_rejected = _share(rejected, index[~torch.isin(index, part)])
        if part.numel() > max_share * index.numel():
            continue
        if _share(rejected, part) - rest_rejected < min_contrast:
            continue
        while part.numel() >= 4 * _DIMS:
            inner = part[_smaller_cluster(features[part], generator)]
            outer = part[~torch.isin(part, inner)]
            a, b = (
                (inner, outer)
                if _share(rejected, inner) >= _share(rejected, outer)
                else (outer, inner)
            )
            # Drop the half that looks like the rest of the class, and only such a half.
            if _share(rejected, a) - _share(rejected, b) < min_contrast:
                break
            if _share(rejected, b) - rest_rejected >= min_contrast:
                break
            part = a
        members = torch.zeros_like(rejected)
        members[part] = True
        groups.append(
            TriggerGroup(
                cls=cls,
                members=members,
                share=part.numel() / index.numel(),
                rejected=_share(rejected, part),
                rejected_elsewhere=rest_rejected,
            )
        )
    return groups


def _share(mask: torch.Tensor, index: torch.Tensor) -> float:
    return float(mask[index].float().mean()) if index.numel() else 0.0


def _smaller_cluster(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Boolean mask of the smaller of two k-means clusters of ``x`` in its top principal
    components (the best of a few k-means++ starts)."""
    centred = x - x.mean(0)
    _u, _s, vt = torch.linalg.svd(centred, full_matrices=False)
    points = centred @ vt[:_DIMS].T
    best_assignment, best_inertia = None, float("inf")
    for _ in range(_RESTARTS):
        assignment, inertia = _two_means(points, generator)
        if inertia < best_inertia:
            best_assignment, best_inertia = assignment, inertia
    assert best_assignment is not None
    smaller = int(torch.bincount(best_assignment, minlength=2).argmin())
    return best_assignment == smaller


def _two_means(points: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    n = points.shape[0]
    first = points[torch.randint(n, (1,), generator=generator, device=points.device)]
    distance = (points - first).square().sum(1)
    second = points[torch.multinomial(distance + 1e-12, 1, generator=generator)]
    centres = torch.cat([first, second])
    assignment = torch.zeros(n, dtype=torch.long, device=points.device)
    for _ in range(_ITERATIONS):
        assignment = torch.cdist(points, centres).argmin(1)
        updated = torch.stack(
            [
                points[assignment == k].mean(0) if (assignment == k).any() else centres[k]
                for k in range(2)
            ]
        )
        if torch.allclose(updated, centres):
            break
        centres = updated
    inertia = float(torch.cdist(points, centres).min(1).values.square().sum())
    return assignment, inertia
