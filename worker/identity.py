"""The worker process's database, storage and name, made once per process."""

from __future__ import annotations

import os
import secrets
import socket
from functools import lru_cache

from app.context import Context
from app.settings import get_settings

# Tells this process from an earlier one with the same host name and PID: a restarted container
# gets both again.
_INCARNATION = secrets.token_hex(4)


@lru_cache
def worker_context() -> Context:
    return Context.from_settings(get_settings())


def worker_name() -> str:
    """``host:pid:incarnation``, recorded on the audits the process holds."""
    return f"{socket.gethostname()}:{os.getpid()}:{_INCARNATION}"


def died_here(name: str) -> bool:
    """Whether the worker of this name ran on this host and its process is gone."""
    host, _, rest = name.partition(":")
    pid_text, _, incarnation = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return incarnation != _INCARNATION
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
