"""Decode OTLP log export requests (protobuf or OTLP/JSON) into LogRecordData lists.

Both decoders return a :class:`DecodedLogs`: the records to hand to the consumer, and the
records rejected here with one reason each. A record whose trace id is not 16 bytes or
whose span id is not 8 bytes (empty and all-zero ids mean "no trace context") is rejected
per record rather than failing the whole request: the other records of the batch are
still good, and the rejected one is kept for the dead-letter store.

A request that cannot be decoded at all raises :class:`~receiver.errors.InvalidRequest`.

OTLP/JSON follows the OTLP specification, not protobuf's JSON mapping: ``traceId`` and
``spanId`` are hex (any case), enums are integers, 64-bit integers may be strings or
numbers, keys are lowerCamelCase and unknown keys are ignored at every level.

The records of one ResourceLogs share one ``resource`` dict: consumers treat it as
read-only. AnyValue nesting is bounded: protobuf refuses messages nested over 100 deep,
and the JSON decoder refuses AnyValues nested deeper than :data:`MAX_ANY_DEPTH`.

Protobuf is decoded by the native extension ``otel_audit_native`` (built from ``native/``)
when it is installed at the version this module expects, else by the ``protobuf`` library;
:data:`NATIVE_DECODER` tells which, :data:`PROTOBUF_DECODER` says it in words.
``OTEL_AUDIT_NATIVE_DECODER=0`` forces the ``protobuf`` library. Both give the same
records for every valid message: the Python code below is the reference, and
``tests/receiver/otlp/test_decode_native.py`` checks the native decoder against it
(``native/README.md`` names the one non-canonical encoding the two judge differently).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otel_audit.record import LogRecordData
from receiver import native
from receiver.errors import InvalidRequest

__all__ = [
    "MAX_ANY_DEPTH",
    "NATIVE_DECODER",
    "PROTOBUF_DECODER",
    "DecodedLogs",
    "PreparedRecord",
    "any_value_from_pb",
    "decode_logs_json",
    "decode_logs_protobuf",
    "hex_id_from_json",
    "iter_json_items",
    "json_any_value",
    "json_attributes",
    "json_int",
    "json_list",
    "json_object",
    "json_str",
    "parse_json_body",
    "pb_attributes",
]

MAX_ANY_DEPTH = 32
"""AnyValue nesting the JSON decoder accepts (protobuf's own limit allows about as much)."""

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_HEX_DIGITS = re.compile(r"(?:[0-9a-f]{2})*")

_RECORD_FIELDS = (
    "attributes",
    "resource",
    "time_unix_nano",
    "observed_time_unix_nano",
    "severity_number",
    "severity_text",
    "body",
    "trace_id",
    "span_id",
    "flags",
    "event_name",
    "scope_name",
    "scope_version",
    "dropped_attributes_count",
    "content_sha256",
    "prepared",
)
if tuple(f.name for f in dataclasses.fields(LogRecordData)) != _RECORD_FIELDS:
    # The protobuf decoder builds records positionally, in this order.
    raise ImportError("LogRecordData's fields changed: update receiver.otlp.decode._RECORD_FIELDS")


@dataclass(slots=True)
class DecodedLogs:
    """The records of one request: ``records`` for the consumer, ``rejected`` kept apart."""

    records: list[LogRecordData] = field(default_factory=list)
    rejected: list[LogRecordData] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    """One reason per rejected record, same order."""
    writer_plan: Any = None
    """The writer whose plan prepared the records (see
    :meth:`receiver.otlp.export.ExportHandler.decode_logs`): each prepared record is
    within its allowance and its document already holds it."""

    @property
    def total(self) -> int:
        return len(self.records) + len(self.rejected)


# --- which protobuf decoder ---------------------------------------------------------------

PROTOBUF_DECODER = native.DESCRIPTION
"""Which protobuf decoder is active and, for the Python one, why; logged at start-up."""
NATIVE_DECODER: bool = native.ENABLED
"""True when protobuf requests are decoded by the ``otel_audit_native`` extension."""


# --- protobuf -----------------------------------------------------------------------------


def any_value_from_pb(value: Any) -> Any:
    """An ``AnyValue`` message as a plain Python value (``None`` when unset)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value_from_pb(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        out: dict[str, Any] = {}
        for kv in value.kvlist_value.values:
            v = kv.value
            s = v.string_value
            out[kv.key] = s if s else any_value_from_pb(v)
        return out
    # string, bool, int, double, bytes: the oneof name is the field to read.
    return getattr(value, kind)


def pb_attributes(kvs: Any) -> dict[str, Any]:
    """A repeated ``KeyValue`` as a dict (a repeated key keeps its last value)."""
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        # Most audit attributes are non-empty strings: one field read settles those.
        s = v.string_value
        if s:
            out[kv.key] = s
            continue
        kind = v.WhichOneof("value")
        if kind is None:
            out[kv.key] = None
        elif kind == "array_value" or kind == "kvlist_value":
            out[kv.key] = any_value_from_pb(v)
        else:
            out[kv.key] = getattr(v, kind)
    return out


def _bad_id(trace_id: bytes, span_id: bytes) -> str:
    if len(trace_id) not in (0, 16):
        return f"trace_id must be 16 bytes, got {len(trace_id)}"
    return f"span_id must be 8 bytes, got {len(span_id)}"


def decode_logs_protobuf(
    body: bytes, plan: Any | None = None, received_ns: int | None = None
) -> DecodedLogs:
    """Decode a serialized ``ExportLogsServiceRequest``.

    With a ``plan`` (:func:`receiver.ingest.prepare.native_plan`; the native decoder only) the
    records it can prepare carry their write in ``record.prepared``, with ``received_ns``
    (default: now) as their receive time.
    """
    if NATIVE_DECODER:
        return _decode_logs_protobuf_native(body, plan, received_ns)
    return _decode_logs_protobuf_python(body)


def _decode_logs_protobuf_native(
    body: bytes, plan: Any | None = None, received_ns: int | None = None
) -> DecodedLogs:
    ext = native.module()
    if ext is None:
        raise RuntimeError(f"no native decoder: {native.DESCRIPTION}")
    if type(body) is not bytes:
        body = bytes(body)  # the extension takes bytes only; protobuf took any buffer
    if plan is not None and received_ns is None:
        received_ns = time.time_ns()
    lazy = _Source(body).prepared_record if plan is not None else None
    try:
        records, rejected, reasons = ext.decode_logs(
            body, LogRecordData, plan, received_ns or 0, lazy
        )
    except ext.DecodeError as exc:
        raise InvalidRequest(f"body is not an ExportLogsServiceRequest: {exc}") from None
    return DecodedLogs(records, rejected, reasons)


class PreparedRecord(LogRecordData):
    """A record whose write the native decoder prepared (``prepared`` is set).

    Its other fields are not built while decoding, since the write needs none of them. The
    first read of any of them decodes the request again, once for all its records, and
    answers from the record at the same position. Only the rare paths read them:
    dead-lettering a conflict or a mapping error. Copies made by the dataclass machinery
    (``dataclasses.replace``) are plain :class:`~otel_audit.record.LogRecordData`.
    """

    __slots__ = ("_position", "_source")

    _source: _Source
    _position: int

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return LogRecordData(*args, **kwargs)

    def full(self) -> LogRecordData:
        """The record with all its fields, decoded again from the request."""
        return self._source.record(self._position)


def _read_field(name: str) -> property:
    return property(lambda self: getattr(self.full(), name), doc=f"``{name}``, decoded again")


for _name in _RECORD_FIELDS:
    if _name != "prepared":
        setattr(PreparedRecord, _name, _read_field(_name))


class _Source:
    """One request's body, decoded again (once) when a prepared record's fields are read.

    It lives as long as the request's records: the body stays within the request's
    byte budget, which is held until the request is answered."""

    __slots__ = ("_body", "_records")

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._records: list[LogRecordData] | None = None

    def record(self, position: int) -> LogRecordData:
        if self._records is None:
            ext = native.module()
            if ext is None:  # pragma: no cover - a prepared record came from it
                raise RuntimeError(f"no native decoder: {native.DESCRIPTION}")
            self._records = ext.decode_logs(self._body, LogRecordData)[0]
        return self._records[position]

    def prepared_record(self, prepared: Any, position: int) -> PreparedRecord:
        record: PreparedRecord = object.__new__(PreparedRecord)
        record._source = self
        record._position = position
        record.prepared = prepared
        return record


def _decode_logs_protobuf_python(body: bytes) -> DecodedLogs:
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RecursionError) as exc:
        raise InvalidRequest(f"body is not an ExportLogsServiceRequest: {exc}") from None
    out = DecodedLogs()
    records = out.records
    append = records.append
    for rl in request.resource_logs:
        resource = pb_attributes(rl.resource.attributes)
        for sl in rl.scope_logs:
            scope = sl.scope
            scope_name = scope.name
            scope_version = scope.version
            for lr in sl.log_records:
                trace_id = lr.trace_id
                span_id = lr.span_id
                bad = False
                if len(trace_id) == 16:
                    tid = "" if trace_id == _ZERO_TRACE else trace_id.hex()
                elif trace_id:
                    bad = True
                    tid = trace_id.hex()
                else:
                    tid = ""
                if len(span_id) == 8:
                    sid = "" if span_id == _ZERO_SPAN else span_id.hex()
                elif span_id:
                    bad = True
                    sid = span_id.hex()
                else:
                    sid = ""
                value = lr.body
                text = value.string_value
                # Positional (see _RECORD_FIELDS): keyword arguments cost twice as much here.
                record = LogRecordData(
                    pb_attributes(lr.attributes),
                    resource,
                    lr.time_unix_nano,
                    lr.observed_time_unix_nano,
                    lr.severity_number,
                    lr.severity_text,
                    text if text else any_value_from_pb(value) if lr.HasField("body") else None,
                    tid,
                    sid,
                    lr.flags,
                    lr.event_name,
                    scope_name,
                    scope_version,
                    lr.dropped_attributes_count,
                )
                if bad:
                    out.rejected.append(record)
                    out.reasons.append(_bad_id(trace_id, span_id))
                else:
                    append(record)
    return out


# --- OTLP/JSON ----------------------------------------------------------------------------


def json_object(value: Any, where: str) -> dict[str, Any]:
    """``value`` as a JSON object (``None`` counts as empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where}: expected an object, got {_json_type(value)}")
    return value


def json_list(value: Any, where: str) -> list[Any]:
    """``value`` as a JSON array (``None`` counts as empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"{where}: expected an array, got {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def json_int(value: Any, where: str, *, bits: int = 64, signed: bool = False) -> int:
    """A protobuf integer in OTLP/JSON: a number or a decimal string."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise InvalidRequest(f"{where}: expected an integer, got boolean")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str):
        try:
            n = int(value.strip(), 10)
        except ValueError:
            raise InvalidRequest(f"{where}: {value[:40]!r} is not an integer") from None
    else:
        raise InvalidRequest(f"{where}: expected an integer, got {_json_type(value)}")
    low = -(1 << (bits - 1)) if signed else 0
    high = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    if not low <= n <= high:
        raise InvalidRequest(f"{where}: {n} is out of range for a {bits}-bit integer")
    return n


def _json_double(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise InvalidRequest(f"{where}: expected a number, got boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        # protobuf's JSON names for the values JSON numbers cannot hold
        special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
        if value in special:
            return special[value]
        try:
            return float(value)
        except ValueError:
            pass
    raise InvalidRequest(f"{where}: expected a number, got {_json_type(value)}")


def _json_bytes(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}: expected a base64 string, got {_json_type(value)}")
    # protobuf's JSON mapping accepts standard and URL-safe base64, padded or not.
    text = value.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{where}: not valid base64") from None


def json_any_value(value: Any, where: str, depth: int = 0) -> Any:
    """An OTLP/JSON ``AnyValue`` object as a plain Python value."""
    if depth > MAX_ANY_DEPTH:
        raise InvalidRequest(f"{where}: values nested deeper than {MAX_ANY_DEPTH} levels")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where}: expected an AnyValue object, got {_json_type(value)}")
    if "stringValue" in value:
        s = value["stringValue"]
        if not isinstance(s, str):
            raise InvalidRequest(f"{where}.stringValue: expected a string, got {_json_type(s)}")
        return s
    if "intValue" in value:
        return json_int(value["intValue"], f"{where}.intValue", signed=True)
    if "boolValue" in value:
        b = value["boolValue"]
        if not isinstance(b, bool):
            raise InvalidRequest(f"{where}.boolValue: expected a boolean, got {_json_type(b)}")
        return b
    if "doubleValue" in value:
        return _json_double(value["doubleValue"], f"{where}.doubleValue")
    if "arrayValue" in value:
        arr = json_object(value["arrayValue"], f"{where}.arrayValue")
        items = json_list(arr.get("values"), f"{where}.arrayValue.values")
        return [
            json_any_value(v, f"{where}.arrayValue.values[{i}]", depth + 1)
            for i, v in enumerate(items)
        ]
    if "kvlistValue" in value:
        kvl = json_object(value["kvlistValue"], f"{where}.kvlistValue")
        return json_attributes(kvl.get("values"), f"{where}.kvlistValue.values", depth + 1)
    if "bytesValue" in value:
        return _json_bytes(value["bytesValue"], f"{where}.bytesValue")
    return None  # an empty AnyValue, or only keys this version does not know


def json_attributes(value: Any, where: str, depth: int = 0) -> dict[str, Any]:
    """An OTLP/JSON array of ``KeyValue`` objects as a dict."""
    out: dict[str, Any] = {}
    for i, kv in enumerate(json_list(value, where)):
        if not isinstance(kv, dict):
            raise InvalidRequest(f"{where}[{i}]: expected a KeyValue object, got {_json_type(kv)}")
        key = kv.get("key", "")
        if not isinstance(key, str):
            raise InvalidRequest(f"{where}[{i}].key: expected a string, got {_json_type(key)}")
        v = kv.get("value")
        if type(v) is dict and len(v) == 1 and type(v.get("stringValue")) is str:
            out[key] = v["stringValue"]
        else:
            out[key] = json_any_value(v, f"{where}[{i}].value", depth)
    return out


def hex_id_from_json(value: Any, size: int, where: str) -> tuple[str, str | None]:
    """(lowercase hex id, problem or None) for a JSON trace/span id of ``size`` bytes."""
    if value is None or value == "":
        return "", None
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}: expected a hex string, got {_json_type(value)}")
    text = value.lower()
    # bytes.fromhex skips whitespace, which would keep " 0af7..." as the stored id.
    if not _HEX_DIGITS.fullmatch(text):
        return text[:64], f"{where.rsplit('.', 1)[-1]} is not hex"
    raw = bytes.fromhex(text)
    if len(raw) != size:
        return text[:64], f"{where.rsplit('.', 1)[-1]} must be {size} bytes, got {len(raw)}"
    if raw == bytes(size):
        return "", None
    return text, None


def parse_json_body(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or InvalidRequest."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"body is not JSON: {exc}") from None
    return json_object(doc, "request")


def iter_json_items(
    doc: dict[str, Any], resources_key: str, scopes_key: str, items_key: str
) -> Iterator[tuple[dict[str, Any], str, str, dict[str, Any], str]]:
    """Walk the resource, scope and item levels of an OTLP/JSON export request.

    Logs and traces nest the same way and differ only in the key names, so both decoders
    share this walk. Yields ``(resource attributes, scope name, scope version, item,
    where)`` per item, ``where`` being the item's path for error messages.
    """
    for ri, rl in enumerate(json_list(doc.get(resources_key), resources_key)):
        rwhere = f"{resources_key}[{ri}]"
        rl = json_object(rl, rwhere)
        res = json_object(rl.get("resource"), f"{rwhere}.resource")
        resource = json_attributes(res.get("attributes"), f"{rwhere}.resource.attributes")
        for si, sl in enumerate(json_list(rl.get(scopes_key), f"{rwhere}.{scopes_key}")):
            swhere = f"{rwhere}.{scopes_key}[{si}]"
            sl = json_object(sl, swhere)
            scope = json_object(sl.get("scope"), f"{swhere}.scope")
            scope_name = json_str(scope.get("name"), f"{swhere}.scope.name")
            scope_version = json_str(scope.get("version"), f"{swhere}.scope.version")
            for li, item in enumerate(json_list(sl.get(items_key), f"{swhere}.{items_key}")):
                w = f"{swhere}.{items_key}[{li}]"
                yield resource, scope_name, scope_version, json_object(item, w), w


def decode_logs_json(body: bytes) -> DecodedLogs:
    """Decode an OTLP/JSON ``ExportLogsServiceRequest``."""
    doc = parse_json_body(body)
    out = DecodedLogs()
    walk = iter_json_items(doc, "resourceLogs", "scopeLogs", "logRecords")
    for resource, scope_name, scope_version, lr, w in walk:
        tid, tid_bad = hex_id_from_json(lr.get("traceId"), 16, f"{w}.traceId")
        sid, sid_bad = hex_id_from_json(lr.get("spanId"), 8, f"{w}.spanId")
        record = LogRecordData(
            attributes=json_attributes(lr.get("attributes"), f"{w}.attributes"),
            resource=resource,
            time_unix_nano=json_int(lr.get("timeUnixNano"), f"{w}.timeUnixNano"),
            observed_time_unix_nano=json_int(
                lr.get("observedTimeUnixNano"), f"{w}.observedTimeUnixNano"
            ),
            severity_number=json_int(
                lr.get("severityNumber"), f"{w}.severityNumber", bits=32, signed=True
            ),
            severity_text=json_str(lr.get("severityText"), f"{w}.severityText"),
            body=json_any_value(lr.get("body"), f"{w}.body"),
            trace_id=tid,
            span_id=sid,
            flags=json_int(lr.get("flags"), f"{w}.flags", bits=32),
            event_name=json_str(lr.get("eventName"), f"{w}.eventName"),
            scope_name=scope_name,
            scope_version=scope_version,
            dropped_attributes_count=json_int(
                lr.get("droppedAttributesCount"), f"{w}.droppedAttributesCount", bits=32
            ),
        )
        problem = tid_bad or sid_bad
        if problem:
            out.rejected.append(record)
            out.reasons.append(problem)
        else:
            out.records.append(record)
    return out


def json_str(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}: expected a string, got {_json_type(value)}")
    return value
