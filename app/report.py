"""The report a person reads: what it shows, built from an audit (the service) or from a result
in hand (``dataset-audit scan --report``), rendered by the Jinja2 templates beside this module.

Over 300 lines: the service's view and the local scan's share every part, and one module keeps
the two reports alike."""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, select_autoescape

from app.report_samples import pick_examples, score_histogram
from app.thumbnails import thumbnail_png
from app.views import verdict_view
from app.wording import group_line
from dataset_audit.schemas import AuditRead, Verdict
from incompat.config import FLAG_THRESHOLD

if TYPE_CHECKING:
    from incompat import DetectionResult

TEMPLATES = Path(__file__).with_name("templates")
REFRESH_S = 5
# A class's pointer stands out when at least this many of its flagged samples point to one other
# class, and nearly as many as in the class where most do.
STANDOUT_MIN = 5
STANDOUT_SHARE_OF_TOP = 0.75
# The histogram's drawing area, in SVG user units.
PLOT_WIDTH, PLOT_HEIGHT = 600, 160


@dataclass(frozen=True)
class SampleCard:
    index: int
    label: str
    voted: str | None
    score: float
    src: str


@dataclass(frozen=True)
class ClassRow:
    name: str
    n_samples: int
    n_flagged: int
    share: float
    # "source → target": this class's flagged samples look like another class to the learners.
    pointer: str | None
    pointer_count: int = 0  # flagged samples of this class voted for that other class
    # Among the most samples pointing one way: where a backdoor shows (the rest is the few per cent
    # of clean samples every audit flags, and classes that look alike).
    standout: bool = False


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    low: float
    high: float
    count: int
    flagged: bool


@dataclass
class ReportView:
    title: str
    status: str
    facts: list[tuple[str, str]]
    verdict: str | None = None  # "poisoned" or "clean"; None before the audit has one
    verdict_text: str = ""
    evidence: list[str] = field(default_factory=list)  # one line per implicated group
    progress: str | None = None
    refresh_s: int | None = None
    error: str | None = None
    classes: list[ClassRow] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    threshold_x: float = PLOT_WIDTH * FLAG_THRESHOLD
    suspicious: list[SampleCard] = field(default_factory=list)
    clean: list[SampleCard] = field(default_factory=list)
    downloads: list[tuple[str, str]] = field(default_factory=list)
    back_link: str | None = None


def class_namer(names: Sequence[str] | None) -> Callable[[int | None], str | None]:
    def name(label: int | None) -> str | None:
        if label is None:
            return None
        return names[label] if names is not None and 0 <= label < len(names) else str(label)

    return name


def class_rows(
    classes: list[dict[str, Any]],
    name: Callable[[int | None], str | None],
    votes: dict[tuple[int, int], int],
) -> list[ClassRow]:
    """``votes``: how many flagged samples of each given label the learners voted for each other
    label."""
    counts = {}
    for c in classes:
        voted = c.get("flagged_voted_label")
        if voted is not None and voted != c["label"]:
            counts[c["label"]] = votes.get((c["label"], voted), 0)
    bar = max(STANDOUT_MIN, STANDOUT_SHARE_OF_TOP * max(counts.values())) if counts else 0
    rows = []
    for c in classes:
        own = name(c["label"]) or ""
        count = counts.get(c["label"])
        rows.append(
            ClassRow(
                name=own,
                n_samples=c["n_samples"],
                n_flagged=c["n_flagged"],
                share=c["n_flagged"] / c["n_samples"] if c["n_samples"] else 0.0,
                pointer=None if count is None else f"{name(c['flagged_voted_label'])} → {own}",
                pointer_count=count or 0,
                standout=count is not None and count >= bar,
            )
        )
    return rows


def set_verdict(view: ReportView, verdict: Verdict | None, names: Sequence[str] | None) -> None:
    """The verdict and its evidence, which the page opens with."""
    if verdict is None:
        return
    view.verdict = verdict.status
    if verdict.status == "poisoned":
        n = len(verdict.implicated)
        groups = "1 group of flagged samples shares" if n == 1 else f"{n} groups share"
        view.verdict_text = (
            f"Poisoned: {groups} a trigger. Their samples are the suspected poisons, shown "
            "first below."
        )
        view.evidence = [group_line(group, names) for group in verdict.implicated]
    else:
        view.verdict_text = (
            f"Clean: no group of flagged samples shares a trigger (smallest adjusted p-value "
            f"{verdict.p_value:.2g} over {verdict.n_tests:,} tests). The flagged samples are "
            "label issues: mislabelled or ambiguous samples, worth a look on their own."
        )


def vote_counts(labels: np.ndarray, voted_label: np.ndarray) -> dict[tuple[int, int], int]:
    """``votes`` for ``class_rows`` from the flagged samples' given and voted labels."""
    pairs, counts = np.unique(np.stack([labels, voted_label]), axis=1, return_counts=True)
    return {(int(a), int(b)): int(n) for (a, b), n in zip(pairs.T, counts, strict=True)}


def histogram_bars(edges: Sequence[float], counts: Sequence[int]) -> list[Bar]:
    """Bars on a square-root scale, so a few flagged samples show beside thousands of clean."""
    top = math.sqrt(max(counts)) if counts and max(counts) > 0 else 1.0
    width = PLOT_WIDTH / max(1, len(counts))
    bars = []
    for i, count in enumerate(counts):
        height = PLOT_HEIGHT * math.sqrt(count) / top
        bars.append(
            Bar(
                x=i * width,
                y=PLOT_HEIGHT - height,
                width=width - 1,
                height=height,
                low=edges[i],
                high=edges[i + 1],
                count=int(count),
                flagged=edges[i] >= FLAG_THRESHOLD,
            )
        )
    return bars


