"""Inverse self-paced learning (ENGINE_SPEC Algorithm 1): carve one low-loss cluster off the
samples that are not yet clustered, then train a weak learner on it."""

from __future__ import annotations

import math

import torch

from incompat.config import EngineConfig
from incompat.training import Evaluation, Learner


def refit_rounds(dp: float) -> int:
    """R = 2 + clamp(floor(1/dp), 1, 3): 5 rounds when dp <= 1/3, 4 when dp <= 1/2, else 3."""
    return 2 + min(3, max(1, math.floor(1.0 / dp)))


def target_share(cluster_frac: float, n_total: int, n_active: int) -> float:
    """dp: the target cluster size relative to the samples still active."""
    return min(1.0, cluster_frac * n_total / n_active)


def find_cluster(
    learner: Learner, active: torch.Tensor, *, n_total: int, first_in_bag: bool, seed: int
) -> torch.Tensor:
    """The boolean mask (over all N samples) of one new cluster inside ``active``."""
    config = learner.config
    n_active = int(active.sum())
    dp = target_share(config.cluster_frac, n_total, n_active)
    if dp >= 0.999:  # the remainder is small: it is the last cluster
        return active.clone()

    learner.reset(seed)
    generator = learner.generator
    labels = learner.data.labels[active]
    active_index = active.nonzero().squeeze(1)
    if config.warmup_set == "half_of_all":
        warmup = torch.rand(n_total, device=active.device, generator=generator) < 0.5
    elif config.warmup_set == "half" or first_in_bag:
        warmup = _scatter(active, active_index, _bernoulli(n_active, 0.5, generator, active.device))
    else:
        warmup = active

    rounds = refit_rounds(dp)
    smoothed = torch.zeros(n_active, device=active.device)
    keep = train_local = torch.ones(n_active, dtype=torch.bool, device=active.device)
    for it in range(rounds):
        train_set = warmup if it == 0 else _scatter(active, active_index, train_local)
        learner.train(train_set, _epochs(config, it))
        evaluation: Evaluation = learner.evaluate(active)
        smoothed = (1 - config.loss_decay) * evaluation.loss + config.loss_decay * smoothed
        share = min(1.0, min(3, max(1, rounds - 2 - it)) * dp)
        keep = _low_loss(
            smoothed, labels, share, config.class_floor_divisor, learner.data.num_classes
        )
        train_local = keep & _bernoulli(n_active, 1.0 / config.beta, generator, active.device)
    return _scatter(active, active_index, keep)


def train_weak_learner(learner: Learner, core: torch.Tensor, seed: int) -> Evaluation:
    """A fresh network trained on ``core``, and its predictions on every sample."""
    learner.reset(seed)
    learner.train(core, learner.config.retrain_epochs)
    return learner.evaluate()


def _epochs(config: EngineConfig, iteration: int) -> int:
    return config.warmup_epochs if iteration == 0 else config.refit_epochs


def _low_loss(
    smoothed: torch.Tensor, labels: torch.Tensor, share: float, divisor: float, num_classes: int
) -> torch.Tensor:
    """The ``share`` lowest-loss samples, plus the share/divisor lowest of each given class, so
    that no class drops out of a cluster entirely."""
    keep = smoothed <= quantile(smoothed, share)
    for cls in range(num_classes):
        in_class = labels == cls
        if in_class.any():
            keep |= in_class & (smoothed <= quantile(smoothed[in_class], share / divisor))
    return keep


def quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolation quantile (numpy's default), for any number of values."""
    ordered = values.float().sort().values
    position = q * (ordered.numel() - 1)
    lower = math.floor(position)
    upper = min(lower + 1, ordered.numel() - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def _bernoulli(n: int, p: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, device=device, generator=generator) < p


def _scatter(active: torch.Tensor, active_index: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """Lift a mask over the active samples to a mask over all samples."""
    full = torch.zeros_like(active)
    full[active_index[local]] = True
    return full
