"""The reports of ``dataset-audit ci``, written on every exit because a pipeline uploads them
whatever the exit status: JUnit XML (one test case per class, failing for the classes the
verdict implicates; an errored case when the audit could not be done) and JSON."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from app.cli.ci_hook import EXIT_ERROR, CiReport
from app.wording import group_line
from dataset_audit.schemas import FlaggedItem


def write_junit(report: CiReport, path: Path) -> None:
    """One test case per class, failing for the classes the verdict implicates (their suspected
    poisons are the failure), and one for the thresholds when any were given."""
    summary = report.audit.summary
    assert summary is not None
    implicated = {group.target: group for group in report.implicated}
    suspects: dict[int, list[FlaggedItem]] = {}
    for item in sorted(report.flagged, key=lambda item: item.index):
        if item.kind == "suspected_poison":
            suspects.setdefault(item.label, []).append(item)
    suite = _suite(
        report.path,
        tests=len(summary.classes) + report.thresholds.given,
        failures=len(implicated) + bool(report.over_thresholds),
        errors=0,
        seconds=report.seconds,
        properties={
            "audit": str(report.audit.id),
            "url": report.url,
            "sha256": report.audit.dataset.sha256,
            "preset": report.audit.preset,
            "seed": str(report.audit.seed),
            "verdict": "none" if summary.verdict is None else summary.verdict.status,
        },
    )
    for cls in summary.classes:
        case = ET.SubElement(
            suite, "testcase", classname="dataset-audit.classes", name=report.class_name(cls.label)
        )
        group = implicated.get(cls.label)
        if group is not None:
            failure = ET.SubElement(
                case,
                "failure",
                type="poisoned",
                message=group_line(group, report.audit.dataset.classes),
            )
            items = suspects.get(cls.label, [])
            failure.text = "suspected poisons: " + ", ".join(str(i.index) for i in items)
            paths = [i.path for i in items if i.path]
            if paths:
                failure.text += "\nsuspected poison paths:\n" + "\n".join(paths)
        elif cls.n_flagged:
            output = ET.SubElement(case, "system-out")
            output.text = f"{cls.n_flagged} of {cls.n_samples} samples flagged as label issues"
    if report.thresholds.given:
        case = ET.SubElement(
            suite, "testcase", classname="dataset-audit", name="flagged samples within thresholds"
        )
        if report.over_thresholds:
            message = "; ".join(report.over_thresholds)
            ET.SubElement(case, "failure", type="threshold", message=message)
    _write_tree(suite, path)


def write_junit_error(data: Path, message: str, seconds: float, path: Path) -> None:
    """The JUnit report of an audit that could not be done: one errored case."""
    suite = _suite(data, tests=1, failures=0, errors=1, seconds=seconds, properties={})
    case = ET.SubElement(suite, "testcase", classname="dataset-audit", name="audit")
    ET.SubElement(case, "error", type="audit-error", message=message)
    _write_tree(suite, path)


def _suite(
    data: Path,
    *,
    tests: int,
    failures: int,
    errors: int,
    seconds: float,
    properties: dict[str, str],
) -> ET.Element:
    suite = ET.Element(
        "testsuite",
        name=f"dataset-audit {data.name}",
        tests=str(tests),
        failures=str(failures),
        errors=str(errors),
        time=f"{seconds:.3f}",
    )
    if properties:
        element = ET.SubElement(suite, "properties")
        for key, value in properties.items():
            ET.SubElement(element, "property", name=key, value=value)
    return suite


def _write_tree(suite: ET.Element, path: Path) -> None:
    root = ET.Element("testsuites")
    root.append(suite)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def report_json(report: CiReport) -> dict[str, Any]:
    summary = report.audit.summary
    assert summary is not None
    return {
        "result": "poisoned" if report.reasons else "clean",
        "verdict": None if summary.verdict is None else summary.verdict.model_dump(mode="json"),
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
    _write_json(report_json(report), path)


def write_json_error(data: Path, message: str, path: Path) -> None:
    _write_json(
        {"result": "error", "exit_code": EXIT_ERROR, "error": message, "file": str(data)}, path
    )


def _write_json(payload: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
