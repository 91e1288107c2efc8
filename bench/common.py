"""What the service benchmarks share: a free port for the processes they start, and the
exception lines those processes logged."""

from __future__ import annotations

import re
import socket
from pathlib import Path

EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Timeout)\w*: ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_errors(log: Path, most: int = 3) -> list[str]:
    """The last few distinct exception lines in ``log`` (its tracebacks' last lines)."""
    lines = log.read_text(errors="replace").splitlines()
    found = [line for line in lines if EXCEPTION_LINE.match(line)]
    return list(dict.fromkeys(reversed(found)))[:most]
