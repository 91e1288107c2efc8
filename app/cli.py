"""``dataset-audit``: the command line.

The engine (and torch) is imported only by the verbs that run it, so the others start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import admin
from app.formats import DatasetError, load_dataset
from app.progress import ProgressDisplay
from app.wording import class_name, short_name, verdict_lines
from dataset_audit.schemas import PRESET_NAMES

if TYPE_CHECKING:
    import numpy as np

    from dataset_audit.client import AuditClient
    from dataset_audit.schemas import AuditRead
    from incompat import DetectionResult
    from incompat.research.attacks import PoisonedDataset
    from incompat.research.metrics import DetectionMetrics

EXIT_OK = 0
EXIT_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from dataset_audit.client import AuditClientError

    try:
        return int(args.handler(args))
    except (DatasetError, ValueError, AuditClientError, TimeoutError) as exc:
        print(f"dataset-audit: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("dataset-audit: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataset-audit",
        description="Find backdoor-poisoned samples in an image-classification dataset.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    scan = verbs.add_parser("scan", help="audit a local dataset file here, without the service")
    scan.add_argument("data", type=Path, help=DATA_HELP)
    _engine_options(scan)
    scan.add_argument("--output", "-o", type=Path, help="write the result as JSON here")
    scan.add_argument(
        "--report", type=Path, metavar="HTML", help="write a standalone HTML report here"
    )
    scan.set_defaults(handler=_scan)

    demo = verbs.add_parser(
        "demo", help="plant a backdoor in a Fashion-MNIST subset, audit it, and score the audit"
    )
    demo.add_argument("--samples", type=int, default=10_000, help="subset size (default 10000)")
    demo.add_argument("--trigger", choices=("pixel", "pattern", "ell"), default="pattern")
    demo.add_argument("--eps", type=float, default=0.1, help="poisoned share of the source class")
    demo.add_argument("--source", type=int, default=1, help="source class (default 1, trouser)")
    demo.add_argument("--target", type=int, default=7, help="target class (default 7, sneaker)")
    _engine_options(demo)
    demo.add_argument("--output", "-o", type=Path, help="write the result as JSON here")
    demo.add_argument(
        "--server", help="audit through the service at this URL (see 'serve') instead of here"
    )
    demo.set_defaults(handler=_demo)

    serve = verbs.add_parser(
        "serve",
        help="run the service here: the API and one worker (SQLite and no broker server "
        "unless DATABASE_URL and BROKER_URL say otherwise)",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--data-dir", type=Path, help="database, queue and uploads (default: $DATA_DIR or "
        "~/.local/share/dataset-audit)"
    )  # fmt: skip
    serve.add_argument(
        "--auth", action="store_true",
        help="require API keys (make them with 'dataset-audit keys create'); the same as AUTH=true",
    )  # fmt: skip
    serve.set_defaults(handler=_serve)
    admin.add_verbs(verbs)

    submit = verbs.add_parser("submit", help="upload a dataset to the service and start an audit")
    submit.add_argument("data", type=Path, help=DATA_HELP)
    submit.add_argument("--preset", choices=PRESET_NAMES, help="default: the server's (fast)")
    submit.add_argument("--seed", type=int)
    submit.add_argument("--name", help="a name to know the audit by")
    submit.add_argument("--wait", action="store_true", help="wait for the audit to finish")
    submit.add_argument(
        "--no-reuse", dest="reuse", action="store_false",
        help="audit again even when this content was audited with this preset and seed",
    )  # fmt: skip
    _server_option(submit)
    submit.set_defaults(handler=_submit)

    status = verbs.add_parser("status", help="an audit's status, progress and summary")
    status.add_argument("audit_id", metavar="ID")
    status.add_argument("--wait", action="store_true", help="wait for the audit to finish")
    _server_option(status)
    status.set_defaults(handler=_status)

    flagged = verbs.add_parser("flagged", help="an audit's flagged samples")
    flagged.add_argument("audit_id", metavar="ID")
    flagged.add_argument("--sort", choices=("index", "score"), default="index")
    flagged.add_argument(
        "--kind", choices=("suspected_poison", "label_issue"),
        help="only suspected poisons, or only label issues (default: both)",
    )  # fmt: skip
    flagged.add_argument("--json", action="store_true", help="print JSON lines, one per sample")
    _server_option(flagged)
    flagged.set_defaults(handler=_flagged)

    report = verbs.add_parser("report", help="the address of an audit's report page")
    report.add_argument("audit_id", metavar="ID")
    report.add_argument("--open", action="store_true", help="open it in a web browser")
    _server_option(report)
    report.set_defaults(handler=_report)

    ci = verbs.add_parser(
        "ci",
        help="audit a dataset from a CI pipeline: exit 0 when the verdict is clean, 1 when it is "
        "poisoned (or over a threshold you set), 2 on an error",
    )
    ci.add_argument("data", type=Path, help=DATA_HELP)
    ci.add_argument("--preset", choices=PRESET_NAMES, help="default: the server's (fast)")
    ci.add_argument("--seed", type=int, default=0)
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
        help="audit again even when this content was audited with this preset and seed",
    )  # fmt: skip
    _server_option(ci)
    ci.set_defaults(handler=_ci)
    return parser


DATA_HELP = ".npz (x: uint8 images, y: labels), ImageFolder .zip, or .parquet"


def _server_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        help="the service's URL (default: $DATASET_AUDIT_SERVER or http://127.0.0.1:8000); "
        "an API key, where the service wants one, comes from $DATASET_AUDIT_API_KEY",
    )


def _engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=PRESET_NAMES, default="fast", help="default: fast")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when present")
    parser.add_argument(
        "--arch",
        choices=("small_cnn", "resnet20", "resnet32", "preact_resnet18"),
        help="override the preset's network",
    )


def _scan(args: argparse.Namespace) -> int:
    if not args.data.is_file():
        raise DatasetError(f"no such file: {args.data}")
    dataset = load_dataset(args.data)
    result, seconds = _run_engine(dataset.images, dataset.labels, args)
    _print_summary(result, seconds, dataset.classes)
    if args.output:
        _write_json(args.output, _result_json(result, args.preset, seconds))
    if args.report:
        from app.report import render_report, result_view

        view = result_view(
            result, dataset.images, dataset.labels, title=f"Audit of {args.data.name}",
            preset=args.preset, classes=dataset.classes,
        )  # fmt: skip
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(render_report(view))
        print(f"Wrote {args.report}")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from incompat.research.attacks import poison
    from incompat.research.datasets import (
        FASHION_MNIST_CLASSES,
        balanced_subset,
        load_fashion_mnist,
    )
    from incompat.research.metrics import detection_metrics

    try:
        images, labels = load_fashion_mnist()
    except FileNotFoundError as exc:
        raise DatasetError(
            f"Fashion-MNIST not found ({exc.filename}); install it with "
            "'apt-get install dataset-fashion-mnist' or set FASHION_MNIST_DIR"
        ) from exc
    subset = balanced_subset(labels, args.samples, seed=args.seed)
    planted = poison(
        images[subset], labels[subset], source=args.source, target=args.target,
        eps=args.eps, shape=args.trigger, seed=args.seed,
    )  # fmt: skip
    print(
        f"Planted {planted.is_poison.sum()} '{args.trigger}' poisons "
        f"({FASHION_MNIST_CLASSES[args.source]} -> {FASHION_MNIST_CLASSES[args.target]}) "
        f"in {args.samples} Fashion-MNIST images."
    )
    if args.server:
        return _demo_on_server(args, planted)
    result, seconds = _run_engine(planted.images, planted.labels, args)
    _print_summary(result, seconds, FASHION_MNIST_CLASSES)
    metrics = detection_metrics(result.is_flagged, planted.is_poison)
    _print_truth(metrics, detection_metrics(result.is_suspected_poison, planted.is_poison))
    if args.output:
        payload = _result_json(result, args.preset, seconds)
        payload["ground_truth"] = {"poisons": planted.poison_indices.tolist(), **metrics.to_dict()}
        _write_json(args.output, payload)
    return EXIT_OK


def _demo_on_server(args: argparse.Namespace, planted: PoisonedDataset) -> int:
    """The demo through the service: upload the planted dataset, wait, score the flagged list."""
    import tempfile

    import numpy as np

    from incompat.research.datasets import FASHION_MNIST_CLASSES
    from incompat.research.metrics import detection_metrics

    with tempfile.TemporaryDirectory() as folder, _client(args) as client:
        path = Path(folder) / "fashion-mnist-planted.npz"
        np.savez(path, x=planted.images, y=planted.labels, classes=np.array(FASHION_MNIST_CLASSES))
        audit = client.submit(path, preset=args.preset, seed=args.seed, name="demo")
        print(f"Uploaded to {client.server}: audit {audit.id}")
        audit = _wait(client, audit)
        _print_audit(audit)
        if audit.status != "succeeded":
            return EXIT_ERROR
        flagged = client.flagged(audit.id)
    is_flagged = np.zeros(planted.labels.size, dtype=bool)
    is_flagged[[item.index for item in flagged]] = True
    suspected = np.zeros(planted.labels.size, dtype=bool)
    suspected[[item.index for item in flagged if item.kind == "suspected_poison"]] = True
    metrics = detection_metrics(is_flagged, planted.is_poison)
    _print_truth(metrics, detection_metrics(suspected, planted.is_poison))
    print(f"Report: {client.server}/audits/{audit.id}/report")
    if args.output:
        payload = {
            "audit": audit.model_dump(mode="json"),
            "flagged": [item.index for item in flagged],
            "ground_truth": {"poisons": planted.poison_indices.tolist(), **metrics.to_dict()},
        }
        _write_json(args.output, payload)
    return EXIT_OK


def _print_truth(flagged: DetectionMetrics, suspected: DetectionMetrics) -> None:
    print(
        f"Against the planted truth: recall {flagged.recall:.3f}, "
        f"precision {flagged.precision:.3f}, "
        f"clean samples flagged {flagged.clean_flag_rate:.2%}; "
        f"suspected poisons: recall {suspected.recall:.3f}, precision {suspected.precision:.3f}."
    )


def _run_engine(
    images: np.ndarray, labels: np.ndarray, args: argparse.Namespace
) -> tuple[DetectionResult, float]:
    from incompat import detect, get_preset

    config = get_preset(args.preset)
    if args.arch:
        config = config.replace(arch=args.arch)
    progress = ProgressDisplay()
    started = time.perf_counter()
    try:
        result = detect(
            images, labels, config=config, seed=args.seed, device=args.device,
            on_progress=progress,
        )  # fmt: skip
    finally:
        progress.close()
    return result, time.perf_counter() - started


def _print_summary(result: DetectionResult, seconds: float, names: Sequence[str] | None) -> None:
    from app.views import verdict_view

    n, flagged = result.n_samples, int(result.is_flagged.sum())
    suspected = int(result.is_suspected_poison.sum())
    print(
        f"Audited {n} samples in {seconds:.1f}s on {result.device}: {flagged} flagged "
        f"({flagged / n:.2%}): {suspected} suspected poisons, {flagged - suspected} label issues."
    )
    for line in verdict_lines(verdict_view(result.verdict.to_dict(), names or []), names):
        print(line)
    for cls in result.class_summary:
        if cls.n_flagged:
            print("  " + _class_line(cls.label, cls.n_flagged, cls.n_samples,
                                     cls.flagged_voted_label, names))  # fmt: skip
    top = result.most_suspicious(min(10, flagged))
    if top.size:
        print("  most suspicious: " + ", ".join(f"{i} ({result.score[i]:.2f})" for i in top))


def _class_line(
    label: int, n_flagged: int, n_samples: int, voted: int | None, names: Sequence[str] | None
) -> str:
    """``class 7 (sneaker): 34 of 400 flagged, most look like class 1 (trouser)``."""
    pointer = (
        f", most look like {class_name(voted, names)}"
        if voted is not None and voted != label
        else ""
    )
    return f"{class_name(label, names)}: {n_flagged} of {n_samples} flagged{pointer}"


def _result_json(result: DetectionResult, preset: str, seconds: float) -> dict[str, Any]:
    return {
        "flagged": result.flagged_indices.tolist(),
        "scores": [round(float(s), 6) for s in result.score],
        "n_samples": result.n_samples,
        "preset": preset,
        "seed": result.seed,
        "seconds": round(seconds, 3),
        "summary": result.summary(),
    }


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload) + "\n")
    print(f"Wrote {path}")


def _serve(args: argparse.Namespace) -> int:
    from app.serve import serve

    return serve(host=args.host, port=args.port, data_dir=args.data_dir, auth=args.auth)


def _client(args: argparse.Namespace) -> AuditClient:
    from dataset_audit.client import AuditClient

    return AuditClient(args.server)


def _submit(args: argparse.Namespace) -> int:
    if not args.data.is_file():
        raise DatasetError(f"no such file: {args.data}")
    with _client(args) as client:
        audit, reused = client.submit_or_reuse(
            args.data, preset=args.preset, seed=args.seed, name=args.name, reuse=args.reuse
        )
        if reused:
            print(f"Audit {audit.id}: {audit.status}, an earlier audit of this content with "
                  f"preset {audit.preset} and seed {audit.seed}, reused (--no-reuse audits it "
                  "again)")  # fmt: skip
        else:
            print(f"Audit {audit.id}: {audit.status} ({audit.dataset.n_samples} samples, "
                  f"preset {audit.preset}, sha256 {audit.dataset.sha256[:12]})")  # fmt: skip
        if args.wait:
            audit = _wait(client, audit)
            _print_audit(audit)
            return EXIT_OK if audit.status == "succeeded" else EXIT_ERROR
    return EXIT_OK


def _audit_id(text: str) -> uuid.UUID:
    """An audit id from the command line, or a one-line error."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an audit id: ids are UUIDs, such as "
            "3f2b8c1e-0d4a-4e59-9a7b-2c6d1e8f0a13 ('dataset-audit submit' prints them)"
        ) from None


