"""``dataset-audit ci``: audit a dataset from a pipeline and fail the build when it looks poisoned.

Exit status: 0 within the thresholds, 1 over them, 2 when the audit could not be done (server
unreachable, bad file, audit failed, timeout). Reports: JUnit XML (one test case per class, its
flagged samples as the failure) and JSON.
"""

from __future__ import annotations

import hashlib
import json
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.client import AuditClient
from app.schemas import AuditRead, FlaggedItem

EXIT_PASS = 0
EXIT_POISONED = 1
EXIT_ERROR = 2
SHOWN = 10  # most suspicious samples printed


class CiError(Exception):
    """The audit could not be done; exit status 2."""


@dataclass(frozen=True)
class Thresholds:
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


@dataclass(frozen=True)
class CiReport:
    path: Path
    audit: AuditRead
    flagged: list[FlaggedItem]  # most suspicious first
    thresholds: Thresholds
    reasons: list[str]  # why the thresholds were exceeded; empty when within them
    url: str
    reused: bool
    seconds: float

    @property
    def exit_code(self) -> int:
        return EXIT_POISONED if self.reasons else EXIT_PASS

    def class_name(self, label: int) -> str:
        names = self.audit.dataset.classes or []
        return f"class {label} ({names[label]})" if 0 <= label < len(names) else f"class {label}"


def run_ci(
    client: AuditClient,
    path: Path,
    *,
    preset: str,
    seed: int,
    thresholds: Thresholds,
    timeout_s: float | None,
    reuse: bool = True,
    name: str | None = None,
    on_progress: Callable[[AuditRead], None] | None = None,
    log: Callable[[str], None] = print,
) -> CiReport:
    if not path.is_file():
        raise CiError(f"no such file: {path}")
    started = time.monotonic()
    audit = None
    if reuse:
        with path.open("rb") as file:
            sha256 = hashlib.file_digest(file, "sha256").hexdigest()
        audit = client.find_reusable(sha256, preset=preset, seed=seed)
    reused = audit is not None
    if audit is not None:
        log(
            f"Audit {audit.id} of this content (sha256 {sha256[:12]}) is {audit.status}: reusing it"
        )
    else:
        audit = client.submit(path, preset=preset, seed=seed, name=name, reuse=reuse)
        log(f"Uploaded {path.name}: audit {audit.id} ({audit.dataset.n_samples} samples, "
            f"preset {preset}, seed {seed})")  # fmt: skip
    url = f"{client.server}/audits/{audit.id}"
    remaining = None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - started))
    try:
        audit = client.wait(audit.id, on_progress=on_progress, timeout=remaining)
    except TimeoutError as exc:
        raise CiError(
            f"the audit did not finish within {timeout_s:g} s; it goes on at {url}"
        ) from exc
    if audit.status != "succeeded":
        raise CiError(f"the audit {audit.status}: {audit.error or 'no reason given'} ({url})")
    assert audit.summary is not None
    return CiReport(
        path=path,
        audit=audit,
        flagged=client.flagged(audit.id, sort="score"),
        thresholds=thresholds,
        reasons=thresholds.exceeded(audit.summary.n_flagged, audit.summary.n_samples),
        url=url,
        reused=reused,
        seconds=time.monotonic() - started,
    )


def print_report(report: CiReport, log: Callable[[str], None] = print) -> None:
    summary = report.audit.summary
    assert summary is not None
    log(f"{summary.n_flagged} of {summary.n_samples} samples flagged "
        f"({summary.flagged_fraction:.2%}).")  # fmt: skip
    for cls in summary.classes:
        if cls.n_flagged:
            voted = cls.flagged_voted_label
            pointer = "" if voted is None else f"; the learners voted {report.class_name(voted)}"
            log(f"  {report.class_name(cls.label)}: {cls.n_flagged} of {cls.n_samples}{pointer}")
    if report.flagged:
        log("Most suspicious:")
        for item in report.flagged[:SHOWN]:
            where = f"  {item.path}" if item.path else ""
            log(f"  #{item.index}  score {item.score:.2f}  {report.class_name(item.label)}{where}")
    log(f"Results: {report.url}")
    if report.reasons:
        log("POISONED: " + "; ".join(report.reasons) + ".")
    else:
        log("Within the thresholds.")


def write_junit(report: CiReport, path: Path) -> None:
    """One test case per class (its flagged samples are its failure), and one for the thresholds."""
    by_class: dict[int, list[FlaggedItem]] = defaultdict(list)
    for item in sorted(report.flagged, key=lambda item: item.index):
        by_class[item.label].append(item)
    summary = report.audit.summary
    assert summary is not None
    suite = ET.Element(
        "testsuite",
        name=f"dataset-audit {report.path.name}",
        tests=str(len(summary.classes) + 1),
        failures=str(sum(1 for c in summary.classes if c.n_flagged) + bool(report.reasons)),
        errors="0",
        time=f"{report.seconds:.3f}",
    )
    properties = ET.SubElement(suite, "properties")
    for key, value in {
        "audit": str(report.audit.id),
        "url": report.url,
        "sha256": report.audit.dataset.sha256,
        "preset": report.audit.preset,
        "seed": str(report.audit.seed),
    }.items():
        ET.SubElement(properties, "property", name=key, value=value)
    for cls in summary.classes:
        case = ET.SubElement(
            suite, "testcase", classname="dataset-audit.classes", name=report.class_name(cls.label)
        )
        items = by_class.get(cls.label, [])
        if items:
            voted = cls.flagged_voted_label
            pointer = "" if voted is None else f"; the learners voted {report.class_name(voted)}"
            failure = ET.SubElement(
                case,
                "failure",
                type="flagged",
                message=f"{cls.n_flagged} of {cls.n_samples} samples flagged{pointer}",
            )
            failure.text = "flagged indices: " + ", ".join(str(i.index) for i in items)
            paths = [i.path for i in items if i.path]
            if paths:
                failure.text += "\nflagged paths:\n" + "\n".join(paths)
    case = ET.SubElement(
        suite, "testcase", classname="dataset-audit", name="flagged samples within thresholds"
    )
    if report.reasons:
        ET.SubElement(case, "failure", type="poisoned", message="; ".join(report.reasons))
    root = ET.Element("testsuites")
    root.append(suite)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def report_json(report: CiReport) -> dict[str, Any]:
    return {
        "verdict": "poisoned" if report.reasons else "clean",
        "exit_code": report.exit_code,
        "reasons": report.reasons,
        "thresholds": {
            "max_flagged_fraction": report.thresholds.max_flagged_fraction,
            "max_flagged": report.thresholds.max_flagged,
        },
        "url": report.url,
        "reused": report.reused,
        "audit": report.audit.model_dump(mode="json"),
        "flagged": [item.model_dump(mode="json") for item in report.flagged],
    }


def write_json(report: CiReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report_json(report), indent=2) + "\n")
