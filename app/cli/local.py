"""``dataset-audit scan`` and ``demo``: the engine run here, without the service.

The engine (and torch) is imported inside the verbs, so the other verbs start fast.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli.client_verbs import print_audit, wait
from app.cli.progress import ProgressDisplay
from app.cli.shared import (
    DATA_HELP,
    EXIT_ERROR,
    EXIT_OK,
    class_line,
    client,
    image_size_option,
)
from app.formats import DatasetError, load_dataset
from app.wording import verdict_lines
from incompat.config import PRESET_NAMES

if TYPE_CHECKING:
    import numpy as np

    from incompat import DetectionResult
    from incompat.research.attacks import PoisonedDataset
    from incompat.research.metrics import DetectionMetrics


def add_verbs(verbs: Any) -> None:
    scan = verbs.add_parser("scan", help="audit a local dataset file here, without the service")
    scan.add_argument("data", type=Path, help=DATA_HELP)
    _engine_options(scan)
    image_size_option(scan)
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
    dataset = load_dataset(args.data, image_size=args.image_size)
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

    with tempfile.TemporaryDirectory() as folder, client(args) as service:
        path = Path(folder) / "fashion-mnist-planted.npz"
        np.savez(path, x=planted.images, y=planted.labels, classes=np.array(FASHION_MNIST_CLASSES))
        audit = service.submit(path, preset=args.preset, seed=args.seed, name="demo")
        print(f"Uploaded to {service.server}: audit {audit.id}")
        audit = wait(service, audit)
        print_audit(audit)
        if audit.status != "succeeded":
            return EXIT_ERROR
        flagged = service.flagged(audit.id)
    is_flagged = np.zeros(planted.labels.size, dtype=bool)
    is_flagged[[item.index for item in flagged]] = True
    suspected = np.zeros(planted.labels.size, dtype=bool)
    suspected[[item.index for item in flagged if item.kind == "suspected_poison"]] = True
    metrics = detection_metrics(is_flagged, planted.is_poison)
    _print_truth(metrics, detection_metrics(suspected, planted.is_poison))
    print(f"Report: {service.server}/audits/{audit.id}/report")
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
    started = time.perf_counter()
    with ProgressDisplay() as progress:
        result = detect(
            images, labels, config=config, seed=args.seed, device=args.device,
            on_progress=progress,
        )  # fmt: skip
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
            print("  " + class_line(cls.label, cls.n_flagged, cls.n_samples,
                                    cls.flagged_voted_label, names))  # fmt: skip
    top = result.most_suspicious(min(10, flagged))
    if top.size:
        print("  most suspicious: " + ", ".join(f"{i} ({result.score[i]:.2f})" for i in top))


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
