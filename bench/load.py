"""Load test: concurrent clients upload datasets, wait for their audits and read the results,
against the whole service (API, broker, workers, database).

Unless ``--url`` names a running service, it starts one on loopback, on the PostgreSQL and Redis
servers at 127.0.0.1: a fresh database (created, migrated, dropped at the end), a Redis database
(``--redis-db``, flushed before and after), a temporary ``DATA_DIR``, ``uvicorn app.main:app`` and
``--workers`` Celery workers (``--pool=solo -Q audits``), all stopped on the way out. It runs as
deployed, with API keys required: one key for each of ``--tenants`` tenants, the clients shared
among them (10 each by default, under the default quota of 20 active audits per tenant).

Each of ``--clients`` clients (asyncio, its own ``httpx.AsyncClient``; all start at once) uploads a
distinct small ``.npz`` (``--samples`` synthetic 16 x 16 images, preset ``tiny``, ``reuse=false``),
polls ``GET /audits/{id}`` every ``--poll-interval`` seconds until the audit ends, then reads
``GET /audits/{id}/flagged``. It prints the requests made, requests/s, latency per kind of request
and errors by status, and checks that every audit succeeded with a result that reads back
consistently; the exit status is 1 otherwise. Against ``--url``, ``--api-key`` (or
``DATASET_AUDIT_API_KEY``) is sent as ``Authorization: Bearer <key>``.

    python bench/load.py                                   # 100 clients, 2 workers
    python bench/load.py --clients 20 --workers 1
    python bench/load.py --url http://127.0.0.1:8000 --api-key "$KEY"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import numpy as np
import redis
from common import free_port, server_errors
from sqlalchemy import create_engine, text

from app.db import make_sessionmaker, transaction
from app.migrate import upgrade
from app.queue import QUEUE, make_celery
from app.services import access
from app.settings import Settings
from dataset_audit.client import API_KEY_ENV

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379"
IMAGE_SIDE = 16
N_CLASSES = 10
NOISE = 40.0  # pixel noise around each class's pattern
FLAGGED_PAGE = 1000
FINISHED = ("succeeded", "failed", "cancelled")
KINDS = ("upload", "poll", "flagged")
READY_TIMEOUT_S = 120.0  # a worker imports torch before it is ready
REQUEST_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


# The service, when the script runs its own.


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, migrated PostgreSQL database, dropped on the way out."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"dataset_audit_load_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = admin.url.set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def flushed_redis(url: str) -> Iterator[str]:
    """A Redis database emptied before and after: no task of an earlier run is left in it."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        yield url
    finally:
        client.flushdb()
        client.close()


@contextlib.contextmanager
def process(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process logging to ``log``, stopped (SIGTERM, then SIGKILL) on the way out."""
    with log.open("wb") as out:
        child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)
    try:
        yield child
    finally:
        child.terminate()
        try:
            child.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def wait_for(
    what: str, ready: Callable[[], bool], children: list[subprocess.Popen[bytes]], logs: Path
) -> None:
    """Poll ``ready()`` until it is true; exit with the logs' tails if a child dies first."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            break
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.2)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs.glob("*.log"))
    raise SystemExit(f"{what} did not start:\n{tails}")


def service_env(settings: Settings, workers: int) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": settings.resolved_database_url,
        "BROKER_URL": settings.resolved_broker_url,
        "DATA_DIR": str(settings.data_dir),
        "AUTH": "true",
        # Each worker's torch gets its share of the cores instead of all of them each.
        "OMP_NUM_THREADS": os.environ.get(
            "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers))
        ),
    }


@contextlib.contextmanager
def running_service(args: argparse.Namespace, data_dir: Path) -> Iterator[tuple[str, list[str]]]:
    """The API's base URL, with ``args.workers`` workers ready to take audits, and an API key for
    each of ``args.tenants`` tenants."""
    with (
        fresh_database(args.postgres) as database_url,
        flushed_redis(f"{args.redis}/{args.redis_db}") as broker_url,
    ):
        settings = Settings(data_dir=data_dir, database_url=database_url, broker_url=broker_url)
        env = service_env(settings, args.workers)
        keys = make_keys(database_url, args.tenants)
        port = free_port()
        api = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
        # The script records every request itself: uvicorn's access log would only cost CPU.
        api += ["--port", str(port), "--no-access-log"]
        with contextlib.ExitStack() as stack:
            children = [stack.enter_context(process(api, env, data_dir / "api.log"))]
            for i in range(args.workers):
                worker = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker"]
                worker += ["--pool=solo", "-Q", QUEUE, "-n", f"load{i}@%h", "--loglevel=INFO"]
                children.append(stack.enter_context(process(worker, env, data_dir / f"w{i}.log")))
            base_url = f"http://127.0.0.1:{port}"
            wait_for("the API", partial(api_ready, base_url), children, data_dir)
            celery = make_celery(settings)
            try:
                wait_for(
                    "the workers", partial(workers_ready, celery, args.workers), children, data_dir
                )
            finally:
                celery.close()
            yield base_url, keys


