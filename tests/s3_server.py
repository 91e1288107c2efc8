"""A real S3 API for tests: moto's standalone server (``python -m moto.server``, from the dev
extra) in a process of its own, on a free port of 127.0.0.1. It checks no credentials; clients
sign with ``KEY`` and ``SECRET`` all the same."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

KEY = "testing"
SECRET = "testing"
REGION = "us-east-1"
START_S = 30.0


def start_moto_server() -> tuple[subprocess.Popen[bytes], str]:
    """The server's process and its endpoint URL, once it answers."""
    # A file, not a pipe: the server logs every request, and a pipe nobody reads would fill up.
    log = Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_S
    try:
        while True:
            text = log.read_text(errors="replace")
            # The port comes from the server (-p 0), so no other process can have taken it.
            found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", text)
            if found is not None and _answers(found.group(1)):
                return process, found.group(1)
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto's server did not start:\n{text[-2000:]}")
            time.sleep(0.1)
    except BaseException:
        stop_moto_server(process)
        raise
    finally:
        log.unlink(missing_ok=True)  # the server keeps writing to the open file


def stop_moto_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def create_bucket(endpoint_url: str, name: str) -> None:
    httpx.put(f"{endpoint_url}/{name}", timeout=10).raise_for_status()


def _answers(endpoint_url: str) -> bool:
    try:
        httpx.get(endpoint_url, timeout=2)
    except httpx.TransportError:
        return False
    return True
