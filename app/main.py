"""The FastAPI application: ``create_app()``; ``app`` for ``uvicorn app.main:app``."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import OperationalError

from app import monitoring
from app.api import audits, health, pages
from app.context import Context
from app.header_limit import HeaderLimit
from app.logs import configure_logging
from app.reconciler import Reconciler
from app.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.context = Context.from_settings(settings)
        app.state.context.bind_loop()
        app.state.metrics = monitoring.metrics_registry(app.state.context)
        reconciler = Reconciler(app.state.context)
        reconciler.start()
        # Everything imported so far lives as long as the process: keeping it out of the
        # collector's view spares each full collection a walk over it (tens of milliseconds,
        # felt as tail latency).
        gc.collect()
        gc.freeze()
        yield
        reconciler.stop()
        app.state.context.close()

    # /docs and /redoc load Swagger UI and ReDoc from this app (fastapi-offline ships them), not
    # from a CDN: they work on a network without internet, and tell no third party who reads them.
    app = FastAPIOffline(
        title="dataset-audit",
        version=version("dataset-audit"),
        summary="Finds backdoor-poisoned samples in image-classification datasets.",
        lifespan=lifespan,
    )
    app.include_router(audits.router)
    app.include_router(health.router)
    app.include_router(monitoring.router)
    app.include_router(pages.router)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_middleware(HeaderLimit, max_bytes=settings.max_header_bytes)
    return app


async def _database_unavailable(_request: Request, _exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "the database is unavailable; try again shortly"}, 503)


# The process that serves ``app`` (``uvicorn app.main:app``) logs as LOG_FORMAT says; uvicorn has
# set up its loggers by the time it imports this module.
configure_logging(get_settings())
app = create_app()
