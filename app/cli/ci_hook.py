"""``dataset-audit ci``: audit a dataset from a pipeline and fail the build when it is poisoned.

Exit status: 0 when the verdict is clean (and within any share thresholds given), 1 when it is
poisoned (or over a threshold), 2 when the audit could not be done (server unreachable, bad
file, audit failed, timeout). Its JUnit and JSON reports: ``app.cli.ci_reports``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.wording import class_name, group_line, verdict_lines
from dataset_audit.schemas import AuditRead, FlaggedItem, ImplicatedGroup

if TYPE_CHECKING:
    from dataset_audit.client import AuditClient

EXIT_PASS = 0
EXIT_POISONED = 1
EXIT_ERROR = 2
SHOWN = 10  # most suspicious samples printed


class CiError(Exception):
    """The audit could not be done; exit status 2."""


@dataclass(frozen=True)
class Thresholds:
    """Optional limits on the flagged share, on top of the verdict."""

    max_flagged_fraction: float | None = None
    max_flagged: int | None = None

    def exceeded(self, n_flagged: int, n_samples: int) -> list[str]:
        reasons = []
        share = n_flagged / n_samples
        if self.max_flagged_fraction is not None and share > self.max_flagged_fraction:
            reasons.append(
                f"{share:.2%} of samples flagged, over the limit of {self.max_flagged_fraction:.2%}"
            )
        if self.max_flagged is not None and n_flagged > self.max_flagged:
            reasons.append(f"{n_flagged} samples flagged, over the limit of {self.max_flagged}")
        return reasons

    @property
    def given(self) -> bool:
        return self.max_flagged_fraction is not None or self.max_flagged is not None


@dataclass(frozen=True)
class CiReport:
    path: Path
    audit: AuditRead
    flagged: list[FlaggedItem]  # most suspicious first
    thresholds: Thresholds
    over_thresholds: list[str]  # the thresholds exceeded, and by how much
    url: str  # the report page
    reused: bool
    seconds: float

    @property
    def poisoned(self) -> bool:
        summary = self.audit.summary
        verdict = None if summary is None else summary.verdict
        return verdict is not None and verdict.status == "poisoned"

    @property
    def reasons(self) -> list[str]:
        """Why the build fails; empty when it passes."""
        pairs = "; ".join(
            group_line(g, self.audit.dataset.classes).split(":")[0] for g in self.implicated
        )
        verdict = [f"the verdict is poisoned ({pairs})"] if self.poisoned else []
        return verdict + self.over_thresholds

    @property
    def exit_code(self) -> int:
        return EXIT_POISONED if self.reasons else EXIT_PASS

    @property
    def implicated(self) -> list[ImplicatedGroup]:
        summary = self.audit.summary
        return [] if summary is None or summary.verdict is None else summary.verdict.implicated

    def class_name(self, label: int) -> str:
        return class_name(label, self.audit.dataset.classes)


def run_ci(
    client: AuditClient,
    path: Path,
    *,
    preset: str | None,
    seed: int,
    thresholds: Thresholds,
    timeout_s: float | None,
    reuse: bool = True,
    name: str | None = None,
    image_size: int | None = None,
    on_progress: Callable[[AuditRead], None] | None = None,
    log: Callable[[str], None] = print,
) -> CiReport:
    """Audit ``path`` (``preset`` None: the server's default) and judge it."""
    if not path.is_file():
        raise CiError(f"no such file: {path}")
    started = time.monotonic()
    audit = None
    if reuse and preset is not None:
        with path.open("rb") as file:
            sha256 = hashlib.file_digest(file, "sha256").hexdigest()
        audit = client.find_reusable(sha256, preset=preset, seed=seed, image_size=image_size)
        if audit is not None and _without_verdict(audit):
            audit = None  # made before the engine gave verdicts: audit again
    reused = audit is not None
    if audit is not None:
        log(f"Audit {audit.id} of this content (sha256 {sha256[:12]}) is {audit.status}: "
            "reusing it")  # fmt: skip
    else:
        audit, reused = client.submit_or_reuse(
            path, preset=preset, seed=seed, name=name, reuse=reuse, image_size=image_size
        )
        if reused and _without_verdict(audit):
            audit, reused = client.submit_or_reuse(
                path, preset=preset, seed=seed, name=name, reuse=False, image_size=image_size
            )
        if reused:
            log(f"Audit {audit.id} of this content with preset {audit.preset} and seed "
                f"{audit.seed} is {audit.status}: reusing it")  # fmt: skip
        else:
            log(f"Uploaded {path.name}: audit {audit.id} ({audit.dataset.n_samples} samples, "
                f"preset {audit.preset}, seed {audit.seed})")  # fmt: skip
    url = f"{client.server}/audits/{audit.id}/report"
    remaining = None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - started))
    try:
        audit = client.wait(audit.id, on_progress=on_progress, timeout=remaining)
    except TimeoutError as exc:
        raise CiError(
            f"the audit did not finish within {timeout_s:g} s; it goes on at {url}"
        ) from exc
    if audit.status != "succeeded":
        raise CiError(f"the audit {audit.status}: {audit.error or 'no reason given'} ({url})")
    summary = audit.summary
    assert summary is not None
    return CiReport(
        path=path,
        audit=audit,
        flagged=client.flagged(audit.id, sort="score"),
        thresholds=thresholds,
        over_thresholds=thresholds.exceeded(summary.n_flagged, summary.n_samples),
        url=url,
        reused=reused,
        seconds=time.monotonic() - started,
    )


def _without_verdict(audit: AuditRead) -> bool:
    return audit.summary is not None and audit.summary.verdict is None


def print_report(report: CiReport, log: Callable[[str], None] = print) -> None:
    summary = report.audit.summary
    assert summary is not None
    names = report.audit.dataset.classes
    for line in verdict_lines(summary.verdict, names):
        log(line)
    suspected = summary.n_suspected_poisons
    log(f"{summary.n_flagged} of {summary.n_samples} samples flagged "
        f"({summary.flagged_fraction:.2%}): {suspected} suspected poisons, "
        f"{summary.n_flagged - suspected} label issues.")  # fmt: skip
    for cls in summary.classes:
        if cls.n_flagged:
            voted = cls.flagged_voted_label
            pointer = (
                ""
                if voted is None or voted == cls.label
                else f"; most look like {report.class_name(voted)}"
            )
            log(f"  {report.class_name(cls.label)}: {cls.n_flagged} of {cls.n_samples}{pointer}")
    if report.flagged:
        log("Most suspicious:")
        for item in report.flagged[:SHOWN]:
            where = f"  {item.path}" if item.path else ""
            log(f"  #{item.index}  {item.kind.replace('_', ' ')}  score {item.score:.3f}  "
                f"{report.class_name(item.label)}{where}")  # fmt: skip
    log(f"Report: {report.url}")
    if report.reasons:
        log("POISONED: " + "; ".join(report.reasons) + ".")
    elif report.thresholds.given:
        log("CLEAN, and within the thresholds.")
    else:
        log("CLEAN.")
