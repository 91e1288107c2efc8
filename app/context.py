"""What one API process holds: settings, the database, storage and the task queue."""

from __future__ import annotations

from dataclasses import dataclass, field

from anyio import CapacityLimiter
from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, make_sessionmaker
from app.key_cache import KeyCache
from app.queue import make_celery
from app.settings import Settings
from app.storage import Storage


@dataclass
class Context:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    # Read-only requests run without BEGIN/ROLLBACK: each statement sees committed data, and a
    # worker writes an audit's outcome and status in one transaction, so nothing half-done shows.
    reads: sessionmaker[Session]
    storage: Storage
    celery: Celery
    keys: KeyCache = field(default_factory=lambda: KeyCache(ttl_s=0))
    # Bounds the API's concurrent database work; made inside the event loop (``bind_loop``).
    db_threads: CapacityLimiter | None = None

    def bind_loop(self) -> None:
        self.db_threads = CapacityLimiter(self.settings.api_db_threads)

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.resolved_database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            reads=make_sessionmaker(_read_only(engine)),
            storage=Storage.from_settings(settings),
            celery=make_celery(settings),
            keys=KeyCache(ttl_s=settings.auth_cache_s),
        )

    def close(self) -> None:
        self.engine.dispose()


def _read_only(engine: Engine) -> Engine:
    # A server round trip saved per BEGIN and ROLLBACK; SQLite has no round trips to save.
    if engine.dialect.name == "sqlite":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")