def cards(
    samples: list[dict[str, Any]],
    name: Callable[[int | None], str | None],
    src: Callable[[int], str],
) -> list[SampleCard]:
    return [
        SampleCard(
            index=s["index"],
            label=name(s["label"]) or "",
            voted=name(s.get("voted_label")),
            score=s["score"],
            src=src(s["index"]),
        )
        for s in samples
    ]


def audit_view(
    audit: AuditRead, extras: dict[str, Any], votes: dict[tuple[int, int], int]
) -> ReportView:
    """The report of an audit in the service; ``extras``: the stored summary's examples and
    histogram (``worker/report_assets.py``)."""
    base = f"/audits/{audit.id}"
    dataset = audit.dataset
    shape = "x".join(map(str, dataset.image_shape))
    described = f"{dataset.filename or dataset.format}, {dataset.n_samples:,} samples"
    facts = [
        ("Status", str(audit.status)),
        ("Dataset", f"{described}, {dataset.n_classes} classes, images {shape}"),
        ("SHA-256", dataset.sha256),
        ("Preset, seed", f"{audit.preset}, {audit.seed}"),
        ("Created", audit.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]  # fmt: skip
    view = ReportView(
        title=f"Audit {audit.name or audit.id}",
        status=str(audit.status),
        facts=facts,
        error=audit.error,
        back_link="/",
    )
    if audit.started_at and audit.finished_at:
        seconds = (audit.finished_at - audit.started_at).total_seconds()
        facts.append(("Duration", f"{seconds:,.0f} s"))
    if audit.status in ("queued", "running"):
        p = audit.progress
        view.progress = (
            f"{p.stage}: {p.done} of {p.total} ({p.percent:.0f} %)"
            if p.stage
            else "waiting for a worker"
        )
        view.refresh_s = REFRESH_S
    summary = audit.summary
    if summary is None:
        return view
    suspected = summary.n_suspected_poisons
    facts.insert(
        1,
        (
            "Flagged",
            f"{summary.n_flagged:,} of {summary.n_samples:,} ({summary.flagged_fraction:.2%}): "
            f"{suspected:,} suspected poisons, {summary.n_flagged - suspected:,} label issues",
        ),
    )
    set_verdict(view, summary.verdict, dataset.classes)
    name = class_namer(dataset.classes)
    view.classes = class_rows([c.model_dump() for c in summary.classes], name, votes)
    histogram = extras.get("score_histogram")
    if histogram:
        view.bars = histogram_bars(histogram["edges"], histogram["counts"])
    examples = extras.get("examples", {})
    src = lambda index: f"{base}/samples/{index}.png"  # noqa: E731
    view.suspicious = cards(examples.get("suspicious", []), name, src)
    view.clean = cards(examples.get("clean", []), name, src)
    view.downloads = [
        ("Flagged samples (CSV)", f"{base}/flagged.csv"),
        ("Flagged samples (JSON)", f"{base}/flagged?sort=score&limit=1000"),
        ("Every score (.npy)", f"{base}/scores?format=npy"),
    ]
    return view


def result_view(
    result: DetectionResult,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    title: str,
    preset: str,
    classes: Sequence[str] | None = None,
) -> ReportView:
    """A standalone report of a local scan: the pictures are inlined as data URIs."""
    summary = result.summary()
    n, flagged = summary["n_samples"], summary["n_flagged"]
    suspected = summary["n_suspected_poisons"]
    facts = [
        (
            "Flagged",
            f"{flagged:,} of {n:,} ({flagged / n:.2%}): {suspected:,} suspected poisons, "
            f"{flagged - suspected:,} label issues",
        ),
        ("Images", "x".join(map(str, images.shape[1:]))),
        ("Preset, seed", f"{preset}, {result.seed}"),
        ("Device", result.device),
        ("Duration", f"{summary['timings'].get('total', 0.0):,.0f} s"),
    ]
    name = class_namer(classes)
    examples = pick_examples(
        labels, result.score, result.is_flagged, result.voted_label, result.most_suspicious()
    )
    histogram = score_histogram(result.score)

    def inline(index: int) -> str:
        return "data:image/png;base64," + base64.b64encode(thumbnail_png(images[index])).decode()

    view = ReportView(
        title=title,
        status="succeeded",
        facts=facts,
        classes=class_rows(
            summary["classes"],
            name,
            vote_counts(labels[result.is_flagged], result.voted_label[result.is_flagged]),
        ),
        bars=histogram_bars(histogram["edges"], histogram["counts"]),
        suspicious=cards(examples["suspicious"], name, inline),
        clean=cards(examples["clean"], name, inline),
    )
    set_verdict(view, verdict_view(summary["verdict"], classes or []), classes)
    return view


_environment = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True
)


def render_report(view: ReportView) -> str:
    return _environment.get_template("report.html").render(
        view=view, refresh_s=view.refresh_s, plot_width=PLOT_WIDTH, plot_height=PLOT_HEIGHT
    )


def render_list(audits: list[AuditRead], total: int, offset: int, limit: int) -> str:
    busy = any(a.status in ("queued", "running") for a in audits)
    return _environment.get_template("list.html").render(
        audits=audits, total=total, offset=offset, limit=limit, refresh_s=10 if busy else None
    )
