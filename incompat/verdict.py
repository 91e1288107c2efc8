"""The verdict: is the dataset poisoned, which classes, how sure.

Every dataset has samples the learners reject: mislabelled ones, ambiguous ones, classes that look
alike. Their number says nothing (about 3 % of clean Fashion-MNIST), and neither does the class
they point at (coats look like dresses, one way more than the other). What sets a backdoor's
poisons apart is that they share a trigger: a feature their source class lacks. So the verdict
tests groups of rejected samples for a shared feature, with no clean reference set:

- **shared pixels**: the flagged samples of one class that the learners voted to another class
  (or to any other) carry the same value at some pixels far more often than the class they look
  like does, and than the rest of their own class does. Stamps and patches of every size and
  place; a one-sided binomial test per pixel.
- **a trigger group** (groups.py): a cluster of one class in the features of a network trained on
  everything, rejected by the learners far more often than the rest of its class. Blends over the
  whole image, additive signals and all-to-one attacks, whose trigger is no fixed pixel.

Each test gives a p-value (a Chernoff bound of the binomial tail: conservative), multiplied by
the number of tests tried (Bonferroni). The dataset is ``poisoned`` when one is below ``alpha``
and its effect is large, which the calibration benchmark (bench/verdict.py) checks on clean and
poisoned datasets. The flagged samples of an implicated group are *suspected poisons*; the other
flagged samples are *label issues*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from incompat.groups import TriggerGroup

VerdictStatus = Literal["poisoned", "clean"]
Evidence = Literal["shared_pixels", "trigger_group"]

# The level an adjusted p-value must be under. Far below the false alarms we accept (5 %): the
# tests assume a group's samples independent, and a group is chosen for looking alike.
ALPHA = 1e-6
_TOLERANCE = 4  # grey levels: a trigger's pixels are identical but for compression noise
_MIN_SHARED = 0.8  # the share of the group that carries the trigger, at least
_MAX_ELSEWHERE = 0.3  # the share of either reference that carries it, at most
_MIN_GROUP = 10  # samples: fewer is not a pattern
_MAX_CLASS_SHARE = 0.5  # a group is a minority of its class: more is the vote failing there
_MAX_REFERENCE = 2000  # reference samples a rate is estimated from
_MATCH = 0.75  # a flagged sample carries the trigger with this share of its pixels
_RARE = 0.01  # a trigger whole on fewer of the source reference also marks unflagged samples
_MIN_SOURCE_SHARE = 0.1  # a group's sources: the voted classes of at least this share of it
_FOLDS = 5  # the held-out linear test's folds
_RIDGE = 1.0  # its regularisation, relative to the mean squared norm of a sample
_HELD_OUT_FPR = 0.01  # the share of a reference that a group member must outscore


@dataclass(frozen=True)
class Suspect:
    """A group of flagged samples that share a feature: the implicated pair and its evidence."""

    target: int  # the class index the group's samples are labelled (engine label space)
    sources: tuple[int, ...]  # the class indices they look like to the learners, most first
    members: torch.Tensor  # bool N
    evidence: Evidence
    p_value: float  # Bonferroni-adjusted
    shared: float  # share of the group that carries the feature
    elsewhere: float  # share of the compared samples that does (the larger of two references)


@dataclass(frozen=True)
class Verdict:
    """``poisoned`` with the implicated groups, strongest first, or ``clean``. ``p_value`` is the
    smallest adjusted p-value of the tests whose effect was large enough (1.0 when none was)."""

    status: VerdictStatus
    p_value: float
    n_tests: int
    implicated: tuple[ImplicatedGroup, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "p_value": _rounded(self.p_value),
            "alpha": ALPHA,
            "n_tests": self.n_tests,
            "implicated": [g.to_dict() for g in self.implicated],
        }


@dataclass(frozen=True)
class ImplicatedGroup:
    """A ``Suspect`` in the input label space, without its per-sample mask."""

    target: int
    sources: tuple[int, ...]
    n_samples: int
    evidence: Evidence
    p_value: float
    shared: float
    elsewhere: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "sources": list(self.sources),
            "n_samples": self.n_samples,
            "evidence": self.evidence,
            "p_value": _rounded(self.p_value),
            "shared": round(self.shared, 4),
            "elsewhere": round(self.elsewhere, 4),
        }


def find_suspects(
    images: torch.Tensor,
    labels: torch.Tensor,
    is_flagged: torch.Tensor,
    voted: torch.Tensor,
    groups: list[TriggerGroup],
    num_classes: int,
    generator: torch.Generator,
) -> tuple[list[Suspect], float, int]:
    """Test every candidate group; return those with an adjusted p-value under ``ALPHA`` and a
    large effect (strongest first), the smallest adjusted p-value and the number of tests.

    ``images``: uint8 N x C x H x W; ``voted``: the learners' plurality class, -1 for none.
    """
    pixels = images.flatten(1)
    candidates: list[tuple[torch.Tensor, torch.Tensor, int]] = []  # group, reference, target
    rejected = is_flagged & (voted >= 0) & (voted != labels)
    for target in range(num_classes):
        in_class = labels == target
        pointing = rejected & in_class
        if int(pointing.sum()) < _MIN_GROUP or _unreliable(is_flagged, in_class):
            continue
        sources = voted[pointing].unique()
        for source in sources.tolist():
            group = pointing & (voted == source)
            if int(group.sum()) >= _MIN_GROUP:
                candidates.append((group, ~is_flagged & (labels == source), target))
        if sources.numel() > 1:  # many-to-one and all-to-one: against every class it points at
            reference = ~is_flagged & torch.isin(labels, sources)
            candidates.append((pointing, reference, target))
    n_tests = len(candidates) * pixels.shape[1] + len(groups)
    suspects, best = [], 1.0
    usual = _usual_values(pixels, _sample(torch.ones_like(labels, dtype=torch.bool), generator))
    for group, reference, target in candidates:
        own = ~is_flagged & (labels == target)
        references = (_sample(reference, generator), _sample(own, generator))
        test = _shared_pixels(pixels, group, references, usual, n_tests)
        if test is None:
            continue
        p_value, trigger, value, shared, elsewhere = test
        best = min(best, p_value)
        if p_value <= ALPHA:
            members = _carriers(pixels, trigger, value, labels == target, is_flagged, references)
            sources = _sources(voted, members, labels)
            suspects.append(
                Suspect(target, sources, members, "shared_pixels", p_value, shared, elsewhere)
            )
    for trigger_group in groups:
        members = trigger_group.members
        sources = _sources(voted, members & rejected, labels)
        if int(members.sum()) < _MIN_GROUP or not sources:
            continue
        in_class = labels == trigger_group.cls
        if _unreliable(is_flagged, in_class):
            continue
        references = (
            _sample(
                ~is_flagged & torch.isin(labels, torch.tensor(sources, device=labels.device)),
                generator,
            ),
            _sample(~is_flagged & in_class & ~members, generator),
        )
        if any(int(r.sum()) < _MIN_GROUP for r in references):
            continue
        shared, elsewhere, p_value = _separable(pixels, members, references, n_tests, generator)
        if shared < _MIN_SHARED:
            continue
        best = min(best, p_value)
        if p_value <= ALPHA:
            suspects.append(
                Suspect(trigger_group.cls, sources, members & is_flagged, "trigger_group",
                        p_value, shared, elsewhere)
            )  # fmt: skip
    return _merge(suspects), best, n_tests


def _near(pixels: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Whether each pixel is within ``_TOLERANCE`` of ``value`` (broadcast over samples)."""
    return (pixels.short() - value.short()).abs() <= _TOLERANCE