def make_keys(database_url: str, tenants: int) -> list[str]:
    engine = create_engine(database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            return [access.create_key(session, f"load-{i}")[1] for i in range(tenants)]
    finally:
        engine.dispose()


def api_ready(base_url: str) -> bool:
    return httpx.get(f"{base_url}/readyz", timeout=2.0).status_code == 200


def workers_ready(celery: Any, n: int) -> bool:
    return len(celery.control.ping(timeout=1.0)) >= n


# The clients.


def synthetic_npz(rng: np.random.Generator, n: int) -> bytes:
    """``n`` noisy copies of ``N_CLASSES`` random patterns, labelled by pattern: learnable, and
    different for every generator."""
    patterns = rng.integers(0, 256, (N_CLASSES, IMAGE_SIDE, IMAGE_SIDE)).astype(np.float32)
    labels = np.arange(n, dtype=np.int64) % N_CLASSES
    images = patterns[labels] + rng.normal(0.0, NOISE, (n, IMAGE_SIDE, IMAGE_SIDE))
    buffer = io.BytesIO()
    np.savez(buffer, x=np.clip(images, 0, 255).astype(np.uint8), y=labels)
    return buffer.getvalue()


@dataclass(frozen=True)
class Sample:
    kind: str  # upload, poll or flagged
    status: int | str  # the HTTP status, or the exception's name when no response came
    seconds: float


@dataclass
class ClientRun:
    samples: list[Sample] = field(default_factory=list)
    audit_id: str | None = None
    status: str | None = None  # the audit's last status seen
    queued_s: float | None = None  # from upload to a worker's start, by the service's clock
    running_s: float | None = None  # from a worker's start to the end
    problem: str | None = None  # why this client's audit does not count as a success


async def timed(
    http: httpx.AsyncClient, run: ClientRun, kind: str, method: str, url: str, **kwargs: Any
) -> httpx.Response | None:
    """The request's response (None when none came), recorded in ``run.samples``."""
    started = time.perf_counter()
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        run.samples.append(Sample(kind, type(exc).__name__, time.perf_counter() - started))
        return None
    run.samples.append(Sample(kind, response.status_code, time.perf_counter() - started))
    return response


async def run_client(
    index: int, http: httpx.AsyncClient, args: argparse.Namespace, dataset: bytes
) -> ClientRun:
    run = ClientRun()
    files = {"file": (f"load-{index}.npz", dataset, "application/octet-stream")}
    fields = {"preset": args.preset, "reuse": "false", "name": f"load-{index}"}
    response = await timed(http, run, "upload", "POST", "/audits", files=files, data=fields)
    if response is None or response.status_code != 202:
        run.problem = f"upload answered {describe(response)}"
        return run
    run.audit_id = response.json()["id"]
    audit = await poll(http, run, args)
    if audit is not None:
        await check_result(http, run, audit)
    return run


async def poll(
    http: httpx.AsyncClient, run: ClientRun, args: argparse.Namespace
) -> dict[str, Any] | None:
    """The audit once it has ended; None (and ``run.problem``) when it did not in time."""
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(args.poll_interval)
        response = await timed(http, run, "poll", "GET", f"/audits/{run.audit_id}")
        if response is None or response.status_code != 200:
            continue  # counted as an error; the next poll may answer
        audit: dict[str, Any] = response.json()
        run.status = audit["status"]
        if run.status in FINISHED:
            record_times(run, audit)
            return audit
    run.problem = f"still {run.status} after {args.timeout:.0f} s"
    return None


def record_times(run: ClientRun, audit: dict[str, Any]) -> None:
    created, started, finished = (
        datetime.fromisoformat(audit[key]) if audit[key] else None
        for key in ("created_at", "started_at", "finished_at")
    )
    if created and started and finished:
        run.queued_s = (started - created).total_seconds()
        run.running_s = (finished - started).total_seconds()


async def check_result(http: httpx.AsyncClient, run: ClientRun, audit: dict[str, Any]) -> None:
    if audit["status"] != "succeeded" or audit["summary"] is None:
        run.problem = f"ended {audit['status']}: {audit['error']}"
        return
    url = f"/audits/{run.audit_id}/flagged"
    params = {"limit": FLAGGED_PAGE, "sort": "score"}
    response = await timed(http, run, "flagged", "GET", url, params=params)
    if response is None or response.status_code != 200:
        run.problem = f"flagged answered {describe(response)}"
        return
    page = response.json()
    n_flagged = audit["summary"]["n_flagged"]
    if page["total"] != n_flagged or len(page["items"]) != min(n_flagged, FLAGGED_PAGE):
        run.problem = (
            f"{n_flagged} flagged in the summary, but the flagged page has total "
            f"{page['total']} and {len(page['items'])} items"
        )


def describe(response: httpx.Response | None) -> str:
    if response is None:
        return "nothing (no response)"
    return f"{response.status_code}: {response.text[:200]}"


async def drive(
    base_url: str, keys: list[str | None], args: argparse.Namespace
) -> tuple[list[ClientRun], float]:
    """Every client's run, and the seconds from the first upload to the last answer. Client ``i``
    sends ``keys[i % len(keys)]``."""
    datasets = [
        synthetic_npz(np.random.default_rng([args.seed, i]), args.samples)
        for i in range(args.clients)
    ]
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=base_url,
                    headers=authorization(keys[i % len(keys)]),
                    timeout=REQUEST_TIMEOUT_S,
                )
            )
            for i in range(args.clients)
        ]
        started = time.perf_counter()
        runs = await asyncio.gather(
            *(run_client(i, http, args, datasets[i]) for i, http in enumerate(clients))
        )
        return list(runs), time.perf_counter() - started


