"""The API's memory of recently verified API keys."""

from __future__ import annotations

import time


class KeyCache:
    """Recently verified keys (by digest), so that a burst of requests costs one lookup. Entries
    live ``ttl_s``: a revoked key is refused once its entry expires."""

    def __init__(self, ttl_s: float, max_entries: int = 4096) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[str, float]] = {}

    def get(self, digest: str) -> str | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        tenant, expires = entry
        if time.monotonic() >= expires:
            del self._entries[digest]
            return None
        return tenant

    def put(self, digest: str, tenant: str) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # rare: a flood of distinct valid keys
        self._entries[digest] = (tenant, time.monotonic() + self.ttl_s)
