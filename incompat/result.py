"""What ``detect`` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from incompat.config import EngineConfig
from incompat.verdict import Verdict


@dataclass(frozen=True)
class ClassSummary:
    label: int  # the class as given in the input labels
    n_samples: int
    n_flagged: int
    # The label the weak learners most often voted for among this class's suspected poisons, or
    # without any, its flagged samples: a backdoor's target class points back at its source.
    flagged_voted_label: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "n_samples": self.n_samples,
            "n_flagged": self.n_flagged,
            "flagged_voted_label": self.flagged_voted_label,
        }


@dataclass(frozen=True)
class GroupSummary:
    """A trigger group (groups.py): samples of one class that share a feature the rest of the
    class lacks and that the vote rejects far more often than the rest."""

    label: int  # the given class, as in the input labels
    n_samples: int
    share: float  # of its class
    rejected: float  # share of its members the vote rejects
    rejected_elsewhere: float  # share of the rest of the class the vote rejects

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "n_samples": self.n_samples,
            "share": round(self.share, 4),
            "rejected": round(self.rejected, 4),
            "rejected_elsewhere": round(self.rejected_elsewhere, 4),
        }


@dataclass(frozen=True)
class DetectionResult:
    """Per-sample flags and scores, and how they were obtained.

    ``score`` is 1 - c, where c is the self-paced refinement's confidence that the given label is
    genuine, with ties broken by ``label_prob``: a sample is flagged iff its score is at least
    0.5. ``vote_score`` is the share of weak learners that voted against the given label, before
    refinement. ``verdict`` says whether the dataset is poisoned; the flagged samples of the
    groups it implicates are suspected poisons (``is_suspected_poison``), the other flagged ones
    label issues. ``most_suspicious()`` ranks suspected poisons first, then by the score.
    """

    is_flagged: np.ndarray  # bool, N
    score: np.ndarray  # float32, N, higher = more suspicious
    vote_score: np.ndarray  # float32, N
    # float32, N: the refinement network's final probability of the given label (without
    # refinement, the share of voters agreeing with it)
    label_prob: np.ndarray
    voted_label: (
        np.ndarray
    )  # int64, N: the learners' plurality label (input label space), -1 if none
    cluster_ids: np.ndarray  # int16, bags x N: the sample's cluster in each bag, -1 if none
    class_summary: list[ClassSummary]
    trigger_groups: list[GroupSummary]  # flagged whole, whatever the refinement decided
    in_trigger_group: np.ndarray  # bool, N: the sample is in one of the trigger groups
    is_suspected_poison: np.ndarray  # bool, N: flagged, in a group the verdict implicates
    verdict: Verdict
    timings: dict[str, float]
    config: EngineConfig
    seed: int
    engine_version: str
    n_learners: int
    epoch_equivalents: float  # training passes over N samples, all stages together
    device: str

    @property
    def n_samples(self) -> int:
        return int(self.is_flagged.size)

    @property
    def flagged_indices(self) -> np.ndarray:
        return np.flatnonzero(self.is_flagged)

    @property
    def is_label_issue(self) -> np.ndarray:
        """Flagged, but in no implicated group: mislabelled or ambiguous samples."""
        return np.asarray(self.is_flagged & ~self.is_suspected_poison)

    def most_suspicious(self, k: int | None = None) -> np.ndarray:
        """Indices from most to least suspicious: suspected poisons first (the verdict's
        evidence), then trigger groups' members, then by score, then by the vote."""
        order = np.lexsort(
            (-self.vote_score, -self.score, ~self.in_trigger_group, ~self.is_suspected_poison)
        )
        return order if k is None else order[:k]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary without per-sample arrays."""
        return {
            "n_samples": self.n_samples,
            "n_flagged": int(self.is_flagged.sum()),
            "n_suspected_poisons": int(self.is_suspected_poison.sum()),
            "verdict": self.verdict.to_dict(),
            "n_learners": self.n_learners,
            "epoch_equivalents": round(self.epoch_equivalents, 1),
            "classes": [c.to_dict() for c in self.class_summary],
            "trigger_groups": [g.to_dict() for g in self.trigger_groups],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "config": self.config.to_dict(),
            "seed": self.seed,
            "engine_version": self.engine_version,
            "device": self.device,
        }


def summarize_classes(
    labels: np.ndarray, is_flagged: np.ndarray, voted_label: np.ndarray, suspected: np.ndarray
) -> list[ClassSummary]:
    """Per-class counts; ``labels`` and ``voted_label`` in the input label space. A class with
    suspected poisons points where they point: its label issues (coats voted dress) would
    otherwise outvote a backdoor of fewer samples."""
    summaries = []
    for cls in np.unique(labels):
        in_class = labels == cls
        pointing = in_class & (suspected if (in_class & suspected).any() else is_flagged)
        flagged_votes = voted_label[pointing]
        flagged_votes = flagged_votes[flagged_votes >= 0] if flagged_votes.size else flagged_votes
        top: int | None = None
        if flagged_votes.size:
            values, counts = np.unique(flagged_votes, return_counts=True)
            top = int(values[counts.argmax()])
        summaries.append(
            ClassSummary(
                label=int(cls),
                n_samples=int(in_class.sum()),
                n_flagged=int((in_class & is_flagged).sum()),
                flagged_voted_label=top,
            )
        )
    return summaries
