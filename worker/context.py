"""The worker process's database, storage and name, made once per process."""

from __future__ import annotations

import os
import socket
from functools import lru_cache

from app.context import Context
from app.settings import get_settings


@lru_cache
def worker_context() -> Context:
    return Context.from_settings(get_settings())


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
