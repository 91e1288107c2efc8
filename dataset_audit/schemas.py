"""What the API reads and returns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from incompat.config import FLAG_THRESHOLD


class AuditStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (AuditStatus.SUCCEEDED, AuditStatus.FAILED, AuditStatus.CANCELLED)


# The largest page offset: past it, a 64-bit SQL integer (SQLite's, PostgreSQL's bigint)
# overflows.
MAX_OFFSET = 2**63 - 1

T = TypeVar("T")

# Why a failed audit failed, for programs; ``error`` says it in words.
ErrorCode = Literal[
    "dataset_unreadable",  # the stored file cannot be read (or is gone)
    "dataset_invalid",  # read, but the engine cannot audit it: too few samples or classes
    "configuration_invalid",  # the service's configuration is wrong: an operator must fix it
    "device_unavailable",  # the worker's device is missing: an operator must fix the worker
    "time_limit",  # ran past AUDIT_TIME_LIMIT_S
    "worker_lost",  # its worker stopped responding on every attempt
    "internal",  # a bug: the worker's log has the traceback
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="How many items there are in all.")
    limit: int
    offset: int


class Progress(BaseModel):
    stage: str | None = Field(
        description="clustering, voting, refinement or groups; null before start."
    )
    done: int
    total: int
    percent: float = Field(description="Share of the current stage done, 0-100.")


class ClassCounts(BaseModel):
    label: int
    name: str | None = None
    n_samples: int
    n_flagged: int
    flagged_voted_label: int | None = Field(
        default=None,
        description="The label the weak learners voted for on this class's suspected poisons "
        "(without any, on its flagged samples): a backdoor's target class points back at its "
        "source class.",
    )


class TriggerGroup(BaseModel):
    """Samples of one class that share a feature the rest of their class lacks and that the
    incompatible clusters' learners reject far more often than the rest: a backdoor's poisons.
    Every member is flagged."""

    label: int = Field(description="The given class (its index among the dataset's classes).")
    name: str | None = None
    n_samples: int
    share: float = Field(description="The group's share of its class.")
    rejected: float = Field(description="Share of the group's members the learners reject.")
    rejected_elsewhere: float = Field(
        description="Share of the rest of the class the learners reject."
    )


FlagKind = Literal["suspected_poison", "label_issue"]


class ImplicatedGroup(BaseModel):
    """Flagged samples of one class that share a feature the class they look like lacks."""

    target: int = Field(description="The class the group's samples are labelled (its index).")
    target_name: str | None = None
    sources: list[int] = Field(
        description="The classes the samples look like to the learners, most first."
    )
    source_names: list[str | None] = Field(default_factory=list)
    n_samples: int = Field(description="Suspected poisons in the group.")
    evidence: Literal["shared_pixels", "trigger_group"] = Field(
        description="shared_pixels: most of the group has the same value at some pixels that "
        "the classes it looks like rarely have (a stamp or patch). trigger_group: the group is a "
        "cluster of its class in a network's features, rejected by the learners far more often "
        "than the rest of the class (a blend, a signal, an all-to-one trigger)."
    )
    p_value: float = Field(description="The test's p-value, adjusted for every test tried.")
    shared: float = Field(description="Share of the group that carries the feature.")
    elsewhere: float = Field(
        description="Share of the compared samples that carry it (the classes the group looks "
        "like, or for a trigger group the rest of its class)."
    )


class Verdict(BaseModel):
    """Is the dataset poisoned? ``poisoned`` when some group of flagged samples shares a feature
    with an adjusted p-value under ``alpha``; the implicated groups are the evidence."""

    status: Literal["poisoned", "clean"]
    p_value: float = Field(
        description="The smallest adjusted p-value of the tests whose effect was large enough; "
        "1 when none was."
    )
    alpha: float
    n_tests: int
    implicated: list[ImplicatedGroup] = Field(description="Strongest first; empty when clean.")


class AuditSummary(BaseModel):
    n_samples: int
    n_flagged: int
    flagged_fraction: float
    verdict: Verdict | None = Field(
        default=None, description="Absent for audits made before the verdict existed."
    )
    n_suspected_poisons: int = Field(
        default=0, description="Flagged samples in an implicated group; the rest are label issues."
    )
    classes: list[ClassCounts]
    trigger_groups: list[TriggerGroup] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    n_learners: int | None = None
    device: str | None = None


class Dataset(BaseModel):
    format: Literal["npz", "imagefolder", "parquet"]
    filename: str | None
    sha256: str
    bytes: int
    n_samples: int
    n_classes: int
    image_shape: list[int] = Field(
        description="Each image as audited, after any resizing: [H, W] (grey) or [H, W, 3]."
    )
    classes: list[str] | None


class AuditLinks(BaseModel):
    self: str
    flagged: str
    scores: str


class WebhookState(StrEnum):
    PENDING = "pending"  # the audit has not ended, or its delivery is under way
    DELIVERED = "delivered"  # a 2xx answered an attempt
    FAILED = "failed"  # every attempt failed (WEBHOOK_MAX_ATTEMPTS)
    DROPPED = "dropped"  # never attempted: the tenant had WEBHOOK_MAX_OUTSTANDING pending


_NOT_SHOWN = (
    "Always null: what the receiver answered, or why an attempt failed, is not shown (it would "
    "tell apart closed, open and filtered ports). Kept so that older clients still read the audit."
)


class Delivery(BaseModel):
    attempt: int
    attempted_at: datetime = Field(description="When the attempt started.")
    delivered: bool
    status_code: int | None = Field(
        default=None, description=_NOT_SHOWN, json_schema_extra={"deprecated": True}
    )
    error: str | None = Field(
        default=None, description=_NOT_SHOWN, json_schema_extra={"deprecated": True}
    )

    @field_validator("attempted_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime | None:
        return _as_utc(value)


class Webhook(BaseModel):
    url: str
    state: WebhookState = Field(
        default=WebhookState.PENDING,
        description="pending until the audit ends and its delivery concludes: delivered, failed "
        "(every attempt failed) or dropped (the tenant had too many deliveries pending).",
    )
    deliveries: list[Delivery] = Field(description="Attempts so far, first first.")


class CostEstimate(BaseModel):
    """What an audit is predicted to cost before it runs (``incompat.cost``)."""

    device: str = Field(description="The kind of device the figures are for: cpu, cuda or mps.")
    seconds: float | None = Field(
        description="Compute seconds on one worker of that device (with several workers an "
        "audit in parts ends sooner); null when the service knows no throughput for it yet."
    )
    device_bytes: int = Field(
        description="Peak memory the audit takes on the device beyond the runtime's own: the "
        "dataset, a batch's activations, the network (a CPU worker's process adds about 1 GB)."
    )
    epoch_equivalents: float = Field(description="Training passes over the dataset it will make.")
    basis: str = Field(description="Where the throughput behind ``seconds`` comes from.")


class DryRun(BaseModel):
    """The answer to ``POST /audits?dry_run=true``: the dataset as inspected and its estimate;
    nothing is stored or queued."""

    dry_run: Literal[True] = True
    preset: str
    n_samples: int
    n_classes: int
    image_shape: list[int]
    estimate: CostEstimate


class AuditRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str | None
    status: AuditStatus
    preset: str
    seed: int
    image_size: int | None = Field(
        default=None,
        description="The upload's image_size: every image was brought to this square size. "
        "Null: images of one size were kept as they are, and mixed sizes brought to 32 x 32.",
    )
    dataset: Dataset
    progress: Progress
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    error_code: ErrorCode | None = Field(
        default=None, description="Why a failed audit failed, for programs; null otherwise."
    )
    engine_version: str | None
    attempts: int
    estimate: CostEstimate | None = Field(
        default=None,
        description="The cost predicted when it was submitted; the summary's timings hold what "
        "it took.",
    )
    summary: AuditSummary | None
    webhook: Webhook | None = Field(
        default=None, description="The callback URL and its delivery attempts, if one was given."
    )
    links: AuditLinks

    @field_validator("created_at", "started_at", "finished_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return _as_utc(value)


def _as_utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every stored time is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class FlaggedItem(BaseModel):
    index: int = Field(description="The sample's position in the uploaded dataset.")
    kind: FlagKind = Field(
        description="suspected_poison: in a group the verdict implicates; label_issue: any other "
        "flagged sample (mislabelled, ambiguous, or of a class that looks like another)."
    )
    score: float = Field(description="Higher is more suspicious; flagged at 0.5 and above.")
    rank: int = Field(
        description="Position in the most-suspicious order (suspected poisons first), 0 first; "
        "within the kind when the list is filtered by kind."
    )
    label: int = Field(description="The label given in the upload.")
    voted_label: int | None = Field(description="The label the weak learners voted for.")
    label_prob: float = Field(description="The final network's probability of the given label.")
    path: str | None = Field(
        description="The image's path inside an ImageFolder zip, or the path a parquet row's "
        "image carries (a Hugging Face Image feature's)."
    )


class FlaggedPage(Page[FlaggedItem]):
    audit_id: uuid.UUID
    sort: Literal["index", "score"]
    kind: FlagKind | None = Field(default=None, description="The kind filtered by, if any.")


class Scores(BaseModel):
    audit_id: uuid.UUID
    n_samples: int
    threshold: float = FLAG_THRESHOLD
    scores: list[float]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    detail: Any
