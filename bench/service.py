"""Service benchmark: upload memory and throughput, and read latency under open-loop load.

It runs the API as ``uvicorn app.main:app`` in its own process, on a throwaway data directory
(the embedded SQLite database and broker, or ``DATABASE_URL`` / ``BROKER_URL`` when set; no worker,
so the uploaded audit stays queued), then:

1. uploads a generated uncompressed ``.npz`` of ``--upload-gb`` GB with a streaming client and
   reports throughput and the API process's resident memory (``VmHWM``, and ``VmRSS`` sampled every
   50 ms); target: peak RSS < 200 MB during a 1 GB upload;
2. stores a finished audit of ``--samples`` samples (~3 % flagged) with ``store_outcome`` and
   reports how long that took;
3. drives an open-loop load of ``--rate`` req/s for ``--duration`` s (after a 3 s warm-up) mixing
   ``GET /audits/{id}`` and ``GET /audits/{id}/flagged`` pages (sort=score and sort=index at random
   offsets). Latency counts from each request's *scheduled* send time, so queueing shows up instead
   of being hidden by a client that waits; target: flagged p99 < 50 ms at 200 req/s.

    python bench/service.py                                   # 1 GB upload, 200 req/s for 20 s
    python bench/service.py --upload-gb 0.2 --rate 400 --duration 10 --json service.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import numpy as np
from common import free_port, server_errors
from sqlalchemy import Engine, text

from app.db import make_engine, make_sessionmaker, transaction
from app.migrate import upgrade
from app.outcome import Outcome, store_outcome
from app.settings import Settings
from app.tables import Audit
from dataset_audit.schemas import AuditStatus

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SHAPE = (32, 32, 3)
N_CLASSES = 10
GENERATE_CHUNK = 64 * 2**20
FLAGGED_FRACTION = 0.03
PAGE = 100
WARMUP_S = 3.0
READY_TIMEOUT_S = 60.0
UPLOAD_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 512  # beyond this, requests wait for a connection (and the wait is counted)
KEEP_ALIVE_S = 4.0  # reuse idle connections younger than this; uvicorn closes them after 5 s
RSS_INTERVAL_S = 0.05
# The share of each request kind in the load mix.
MIX = {"GET /audits/{id}": 0.4, "GET flagged sort=score": 0.45, "GET flagged sort=index": 0.15}
FLAGGED = ("GET flagged sort=score", "GET flagged sort=index")
TARGET_UPLOAD_RSS_MB = 200.0
TARGET_FLAGGED_P99_MS = 50.0
MB = 1e6


# The API process.


@dataclass(frozen=True)
class Api:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path


@contextlib.contextmanager
def running_api(settings: Settings, max_upload_bytes: int) -> Iterator[Api]:
    """``uvicorn app.main:app`` in its own process, stopped (killed if need be) on the way out."""
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(settings.data_dir),
        "MAX_UPLOAD_BYTES": str(max_upload_bytes),
    }
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
    log = settings.data_dir / "uvicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)], env=env, cwd=ROOT, stdout=out, stderr=out
        )
    api = Api(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(api)
        yield api
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(api: Api) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if api.process.poll() is not None:
            break
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api.base_url}/healthz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"the API did not start:\n{api.log.read_text()[-3000:]}")


def proc_kb(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field (VmRSS, VmHWM) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


class RssSampler:
    """The largest VmRSS seen, read every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_kb = proc_kb(pid, "VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(RSS_INTERVAL_S):
            with contextlib.suppress(OSError, KeyError):
                self.max_kb = max(self.max_kb, proc_kb(self.pid, "VmRSS"))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


# 1. Upload.


def write_npz(path: Path, n: int, seed: int) -> None:
    """An uncompressed .npz written member by member in chunks: never the whole array in memory."""
    rng = np.random.default_rng(seed)
    header = {"descr": "|u1", "fortran_order": False, "shape": (n, *IMAGE_SHAPE)}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            remaining = n * int(np.prod(IMAGE_SHAPE))
            while remaining:
                size = min(GENERATE_CHUNK, remaining)
                member.write(rng.bytes(size))
                remaining -= size
        with archive.open("y.npy", "w") as member:
            np.lib.format.write_array(member, rng.integers(0, N_CLASSES, n, dtype=np.int64))


def sha256_file(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


@dataclass(frozen=True)
class UploadResult:
    bytes: int
    seconds: float
    mb_per_s: float
    baseline_rss_mb: float
    sampled_max_rss_mb: float
    vm_hwm_mb: float
    client_vm_hwm_mb: float
    audit: dict[str, Any]


def upload(api: Api, path: Path, sha256: str) -> UploadResult:
    pid = api.process.pid
    baseline_kb = proc_kb(pid, "VmRSS")
    # httpx streams a file object from disk in 64 KiB reads, so the client stays small too.
    with (
        path.open("rb") as file,
        httpx.Client(base_url=api.base_url, timeout=UPLOAD_TIMEOUT_S) as client,
        RssSampler(pid) as sampler,
    ):
        started = time.perf_counter()
        response = client.post(
            "/audits",
            files={"file": (path.name, file, "application/octet-stream")},
            data={"preset": "tiny"},
        )
        seconds = time.perf_counter() - started
    if response.status_code != 202:
        raise SystemExit(f"upload: expected 202, got {response.status_code}: {response.text}")
    audit: dict[str, Any] = response.json()
    if audit["dataset"]["sha256"] != sha256:
        raise SystemExit(f"upload: sha256 {audit['dataset']['sha256']} != the file's {sha256}")
    size = path.stat().st_size
    return UploadResult(
        bytes=size,
        seconds=seconds,
        mb_per_s=size / MB / seconds,
        baseline_rss_mb=baseline_kb / 1024,
        sampled_max_rss_mb=sampler.max_kb / 1024,
        vm_hwm_mb=proc_kb(pid, "VmHWM") / 1024,
        client_vm_hwm_mb=proc_kb(os.getpid(), "VmHWM") / 1024,
        audit=audit,
    )


# 2. A finished audit, stored as the worker stores one.


def synthetic_outcome(n: int, seed: int) -> Outcome:
    rng = np.random.default_rng(seed)
    scores = rng.random(n, dtype=np.float32) * np.float32(0.5)
    flagged = rng.random(n) < FLAGGED_FRACTION
    scores[flagged] += 0.5
    is_flagged = scores >= 0.5
    labels = rng.integers(0, N_CLASSES, n, dtype=np.int64)
    voted = labels.copy()
    voted[is_flagged] = rng.integers(-1, N_CLASSES, int(is_flagged.sum()), dtype=np.int64)
    return Outcome(
        scores=scores,
        is_flagged=is_flagged,
        labels=labels,
        voted_label=voted,
        label_prob=rng.random(n, dtype=np.float32),
        suspicion_order=np.argsort(-scores, kind="stable"),
        is_suspected_poison=np.zeros(n, dtype=bool),
        paths=None,
        summary={"classes": class_counts(labels, is_flagged), "timings": {}, "n_learners": 10},
        engine_version="bench",
        device="cpu",
    )


def class_counts(labels: np.ndarray, is_flagged: np.ndarray) -> list[dict[str, Any]]:
    n_samples = np.bincount(labels, minlength=N_CLASSES)
    n_flagged = np.bincount(labels[is_flagged], minlength=N_CLASSES)
    return [
        {"label": k, "n_samples": int(n_samples[k]), "n_flagged": int(n_flagged[k]),
         "flagged_voted_label": None}
        for k in range(N_CLASSES)
    ]  # fmt: skip


@dataclass(frozen=True)
class SaveResult:
    audit_id: str
    n_samples: int
    n_flagged: int
    seconds: float


def store_finished_audit(database_url: str, n: int, storage_key: str, seed: int) -> SaveResult:
    outcome = synthetic_outcome(n, seed)
    audit = Audit(
        id=uuid.uuid4(),
        name="bench",
        status=AuditStatus.SUCCEEDED,  # staged as a worker leaves it
        preset="tiny",
        seed=seed,
        dataset_format="npz",
        dataset_filename="bench.npz",
        dataset_sha256="0" * 64,
        dataset_bytes=n * int(np.prod(IMAGE_SHAPE)),
        storage_key=storage_key,
        n_samples=n,
        n_classes=N_CLASSES,
        image_shape=list(IMAGE_SHAPE),
        classes=None,
    )
    engine = make_engine(database_url)
    try:
        started = time.perf_counter()
        with transaction(make_sessionmaker(engine)) as session:
            audit.n_flagged = int(outcome.is_flagged.sum())
            audit.summary = outcome.summary
            session.add(audit)
            session.flush()
            store_outcome(session, audit.id, outcome)
        seconds = time.perf_counter() - started
        settle(engine)
    finally:
        engine.dispose()
    return SaveResult(str(audit.id), n, int(outcome.is_flagged.sum()), seconds)


def settle(engine: Engine) -> None:
    """Let the database finish the write's aftermath (statistics, checkpoint, disk flush) before
    the reads are measured, as it will have long before an audit's results are read in earnest."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
            connection.execute(text("CHECKPOINT"))
    os.sync()


# 3. Open-loop load.


@dataclass(frozen=True)
class Sample:
    endpoint: str
    warmup: bool
    scheduled: float
    sent: float
    done: float
    status: int  # 0: no response (connection error or timeout)


def load_plan(audit_id: str, n_flagged: int, n: int, seed: int) -> list[tuple[str, str]]:
    """(endpoint, URL) for each request, drawn up front so the send loop does nothing but send."""
    rng = np.random.default_rng(seed)
    names = list(MIX)
    kinds = rng.choice(len(names), size=n, p=list(MIX.values()))
    offsets = rng.integers(0, max(1, -(-n_flagged // PAGE)), size=n) * PAGE
    base = f"/audits/{audit_id}"
    plan = []
    for kind, offset in zip(kinds, offsets, strict=True):
        name = names[kind]
        if name in FLAGGED:
            sort = name.rsplit("=", 1)[1]
            plan.append((name, f"{base}/flagged?sort={sort}&limit={PAGE}&offset={offset}"))
        else:
            plan.append((name, base))
    return plan


class KeepAlivePool:
    """A bare HTTP/1.1 GET client over keep-alive connections, opened as the load needs them.

    httpcore's pool (under httpx) rescans every connection and queued request whenever a request
    starts or ends, so once the server falls behind, the client's CPU time grows with the backlog
    until it cannot send on schedule (httpx sent ~28 of 200 req/s here while the API stalled).
    This does constant work per request, which keeps the generator on schedule on a 2-core machine
    where it shares the CPU with the server.
    """

    def __init__(self, host: str, port: int, max_connections: int) -> None:
        self.host = host
        self.port = port
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def get(self, path: str) -> int:
        async with self._slots:
            reader, writer = await self._connection()
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
                status, keep_alive = await read_response(reader)
            except BaseException:
                writer.close()
                raise
            if keep_alive:
                self._idle.append((reader, writer, asyncio.get_running_loop().time()))
            else:
                writer.close()
            return status

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = asyncio.get_running_loop().time()
        while self._idle:
            reader, writer, idle_since = self._idle.pop()
            # uvicorn closes a connection idle for 5 s: reusing one about to close would fail.
            if now - idle_since < KEEP_ALIVE_S:
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The status and whether the connection stays open; the body is read and dropped."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if "content-length" not in headers:
        raise ValueError("a response without Content-Length")  # the API sends none chunked
    await reader.readexactly(int(headers["content-length"]))
    return int(head[0].split()[1]), headers.get("connection") != "close"


async def send(
    pool: KeepAlivePool, endpoint: str, url: str, scheduled: float, warmup: bool
) -> Sample:
    loop = asyncio.get_running_loop()
    sent = loop.time()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            status = await pool.get(url)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
        status = 0
    return Sample(endpoint, warmup, scheduled, sent, loop.time(), status)


async def drive(api: Api, plan: list[tuple[str, str]], rate: float) -> list[Sample]:
    """Sends request i at start + i / rate whether or not earlier ones have answered."""
    loop = asyncio.get_running_loop()
    n_warmup = int(WARMUP_S * rate)
    url = httpx.URL(api.base_url)
    pool = KeepAlivePool(url.host, url.port or 80, MAX_CONNECTIONS)
    try:
        start = loop.time() + 0.1
        tasks = []
        for i, (endpoint, path) in enumerate(plan):
            scheduled = start + i / rate
            # sleep(0) when behind schedule still lets the started requests progress.
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            tasks.append(asyncio.create_task(send(pool, endpoint, path, scheduled, i < n_warmup)))
        return list(await asyncio.gather(*tasks))
    finally:
        pool.close()


def latency_stats(samples: list[Sample], window_s: float) -> dict[str, float]:
    ms = np.array([(s.done - s.scheduled) * 1000 for s in samples])
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "count": len(samples),
        "errors": sum(s.status != 200 for s in samples),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "max_ms": float(ms.max()),
        "req_per_s": len(samples) / window_s,
    }


def summarize_load(samples: list[Sample], rate: float) -> dict[str, Any]:
    measured = [s for s in samples if not s.warmup]
    sent = [s.sent for s in measured]
    # n sends on schedule span (n - 1) / rate: adding one interval makes a perfect run read `rate`.
    window = max(sent) - min(sent) + 1 / rate
    groups = {name: [s for s in measured if s.endpoint == name] for name in MIX}
    groups["GET flagged (both)"] = [s for s in measured if s.endpoint in FLAGGED]
    groups["all"] = measured
    late_ms = np.array([(s.sent - s.scheduled) * 1000 for s in measured])
    failed = Counter(str(s.status or "no response") for s in measured if s.status != 200)
    return {
        "rate": rate,
        "achieved_req_per_s": len(measured) / window,
        "errors_by_status": dict(failed),
        "send_late_ms": {
            "p50": float(np.percentile(late_ms, 50)),
            "p99": float(np.percentile(late_ms, 99)),
            "max": float(late_ms.max()),
        },
        "endpoints": {
            name: latency_stats(group, window) for name, group in groups.items() if group
        },
    }


def check_audit(api: Api, saved: SaveResult) -> None:
    """One request of each kind, so the load does not time a broken endpoint."""
    audit = httpx.get(f"{api.base_url}/audits/{saved.audit_id}", timeout=REQUEST_TIMEOUT_S)
    page = httpx.get(
        f"{api.base_url}/audits/{saved.audit_id}/flagged?sort=score&limit={PAGE}",
        timeout=REQUEST_TIMEOUT_S,
    )
    if audit.status_code != 200 or page.status_code != 200:
        raise SystemExit(
            f"the stored audit does not read back: {audit.text[:300]} {page.text[:300]}"
        )
    if audit.json()["summary"]["n_flagged"] != saved.n_flagged or len(page.json()["items"]) != PAGE:
        raise SystemExit("the stored audit reads back with the wrong counts")


# Output.


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_upload(result: UploadResult, upload_gb: float) -> None:
    print(
        f"  {result.bytes / 1e9:.2f} GB in {result.seconds:.1f} s (request to 202): "
        f"{result.mb_per_s:.0f} MB/s\n"
        f"  API RSS: {result.baseline_rss_mb:.0f} MB before, {result.sampled_max_rss_mb:.0f} MB "
        f"max sampled, VmHWM {result.vm_hwm_mb:.0f} MB (target < {TARGET_UPLOAD_RSS_MB:.0f} MB "
        f"for 1 GB: {verdict(result.vm_hwm_mb < TARGET_UPLOAD_RSS_MB)})\n"
        f"  client VmHWM {result.client_vm_hwm_mb:.0f} MB; audit {result.audit['id']} "
        f"{result.audit['status']}, sha256 matches",
        flush=True,
    )
    if abs(upload_gb - 1.0) > 0.05:
        print("  (the RSS target is stated for a 1 GB upload)")


def print_load(load: dict[str, Any]) -> None:
    late = load["send_late_ms"]
    print(
        f"  achieved {load['achieved_req_per_s']:.1f} req/s of {load['rate']:.0f}; sends late "
        f"by p50 {late['p50']:.1f} ms, p99 {late['p99']:.1f} ms, max {late['max']:.1f} ms"
    )
    print(
        f"  {'endpoint':<24} {'count':>6} {'errors':>6} {'p50':>7} {'p90':>7} {'p99':>7} "
        f"{'max':>7} {'req/s':>6}   (ms from the scheduled send)"
    )
    for name, s in load["endpoints"].items():
        print(
            f"  {name:<24} {s['count']:>6} {s['errors']:>6} {s['p50_ms']:>7.1f} "
            f"{s['p90_ms']:>7.1f} {s['p99_ms']:>7.1f} {s['max_ms']:>7.1f} {s['req_per_s']:>6.1f}"
        )
    if load["errors_by_status"]:
        print(f"  errors by status: {load['errors_by_status']}")


def print_summary(up: UploadResult, saved: SaveResult, load: dict[str, Any]) -> None:
    flagged = load["endpoints"]["GET flagged (both)"]
    p99_ok = flagged["p99_ms"] < TARGET_FLAGGED_P99_MS and flagged["errors"] == 0
    rows = [
        (f"upload {up.bytes / 1e9:.2f} GB", f"{up.mb_per_s:.0f} MB/s", "", ""),
        ("upload: API peak RSS", f"{up.vm_hwm_mb:.0f} MB", f"< {TARGET_UPLOAD_RSS_MB:.0f} MB",
         verdict(up.vm_hwm_mb < TARGET_UPLOAD_RSS_MB)),
        (f"store_outcome, {saved.n_samples:,} samples", f"{saved.seconds:.2f} s",
         f"{saved.n_flagged:,} flagged", ""),
        (f"flagged p99 @ {load['rate']:.0f} req/s", f"{flagged['p99_ms']:.1f} ms",
         f"< {TARGET_FLAGGED_P99_MS:.0f} ms", verdict(p99_ok)),
        ("achieved rate", f"{load['achieved_req_per_s']:.1f} req/s", "", ""),
    ]  # fmt: skip
    print("\nsummary")
    for name, value, target, ok in rows:
        print(f"  {name:<34} {value:>12}  {target:<16} {ok}".rstrip())


# Main.


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--upload-gb", type=float, default=1.0, help="size of the uploaded .npz")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second, in all")
    # A minute at 200 req/s: one brief stall of the machine then stays under 1 % of requests.
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds of load")
    parser.add_argument("--samples", type=int, default=1_000_000, help="samples in the audit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    return parser.parse_args()


def exit_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(143)  # unwinds the `with` blocks: uvicorn stopped, temp dir removed


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    settings = Settings(data_dir=data_dir)  # DATABASE_URL / BROKER_URL from the environment
    npz = data_dir / "bench.npz"
    n_images = max(1, int(args.upload_gb * 1e9 / np.prod(IMAGE_SHAPE)))
    print(f"generating {npz.name}: {n_images:,} images x {IMAGE_SHAPE}", flush=True)
    write_npz(npz, n_images, args.seed)
    sha256 = sha256_file(npz)
    upgrade(settings.resolved_database_url)
    with running_api(settings, max_upload_bytes=npz.stat().st_size + 2**30) as api:
        print(f"upload (API pid {api.process.pid}, {settings.resolved_database_url})", flush=True)
        up = upload(api, npz, sha256)
        print_upload(up, args.upload_gb)
        npz.unlink()  # the API holds its own copy; the page cache need not hold two
        # The upload left gigabytes of dirty pages; their writeback would stall the load phase
        # that follows, which measures reads, not the disk.
        os.sync()
        saved = store_finished_audit(
            settings.resolved_database_url,
            args.samples,
            f"audits/{up.audit['id']}/dataset.npz",  # the uploaded file, as the API stores it
            args.seed,
        )
        print(
            f"store_outcome: {saved.n_samples:,} samples, {saved.n_flagged:,} flagged, "
            f"{saved.seconds:.2f} s (one transaction, with commit)",
            flush=True,
        )
        check_audit(api, saved)
        n_requests = int((WARMUP_S + args.duration) * args.rate)
        plan = load_plan(saved.audit_id, saved.n_flagged, n_requests, args.seed)
        print(
            f"load: {args.rate:.0f} req/s open loop, {WARMUP_S:.0f} s warm-up + "
            f"{args.duration:.0f} s measured",
            flush=True,
        )
        load = summarize_load(asyncio.run(drive(api, plan, args.rate)), args.rate)
        print_load(load)
        for line in server_errors(api.log):
            print(f"  API log: {line[:300]}")
    print_summary(up, saved, load)
    options = {**vars(args), "json": str(args.json) if args.json else None}
    return {"args": options, "upload": asdict(up), "save": asdict(saved), "load": load}


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    with tempfile.TemporaryDirectory(prefix="bench-service-") as folder:
        figures = run(args, Path(folder))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
