"""Log output: plain text for people, or one JSON object per line for log collectors.

``TASTEMAKER_LOG_FORMAT=json`` makes every process (the worker, the CLI, the trainer) write lines
like ``{"ts": "2026-11-28T20:41:07.512Z", "level": "INFO", "logger": "streams.runtime.state",
"message": "snapshot saved at delta 17-0 (1,104 items)"}`` plus any ``extra=`` fields of the
call and ``exc`` with the traceback. Neither python-json-logger nor structlog is a dependency, so
this is a stdlib `logging.Formatter` serialised with orjson (already a dependency).

Faust configures logging itself when its ``Worker`` starts (it replaces the root handlers), so the
worker hands it `faust_logging_config`; that covers Faust's, mode's and aiokafka's loggers, which
all propagate to the root.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from streams.settings import LogFormat

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TEXT_DATEFMT = "%H:%M:%S"

# attributes every LogRecord has: anything else on a record came from ``extra=``
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON: ts (UTC, ISO 8601, ms), level, logger, message, the
    record's extra fields, and ``exc``/``stack`` when present. Values orjson cannot encode are
    written as their ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()


def formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT,
                                                                           TEXT_DATEFMT)


def configure_logging(log_format: LogFormat, *, level: int | str = logging.INFO) -> None:
    """Root handler on stderr in the chosen format (a no-op if the root already has handlers,
    as `logging.basicConfig` is, so a test runner's capture stays in place)."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler])


def faust_logging_config(log_format: LogFormat, *, level: int | str) -> dict[str, Any] | None:
    """The ``logging_config`` for Faust's ``Worker``: None keeps Faust's own (coloured text);
    for JSON, one stderr handler with `JsonFormatter` on the root logger."""
    if log_format != "json":
        return None
    level = level.upper() if isinstance(level, str) else level
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json",
                                 "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["default"]},
    }
