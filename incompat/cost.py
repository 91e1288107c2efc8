"""What an audit costs before it runs: the training and evaluation passes its schedule makes, the
seconds they take at a measured throughput, and the memory the data and the training need.

Torch-free, so the API can answer an estimate without loading the engine. The passes follow the
schedule's arithmetic (clustering.py, voting.py, groups.py) with each cluster at its target size;
the seconds scale a throughput measured for a device and network at 28 x 28 (``THROUGHPUT``) by the
image's pixels. ``bench/cost.py`` compares the estimate with measured runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from incompat.config import EngineConfig

# A forward pass over a sample, against a training step (forward, backward, update) over one.
_EVAL_SHARE = 0.35
_REFERENCE_PIXELS = 28 * 28
# Training samples per second at 28 x 28, by device kind and network, with evaluation passes
# counted at ``_EVAL_SHARE``: measured on a 2-core CPU (bench/cost.py: ``fast`` on 10,000
# Fashion-MNIST images). The same CPU has run twice as fast on other days, which is why the
# service learns the figure from its own audits (app/estimates.py). A device kind without a
# figure has no seconds estimate until the service has finished audits on it to learn from.
THROUGHPUT: dict[tuple[str, str], float] = {
    ("cpu", "small_cnn"): 4150.0,
}
# Floats of activations kept for the backward pass, per input pixel of one sample.
_ACTIVATION_FLOATS = {"small_cnn": 40, "resnet20": 180, "resnet32": 290, "preact_resnet18": 900}


@dataclass(frozen=True)
class Passes:
    """Passes over the whole dataset: training (``samples_trained / N``, as the engine reports
    ``epoch_equivalents``) and evaluation (forward passes)."""

    train: float
    evaluate: float

    @property
    def weighted(self) -> float:
        return self.train + _EVAL_SHARE * self.evaluate


@dataclass(frozen=True)
class Estimate:
    passes: Passes
    seconds: float | None  # None: no throughput known for the device
    device_bytes: int


def probe_epochs(steps: int, n_samples: int, batch_size: int) -> int:
    """Epochs that make about ``steps`` SGD steps over ``n_samples``: from 2 (large datasets)
    to 30 (a few hundred images, which more passes would only memorise)."""
    return min(30, max(2, math.ceil(steps * batch_size / n_samples)))


def passes(config: EngineConfig, n: int) -> Passes:
    """The schedule's passes over ``n`` samples, each cluster taken at its target size."""
    train = evaluate = 0.0
    for _ in range(config.bags):
        active = 1.0  # share of the samples not yet clustered
        for cluster in range(config.clusters_per_bag):
            if active <= config.min_active_frac:
                break
            dp = min(1.0, config.cluster_frac / active)
            core = active
            if dp < 0.999:
                warmup = _warmup_share(config, active, first=cluster == 0)
                rounds = 2 + min(3, max(1, math.floor(1.0 / dp)))
                train += warmup * config.warmup_epochs
                keep = active
                for it in range(rounds):
                    if it > 0:
                        train += keep / config.beta * config.refit_epochs
                    evaluate += active
                    keep = min(1.0, min(3, max(1, rounds - 2 - it)) * dp) * active
                core = keep
            train += core * config.retrain_epochs
            evaluate += 1.0  # the learner's predictions on every sample
            active -= core
    train += config.refine_rounds * config.refine_epochs  # on about every sample
    evaluate += config.refine_rounds
    if config.probe_steps > 0:
        train += probe_epochs(config.probe_steps, n, config.batch_size)
        evaluate += 1.0
    return Passes(train, evaluate)


def _warmup_share(config: EngineConfig, active: float, *, first: bool) -> float:
    if config.warmup_set == "half_of_all":
        return 0.5
    if config.warmup_set == "half" or first:
        return 0.5 * active
    return active


def device_bytes(config: EngineConfig, n: int, shape: tuple[int, ...]) -> int:
    """The dataset on the device (uint8), a batch's activations and the network (float32)."""
    pixels = math.prod(shape[:2])
    channels = shape[2] if len(shape) > 2 else 1
    data = n * pixels * channels
    activations = 4 * config.batch_size * pixels * _ACTIVATION_FLOATS[config.arch]
    return data + activations + 64 * 2**20  # the network, its optimiser, the runtime's buffers


def estimate(
    config: EngineConfig,
    n: int,
    shape: tuple[int, ...],
    *,
    device_kind: str = "cpu",
    throughput: float | None = None,
) -> Estimate:
    """The cost of auditing ``n`` images of ``shape`` (H, W or H, W, C) on ``device_kind``;
    ``throughput`` (samples per second at 28 x 28) replaces the built-in figure, e.g. one learnt
    from the service's own finished audits."""
    counted = passes(config, n)
    rate = throughput or THROUGHPUT.get((device_kind, config.arch))
    scale = math.prod(shape[:2]) / _REFERENCE_PIXELS
    seconds = None if rate is None else counted.weighted * n * scale / rate
    return Estimate(counted, seconds, device_bytes(config, n, shape))


def throughput_of(config: EngineConfig, n: int, shape: tuple[int, ...], seconds: float) -> float:
    """The throughput (samples per second at 28 x 28) that a finished audit of ``seconds`` shows:
    what ``estimate`` needs to have predicted it."""
    scale = math.prod(shape[:2]) / _REFERENCE_PIXELS
    return passes(config, n).weighted * n * scale / max(seconds, 1e-9)
