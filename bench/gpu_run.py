"""The GPU run of ``bench/gpu.sh``: a colour poisoned set audited with ``fast`` twice and ``paper``
once, on the engine directly (what ``dataset-audit scan`` calls; the device machine has torch but
not the service's packages).

The set: ``--samples`` Fashion-MNIST training images (class-balanced), each coloured on its own
(random foreground and background colours, noise, 32 x 32 x 3: ``colourize``), with a 3 x 3 colour
patch on 1 % of the trousers relabelled sneaker. Prints, per run: wall seconds, epoch-equivalents
per second, peak GPU memory, recall and the share of clean samples flagged; and whether the two
``fast`` runs flagged the same samples with the same scores. ``--json`` writes the rows.

    python3 bench/gpu_run.py --data .gpu-data --json $OUT/gpu.json          # on the GPU machine
    python3 bench/gpu_run.py --data /usr/share/datasets/fashion-mnist --samples 2000 \
        --runs tiny --device cpu                                             # a smoke run here
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from incompat import detect
from incompat.research.attacks import poison
from incompat.research.datasets import (
    balanced_subset,
    colourize,
    load_fashion_mnist,
)


def colour_set(data: Path, samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images, labels = load_fashion_mnist(root=data)
    index = balanced_subset(labels, samples, seed=0)
    coloured = colourize(images[index], seed=0)
    planted = poison(
        coloured, labels[index], source=1, target=7, eps=0.01, shape="patch", size=3,
        placement="corner", seed=0,
    )  # fmt: skip
    return planted.images, planted.labels, planted.is_poison


def audit(preset: str, images: np.ndarray, labels: np.ndarray, is_poison: np.ndarray,
          device: str) -> dict[str, object]:  # fmt: skip
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    tic = time.perf_counter()
    result = detect(images, labels, config=preset, seed=0, device=device)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - tic
    flagged = result.is_flagged
    return {
        "preset": preset,
        "seconds": round(seconds, 1),
        "epoch_equivalents_per_s": round(result.epoch_equivalents / seconds, 2),
        "peak_gpu_gib": (
            round(torch.cuda.max_memory_allocated() / 2**30, 2)
            if device.startswith("cuda")
            else None
        ),
        "recall": round(float(flagged[is_poison].mean()), 3),
        "clean_flagged": round(float(flagged[~is_poison].mean()), 4),
        "verdict": result.verdict.status,
        "_flags": np.flatnonzero(flagged),
        "_scores": result.score,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="Fashion-MNIST's .gz files")
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--runs", default="fast,fast,paper", help="presets, in order")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.device.startswith("cuda"):
        print(torch.cuda.get_device_name(), flush=True)
    tic = time.perf_counter()
    images, labels, is_poison = colour_set(args.data, args.samples)
    print(f"set: {images.shape} {is_poison.sum()} poisons, built in "
          f"{time.perf_counter() - tic:.1f} s", flush=True)  # fmt: skip
    rows = []
    for preset in args.runs.split(","):
        row = audit(preset, images, labels, is_poison, args.device)
        rows.append(row)
        print({k: v for k, v in row.items() if not k.startswith("_")}, flush=True)
    by_preset: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_preset.setdefault(str(row["preset"]), []).append(row)
    for preset, runs in by_preset.items():
        if len(runs) > 1:
            same = all(
                np.array_equal(runs[0]["_flags"], r["_flags"])  # type: ignore[arg-type]
                and np.array_equal(runs[0]["_scores"], r["_scores"])  # type: ignore[arg-type]
                for r in runs[1:]
            )
            print(f"{preset}: {len(runs)} runs flagged the same samples with the same scores: "
                  f"{same}")  # fmt: skip
    if args.json:
        public = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
        args.json.write_text(json.dumps(public, indent=2))


if __name__ == "__main__":
    main()
