"""Structure-aware mutators for the harness: byte flips rarely make a well-formed request
with one value at the edge of a rule, so half of the mutations parse the input, change one
value to an edge case and write the request again (the other half are libFuzzer's own).

- OTLP/JSON: any value of the document becomes an edge value of another type or shape (a
  number as a string, a hex id padded with spaces, huge integers, NaN, ``null``, an object
  where an array belongs, ...), or a key is dropped or renamed.
- ``ExportLogsServiceRequest``: one record gets a schema attribute (or an alias) set to an
  edge value, an id of an odd length, a time at the limits, or a nested body.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import atheris
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otel_audit.schema import load_schema

__all__ = ["json_mutator", "logs_pb_mutator"]

_SCHEMA = load_schema()
_KEYS = sorted(
    {f.attribute for f in _SCHEMA.fields}
    | {a for f in _SCHEMA.fields for a in (f.aliases or ())}
    | {"service.name", "user.id", "enduser.id", "audit.unknown", ""}
)
_ENUM_VALUES = sorted({v for f in _SCHEMA.fields for v in (f.enum or ())})
_STRINGS = [
    "",
    " ",
    "a",
    "invoice.update",
    "Invoice.Update",
    "0af7651916cd43dd8448eb211c80319c",
    "0af7651916cd43dd8448eb211c80319c ",
    " b7ad6b7169203331",
    "b7ad 6b71 6920 3331",
    "0000000000000000",
    "0190a4e2-7c4b-7a3e-9f00-4a1b2c3d4e5f",
    "0190A4E2-7C4B-7A3E-9F00-4A1B2C3D4E5F",
    "203.0.113.9",
    "2001:db8::1",
    "::ffff:1.2.3.4",
    "1.2.3.4:80",
    "é",
    "日本",
    "🙂",
    "\x00",
    "\x7f",
    "a\nb",
    "x" * 300,
    "é" * 600,
    "x" * 9000,
    "1",
    "-1",
    "1e3",
    "NaN",
    "Infinity",
    "18446744073709551616",
    "-9223372036854775809",
]
_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    2**31,
    2**32,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    1.5,
    -0.0,
    1e308,
]


def _edge_json(rng: random.Random) -> Any:
    kind = rng.randrange(8)
    if kind < 3:
        return rng.choice(_STRINGS + _ENUM_VALUES)
    if kind < 5:
        return rng.choice(_NUMBERS)
    if kind == 5:
        return rng.choice([None, True, False, {}, [], [None], {"": None}])
    if kind == 6:
        key = rng.choice(
            [
                "stringValue",
                "intValue",
                "doubleValue",
                "boolValue",
                "bytesValue",
                "arrayValue",
                "kvlistValue",
            ]
        )
        return {key: _edge_json(rng)}
    return [{"key": rng.choice(_KEYS), "value": {"stringValue": rng.choice(_STRINGS)}}]


def _slots(node: Any, out: list[tuple[Any, Any]]) -> None:
    """Every (container, key or index) of the document."""
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((node, key))
            _slots(value, out)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.append((node, i))
            _slots(value, out)


def _mutate_json(doc: Any, rng: random.Random) -> Any:
    slots: list[tuple[Any, Any]] = []
    _slots(doc, slots)
    if not slots:
        return _edge_json(rng)
    container, key = rng.choice(slots)
    op = rng.randrange(6)
    if op == 0 and isinstance(container, dict):
        del container[key]
    elif op == 1 and isinstance(container, dict):
        container[rng.choice(["traceId", "spanId", "body", "attributes", "KEY", key + "_"])] = (
            container.pop(key)
        )
    elif op == 2 and isinstance(container, list):
        container.append(container[key])
    elif op == 3 and isinstance(container[key], str):
        text = container[key]
        container[key] = rng.choice([text + " ", " " + text, text.upper(), text[:-1], text * 2])
    else:
        container[key] = _edge_json(rng)
    return doc


def json_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if rng.random() < 0.5:
        return atheris.Mutate(data, max_size)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return atheris.Mutate(data, max_size)
    for _ in range(rng.randint(1, 3)):
        doc = _mutate_json(doc, rng)
    out = json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode()
    return out if len(out) <= max_size else atheris.Mutate(data, max_size)


def _edge_any(value: AnyValue, rng: random.Random, depth: int = 0) -> None:
    kind = rng.randrange(9)
    if kind < 4:
        value.string_value = rng.choice(_STRINGS + _ENUM_VALUES)
    elif kind == 4:
        value.int_value = rng.choice([0, -1, 2**63 - 1, -(2**63), 2**31])
    elif kind == 5:
        value.double_value = rng.choice([0.0, -0.0, 1.5, float("nan"), float("inf"), 1e308])
    elif kind == 6:
        value.bool_value = rng.random() < 0.5
    elif kind == 7 and depth < 4:
        for _ in range(rng.randint(0, 3)):
            _edge_any(value.array_value.values.add(), rng, depth + 1)
    elif depth < 4:
        for _ in range(rng.randint(0, 3)):
            kv = value.kvlist_value.values.add()
            kv.key = rng.choice(_KEYS)
            _edge_any(kv.value, rng, depth + 1)
    else:
        value.bytes_value = rng.choice([b"", b"\x00\xff", b"abc"])


def _mutate_record(lr: Any, rng: random.Random) -> None:
    op = rng.randrange(10)
    if op < 5:
        key = rng.choice(_KEYS)
        kv = next((kv for kv in lr.attributes if kv.key == key), None) if op < 3 else None
        if kv is None:
            kv = lr.attributes.add()
            kv.key = key
        kv.value.Clear()
        _edge_any(kv.value, rng)
    elif op == 5 and len(lr.attributes):
        del lr.attributes[rng.randrange(len(lr.attributes))]
    elif op == 6:
        lr.trace_id = rng.choice([b"", bytes(16), b"\x01" * 16, b"\x01" * 15, b"\x01" * 17])
        lr.span_id = rng.choice([b"", bytes(8), b"\x02" * 8, b"\x02" * 7])
    elif op == 7:
        when = [0, 1, 2**63, 2**64 - 1, 1_767_225_600_123_456_789, 1_767_225_599_950_000_000]
        lr.time_unix_nano = rng.choice(when)
        lr.observed_time_unix_nano = rng.choice(when)
    elif op == 8:
        lr.severity_number = rng.choice([0, 9, 17, 24, 25, -1, 2**31 - 1])
        lr.severity_text = rng.choice(_STRINGS)
        lr.event_name = rng.choice(_STRINGS)
        lr.flags = rng.choice([0, 1, 2**32 - 1])
    else:
        lr.body.Clear()
        _edge_any(lr.body, rng)


def logs_pb_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if rng.random() < 0.5:
        return atheris.Mutate(data, max_size)
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(data)
    except (DecodeError, RecursionError):
        return atheris.Mutate(data, max_size)
    records = [lr for rl in request.resource_logs for sl in rl.scope_logs for lr in sl.log_records]
    if not records:
        return atheris.Mutate(data, max_size)
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.15 and request.resource_logs:
            rl = rng.choice(request.resource_logs)
            kv = rl.resource.attributes.add()
            kv.key = rng.choice(["service.name", *_KEYS])
            _edge_any(kv.value, rng)
        else:
            _mutate_record(rng.choice(records), rng)
    out = request.SerializeToString()
    return out if len(out) <= max_size else atheris.Mutate(data, max_size)


MUTATORS: dict[str, Callable[[bytes, int, int], bytes]] = {
    "logs_pb": logs_pb_mutator,
    "logs_json": json_mutator,
    "traces_json": json_mutator,
}
