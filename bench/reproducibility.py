"""Reproducibility benchmark: does a run repeat, and does a resumed run equal an uninterrupted one?

Plants a backdoor in a Fashion-MNIST subset and runs ``detect`` with one seed, each run in a fresh
process as the service's workers do: twice uninterrupted, and once stopped after a third of its weak
learners and resumed from the checkpoint by another process (a redelivered audit). Prints how many
flags and cluster assignments differ between the runs and the largest score difference, with each
run's recall and time (a process's first run includes the device's warm-up).

    python bench/reproducibility.py                     # on the CPU
    python bench/reproducibility.py --device cuda       # on the GPU
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from incompat import detect, get_preset
from incompat.research.attacks import poison
from incompat.research.datasets import FASHION_MNIST_DIR, balanced_subset, load_fashion_mnist
from incompat.research.metrics import detection_metrics


@dataclass(frozen=True)
class Run:
    """What one process computed."""

    seconds: float
    is_flagged: np.ndarray
    score: np.ndarray
    cluster_ids: np.ndarray


class Stop(Exception):
    """Raised from the progress callback: the process stops as a killed worker would."""


def audit(data: Path, options: dict[str, Any], checkpoint: Path | None, stop: bool) -> Run | None:
    """One ``detect`` in this process; with ``stop`` it dies after a third of its learners."""
    with np.load(data, allow_pickle=False) as arrays:
        images, labels = arrays["images"], arrays["labels"]

    def stop_early(stage: str, done: int, total: int) -> None:
        if stop and stage == "clustering" and done == max(1, total // 3):
            raise Stop

    started = time.perf_counter()
    try:
        result = detect(images, labels, on_progress=stop_early, checkpoint_to=checkpoint,
                        resume_from=checkpoint, **options)  # fmt: skip
    except Stop:
        return None
    return Run(time.perf_counter() - started, result.is_flagged, result.score, result.cluster_ids)


def in_fresh_process(call: Callable[..., Run | None], *args: Any) -> Run | None:
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(call, *args).result()


def compare(name: str, a: Run, b: Run) -> None:
    flags = int((a.is_flagged != b.is_flagged).sum())
    clusters = int((a.cluster_ids != b.cluster_ids).sum())
    score = float(np.abs(a.score - b.score).max())
    same = flags == 0 and clusters == 0 and score == 0.0
    print(
        f"{name:<28} flags differing {flags:>5}  cluster ids differing {clusters:>6}  "
        f"max |score diff| {score:.4f}  {'identical' if same else 'DIFFERENT'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device")
    parser.add_argument("--root", type=Path, default=FASHION_MNIST_DIR,
                        help="folder of the Fashion-MNIST .gz files")  # fmt: skip
    args = parser.parse_args()

    images, labels = load_fashion_mnist(root=args.root)
    subset = balanced_subset(labels, args.samples, seed=args.seed)
    planted = poison(images[subset], labels[subset], source=1, target=7, eps=0.1,
                     shape="pattern", seed=args.seed)  # fmt: skip
    options = {"config": get_preset(args.preset), "seed": args.seed, "device": args.device}
    print(f"preset {args.preset}, {args.samples} samples, seed {args.seed}, "
          f"device {args.device or 'default'}, each run in a fresh process")  # fmt: skip

    with tempfile.TemporaryDirectory() as folder:
        data, checkpoint = Path(folder) / "data.npz", Path(folder) / "run.ckpt.npz"
        np.savez(data, images=planted.images, labels=planted.labels)
        runs: dict[str, Run] = {}
        for name in ("first", "second", "resumed"):
            if name == "resumed":  # a process that dies a third of the way through
                in_fresh_process(audit, data, options, checkpoint, True)
            run = in_fresh_process(audit, data, options, checkpoint if name == "resumed" else None,
                                   False)  # fmt: skip
            assert run is not None
            runs[name] = run
            m = detection_metrics(run.is_flagged, planted.is_poison)
            flagged = int(run.is_flagged.sum())
            print(f"{name:<8} {run.seconds:6.1f} s  recall {m.recall:.3f}  clean flagged "
                  f"{100 * m.clean_flag_rate:.2f}%  flagged {flagged}")  # fmt: skip
    compare("first vs second", runs["first"], runs["second"])
    compare("first vs resumed", runs["first"], runs["resumed"])


if __name__ == "__main__":
    main()
