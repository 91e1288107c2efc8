"""Training and evaluation of one network over boolean masks of a ``DeviceData``.

One network is built (and compiled) once per run; every weak learner resets its weights from a
seed instead of building a new one, so compilation is paid once and runs are reproducible.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from incompat.config import EngineConfig
from incompat.data import DeviceData, shuffled_batches
from incompat.networks import build_model

_EVAL_BATCH = 512


@dataclass(frozen=True)
class Evaluation:
    """Per-sample outputs of a network on the samples it was evaluated on."""

    loss: torch.Tensor  # float32: cross-entropy against the given label
    prediction: torch.Tensor  # int64: argmax class
    given_prob: torch.Tensor  # float32: softmax probability of the given label


class Learner:
    """A network, its optimiser, and the per-run randomness, over one dataset."""

    def __init__(self, data: DeviceData, config: EngineConfig) -> None:
        self.data = data
        self.config = config
        self.device = data.device
        model = build_model(config.arch, int(data.images.shape[1]), data.num_classes).to(
            self.device
        )
        if data.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model: nn.Module = model
        self._forward: nn.Module = torch.compile(model) if config.compile else model  # type: ignore[assignment]
        self.use_bf16 = config.precision == "bf16" or (
            config.precision == "auto" and self.device.type == "cuda"
        )
        self.optimizer = self._fresh_optimizer()
        self.generator = torch.Generator(device=self.device)
        self.samples_trained = 0  # for the epoch-equivalents count

    def reset(self, seed: int) -> None:
        """Fresh weights, a fresh optimiser and a fresh random stream, all from ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in self.model.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
        self.optimizer = self._fresh_optimizer()
        self.generator.manual_seed(seed)

    def new_optimizer(self) -> None:
        self.optimizer = self._fresh_optimizer()

    def _fresh_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.SGD(
            self.model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
        )

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        if not self.use_bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def train(self, mask: torch.Tensor, epochs: int) -> None:
        """``epochs`` passes of SGD over the samples in ``mask``, augmented."""
        index = mask.nonzero().squeeze(1)
        if index.numel() < 2:
            return
        weight = self._class_weights(index) if self.config.balance_classes else None
        self.model.train()
        for _ in range(epochs):
            for batch in shuffled_batches(index, self.config.batch_size, self.generator):
                x = self.data.batch(batch, augment=True, generator=self.generator)
                with self._autocast():
                    loss = F.cross_entropy(
                        self._forward(x).float(), self.data.labels[batch], weight=weight
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.samples_trained += batch.numel()

    def _class_weights(self, index: torch.Tensor) -> torch.Tensor:
        """Inverse class frequency over ``index``, capped so a near-absent class is not blown up."""
        counts = torch.bincount(self.data.labels[index], minlength=self.data.num_classes).float()
        present = counts > 0
        weight = torch.zeros_like(counts)
        weight[present] = index.numel() / (int(present.sum()) * counts[present])
        return weight.clamp_max(10.0)

    @torch.no_grad()
    def evaluate(
        self, mask: torch.Tensor | None = None, data: DeviceData | None = None
    ) -> Evaluation:
        """Eval-mode outputs on the samples in ``mask`` (all when None), in index order; on
        ``data`` (other images, normalised like the training data) when given."""
        data = data or self.data
        index = (
            torch.arange(data.n, device=self.device) if mask is None else mask.nonzero().squeeze(1)
        )
        losses, predictions, probs = [], [], []
        self.model.eval()
        for batch in _chunks(index, _EVAL_BATCH):
            x = data.batch(batch, augment=self.config.eval_augment, generator=self.generator)
            with self._autocast():
                logits = self._forward(x)
            log_probs = F.log_softmax(logits.float(), dim=1)
            given = log_probs.gather(1, data.labels[batch][:, None]).squeeze(1)
            losses.append(-given)
            predictions.append(log_probs.argmax(1))
            probs.append(given.exp())
        if not losses:
            empty = torch.empty(0, device=self.device)
            return Evaluation(empty, empty.long(), empty)
        loss = torch.cat(losses)
        # A diverged network gives NaN losses; the reference replaces them by the mean.
        loss = torch.where(torch.isnan(loss), loss.nanmean().nan_to_num(0.0), loss)
        return Evaluation(loss, torch.cat(predictions), torch.cat(probs))


def penultimate_features(learner: Learner, data: DeviceData | None = None) -> torch.Tensor:
    """The network's penultimate activations (its head's input), N x D, on every sample of
    ``data`` (the learner's own dataset when None), in eval mode."""
    captured: list[torch.Tensor] = []
    head = learner.model.get_submodule("head")
    hook = head.register_forward_hook(lambda _m, args, _o: captured.append(args[0].float()))
    try:
        learner.evaluate(data=data)
    finally:
        hook.remove()
    return torch.cat(captured)


def _chunks(index: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for start in range(0, index.numel(), size):
        yield index[start : start + size]