def _status(args: argparse.Namespace) -> int:
    args.audit_id = _audit_id(args.audit_id)
    with _client(args) as client:
        audit = _wait(client, client.get(args.audit_id)) if args.wait else client.get(args.audit_id)
    _print_audit(audit)
    return EXIT_ERROR if audit.status == "failed" else EXIT_OK


def _flagged(args: argparse.Namespace) -> int:
    args.audit_id = _audit_id(args.audit_id)
    with _client(args) as client:
        names = client.get(args.audit_id).dataset.classes
        items = client.flagged(args.audit_id, sort=args.sort, kind=args.kind)
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
    from app.ci_hook import (
        EXIT_ERROR,
        CiError,
        Thresholds,
        print_report,
        run_ci,
        write_json,
        write_json_error,
        write_junit,
        write_junit_error,
    )
    from dataset_audit.client import AuditClientError

    thresholds = Thresholds(
        max_flagged_fraction=args.max_flagged_fraction, max_flagged=args.max_flagged
    )
    progress = ProgressDisplay()
    started = time.monotonic()
    try:
        with _client(args) as client:
            report = run_ci(
                client, args.data, preset=args.preset, seed=args.seed, thresholds=thresholds,
                timeout_s=args.timeout, reuse=args.reuse, name=args.name,
                on_progress=_shown_on(progress),
            )  # fmt: skip
    except (CiError, AuditClientError, DatasetError) as exc:
        progress.close()
        print(f"dataset-audit ci: error: {exc}", file=sys.stderr)
        # The reports say so too: a pipeline uploads them whatever the exit status.
        if args.junit:
            write_junit_error(args.data, str(exc), time.monotonic() - started, args.junit)
        if args.json:
            write_json_error(args.data, str(exc), args.json)
        return EXIT_ERROR
    progress.close()
    print_report(report)
    if args.junit:
        write_junit(report, args.junit)
    if args.json:
        write_json(report, args.json)
    return report.exit_code


def _report(args: argparse.Namespace) -> int:
    import webbrowser

    args.audit_id = _audit_id(args.audit_id)
    with _client(args) as client:
        audit = client.get(args.audit_id)  # the audit exists, or this says why not
        url = f"{client.server}/audits/{audit.id}/report"
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


def _wait(client: AuditClient, audit: AuditRead) -> AuditRead:
    progress = ProgressDisplay()
    show = _shown_on(progress)

    try:
        return client.wait(audit.id, on_progress=show)
    finally:
        progress.close()


def _print_audit(audit: AuditRead) -> None:
    print(f"Audit {audit.id}: {audit.status}" + (f" ({audit.name})" if audit.name else ""))
    if audit.status in ("queued", "running") and audit.progress.stage:
        p = audit.progress
        print(f"  {p.stage}: {p.done}/{p.total} ({p.percent:.0f}%)")
    if audit.error:
        print(f"  {audit.error}")
    summary = audit.summary
    if summary is not None:
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
                print("    " + _class_line(cls.label, cls.n_flagged, cls.n_samples,
                                           cls.flagged_voted_label, names))  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
