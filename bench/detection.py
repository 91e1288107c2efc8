"""Detection benchmark: planted backdoors in a class-balanced Fashion-MNIST subset.

For each scenario (trigger shape, source -> target, eps) it plants the poisons, runs ``detect`` and
prints recall, clean-flag rate, precision, wall seconds and training epoch-equivalents.

    python bench/detection.py                                  # fast preset, full suite
    python bench/detection.py --preset paper --arch small_cnn  # the reference schedule
    python bench/detection.py --only pattern --set lr=0.01     # a slice, with config overrides
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from incompat import detect, get_preset
from incompat.attacks import Trigger, poison
from incompat.datasets import FASHION_MNIST_CLASSES, balanced_subset, load_fashion_mnist
from incompat.evaluation import retrained_attack_success
from incompat.metrics import detection_metrics


@dataclass(frozen=True)
class Scenario:
    shape: str
    source: int
    target: int
    eps: float
    similar: bool = False
    trigger: Trigger | None = None  # pinned instead of drawn
    label: str = ""

    @property
    def name(self) -> str:
        pair = f"{FASHION_MNIST_CLASSES[self.source]}->{FASHION_MNIST_CLASSES[self.target]}"
        return f"{self.shape}{self.label} {pair} eps={self.eps:.2f}"


# Dissimilar pairs, one per trigger shape, at the paper's three poison rates; then a similar pair.
SUITE = [
    *(Scenario("pixel", 9, 2, eps) for eps in (0.05, 0.10, 0.20)),  # ankle boot -> pullover
    *(Scenario("pattern", 1, 7, eps) for eps in (0.05, 0.10, 0.20)),  # trouser -> sneaker
    *(Scenario("ell", 8, 3, eps) for eps in (0.05, 0.10, 0.20)),  # bag -> dress
    Scenario("pattern", 6, 0, 0.10, similar=True),  # shirt -> T-shirt
    # The most salient case: a bright X on the black background by the left border, where the
    # reference implementation flagged none of the poisons.
    Scenario("pattern", 1, 7, 0.10, trigger=Trigger("pattern", 14, 2, (154,)), label="@border"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--arch", help="override the preset's architecture")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field (JSON value), repeatable")  # fmt: skip
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", help="run the scenarios whose name contains this text")
    parser.add_argument("--device")
    parser.add_argument("--json", help="append one JSON line per run to this file")
    parser.add_argument("--retrain-epochs", type=int, default=0,
                        help="also retrain on all / on the kept samples for this many epochs and "
                        "print the attack success on the triggered test set (0: skip)")  # fmt: skip
    args = parser.parse_args()

    overrides: dict[str, Any] = {}
    for item in args.set:
        field, _, value = item.partition("=")
        overrides[field] = json.loads(value)
    if args.arch:
        overrides["arch"] = args.arch
    config = get_preset(args.preset).replace(**overrides)

    images, labels = load_fashion_mnist()
    test_images, test_labels = load_fashion_mnist("test")
    scenarios = [s for s in SUITE if args.only is None or args.only in s.name]
    print(f"preset {args.preset} {overrides or ''} samples {args.samples} seeds {args.seeds}")
    header = f"{'scenario':<42} {'seed':>4} {'poisons':>7} {'recall':>6} {'clean%':>6} "
    print(header + f"{'prec':>5} {'sec':>6} {'epochs':>6}")
    rows = []
    for scenario in scenarios:
        for seed in args.seeds:
            subset = balanced_subset(labels, args.samples, seed=seed)
            planted = poison(
                images[subset], labels[subset], source=scenario.source, target=scenario.target,
                eps=scenario.eps, shape=scenario.shape, seed=seed, trigger=scenario.trigger,
            )  # fmt: skip
            started = time.perf_counter()
            result = detect(planted.images, planted.labels, config=config, seed=seed,
                            device=args.device)  # fmt: skip
            seconds = time.perf_counter() - started
            m = detection_metrics(result.is_flagged, planted.is_poison)
            row = {
                "scenario": scenario.name, "similar": scenario.similar, "seed": seed,
                "preset": args.preset, "overrides": overrides, "poisons": m.n_poisons,
                "recall": m.recall, "clean_flag_rate": m.clean_flag_rate,
                "precision": m.precision, "seconds": seconds,
                "epoch_equivalents": result.epoch_equivalents,
            }  # fmt: skip
            rows.append(row)
            print(
                f"{scenario.name:<42} {seed:>4} {m.n_poisons:>7} {m.recall:>6.3f} "
                f"{100 * m.clean_flag_rate:>6.2f} {m.precision:>5.2f} {seconds:>6.1f} "
                f"{result.epoch_equivalents:>6.1f}",
                flush=True,
            )
            if args.retrain_epochs:
                outcomes = {
                    name: retrained_attack_success(
                        planted, keep, test_images, test_labels, epochs=args.retrain_epochs,
                        config=config, seed=seed, device=args.device,
                    )
                    for name, keep in (
                        ("undefended", np.ones(planted.labels.size, bool)),
                        ("defended", ~result.is_flagged),
                    )
                }  # fmt: skip
                for name, outcome in outcomes.items():
                    row[f"{name}_attack_success"] = outcome.attack_success
                    row[f"{name}_clean_accuracy"] = outcome.clean_accuracy
                print(
                    "    attack success {:.3f} undefended -> {:.3f} defended; clean accuracy "
                    "{:.3f} -> {:.3f}".format(
                        outcomes["undefended"].attack_success,
                        outcomes["defended"].attack_success,
                        outcomes["undefended"].clean_accuracy,
                        outcomes["defended"].clean_accuracy,
                    ),
                    flush=True,
                )
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    dissimilar = [r for r in rows if not r["similar"]]
    if dissimilar:
        print(
            f"dissimilar pairs: min recall {min(r['recall'] for r in dissimilar):.3f}, "
            f"max clean-flag {100 * max(r['clean_flag_rate'] for r in dissimilar):.2f}%, "
            f"median seconds {statistics.median(r['seconds'] for r in dissimilar):.1f}"
        )


if __name__ == "__main__":
    main()
