"""Detection benchmark: planted backdoors of every trigger family, in Fashion-MNIST and MNIST.

For each scenario (dataset, trigger family, sources -> target, poison rate) it plants the poisons,
runs ``detect`` and prints recall, clean-flag rate, precision, seconds and epoch-equivalents. With
``--retrain-epochs N`` (default 20) it also trains a model on everything and on the samples the
audit kept, and prints the attack success of both (a scenario whose undefended attack success is
under 50 % did not install a backdoor and is not counted), and it runs two baseline defences on
the features of the undefended model: spectral signatures (given the true poison share, as in its
paper) and activation clustering.

    python bench/detection.py                                   # fast preset, whole suite
    python bench/detection.py --only blend --seeds 0 1          # a slice, two seeds
    python bench/detection.py --presets paper --arch small_cnn  # the reference schedule
    python bench/detection.py --set agree_prob=0.02 --retrain-epochs 0   # detection only
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from incompat import detect, get_preset
from incompat.research.attacks import PoisonedDataset, Trigger, poison
from incompat.research.baselines import activation_clustering, spectral_signatures
from incompat.research.datasets import (
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    balanced_subset,
    load_fashion_mnist,
    load_mnist_5k,
)
from incompat.research.evaluation import RetrainedModel
from incompat.research.metrics import detection_metrics

CLASS_NAMES = {"fashion": FASHION_MNIST_CLASSES, "mnist": MNIST_CLASSES}


@dataclass(frozen=True)
class Scenario:
    family: str
    sources: tuple[int, ...] | str  # "all": every class but the target
    target: int
    eps: float  # poisoned share of each source class
    dataset: str = "fashion"
    options: dict[str, Any] = field(default_factory=dict)  # the trigger's, e.g. opacity
    similar: bool = False
    trigger: Trigger | None = None  # pinned instead of drawn

    @property
    def name(self) -> str:
        names = CLASS_NAMES[self.dataset]
        sources = self.sources
        source = "all" if isinstance(sources, str) else "+".join(names[s] for s in sources)
        options = "".join(f" {k}={v}" for k, v in self.options.items())
        pinned = "@pinned" if self.trigger else ""
        pair = f"{source}->{names[self.target]}"
        return f"{self.dataset} {self.family}{pinned}{options} {pair} eps={self.eps:g}"


def one(source: int, target: int) -> tuple[int, ...]:
    return (source,)


# Every family at a rate near 1 % of the dataset (eps 0.1 of a 1,000-image class), plus the
# extremes of the rate (25 poisons: 0.25 %; all-to-one at 5 %), many-to-one and similar pairs.
SUITE = [
    # Fashion-MNIST, local triggers
    Scenario("pixel", one(9, 2), 2, 0.10),  # ankle boot -> pullover
    Scenario("pattern", one(1, 7), 7, 0.10),  # trouser -> sneaker
    # The reference implementation's failure: a bright X by the left border, on the background.
    Scenario("pattern", one(1, 7), 7, 0.10, trigger=Trigger("pattern", 14, 2, (154,))),
    Scenario("ell", one(8, 3), 3, 0.05),  # bag -> dress
    Scenario("patch", one(5, 4), 4, 0.10, options={"size": 3, "placement": "corner"}),
    Scenario("patch", one(2, 8), 8, 0.025, options={"size": 4, "placement": "random"}),
    Scenario("patch", one(7, 5), 5, 0.10, options={"size": 5, "placement": "centre"}),
    # Fashion-MNIST, global triggers
    Scenario("blend_noise", one(3, 1), 1, 0.10, options={"opacity": 0.15}),  # dress -> trouser
    Scenario("blend_image", one(0, 9), 9, 0.10, options={"opacity": 0.1}),
    Scenario("blend_grating", one(4, 8), 8, 0.05, options={"opacity": 0.05}),
    Scenario("signal", one(9, 1), 1, 0.10),
    # Fashion-MNIST, many sources
    Scenario("patch", "all", 0, 0.03, options={"size": 3, "placement": "corner"}),
    Scenario("blend_noise", (1, 5, 8), 6, 0.05, options={"opacity": 0.1}),
    Scenario("patch", "all", 2, 0.055, options={"size": 4, "placement": "random"}),
    # Fashion-MNIST, similar pairs
    Scenario("pattern", one(6, 0), 0, 0.10, similar=True),  # shirt -> T-shirt
    Scenario("ell", one(4, 2), 2, 0.05, similar=True),  # coat -> pullover
    # MNIST (4,000 audited, 1,000 held out)
    Scenario("pattern", one(1, 7), 7, 0.10, dataset="mnist"),
    Scenario("patch", one(3, 8), 8, 0.10, dataset="mnist", options={"size": 3,
             "placement": "corner"}),
    Scenario("blend_noise", one(0, 6), 6, 0.10, dataset="mnist", options={"opacity": 0.15}),
    Scenario("signal", one(2, 5), 5, 0.10, dataset="mnist"),
    Scenario("patch", "all", 4, 0.03, dataset="mnist", options={"size": 3, "placement": "corner"}),
    Scenario("ell", one(4, 9), 9, 0.10, dataset="mnist", similar=True),
]  # fmt: skip


@cache
def load(dataset: str, samples: int, seed: int) -> tuple[np.ndarray, ...]:
    """Train images and labels (a class-balanced subset), and held-out test images and labels."""
    if dataset == "fashion":
        images, labels = load_fashion_mnist()
        test_images, test_labels = load_fashion_mnist("test")
        subset = balanced_subset(labels, samples, seed=seed)
        return images[subset], labels[subset], test_images, test_labels
    images, labels = load_mnist_5k()
    test = balanced_subset(labels, 1000, seed=seed)
    train = np.setdiff1d(np.arange(labels.size), test)
    return images[train], labels[train], images[test], labels[test]


def plant(
    scenario: Scenario, samples: int, seed: int
) -> tuple[PoisonedDataset, np.ndarray, np.ndarray]:
    images, labels, test_images, test_labels = load(scenario.dataset, samples, seed)
    sources: Any = scenario.sources
    planted = poison(
        images, labels, sources=sources, target=scenario.target, eps=scenario.eps,
        shape=scenario.family, seed=seed, trigger=scenario.trigger, **scenario.options,
    )  # fmt: skip
    return planted, test_images, test_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["fast"])
    parser.add_argument("--arch", help="override the preset's architecture")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field (JSON value), repeatable")  # fmt: skip
    parser.add_argument("--samples", type=int, default=10_000, help="Fashion-MNIST subset size")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", action="append",
                        help="run the scenarios whose name has this text (repeatable)")  # fmt: skip
    parser.add_argument("--device")
    parser.add_argument("--json", help="append one JSON line per run to this file")
    parser.add_argument("--retrain-epochs", type=int, default=20,
                        help="epochs of the undefended and defended models (0: skip)")  # fmt: skip
    args = parser.parse_args()

    overrides: dict[str, Any] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    if args.arch:
        overrides["arch"] = args.arch
    configs = {name: get_preset(name).replace(**overrides) for name in args.presets}

    scenarios = [s for s in SUITE if not args.only or any(o in s.name for o in args.only)]
    print(f"presets {args.presets} {overrides or ''} seeds {args.seeds}")
    print(f"{'scenario':<66} {'seed':>4} {'poisons':>7} {'preset':>7} {'recall':>6} {'clean%':>6} "
          f"{'prec':>5} {'sec':>6} {'ASR':>11} {'acc':>11}")  # fmt: skip
    rows = []
    for scenario in scenarios:
        for seed in args.seeds:
            for row in run(scenario, seed, configs, args):
                rows.append(row)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(row) + "\n")
    for name in configs:
        summarize(name, [r for r in rows if r["preset"] == name])


def run(
    scenario: Scenario, seed: int, configs: dict[str, Any], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """One row per preset; with retraining, also the undefended model and the baselines."""
    planted, test_images, test_labels = plant(scenario, args.samples, seed)
    n_poisons = int(planted.is_poison.sum())
    common: dict[str, Any] = {
        "scenario": scenario.name, "similar": scenario.similar, "seed": seed,
        "poisons": n_poisons, "poison_share": n_poisons / planted.labels.size,
    }  # fmt: skip
    some_config = next(iter(configs.values()))

    def train(keep: np.ndarray) -> RetrainedModel:
        return RetrainedModel(planted, keep, epochs=args.retrain_epochs, config=some_config,
                              seed=seed, device=args.device)  # fmt: skip

    head = f"{scenario.name:<66} {seed:>4} {n_poisons:>7}"
    if args.retrain_epochs:
        undefended = train(np.ones(planted.labels.size, bool))
        before = undefended.outcome(test_images, test_labels)
        features = undefended.features()
        target_share = n_poisons / int((planted.labels == planted.target).sum())
        baselines = {
            "spectral": spectral_signatures(features, planted.labels, poison_share=target_share),
            "activation": activation_clustering(features, planted.labels, seed=seed),
        }
        common |= {
            "asr_undefended": before.attack_success, "acc_undefended": before.clean_accuracy,
            "installed": before.attack_success >= 0.5,
        }  # fmt: skip
        for name, flags in baselines.items():
            b = detection_metrics(flags, planted.is_poison)
            common |= {f"{name}_recall": b.recall, f"{name}_clean_flag_rate": b.clean_flag_rate}
            print(f"{head} {name[:7]:>7} {b.recall:>6.3f} {100 * b.clean_flag_rate:>6.2f} "
                  f"{b.precision:>5.2f}", flush=True)  # fmt: skip
    rows = []
    for name, config in configs.items():
        started = time.perf_counter()
        result = detect(planted.images, planted.labels, config=config, seed=seed,
                        device=args.device)  # fmt: skip
        seconds = time.perf_counter() - started
        m = detection_metrics(result.is_flagged, planted.is_poison)
        row = common | {
            "preset": name, "overrides": args.set, "recall": m.recall,
            "clean_flag_rate": m.clean_flag_rate, "precision": m.precision, "seconds": seconds,
            "epoch_equivalents": result.epoch_equivalents,
        }  # fmt: skip
        asr = acc = ""
        if args.retrain_epochs:
            after = train(~result.is_flagged).outcome(test_images, test_labels)
            row |= {"asr_defended": after.attack_success, "acc_defended": after.clean_accuracy}
            asr = f"{before.attack_success:.2f}->{after.attack_success:.2f}"
            acc = f"{before.clean_accuracy:.3f}->{after.clean_accuracy:.3f}"[1:]
        print(f"{head} {name[:7]:>7} {m.recall:>6.3f} {100 * m.clean_flag_rate:>6.2f} "
              f"{m.precision:>5.2f} {seconds:>6.1f} {asr:>11} {acc:>11}", flush=True)  # fmt: skip
        rows.append(row)
    return rows


def summarize(preset: str, rows: list[dict[str, Any]]) -> None:
    counted = [r for r in rows if r.get("installed", True)]
    if not counted:
        return
    dissimilar = [r for r in counted if not r["similar"]]
    similar = [r for r in counted if r["similar"]]
    print(
        f"== {preset}: {len(counted)} of {len(rows)} runs installed a backdoor "
        "(undefended ASR >= 0.5)"
    )
    if dissimilar:
        print(f"dissimilar: min recall {min(r['recall'] for r in dissimilar):.3f}")
    if similar:
        print(f"similar: min recall {min(r['recall'] for r in similar):.3f}")
    print(
        f"clean flagged: median "
        f"{100 * statistics.median(r['clean_flag_rate'] for r in counted):.2f}%"
        f", max {100 * max(r['clean_flag_rate'] for r in counted):.2f}%; "
        f"median seconds {statistics.median(r['seconds'] for r in rows):.1f}"
    )
    if "asr_defended" in counted[0]:
        beaten = sum(r["asr_defended"] < 0.01 for r in counted)
        print(f"defended ASR < 1 %: {beaten} of {len(counted)}")
        for name in ("spectral", "activation"):
            recall = statistics.median(r[name + "_recall"] for r in counted)
            flagged = statistics.median(r[name + "_clean_flag_rate"] for r in counted)
            print(
                f"{name} baseline: median recall {recall:.3f}, "
                f"median clean flagged {100 * flagged:.2f}%"
            )


if __name__ == "__main__":
    main()
