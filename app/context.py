"""What one API process holds: settings, the database, storage and the task queue."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, make_sessionmaker
from app.queue import make_celery
from app.settings import Settings
from app.storage import Storage


@dataclass
class Context:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    storage: Storage
    celery: Celery

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.resolved_database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            storage=Storage(settings.resolved_storage_url),
            celery=make_celery(settings),
        )

    def close(self) -> None:
        self.engine.dispose()