def authorization(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


# Output.


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def print_report(runs: list[ClientRun], wall_s: float) -> bool:
    """Prints the figures; whether every audit succeeded with a consistent result."""
    samples = [sample for run in runs for sample in run.samples]
    print(f"\n{len(samples)} requests in {wall_s:.1f} s: {len(samples) / wall_s:.1f} req/s")
    print(f"  {'kind':<8} {'count':>6} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for kind in KINDS:
        of_kind = [s for s in samples if s.kind == kind]
        seconds = [s.seconds for s in of_kind]
        n_errors = sum(not is_ok(s) for s in of_kind)
        print(
            f"  {kind:<8} {len(of_kind):>6} {n_errors:>6} {percentile(seconds, 50) * 1000:>8.1f} "
            f"{percentile(seconds, 99) * 1000:>8.1f} {max(seconds, default=0) * 1000:>8.1f}"
        )
    errors = Counter(f"{s.kind} {s.status}" for s in samples if not is_ok(s))
    print(f"  errors by status: {dict(errors) or 'none'}")

    statuses = Counter(run.status or "never seen" for run in runs)
    problems = [run for run in runs if run.problem is not None]
    print(f"\naudits: {dict(statuses)}; {len(runs) - len(problems)} of {len(runs)} succeeded")
    print(f"  audits per minute: {statuses['succeeded'] / wall_s * 60:.1f}")
    for name, seconds in (
        ("waited in the queue", [r.queued_s for r in runs if r.queued_s is not None]),
        ("ran on a worker", [r.running_s for r in runs if r.running_s is not None]),
    ):
        print(
            f"  {name}: p50 {percentile(seconds, 50):.1f} s, "
            f"p99 {percentile(seconds, 99):.1f} s, max {max(seconds, default=0):.1f} s"
        )
    for run in problems[:10]:
        print(f"  audit {run.audit_id}: {run.problem}")
    if len(problems) > 10:
        print(f"  ... and {len(problems) - 10} more")
    return not problems and not errors


def print_log_errors(data_dir: Path, most: int = 5) -> None:
    """The last few distinct exception lines the service logged (its tracebacks' last lines)."""
    for log in sorted(data_dir.glob("*.log")):
        for line in server_errors(log, most):
            print(f"  {log.name}: {line[:300]}")


def is_ok(sample: Sample) -> bool:
    expected = 202 if sample.kind == "upload" else 200
    return sample.status == expected


# Main.


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers to start")
    parser.add_argument("--url", help="a running service to target instead of starting one")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"with --url: sent as 'Authorization: Bearer <key>' (default: ${API_KEY_ENV})",
    )
    parser.add_argument(
        "--tenants", type=int, default=10, help="tenants (one key each) the clients are shared by"
    )
    parser.add_argument("--samples", type=int, default=300, help="images in each dataset")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between polls")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per audit, at most")
    parser.add_argument("--seed", type=int, default=0, help="seeds the datasets")
    parser.add_argument("--postgres", default=POSTGRES_ADMIN_URL, help="an admin connection URL")
    parser.add_argument("--redis", default=REDIS_URL, help="the Redis server, without a db")
    parser.add_argument("--redis-db", type=int, default=13, help="flushed before and after")
    return parser.parse_args()


def exit_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(143)  # unwinds the `with` blocks: children stopped, database dropped


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    data_dir = None
    with contextlib.ExitStack() as stack:
        keys: list[str | None]
        if args.url:
            base_url, keys = args.url.rstrip("/"), [args.api_key]
        else:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-load-")))
            print(
                f"starting the API and {args.workers} worker(s) in {data_dir}, "
                f"{args.tenants} tenants",
                flush=True,
            )
            base_url, made = stack.enter_context(running_service(args, data_dir))
            keys = list(made)
        print(
            f"{args.clients} clients against {base_url}: {args.samples} images each, preset "
            f"{args.preset}, polling every {args.poll_interval:g} s",
            flush=True,
        )
        runs, wall_s = asyncio.run(drive(base_url, keys, args))
        ok = print_report(runs, wall_s)
        if not ok and data_dir is not None:
            print_log_errors(data_dir)  # before the folder, logs and all, goes
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
