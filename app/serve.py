"""The embedded default: the API and one worker on this machine, with no server to install.

SQLite holds the audits, kombu's SQLAlchemy transport (another SQLite file) carries the tasks, and
uploads go to a local folder, all under the data directory. With ``DATABASE_URL`` and
``BROKER_URL`` set, the same command runs against PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from app.migrate import upgrade
from app.queue import QUEUE, WEBHOOK_QUEUE
from app.settings import Settings, get_settings

PARENT_PID_ENV = "DATASET_AUDIT_SERVE_PID"
WORKER_STOP_S = 10.0
WORKER_RESTART_S = 5.0


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: Path | None = None,
    log_level: str = "info",
    auth: bool = False,
) -> int:
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from app.http_limits import LimitedH11Protocol
    from app.logs import configure_logging
    from app.main import create_app

    if data_dir is not None:
        os.environ["DATA_DIR"] = str(data_dir.resolve())
        get_settings.cache_clear()
    if auth:
        os.environ["AUTH"] = "true"
        get_settings.cache_clear()
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    worker = WorkerProcess(settings, log_level)
    worker.start()
    access = (
        "API keys required (dataset-audit keys create --tenant NAME)"
        if settings.auth
        else "no API keys (--auth requires them)"
    )
    print(
        f"dataset-audit: serving http://{host}:{port} (API docs at /docs), "
        f"data in {settings.data_dir}, {access}",
        flush=True,
    )
    # uvicorn handles SIGTERM itself, then raises it again once it has shut down: with Python's
    # default action that would end the process before `finally` and orphan the worker.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        configure_logging(settings, log_level.upper())
        # In JSON, configure_logging has set up uvicorn's loggers too; its own set-up would undo it.
        log_config = None if settings.log_format == "json" else LOGGING_CONFIG
        app = create_app(settings)
        # The settings' limits on slow and oversized request heads and on connections.
        uvicorn.run(
            app, host=host, port=port, log_level=log_level, log_config=log_config,
            http=LimitedH11Protocol,
        )  # fmt: skip
    finally:
        worker.stop()
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


class WorkerProcess:
    """One Celery worker process running one audit at a time, restarted if it dies."""

    def __init__(self, settings: Settings, log_level: str) -> None:
        self.command = [
            sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
            "--pool=solo", "--concurrency=1", f"--loglevel={log_level.upper()}",
            # Webhooks too, between audits: each attempt holds it WEBHOOK_TIMEOUT_S at most.
            "-Q", f"{QUEUE},{WEBHOOK_QUEUE}",
            "--hostname", f"embedded.{os.getpid()}@{socket.gethostname()}",
        ]  # fmt: skip
        self.env = {
            **os.environ,
            "DATA_DIR": str(settings.data_dir),
            PARENT_PID_ENV: str(os.getpid()),  # the worker stops if this process dies
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, env=self.env)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            assert self.process is not None
            code = self.process.poll()
            if code is not None and not self._stopping.is_set():
                print(
                    f"dataset-audit: the worker exited ({code}); restarting it in "
                    f"{WORKER_RESTART_S:.0f}s",
                    file=sys.stderr,
                    flush=True,
                )
                if self._stopping.wait(WORKER_RESTART_S):
                    return
                self.process = subprocess.Popen(self.command, env=self.env)
            self._stopping.wait(1.0)

    def stop(self) -> None:
        """A cold stop: a running audit goes back to the queue and resumes from its checkpoint
        when a worker next starts."""
        self._stopping.set()
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(WORKER_STOP_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
