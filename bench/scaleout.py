"""Scale-out benchmark: one audit's wall time on 1, 2 and 3 workers (AUDIT_PARALLEL_BAGS).

For each configuration it starts the workers as ``celery -A worker.celery_app worker
--pool=solo`` processes of one thread each (``OMP_NUM_THREADS=1``) on a throwaway data directory
(the embedded SQLite database and broker), uploads the same Fashion-MNIST subset over the API
(in-process), and times the audit from its creation to its end (the audit's own timestamps).
The first row is the serial path (``AUDIT_PARALLEL_BAGS=false``, one task on one worker); every
other row runs the audit in parts: one per bag and one for the trigger-group probe, then the merge
(vote, refinement, verdict) on one worker. Every row must flag the same samples with the same
scores: the workers have one thread each, so their arithmetic is the same.

    python bench/scaleout.py                          # 10,000 images, fast, 1/2/3 workers
    python bench/scaleout.py --samples 3000 --preset tiny --workers 1,2 --json scaleout.json
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.main import create_app
from app.migrate import upgrade
from app.queue import QUEUE
from app.settings import Settings
from incompat.config import get_preset
from incompat.research.datasets import balanced_subset, load_fashion_mnist

WORKER_START_S = 120.0


@dataclass
class Row:
    path: str  # "serial" or "parts"
    workers: int
    seconds: float
    n_flagged: int
    scores_sha: str


def run_one(root: Path, dataset: Path, *, workers: int, parallel: bool, preset: str) -> Row:
    data_dir = root / f"{'parts' if parallel else 'serial'}-{workers}"
    data_dir.mkdir(parents=True)
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "AUDIT_PARALLEL_BAGS": str(parallel).lower(),
        "WORKER_DEVICE": "cpu",
        "PROGRESS_INTERVAL_S": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    env.pop("DATABASE_URL", None)
    env.pop("BROKER_URL", None)
    settings = Settings(data_dir=data_dir, audit_parallel_bags=parallel, reconcile_interval_s=0)
    upgrade(settings.resolved_database_url)
    processes = [_start_worker(data_dir, env, i) for i in range(workers)]
    try:
        with TestClient(create_app(settings)) as client, dataset.open("rb") as file:
            created = client.post(
                "/audits", files={"file": (dataset.name, file)},
                data={"preset": preset, "reuse": "false"},
            )  # fmt: skip
            created.raise_for_status()
            audit_id = created.json()["id"]
            while (audit := client.get(f"/audits/{audit_id}").json())["status"] in (
                "queued", "running",
            ):  # fmt: skip
                time.sleep(0.5)
            if audit["status"] != "succeeded":
                raise RuntimeError(f"the audit ended {audit['status']}: {audit.get('error')}")
            npy = client.get(f"/audits/{audit_id}/scores", params={"format": "npy"})
            scores = np.load(io.BytesIO(npy.content), allow_pickle=False)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    seconds = _seconds(audit["created_at"], audit["finished_at"])
    row = Row(
        "parts" if parallel else "serial", workers, seconds,
        int(audit["summary"]["n_flagged"]), _sha(scores),
    )  # fmt: skip
    return row


def _start_worker(data_dir: Path, env: dict[str, str], i: int) -> subprocess.Popen[bytes]:
    log = data_dir / f"worker-{i}.log"
    command = [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool=solo",
        "--loglevel=INFO", "--hostname", f"w{i}@bench", "-Q", QUEUE,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + WORKER_START_S
    while b" ready." not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker {i} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    return process


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _sha(scores: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(scores, "<f4").tobytes()).hexdigest()[:12]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--workers", default="1,2,3", help="comma-separated worker counts")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    config = get_preset(args.preset)
    parts = config.bags + (1 if config.probe_steps else 0)

    images, labels = load_fashion_mnist()
    index = balanced_subset(labels, args.samples, seed=0)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="scaleout-") as folder:
        root = Path(folder)
        dataset = root / "fashion.npz"
        with dataset.open("wb") as file:
            np.savez(file, x=images[index], y=labels[index])
        for parallel, workers in [(False, 1), *((True, c) for c in counts)]:
            row = run_one(root, dataset, workers=workers, parallel=parallel, preset=args.preset)
            rows.append(row)
            print(f"{row.path} x{row.workers}: {row.seconds:.1f} s", flush=True)

    serial = rows[0].seconds
    one = next((r.seconds for r in rows if r.path == "parts" and r.workers == 1), serial)
    print(f"\n{args.samples} images, preset {args.preset}: {config.bags} bags + "
          f"{parts - config.bags} probe = {parts} parts; workers of 1 thread on "
          f"{os.cpu_count()} cores\n")  # fmt: skip
    print("| path | workers | seconds | speed-up vs serial | vs parts x1 | flagged | scores |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        same = "same" if row.scores_sha == rows[0].scores_sha else f"DIFFER ({row.scores_sha})"
        print(f"| {row.path} | {row.workers} | {row.seconds:.1f} | {serial / row.seconds:.2f} | "
              f"{one / row.seconds:.2f} | {row.n_flagged} | {same} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