def _unreliable(is_flagged: torch.Tensor, in_class: torch.Tensor) -> bool:
    """Most of the class is flagged: its flags say the learners fail there, and its unflagged
    samples are too odd a few to compare a group with."""
    return int((is_flagged & in_class).sum()) > _MAX_CLASS_SHARE * int(in_class.sum())


def _shared_pixels(
    pixels: torch.Tensor,
    group: torch.Tensor,
    references: tuple[torch.Tensor, torch.Tensor],
    usual: torch.Tensor,
    n_tests: int,
) -> tuple[float, torch.Tensor, torch.Tensor, float, float] | None:
    """The pixel whose modal value the group shares most improbably often, given how often the
    references have it: the classes the group looks like, and the unflagged samples of its own
    class (a trigger is on neither; a class's own shape, say the gap between a trouser's legs,
    is on the second). A pixel's value is the group's median there, and a sample has it within
    ``_TOLERANCE``: a stamp is identical on every poison, a dark garment only alike. A value
    that is the ``usual`` one at its pixel (the blank background of most images) is an absence,
    not a trigger: coats that lack a T-shirt's sleeves share it. Returns (adjusted p-value, the
    trigger's pixels: those significant on their own, its values there, share of the group,
    share of the references)."""
    n_group = int(group.sum())
    if n_group < _MIN_GROUP or any(int(r.sum()) == 0 for r in references):
        return None
    value = pixels[group].median(0).values  # per pixel
    shared = _near(pixels[group], value).float().mean(0)
    elsewhere = torch.stack(
        [
            _near(pixels[r], value).float().mean(0).clamp_min(1 / (int(r.sum()) + 1))
            for r in references
        ]
    ).amax(0)
    log_p = -n_group * _kl(shared, elsewhere)
    passes = (shared >= _MIN_SHARED) & (elsewhere <= _MAX_ELSEWHERE) & ~_near(usual, value)
    if not bool(passes.any()):
        return None
    log_p = torch.where(passes, log_p, torch.zeros_like(log_p))
    pixel = int(log_p.argmin())
    p_value = min(1.0, n_tests * math.exp(float(log_p[pixel])))
    trigger = (passes & (log_p <= math.log(ALPHA / n_tests))).nonzero().squeeze(1)
    if trigger.numel() == 0:
        trigger = torch.tensor([pixel], device=pixels.device)
    return p_value, trigger, value[trigger], float(shared[pixel]), float(elsewhere[pixel])


