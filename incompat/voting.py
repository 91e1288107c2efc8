"""Voting over the weak learners and self-paced refinement (ENGINE_SPEC Algorithm 2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from incompat.config import EngineConfig
from incompat.training import Learner


@dataclass(frozen=True)
class Vote:
    label: torch.Tensor  # int64 N: plurality label, -1 where no learner voted
    count: torch.Tensor  # int64 N: votes for that label
    voters: torch.Tensor  # int64 N: learners that voted on the sample
    against: torch.Tensor  # float32 N: share of voters predicting another label than the given one
    keep: torch.Tensor  # bool N: the vote agrees with the given label


def vote(
    predictions: torch.Tensor,
    given_probs: torch.Tensor,
    cores: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    config: EngineConfig,
    generator: torch.Generator,
) -> Vote:
    """Plurality vote of K learners' ``predictions`` (K x N) with ties broken at random.

    With the ``out_of_cluster`` rule learner k abstains on its own cluster ``cores[k]``. With
    ``vote_agree_prob`` set, a sample is kept when at least half of its voters give its label that
    probability (``given_probs``, K x N); otherwise when the plurality label is its label.
    """
    _k, n = predictions.shape
    voting = torch.ones_like(cores) if config.vote_rule == "plurality" else ~cores
    counts = torch.zeros(n, num_classes, device=predictions.device)
    counts.scatter_add_(1, predictions.T, voting.T.float())
    voters = voting.sum(0)
    # Random tie-breaking: a uniform jitter below one vote only reorders equal counts.
    jitter = torch.rand(counts.shape, device=counts.device, generator=generator) * 0.5
    label = (counts + jitter).argmax(1)
    count = counts.gather(1, label[:, None]).squeeze(1).long()
    label = torch.where(voters > 0, label, torch.full_like(label, -1))
    if config.vote_agree_prob is None:
        agree = counts.gather(1, labels[:, None]).squeeze(1)
    else:
        agree = ((given_probs >= config.vote_agree_prob) & voting).sum(0).float()
    against = torch.where(voters > 0, 1.0 - agree / voters.clamp_min(1), torch.zeros_like(agree))
    if config.vote_agree_prob is None:
        keep = (label == labels) & (count >= config.min_votes)
    else:
        keep = (against <= 0.5) & (voters >= config.min_votes)
    return Vote(label=label, count=count, voters=voters.long(), against=against, keep=keep)


def refinement_start(outcome: Vote, config: EngineConfig) -> torch.Tensor:
    """The samples the refinement network learns from first (``EngineConfig.refine_trust``)."""
    if config.refine_trust is None:
        return outcome.keep
    return outcome.keep & (outcome.against <= config.refine_trust)


def refine(
    learner: Learner,
    start: torch.Tensor,
    seed: int,
    on_round: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-paced refinement: keep training one network, from the ``start`` samples on, and
    re-decide each sample by an average of whether the network agrees with its given label.

    Returns the confidence c in [0, 1] that each sample's label is genuine (keep iff c > 0.5), and
    the final network's probability of each given label.
    """
    config = learner.config
    learner.reset(seed)
    confidence = torch.full(start.shape, 0.5, device=start.device)
    label_prob = torch.full(start.shape, 0.5, device=start.device)
    train_set = start
    for round_ in range(config.refine_rounds):
        learner.new_optimizer()
        learner.train(train_set, config.refine_epochs)
        evaluation = learner.evaluate()
        if config.agree_prob is None:
            agrees = evaluation.prediction == learner.data.labels
        else:
            agrees = evaluation.given_prob >= config.agree_prob
        confidence = (1 - config.refine_decay) * agrees.float() + config.refine_decay * confidence
        label_prob = evaluation.given_prob
        if config.refine_admit_prob is None:
            train_set = confidence > 0.5
        else:
            train_set = start | (evaluation.given_prob >= config.refine_admit_prob)
        if on_round is not None:
            on_round(round_ + 1, config.refine_rounds)
    return confidence, label_prob
