"""``dataset-audit submit``, ``status``, ``flagged``, ``report`` and ``ci``: the verbs that talk
to a running service through ``dataset_audit.AuditClient``, and how they print an audit."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli.progress import ProgressDisplay
from app.cli.shared import (
    DATA_HELP,
    EXIT_ERROR,
    EXIT_OK,
    audit_id,
    class_line,
    client,
    image_size_option,
    server_option,
)
from app.formats import DatasetError
from app.wording import short_name, verdict_lines
from incompat.config import PRESET_NAMES

if TYPE_CHECKING:
    from dataset_audit.client import AuditClient
    from dataset_audit.schemas import AuditRead


def add_verbs(verbs: Any) -> None:
    submit = verbs.add_parser("submit", help="upload a dataset to the service and start an audit")
    submit.add_argument("data", type=Path, help=DATA_HELP)
    submit.add_argument("--preset", choices=PRESET_NAMES, help="default: the server's (fast)")
    submit.add_argument("--seed", type=int)
    image_size_option(submit)
    submit.add_argument("--name", help="a name to know the audit by")
    submit.add_argument("--wait", action="store_true", help="wait for the audit to finish")
    submit.add_argument(
        "--no-reuse", dest="reuse", action="store_false",
        help="audit again even when this content was audited with these options",
    )  # fmt: skip
    server_option(submit)
    submit.set_defaults(handler=_submit)

    estimate = verbs.add_parser(
        "estimate", help="what auditing a dataset would cost, without starting the audit"
    )
    estimate.add_argument("data", type=Path, help=DATA_HELP)
    estimate.add_argument("--preset", choices=PRESET_NAMES, help="default: the server's (fast)")
    image_size_option(estimate)
    server_option(estimate)
    estimate.set_defaults(handler=_estimate)

    status = verbs.add_parser("status", help="an audit's status, progress and summary")
    status.add_argument("audit_id", metavar="ID")
    status.add_argument("--wait", action="store_true", help="wait for the audit to finish")
    server_option(status)
    status.set_defaults(handler=_status)

    flagged = verbs.add_parser("flagged", help="an audit's flagged samples")
    flagged.add_argument("audit_id", metavar="ID")
    flagged.add_argument("--sort", choices=("index", "score"), default="index")
    flagged.add_argument(
        "--kind", choices=("suspected_poison", "label_issue"),
        help="only suspected poisons, or only label issues (default: both)",
    )  # fmt: skip
    flagged.add_argument("--json", action="store_true", help="print JSON lines, one per sample")
    server_option(flagged)
    flagged.set_defaults(handler=_flagged)

    report = verbs.add_parser("report", help="the address of an audit's report page")
    report.add_argument("audit_id", metavar="ID")
    report.add_argument("--open", action="store_true", help="open it in a web browser")
    server_option(report)
    report.set_defaults(handler=_report)

    ci = verbs.add_parser(
        "ci",
        help="audit a dataset from a CI pipeline: exit 0 when the verdict is clean, 1 when it is "
        "poisoned (or over a threshold you set), 2 on an error",
    )
    ci.add_argument("data", type=Path, help=DATA_HELP)
    ci.add_argument("--preset", choices=PRESET_NAMES, help="default: the server's (fast)")
    ci.add_argument("--seed", type=int, default=0)
    image_size_option(ci)
    ci.add_argument("--name", help="a name to know the audit by")
    ci.add_argument(
        "--max-flagged-fraction", type=float, metavar="F", default=None,
        help="also fail when more than this share of samples is flagged, whatever the verdict "
        "(the engine flags a few per cent of clean data as label issues: 3-4 %% of "
        "Fashion-MNIST with 'fast')",
    )  # fmt: skip
    ci.add_argument("--max-flagged", type=int, metavar="N", help="fail above N flagged samples")
    ci.add_argument("--timeout", type=float, metavar="S", help="give up (exit 2) after S seconds")
    ci.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report")
    ci.add_argument("--json", type=Path, metavar="FILE", help="write a JSON report")
    ci.add_argument(
        "--no-reuse", dest="reuse", action="store_false",
        help="audit again even when this content was audited with these options",
    )  # fmt: skip
    server_option(ci)
    ci.set_defaults(handler=_ci)


def _submit(args: argparse.Namespace) -> int:
    if not args.data.is_file():
        raise DatasetError(f"no such file: {args.data}")
    with client(args) as service:
        audit, reused = service.submit_or_reuse(
            args.data, preset=args.preset, seed=args.seed, name=args.name, reuse=args.reuse,
            image_size=args.image_size,
        )  # fmt: skip
        if reused:
            print(f"Audit {audit.id}: {audit.status}, an earlier audit of this content with "
                  f"preset {audit.preset} and seed {audit.seed}, reused (--no-reuse audits it "
                  "again)")  # fmt: skip
        else:
            print(f"Audit {audit.id}: {audit.status} ({audit.dataset.n_samples} samples, "
                  f"preset {audit.preset}, sha256 {audit.dataset.sha256[:12]})")  # fmt: skip
        if args.wait:
            audit = wait(service, audit)
            print_audit(audit)
            return EXIT_OK if audit.status == "succeeded" else EXIT_ERROR
    return EXIT_OK


def _estimate(args: argparse.Namespace) -> int:
    if not args.data.is_file():
        raise DatasetError(f"no such file: {args.data}")
    with client(args) as service:
        answer = service.estimate(args.data, preset=args.preset, image_size=args.image_size)
    cost = answer.estimate
    shape = "x".join(str(side) for side in answer.image_shape)
    print(f"{answer.n_samples} images of {shape} in {answer.n_classes} classes, "
          f"preset {answer.preset}:")  # fmt: skip
    seconds = "unknown" if cost.seconds is None else f"about {duration(cost.seconds)}"
    print(f"  time on one {cost.device} worker: {seconds} ({cost.basis})")
    print(f"  device memory: about {cost.device_bytes / 2**20:,.0f} MiB beyond the runtime's own")
    print(f"  training: {cost.epoch_equivalents:g} passes over the dataset")
    return EXIT_OK


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _status(args: argparse.Namespace) -> int:
    args.audit_id = audit_id(args.audit_id)
    with client(args) as service:
        audit = service.get(args.audit_id)
        if args.wait:
            audit = wait(service, audit)
    print_audit(audit)
    return EXIT_ERROR if audit.status == "failed" else EXIT_OK


def _flagged(args: argparse.Namespace) -> int:
    args.audit_id = audit_id(args.audit_id)
    with client(args) as service:
        names = service.get(args.audit_id).dataset.classes
        items = service.flagged(args.audit_id, sort=args.sort, kind=args.kind)
    for item in items:
        if args.json:
            print(item.model_dump_json())
        else:
            where = f"  {item.path}" if item.path else ""
            label = short_name(item.label, names)
            voted = "-" if item.voted_label is None else short_name(item.voted_label, names)
            print(f"{item.index}\t{item.kind}\tscore {item.score:.3f}\t"
                  f"labelled {label}, looks like {voted}{where}")  # fmt: skip
    if not args.json:
        print(f"{len(items)} flagged", file=sys.stderr)
    return EXIT_OK


def _ci(args: argparse.Namespace) -> int:
    # Imported here: only this verb judges an audit and writes reports.
    from app.cli.ci_hook import CiError, Thresholds, print_report, run_ci
    from app.cli.ci_reports import write_json, write_json_error, write_junit, write_junit_error
    from dataset_audit.client import AuditClientError

    thresholds = Thresholds(
        max_flagged_fraction=args.max_flagged_fraction, max_flagged=args.max_flagged
    )
    started = time.monotonic()
    try:
        with ProgressDisplay() as progress, client(args) as service:
            report = run_ci(
                service, args.data, preset=args.preset, seed=args.seed, thresholds=thresholds,
                timeout_s=args.timeout, reuse=args.reuse, name=args.name,
                image_size=args.image_size, on_progress=_shown_on(progress),
            )  # fmt: skip
    except (CiError, AuditClientError, DatasetError) as exc:
        print(f"dataset-audit ci: error: {exc}", file=sys.stderr)
        # The reports say so too: a pipeline uploads them whatever the exit status.
        if args.junit:
            write_junit_error(args.data, str(exc), time.monotonic() - started, args.junit)
        if args.json:
            write_json_error(args.data, str(exc), args.json)
        return EXIT_ERROR
    print_report(report)
    if args.junit:
        write_junit(report, args.junit)
    if args.json:
        write_json(report, args.json)
    return report.exit_code


def _report(args: argparse.Namespace) -> int:
    import webbrowser

    args.audit_id = audit_id(args.audit_id)
    with client(args) as service:
        audit = service.get(args.audit_id)  # the audit exists, or this says why not
        url = f"{service.server}/audits/{audit.id}/report"
    print(url)
    if args.open and not webbrowser.open(url):
        print("dataset-audit: no web browser to open it with here", file=sys.stderr)
    return EXIT_OK


def _shown_on(progress: ProgressDisplay) -> Callable[[AuditRead], None]:
    """An ``on_progress`` for ``AuditClient.wait`` that draws on ``progress``."""

    def show(current: AuditRead) -> None:
        if current.progress.stage:
            progress(current.progress.stage, current.progress.done, current.progress.total)

    return show


def wait(service: AuditClient, audit: AuditRead) -> AuditRead:
    """``audit`` once it has finished, its progress shown meanwhile."""
    with ProgressDisplay() as progress:
        return service.wait(audit.id, on_progress=_shown_on(progress))


def print_audit(audit: AuditRead) -> None:
    print(f"Audit {audit.id}: {audit.status}" + (f" ({audit.name})" if audit.name else ""))
    if audit.status in ("queued", "running") and audit.progress.stage:
        p = audit.progress
        print(f"  {p.stage}: {p.done}/{p.total} ({p.percent:.0f}%)")
    if audit.error:
        print(f"  {audit.error}")
    summary = audit.summary
    if summary is None:
        return
    names = audit.dataset.classes
    share = f"{summary.flagged_fraction:.2%}"
    suspected = summary.n_suspected_poisons
    print(f"  {summary.n_flagged} of {summary.n_samples} samples flagged ({share}): "
          f"{suspected} suspected poisons, {summary.n_flagged - suspected} label issues; "
          f"preset {audit.preset}, seed {audit.seed}")  # fmt: skip
    for line in verdict_lines(summary.verdict, names):
        print(f"  {line}")
    for cls in summary.classes:
        if cls.n_flagged:
            print("    " + class_line(cls.label, cls.n_flagged, cls.n_samples,
                                      cls.flagged_voted_label, names))  # fmt: skip
