"""The validator's table (``tests/testdata/validate_table.json``) as Python records.

The same file drives the Node.js and Go helpers' validator tests (``sdk/``), so every
language gives each record the same violations, word for word. Its value encoding is
described in the file itself.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otel_audit.record import LogRecordData

TABLE_PATH = Path(__file__).resolve().parents[1] / "testdata" / "validate_table.json"


@dataclass(frozen=True)
class TableCase:
    """One row: a record and the (field, rule, message) triples it must give."""

    name: str
    record: LogRecordData
    violations: list[tuple[str, str, str]]


def decode_value(value: Any) -> Any:
    """A table value as the Python value it stands for."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if not isinstance(value, dict):
        return value
    ((kind, inner),) = value.items()
    if kind == "$int":
        return int(inner)
    if kind == "$float":
        return float(inner)
    if kind == "$bytes":
        return base64.b64decode(inner)
    if kind == "$repeat":
        return inner[0] * inner[1]
    if kind == "$wtf8":
        return bytes.fromhex(inner).decode("utf-8", "surrogatepass")
    if kind == "$map":
        return {k: decode_value(v) for k, v in inner.items()}
    raise ValueError(f"unknown table value {kind}")


def _record(base: dict[str, Any], case: dict[str, Any]) -> LogRecordData:
    bare = case.get("bare", False)
    attrs: dict[str, Any] = {} if bare else dict(base["attributes"])
    for key in case.get("drop", ()):
        attrs.pop(key, None)
    attrs.update({k: decode_value(v) for k, v in case.get("attributes", {}).items()})
    resource = case.get("resource", {} if bare else base["resource"])
    zero = "0" if bare else None
    return LogRecordData(
        attributes=attrs,
        resource={k: decode_value(v) for k, v in resource.items()},
        time_unix_nano=int(case.get("time_unix_nano", zero or base["time_unix_nano"])),
        observed_time_unix_nano=int(
            case.get("observed_time_unix_nano", zero or base["observed_time_unix_nano"])
        ),
        severity_number=0 if bare else 9,
        severity_text="" if bare else "INFO",
        body=decode_value(case["body"]) if "body" in case else (None if bare else base["body"]),
        trace_id="" if bare else "4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="" if bare else "00f067aa0ba902b7",
    )


def load_table() -> tuple[int, list[TableCase]]:
    """``now_unix_nano`` of the table and its cases."""
    raw = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    cases = [
        TableCase(c["name"], _record(raw["base"], c), [tuple(v) for v in c["violations"]])
        for c in raw["cases"]
    ]
    return int(raw["now_unix_nano"]), cases
