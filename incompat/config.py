"""Engine configuration: one frozen object, with named presets.

``paper`` reproduces the reference implementation's ISPL+B values (ENGINE_SPEC.md).
``fast`` is the default: a schedule tuned so that the trigger is not learned while clusters form,
with out-of-cluster voting; its quality is measured by ``bench/detection.py``.
``tiny`` runs in seconds on a CPU, for tests and demos.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

from incompat.errors import InvalidConfigError

Arch = Literal["small_cnn", "resnet20", "resnet32", "preact_resnet18"]
ARCHS: tuple[Arch, ...] = get_args(Arch)
PresetName = Literal["tiny", "fast", "paper"]
PRESET_NAMES: tuple[PresetName, ...] = get_args(PresetName)
Normalization = Literal["imagenet", "dataset"]
Precision = Literal["auto", "fp32", "bf16"]
WarmupSet = Literal["first_half", "half", "half_of_all"]
VoteRule = Literal["plurality", "out_of_cluster"]


@dataclass(frozen=True)
class EngineConfig:
    """Every knob of ISPL+B. Field names follow ENGINE_SPEC.md."""

    # Model and optimizer (SGD, constant learning rate in every stage).
    arch: Arch = "small_cnn"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    # Weight the loss by inverse class frequency: clusters are class-imbalanced by construction, and
    # an unweighted learner trained on one rarely predicts the classes it lacks.
    balance_classes: bool = True

    # Augmentation. ``crop_padding=None`` scales with the image: 4 px at 32 px, 2 px at 16-28 px.
    crop_padding: int | None = None
    hflip: bool = True
    normalization: Normalization = "dataset"
    # Losses, votes and refinement checks on augmented views (the reference), or on the images.
    eval_augment: bool = False

    # Inverse self-paced learning (Algorithm 1).
    clusters_per_bag: int = 6  # alpha
    cluster_frac: float = 0.16  # target cluster size, as a share of N
    beta: float = 4.0  # self-expansion: train on 1/beta of the kept set
    loss_decay: float = 0.9
    # Per-class floor: the share/divisor lowest-loss samples of each class join the cluster too.
    # 8 in the reference; 1 trims every class alike, so clusters stay class-balanced.
    class_floor_divisor: float = 1.0
    warmup_epochs: int = 2
    refit_epochs: int = 1
    retrain_epochs: int = 8
    # "first_half": the reference, a random half only for a bag's first cluster and the whole
    # remainder after; "half": a random half of the remainder for every cluster; "half_of_all":
    # a random half of all samples, so the poisons' share in the warm-up never grows.
    warmup_set: WarmupSet = "half_of_all"
    min_active_frac: float = 0.04  # a bag stops when at most this share of N is left unclustered

    # Boosting and voting (Algorithm 2).
    bags: int = 2
    # "plurality": every learner votes on every sample (the reference); "out_of_cluster": a learner
    # does not vote on the samples of its own cluster, which it has memorised.
    vote_rule: VoteRule = "out_of_cluster"
    min_votes: int = 2  # the plurality label must have at least this many votes to be trusted
    # None: keep a sample when the plurality label is its label (the reference). A probability p:
    # keep it when at least half of its voters give its label at least p, which spares the
    # confusable classes that weak learners split their votes on.
    vote_agree_prob: float | None = 0.1

    # Self-paced refinement.
    refine_rounds: int = 8
    refine_epochs: int = 3
    refine_decay: float = 0.8
    # A refinement check counts a sample as agreeing when the network predicts its given label
    # (None, the reference), or when it gives that label at least this probability.
    agree_prob: float | None = 0.05
    # What the refinement network learns from. The reference starts from every sample the vote
    # kept and then trains on every sample it currently keeps; a trigger that a network learns
    # from a handful of examples (a blend over the whole image) is then learned from the few
    # poisons the vote missed, and every poison is kept. With ``refine_trust`` it starts from the
    # samples that at most this share of voters reject, and with ``refine_admit_prob`` it takes
    # in another sample only once it gives that sample's label at least this probability:
    # a learnable trigger never gets a foothold, while hard clean samples are learned one round
    # after the network has come to agree with them.
    refine_trust: float | None = None
    refine_admit_prob: float | None = None

    # Trigger groups (groups.py): a probe network trained on every sample for ``probe_steps`` SGD
    # steps (at least 2 epochs; 0: off, the reference). Steps, not epochs: a trigger is learned
    # from a number of updates, so a small dataset needs more passes. In each class the smaller
    # of two clusters of its features is a trigger group when it holds at most
    # ``group_max_share`` of the class and the vote rejects its members at least
    # ``group_min_contrast`` more often than the rest of the class.
    probe_steps: int = 600
    group_max_share: float = 0.35
    group_min_contrast: float = 0.3

    # Execution.
    precision: Precision = "auto"
    compile: bool = False

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.lr > 0, "lr must be positive"),
            (self.batch_size >= 2, "batch_size must be at least 2"),
            (self.clusters_per_bag >= 1, "clusters_per_bag must be at least 1"),
            (0 < self.cluster_frac <= 1, "cluster_frac must be in (0, 1]"),
            (self.beta >= 1, "beta must be at least 1"),
            (0 <= self.loss_decay < 1, "loss_decay must be in [0, 1)"),
            (0 <= self.refine_decay < 1, "refine_decay must be in [0, 1)"),
            (self.bags >= 1, "bags must be at least 1"),
            (0 <= self.min_active_frac < 1, "min_active_frac must be in [0, 1)"),
            (self.warmup_epochs >= 1 and self.retrain_epochs >= 1, "epochs must be at least 1"),
            (self.refit_epochs >= 1, "refit_epochs must be at least 1"),
            (self.refine_rounds >= 0 and self.refine_epochs >= 1, "bad refinement schedule"),
            (self.crop_padding is None or self.crop_padding >= 0, "crop_padding must be >= 0"),
            (self.min_votes >= 1, "min_votes must be at least 1"),
            (self.agree_prob is None or 0 < self.agree_prob < 1, "agree_prob must be in (0, 1)"),
            (
                self.vote_agree_prob is None or 0 < self.vote_agree_prob < 1,
                "vote_agree_prob must be in (0, 1)",
            ),
            (
                self.refine_trust is None or 0 <= self.refine_trust <= 1,
                "refine_trust not in [0, 1]",
            ),
            (
                self.refine_admit_prob is None or 0 < self.refine_admit_prob < 1,
                "refine_admit_prob must be in (0, 1)",
            ),
            (self.probe_steps >= 0, "probe_steps must be >= 0"),
            (0 < self.group_max_share < 1, "group_max_share must be in (0, 1)"),
            (0 < self.group_min_contrast <= 1, "group_min_contrast must be in (0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidConfigError(f"invalid EngineConfig: {message}")

    def replace(self, **changes: Any) -> EngineConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EngineConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise InvalidConfigError(f"unknown EngineConfig fields: {sorted(unknown)}")
        return cls(**values)


PAPER = EngineConfig(
    arch="resnet32",
    lr=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    batch_size=128,
    balance_classes=False,
    crop_padding=4,
    hflip=True,
    normalization="imagenet",
    eval_augment=True,
    clusters_per_bag=8,
    cluster_frac=0.12,
    beta=4.0,
    loss_decay=0.9,
    class_floor_divisor=8.0,
    warmup_epochs=8,
    refit_epochs=4,
    retrain_epochs=40,
    warmup_set="first_half",
    min_active_frac=0.04,
    bags=3,
    vote_rule="plurality",
    min_votes=2,
    vote_agree_prob=None,
    refine_rounds=20,
    refine_epochs=5,
    refine_decay=0.8,
    agree_prob=None,
    refine_trust=None,
    refine_admit_prob=None,
    probe_steps=0,
    precision="auto",
)

FAST = EngineConfig()

TINY = FAST.replace(
    clusters_per_bag=4,
    cluster_frac=0.22,
    retrain_epochs=6,
    bags=1,
    refine_rounds=4,
    refine_epochs=2,
    min_active_frac=0.05,
)

PRESETS: dict[str, EngineConfig] = {"tiny": TINY, "fast": FAST, "paper": PAPER}
DEFAULT_PRESET: PresetName = "fast"
# A sample is flagged iff its score is at least this.
FLAG_THRESHOLD = 0.5


def get_preset(name: str) -> EngineConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidConfigError(
            f"unknown preset {name!r}; choose one of {sorted(PRESETS)}"
        ) from None
