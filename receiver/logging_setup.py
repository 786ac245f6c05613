"""Structured logs: one JSON object per line on stderr.

Each line has ``ts`` (RFC 3339 UTC), ``level``, ``logger``, ``msg`` and, when present,
``fields`` (everything passed with ``extra=``) and ``exc`` (the formatted traceback)::

    {"ts":"2026-01-05T10:00:00.123Z","level":"info","logger":"otel_audit.receiver",
     "msg":"listening","fields":{"grpc":"127.0.0.1:4317"}}
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

__all__ = ["JsonFormatter", "setup_logging"]

# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        secs = int(record.created)
        millis = int((record.created - secs) * 1000)
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{millis:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if fields:
            out["fields"] = fields
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=repr).decode("utf-8")


def setup_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send every log record of the process to ``stream`` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log would add a line per request; request metrics cover it.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
