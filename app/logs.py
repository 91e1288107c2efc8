"""How the API and the workers log: as uvicorn and Celery print by default (``LOG_FORMAT=text``), or
one JSON object per line on stderr (``LOG_FORMAT=json``), which a log shipper reads without
parsing text: ``{"time", "level", "logger", "message"}``, plus ``exc_info`` with the traceback and
any ``extra`` fields."""

from __future__ import annotations

import logging

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from app.settings import Settings

# The loggers that uvicorn and Celery give handlers of their own and keep from propagating: in
# JSON they hand their records to the root logger's one handler instead.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery.task")


def configure_logging(settings: Settings, level: int | str = logging.INFO) -> None:
    """Idempotent; does nothing for text, which uvicorn and Celery set up themselves."""
    if settings.log_format != "json":
        return
    handler = logging.StreamHandler()
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # a warning, too, is one JSON line rather than raw text
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True


def json_formatter() -> JsonFormatter:
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
        # uvicorn repeats some messages with terminal colours, for its own text formatter.
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
    )
