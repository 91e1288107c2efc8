"""Cost benchmark: wall time and peak memory of audits on this machine against N and image size,
beside what ``incompat.cost`` estimates before the run.

Each row is one ``detect`` (``fast`` by default) in a fresh process on a class-balanced
Fashion-MNIST subset: grey 28 x 28 as it is, or coloured per image (``colourize``) at 32 x 32 x 3
or 64 x 64 x 3. It prints the measured seconds, the engine's epoch-equivalents and the model's
training passes, the throughput the run shows (samples per second at 28 x 28, what the estimate
needs), the estimate with the built-in CPU figure and its error, and the process's peak RSS.

    python bench/cost.py                                   # 2.5k -> 40k grey, 5k colour 32 and 64
    python bench/cost.py --rows 2500x28x1,5000x32x3 --json cost.json
    python bench/cost.py --from-json cost.json             # print again with today's figures
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from incompat.config import get_preset
from incompat.cost import THROUGHPUT, estimate, throughput_of

ROWS = "2500x28x1,5000x28x1,10000x28x1,20000x28x1,40000x28x1,5000x32x3,5000x64x3"


def one(n: int, side: int, channels: int, preset: str) -> dict[str, Any]:
    """One audit in this process (run by the parent as a child, for a clean peak RSS)."""
    import numpy as np

    from incompat import detect
    from incompat.research.datasets import balanced_subset, colourize, load_fashion_mnist

    images, labels = load_fashion_mnist()
    index = balanced_subset(labels, n, seed=0)
    data = images[index] if channels == 1 else colourize(images[index], seed=0, size=side)
    if channels == 1 and side != 28:
        raise SystemExit("grey rows are 28 x 28")
    tic = time.perf_counter()
    result = detect(np.ascontiguousarray(data), labels[index], config=preset, seed=0, device="cpu")
    seconds = time.perf_counter() - tic
    return {
        "n": n, "shape": list(data.shape[1:]), "preset": preset, "seconds": round(seconds, 1),
        "epoch_equivalents": round(result.epoch_equivalents, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }  # fmt: skip


def table(rows: list[dict[str, Any]]) -> None:
    print("| N | image | seconds | engine passes | model passes | throughput | estimate "
          "| error | peak RSS |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        config = get_preset(row["preset"])
        shape = tuple(row["shape"])
        model = estimate(config, row["n"], shape)
        rate = throughput_of(config, row["n"], shape, row["seconds"])
        guess = model.seconds or float("nan")
        error = guess / row["seconds"] - 1
        print(f"| {row['n']:,} | {'x'.join(map(str, shape))} | {row['seconds']:.1f} | "
              f"{row['epoch_equivalents']} | {model.passes.train:.1f} | {rate:,.0f}/s | "
              f"{guess:.1f} | {error:+.0%} | {row['peak_rss_mib']:,} MiB |")  # fmt: skip
    print(f"\nbuilt-in CPU throughput: {THROUGHPUT[('cpu', 'small_cnn')]:,.0f}/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=ROWS, help="NxSIDExCHANNELS, comma-separated")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--from-json", type=Path, help="print rows measured before")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        n, side, channels = (int(v) for v in args.one.split("x"))
        print(json.dumps(one(n, side, channels, args.preset)))
        return
    if args.from_json:
        table(json.loads(args.from_json.read_text()))
        return
    rows = []
    for spec in args.rows.split(","):
        child = subprocess.run(
            [sys.executable, __file__, "--one", spec, "--preset", args.preset],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    print()
    table(rows)


if __name__ == "__main__":
    main()
