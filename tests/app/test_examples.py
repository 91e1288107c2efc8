"""The CI examples a team copies parse, and the command they run exists with those options."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import _parser

EXAMPLES = Path(__file__).parents[2] / "examples"


def commands(node: Any) -> list[str]:
    """Every shell line in a workflow that calls dataset-audit."""
    if isinstance(node, dict):
        return [line for value in node.values() for line in commands(value)]
    if isinstance(node, list):
        return [line for value in node for line in commands(value)]
    if isinstance(node, str) and node.lstrip().startswith("dataset-audit "):
        return [node]
    return []


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_the_example_runs_the_ci_hook(name: str) -> None:
    workflow = yaml.safe_load((EXAMPLES / name).read_text())
    lines = commands(workflow)
    assert len(lines) == 1
    argv = shlex.split(lines[0])
    assert argv[:2] == ["dataset-audit", "ci"]
    args = _parser().parse_args(argv[1:])  # exits on an unknown verb or option
    assert args.junit == Path("audit-report.xml")
    assert args.json == Path("audit-report.json")
    # The verdict gates by default: no threshold to tune, the server's preset.
    assert (args.max_flagged_fraction, args.max_flagged, args.preset) == (None, None, None)
    text = (EXAMPLES / name).read_text()
    assert "DATASET_AUDIT_SERVER" in text
    assert "DATASET_AUDIT_API_KEY" in text


def test_the_github_workflow_keeps_the_reports() -> None:
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    steps = workflow["jobs"]["audit"]["steps"]
    assert steps[-1]["if"] == "always()"
    assert steps[-1]["with"]["path"] == "audit-report.*"
