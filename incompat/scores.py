"""Final scores: continuous (no ties in a ranking) and raised to a floor where a sample is known
to be in a trigger group or an implicated group, keeping their order."""

from __future__ import annotations

import torch

from incompat.config import FLAG_THRESHOLD

TIE_BREAK = 1e-3  # under the gap between two of the refinement's confidence levels


def untied(score: torch.Tensor, label_prob: torch.Tensor, is_flagged: torch.Tensor) -> torch.Tensor:
    """The score made continuous: the refinement's confidence comes in a few levels, so how
    improbable the final network finds the label breaks its ties. By rank, spread evenly under
    ``TIE_BREAK``: probabilities differ by less than float32 can add to a score near 0.8. Every
    flagged sample stays at ``FLAG_THRESHOLD`` or more and every other one under it."""
    n = label_prob.numel()
    rank = torch.empty(n, device=score.device)
    rank[torch.argsort(label_prob.float(), descending=True, stable=True)] = torch.arange(
        n, device=score.device, dtype=rank.dtype
    )
    untied = score + TIE_BREAK * rank / n
    return torch.where(
        is_flagged,
        untied.clamp(FLAG_THRESHOLD, 1.0),
        untied.clamp(0.0, FLAG_THRESHOLD - TIE_BREAK),
    )


def raised(score: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """Scores mapped into [floor, 1] where a floor is set, keeping their order (a clamp would
    tie them), in one step (each step would squeeze their differences)."""
    return torch.where(floor > 0, floor + (1.0 - floor) * score, score)