def _usual_values(pixels: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """Each pixel's value in most of ``sample`` (a blank background), as int16; -1024, which
    no value is near, where no value is in most."""
    values = pixels[sample].long()
    counts = torch.zeros(pixels.shape[1], 256, device=pixels.device)
    counts.scatter_add_(1, values.T, torch.ones_like(values.T, dtype=counts.dtype))
    top, value = counts.max(1)
    return torch.where(top > 0.5 * values.shape[0], value, -1024).short()


def _carriers(
    pixels: torch.Tensor,
    trigger: torch.Tensor,
    value: torch.Tensor,
    in_class: torch.Tensor,
    is_flagged: torch.Tensor,
    references: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """The samples of the class that carry the trigger: flagged ones with most of its pixels,
    whatever the learners voted (a poison voted to a third class still carries it), and
    unflagged ones with all of them where the classes it looks like almost never have it whole
    (the class's own unflagged samples hold the poisons the flags missed)."""
    matches = _near(pixels[:, trigger], value).float().mean(1)
    members = (matches >= _MATCH) & is_flagged & in_class
    whole = matches == 1.0
    if float(whole[references[0]].float().mean()) < _RARE:
        members |= whole & in_class
    return members


def _separable(
    pixels: torch.Tensor,
    group: torch.Tensor,
    references: tuple[torch.Tensor, torch.Tensor],
    n_tests: int,
    generator: torch.Generator,
) -> tuple[float, float, float]:
    """Whether a linear model on the pixels tells the group from each reference on samples it
    was not fitted to: a trigger blended or added over the whole image is one direction in pixel
    space, shared by every poison and by no clean image. Returns (the share of the group that
    scores above all but ``_HELD_OUT_FPR`` of the reference, that share, the adjusted one-sided
    p-value of the group scoring that high that often), for the harder reference."""
    worst = (1.0, _HELD_OUT_FPR, 0.0)
    for reference in references:
        group_scores, reference_scores = _held_out_scores(pixels, group, reference, generator)
        bar = torch.quantile(reference_scores, 1 - _HELD_OUT_FPR)
        shared = float((group_scores > bar).float().mean())
        log_p = -group_scores.numel() * _kl(torch.tensor(shared), torch.tensor(_HELD_OUT_FPR))
        p_value = min(1.0, n_tests * math.exp(float(log_p)))
        if shared < worst[0]:
            worst = (shared, _HELD_OUT_FPR, p_value)
    shared, elsewhere, p_value = worst
    return shared, elsewhere, p_value


def _held_out_scores(
    pixels: torch.Tensor, group: torch.Tensor, reference: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of every sample of the group and the reference by a ridge classifier fitted to the
    other folds (in its dual form: far fewer samples than pixels)."""
    x = torch.cat([pixels[group], pixels[reference]]).float() / 255
    is_group = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    is_group[: int(group.sum())] = True
    fold = torch.randperm(x.shape[0], generator=generator, device=x.device) % _FOLDS
    scores = torch.empty(x.shape[0], device=x.device)
    for k in range(_FOLDS):
        train = fold != k
        fit = x[train]
        mean = fit.mean(0)
        fit = fit - mean
        positive = is_group[train]
        target = torch.where(positive, 1.0 / positive.sum(), -1.0 / (~positive).sum())
        gram = fit @ fit.T
        ridge = _RIDGE * gram.diagonal().mean()
        eye = torch.eye(gram.shape[0], device=x.device)
        weights = fit.T @ torch.linalg.solve(gram + ridge * eye, target)
        scores[~train] = (x[~train] - mean) @ weights
    return scores[is_group], scores[~is_group]


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(p) || Bernoulli(q)) where p > q, else 0: -n KL is the Chernoff bound of
    log P(Binomial(n, q) >= n p)."""
    p, q = p.double(), q.double().clamp(1e-12, 1 - 1e-12)
    kl = torch.special.xlogy(p, p / q) + torch.special.xlogy(1 - p, (1 - p) / (1 - q))
    return torch.where(p > q, kl, torch.zeros_like(kl))


def _sample(mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """At most ``_MAX_REFERENCE`` of the mask's samples, drawn at random."""
    index = mask.nonzero().squeeze(1)
    if index.numel() <= _MAX_REFERENCE:
        return mask
    keep = torch.randperm(index.numel(), generator=generator, device=mask.device)
    sampled = torch.zeros_like(mask)
    sampled[index[keep[:_MAX_REFERENCE]]] = True
    return sampled


def _sources(voted: torch.Tensor, members: torch.Tensor, labels: torch.Tensor) -> tuple[int, ...]:
    """The classes a group's members look like: each voted for by at least a tenth of them."""
    votes = voted[members & (voted >= 0) & (voted != labels)]
    if votes.numel() == 0:
        return ()
    values, counts = votes.unique(return_counts=True)
    order = counts.argsort(descending=True)
    return tuple(
        int(values[i]) for i in order if int(counts[i]) >= _MIN_SOURCE_SHARE * votes.numel()
    )


def _merge(suspects: list[Suspect]) -> list[Suspect]:
    """One suspect per target class: the strongest evidence, with every test's members."""
    by_target: dict[int, Suspect] = {}
    for suspect in sorted(suspects, key=lambda s: s.p_value):
        kept = by_target.get(suspect.target)
        if kept is None:
            by_target[suspect.target] = suspect
        else:
            members = kept.members | suspect.members
            sources = kept.sources + tuple(s for s in suspect.sources if s not in kept.sources)
            by_target[suspect.target] = Suspect(
                kept.target, sources, members, kept.evidence, kept.p_value,
                kept.shared, kept.elsewhere,
            )  # fmt: skip
    return sorted(by_target.values(), key=lambda s: s.p_value)


def _rounded(p_value: float) -> float:
    return float(f"{p_value:.3g}")


def verdict_of(
    suspects: list[Suspect], p_value: float, n_tests: int, classes: np.ndarray
) -> Verdict:
    """The verdict of ``find_suspects``' answer, in the input's label values (``classes``)."""
    return Verdict(
        status="poisoned" if suspects else "clean",
        p_value=p_value,
        n_tests=n_tests,
        implicated=tuple(
            ImplicatedGroup(
                target=int(classes[s.target]),
                sources=tuple(int(classes[c]) for c in s.sources),
                n_samples=int(s.members.sum()),
                evidence=s.evidence,
                p_value=s.p_value,
                shared=s.shared,
                elsewhere=s.elsewhere,
            )
            for s in suspects
        ),
    )
