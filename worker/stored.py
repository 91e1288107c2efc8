"""Checkpoints and part results in the service's storage, where a worker on any host finds them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from app.storage import Storage


def part_key(audit_id: uuid.UUID, part: str) -> str:
    """Where a part keeps its checkpoint, which is its result once it is done."""
    return f"audits/{audit_id}/parts/{part}.npz"


@dataclass(frozen=True)
class StoredCheckpoint:
    """An ``incompat.checkpoint.Store`` over one storage object."""

    storage: Storage
    key: str

    def read(self) -> bytes | None:
        return self.storage.get_bytes(self.key)

    def write(self, data: bytes) -> None:
        self.storage.put_bytes(data, self.key)

    def delete(self) -> None:
        self.storage.delete(self.key)
