"""The native decoder's prepared writes (``record.prepared``) against the Python path.

For every record the native decoder prepares, :func:`receiver.ingest.prepare.reference` applied to
the Python decoder's record of the same message gives the same tuple, byte for byte: index,
event id, bulk lines, document offset, content hash, leaf hash and ``@timestamp``. The leaf
is also held to the RFC 8785 reference (:func:`otel_audit.integrity.leaf_hash_of_document`).
A record the native side does not prepare decodes exactly as it does without a plan, and the
Python path decides it as before.

The generated requests mix realistic audit events with the edges of every rule the fast
path relies on, so that both prepared and Python-decided records occur in every run; the
explicit cases below pin the nastiest of them, and the coverage checks make sure the fast
path cannot be switched off unnoticed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber

from bench.otlp_load import build_requests
from otel_audit.integrity import leaf_hash_of_document
from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from receiver import native
from receiver.ingest.prepare import native_plan, reference
from receiver.otlp import decode
from receiver.otlp.decode import DecodedLogs
from tests.support.front_harness import any_value, comparable_record

# Without the native decoder (not installed, or OTEL_AUDIT_NATIVE_DECODER=0) nothing is
# prepared and every test here skips; under CI=true the conftest turns each skip into a
# failure: CI always builds and exercises the native decoder.
pytestmark = pytest.mark.skipif(not native.ENABLED, reason=native.DESCRIPTION)

_SCHEMA = load_schema()
_LIMITS = _SCHEMA.limits
_REASON_MAX = _SCHEMA.field("audit.reason").max_bytes
_S = 1_000_000_000
_DAY = 86_400 * _S
_SKEW = _LIMITS.max_clock_skew_s * _S
_FUTURE = _LIMITS.max_future_s * _S
_MIN_TIME = _LIMITS.min_time_unix_nano
# 50 ms before midnight UTC: events a moment later belong to the next day's index.
_R_MIDNIGHT = 1_767_225_599_950_000_000
_R = 1_767_225_600_123_456_789


def _plans() -> tuple[Any, Any]:
    if not decode.NATIVE_DECODER:
        return None, None
    return native_plan(_SCHEMA, leaf=True), native_plan(_SCHEMA, leaf=False)


_PLAN_LEAF, _PLAN_NO_LEAF = _plans()


def test_the_fast_path_is_on() -> None:
    # A plan that failed to build would silently leave every record to Python (the skip
    # above fails under CI=true, so CI always gets here).
    assert _PLAN_LEAF is not None and _PLAN_NO_LEAF is not None
    assert _PLAN_LEAF.leaf is True and _PLAN_NO_LEAF.leaf is False


def test_the_servers_decode_with_the_consumers_plan() -> None:
    # The null sink (like the ingest consumer) exposes a plan, and the servers' decoding
    # goes through ExportHandler.decode_logs, which must hand it to the decoder.
    from receiver.ingest.null_sink import NullSink
    from receiver.otlp.export import ExportHandler
    from receiver.otlp.inflight import ByteBudget

    sink = NullSink()
    assert sink.native_plan is not None and sink.native_plan.leaf is False
    handler = ExportHandler(sink, None, ByteBudget(1 << 20))
    body = build_requests(1, 3)[0]
    assert all(r.prepared is not None for r in handler.decode_logs(body).records)
    assert all(
        r.prepared is None
        for r in ExportHandler(NullSink(work=False), None, ByteBudget(1 << 20))
        .decode_logs(body)
        .records
    )


# --- the check every request goes through ------------------------------------------------


def _unprepared(record: LogRecordData) -> Any:
    return comparable_record(dataclasses.replace(record, prepared=None))


def _same_records(got: DecodedLogs, before: DecodedLogs) -> None:
    assert [_unprepared(r) for r in got.records] == [_unprepared(r) for r in before.records]
    assert [_unprepared(r) for r in got.rejected] == [_unprepared(r) for r in before.rejected]
    assert got.reasons == before.reasons
    hashes = [r.content_sha256 for r in got.records + got.rejected]
    assert hashes == [r.content_sha256 for r in before.records + before.rejected]
    assert all(r.prepared is None for r in got.rejected)


def _check_prepared(got: Any, expected: Any, record: LogRecordData) -> None:
    assert type(got) is tuple and len(got) == 7
    assert [type(v) for v in got] == [type(v) for v in expected]
    assert got == expected
    index, event_id, encoded, source_at, sha, leaf, timestamp = got
    source = encoded[source_at:-1]
    action = orjson.dumps({"create": {"_index": index, "_id": event_id}})
    assert encoded == action + b"\n" + source + b"\n"
    doc = orjson.loads(source)
    assert leaf == leaf_hash_of_document(doc)
    assert orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) == source
    assert doc["@timestamp"] == timestamp and doc["event"]["id"] == event_id
    assert doc["audit"]["content_hash"] == sha == record.content_sha256


def check(body: bytes, received_ns: int) -> list[str]:
    """Assert the native preparation of ``body`` is the Python path's; returns per record
    ``prepared``, ``python`` (valid, left to Python) or ``rejected`` (Python rejects it)."""
    before = decode.decode_logs_protobuf(body)
    with_leaf = decode.decode_logs_protobuf(body, _PLAN_LEAF, received_ns)
    without_leaf = decode.decode_logs_protobuf(body, _PLAN_NO_LEAF, received_ns)
    python = decode._decode_logs_protobuf_python(body)
    _same_records(with_leaf, before)
    _same_records(without_leaf, before)
    assert all(r.prepared is None for r in before.records)
    assert len(python.records) == len(with_leaf.records)

    outcomes = []
    for record, no_leaf, py_record in zip(
        with_leaf.records, without_leaf.records, python.records, strict=True
    ):
        # The Python decoder's record has no content hash: reference computes its own.
        expected = reference(py_record, received_ns=received_ns, schema=_SCHEMA, leaf=True)
        if record.prepared is None:
            assert no_leaf.prepared is None
            outcomes.append("rejected" if expected is None else "python")
            continue
        assert expected is not None, f"prepared a record Python rejects: {py_record!r}"
        _check_prepared(record.prepared, expected, record)
        assert no_leaf.prepared == (*expected[:5], None, expected[6])
        outcomes.append("prepared")
    return outcomes


# --- building requests ---------------------------------------------------------------------


def _uuid(n: int) -> str:
    """A UUIDv7-shaped event id."""
    return f"0190a1b2-c3d4-7e5f-8a9b-{n:012x}"


_Attrs = list[tuple[str, AnyValue | None]]
"""Attribute pairs in wire order; a None value is a KeyValue with no value at all."""


def _s(text: str) -> AnyValue:
    return AnyValue(string_value=text)


def _request(
    records: list[LogRecord],
    resource: Sequence[tuple[str, AnyValue | None]] | None,
    scope: tuple[str, str] | None = ("otel_audit", "1.0"),
) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    _add_resource_logs(request, resource, [(scope, records)])
    return request


def _add_resource_logs(
    request: ExportLogsServiceRequest,
    resource: Sequence[tuple[str, AnyValue | None]] | None,
    scopes: list[tuple[tuple[str, str] | None, list[LogRecord]]],
) -> None:
    rl = request.resource_logs.add()
    if resource is not None:  # None: no Resource message at all
        rl.resource.attributes.extend(_kvs(resource))
    for scope, records in scopes:
        sl = rl.scope_logs.add()
        if scope is not None:
            sl.scope.name, sl.scope.version = scope
        sl.log_records.extend(records)


def _kvs(attrs: Sequence[tuple[str, AnyValue | None]]) -> list[KeyValue]:
    return [KeyValue(key=k) if v is None else KeyValue(key=k, value=v) for k, v in attrs]


def _base_attrs(n: int = 0) -> dict[str, Any]:
    return {
        "audit.action": "invoice.update",
        "audit.category": "data_change",
        "audit.outcome": "success",
        "audit.actor.id": f"u-{n}",
        "audit.actor.type": "user",
        "audit.actor.name": "Ada Lovelace",
        "audit.resource.type": "invoice",
        "audit.resource.id": f"inv-{n}",
        "audit.event.id": _uuid(n),
        "audit.tenant.id": "acme",
        "client.address": "203.0.113.7",
        "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64)",
        "session.id": "s-9f1c",
        "http.response.status_code": 200,
    }


_BASE_RESOURCE = {"service.name": "billing", "service.version": "1.4.2", "host.name": "node-1"}


def _record(attrs: dict[str, Any] | Sequence[tuple[str, Any]], **fields: Any) -> LogRecord:
    """A realistic LogRecord with ``attrs``; ``fields`` override its other fields."""
    values: dict[str, Any] = {
        "time_unix_nano": _R - 250_000_000,
        "observed_time_unix_nano": _R - 100_000_000,
        "severity_number": 9,
        "severity_text": "INFO",
        "trace_id": bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
        "span_id": bytes.fromhex("b7ad6b7169203331"),
        "flags": 1,
        "event_name": "invoice.update",
        "body": _s("invoice updated"),
    }
    values.update(fields)
    body = values.pop("body")
    lr = LogRecord(**values)
    if body is not None:
        lr.body.CopyFrom(body)
    pairs = list(attrs.items()) if isinstance(attrs, dict) else attrs
    lr.attributes.extend(
        KeyValue(key=k) if v is None else KeyValue(key=k, value=_wire(v)) for k, v in pairs
    )
    return lr


def _wire(value: Any) -> AnyValue:
    return value if isinstance(value, AnyValue) else any_value(value)


# --- generated requests --------------------------------------------------------------------
#
# A record starts from one of a few valid audit events; about a third of them then get one
# or two edits from the edge lists below (a schema field set to an edge value or removed),
# a quarter get odd extras, and each other part of the request is at an edge now and then.
# Few draws per record keep generation cheap (about half the records stay valid), and
# shrinking leads back to the valid event with the one edit that matters.

_WRONG_TYPES = [
    AnyValue(int_value=7),
    AnyValue(bool_value=True),
    AnyValue(bytes_value=b"u-1"),
    AnyValue(double_value=1.5),
    any_value(["u-1"]),
    any_value({"id": "u-1"}),
    AnyValue(string_value_strindex=1),
    AnyValue(),  # present, no member set
    None,  # no AnyValue at all
]
_ABSENT = "<absent>"


def _string_edges(max_bytes: int) -> list[Any]:
    """Values of a string field around its rules: blank, non-ASCII, control characters,
    at and over its size (ASCII and two-byte), wrong types, absent."""
    half = max_bytes // 2
    texts = ["", " ", "   ", " \t", "José", "日本", "a\nb", "a\tb", "a\x7fb", "x ", " x"]
    texts += ["x" * max_bytes, "x" * (max_bytes + 1), "é" * half, "é" * (half + 1)]
    return [_ABSENT, *(_s(t) for t in texts), *_WRONG_TYPES]


_FIELD_EDGES: dict[str, list[str]] = {
    "audit.action": [
        "user.login",
        "a.b",
        "role_2.grant.x_y",
        "Invoice.update",
        "invoice",
        "invoice.",
        ".invoice.update",
        "invoice..update",
        "1nvoice.update",
        "invoice.update ",
        "invoice.update\n",
        "a." + "b" * 126,
        "a." + "b" * 127,
        "invoice-update.x",
    ],
    "audit.category": ["Data_change", "other", "data_change ", "é"],
    "audit.outcome": ["SUCCESS", "success\n", "ok"],
    "audit.actor.type": ["USER", "human", "user "],
    "audit.resource.type": ["role"],
    "audit.event.id": [
        _uuid(7).upper(),
        "0190A1B2-c3d4-7E5F-8a9b-0C1D2E3F4A5B",
        "not-a-uuid",
        "0190a1b2c3d47e5f8a9b0c1d2e3f4a5b",
        "{0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b}",
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5g",
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\n",
    ],
    "client.address": [
        "[1.2.3.4]",
        "01.2.3.4",
        "1.2.3.04",
        "256.1.1.1",
        "1.2.3",
        "0.0.0.0",
        "+1.2.3.4",
        "1.2.3.4 ",
        "[[1.2.3.4]]",
        "1.2.3.4]",
        "::1",
        "[::1]",
        "2001:DB8::1",
        "::ffff:1.2.3.4",
        "fe80::1%eth0",
        "garbage",
        "host.example:8080",
        "1.2.3.4\n",
    ],
    "audit.reason": [
        "why",
        "x" * _REASON_MAX,
        "x" * (_REASON_MAX + 1),
        "line\nbreak",
        "é" * (_REASON_MAX // 2),
        "é" * (_REASON_MAX // 2 + 1),
    ],
    "audit.correlation_id": ["order-77120"],
    "error.type": ["PermissionDenied"],
}
_FIELD_EDIT = {
    f.attribute: st.sampled_from(
        [*(_s(t) for t in _FIELD_EDGES.get(f.attribute, [])), *_string_edges(f.max_bytes)]
    )
    for f in _SCHEMA.fields
}
_FIELD_NAMES = st.sampled_from(sorted(_FIELD_EDIT))

_BASE_EVENTS: list[dict[str, Any]] = [
    {k: v for k, v in _base_attrs(1).items() if k != "http.response.status_code"},
    {
        "audit.action": "user.login",
        "audit.category": "authentication",
        "audit.outcome": "denied",
        "audit.actor.id": "u-2",
        "audit.actor.type": "user",
        "audit.reason": "bad password",
        "error.type": "InvalidCredentials",
        "client.address": "[198.51.100.23]",
    },
    {
        "audit.action": "role.grant",
        "audit.category": "permission_change",
        "audit.outcome": "success",
        "audit.actor.id": "svc-admin",
        "audit.actor.type": "service",
        "audit.resource.type": "role",
        "audit.resource.id": "billing.admin",
        "audit.event.id": _uuid(3).upper(),
        "audit.correlation_id": "order-77120",
    },
    {
        "audit.action": "system.start",
        "audit.category": "system",
        "audit.outcome": "unknown",
        "audit.actor.id": "init",
        "audit.actor.type": "system",
    },
]

_INT_EDGES = [0, 1, -1, 2**53 - 1, -(2**53 - 1), 2**53, -(2**53), 2**63 - 1, -(2**63), 2**62]
_DOUBLES = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1.5, 1e300, 5e-324, 2.0**53]
_EXTRA_TEXTS = [
    "",
    "v",
    "é",
    "日本",
    "🙂",
    "a\nb",
    "\t",
    "\x00\x1f",
    "\x7f",
    '"q"\\/',
    "\u2028",
    " ",
    "x" * 2047,
    "x" * 2048,
    "x" * 2049,
    "x" * 8192,
    "x" * 8193,
    "é" * 2048,
    "é" * 4096,
    "é" * 4097,
]
_EXTRA_KEYS = [
    "http.response.status_code",
    "k",
    "K",
    "x_y",
    "a.b.c",
    "z",
    "~",
    "a b",
    "service.name",
    "audit.extra",
    "audit",
    "event",
    "ключ",
    "é",
    ".a",
    "a.",
    "a..b",
    "a\nb",
    "a\tb",
    "a\x7f",
    "",
    "k" * 256,
    "k" * 257,
    "é" * 128,
    "é" * 129,
]


def _nested(depth: int) -> AnyValue:
    """Containers ``depth`` levels deep, lists and maps in turn."""
    value: Any = "deep"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return any_value(value)


_COMPOSITES = [
    any_value([]),
    any_value(["a", 1, True]),
    any_value({}),
    any_value({"a": "b"}),
    any_value({"é": 1, "": 2}),
    any_value({"a": {"b": [1, 2.5]}}),
    _nested(8),
    _nested(9),
]
_EXTRA_VALUES = st.one_of(
    st.sampled_from(_EXTRA_TEXTS).map(_s),
    st.text(max_size=4).map(_s),
    st.sampled_from(_INT_EDGES).map(lambda i: AnyValue(int_value=i)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    st.sampled_from(_DOUBLES).map(lambda d: AnyValue(double_value=d)),
    st.binary(max_size=6).map(lambda b: AnyValue(bytes_value=b)),
    st.sampled_from(_COMPOSITES),
    st.sampled_from([AnyValue(), None, AnyValue(string_value_strindex=2)]),
)
_EXTRAS = st.lists(
    st.tuples(st.sampled_from(_EXTRA_KEYS) | st.text(max_size=3), _EXTRA_VALUES), max_size=3
)
_USUAL_EXTRAS: list[_Attrs] = [
    [],
    [("http.response.status_code", AnyValue(int_value=200))],
    [("http.request.method", _s("GET")), ("retry", AnyValue(bool_value=False))],
    [("k", _s("x" * 40)), ("n", AnyValue(int_value=-7)), ("blob", AnyValue(bytes_value=b"\x01"))],
]

_PERCENT = st.integers(0, 99)


@st.composite
def _attributes(draw: st.DrawFn) -> _Attrs:
    attrs: dict[str, Any] = {k: _s(v) for k, v in draw(st.sampled_from(_BASE_EVENTS)).items()}
    extras = draw(st.sampled_from(_USUAL_EXTRAS))
    if draw(_PERCENT) >= 70:
        for _ in range(draw(st.integers(1, 2))):
            name = draw(_FIELD_NAMES)
            value = draw(_FIELD_EDIT[name])
            if value == _ABSENT:
                attrs.pop(name, None)
            else:
                attrs[name] = value
    if draw(_PERCENT) >= 75:
        extras = extras + draw(_EXTRAS)
    pairs = list(attrs.items()) + extras
    order = draw(st.integers(0, 3))
    if order == 1:
        pairs.reverse()
    elif order == 2 and pairs:
        # A repeated key: the last value counts, at the first one's position.
        key, _ = pairs[draw(st.integers(0, len(pairs) - 1))]
        pairs.append((key, draw(_EXTRA_VALUES | st.sampled_from([v for _, v in pairs]))))
    return pairs


_SERVICE_NAMES = [
    _ABSENT,
    _s(""),
    _s(" "),
    _s("s" * 256),
    _s("s" * 257),
    _s("sérvice"),
    _s("a\nb"),
    _s("billing "),
    *_WRONG_TYPES,
]
_ENVIRONMENTS: list[_Attrs] = [
    [],
    [("deployment.environment.name", _s("prod"))],
    [("deployment.environment", _s("staging"))],
    [("deployment.environment.name", _s("prod")), ("deployment.environment", _s("staging"))],
    [("deployment.environment.name", _s("")), ("deployment.environment", _s("staging"))],
    [("deployment.environment.name", None), ("deployment.environment", _s("staging"))],
    [("deployment.environment.name", AnyValue(int_value=3))],
    [("deployment.environment", AnyValue(int_value=3))],
    [("deployment.environment", _s("prød"))],
    [("deployment.environment", _s("a\nb"))],
    [("deployment.environment.name", _s("a\x7f"))],
]
_RESOURCE_FIELD_EDIT = st.tuples(
    st.sampled_from(["service.version", "service.namespace", "service.instance.id", "host.name"]),
    st.sampled_from(_string_edges(256)),
)


_RESOURCE_EXTRAS: list[_Attrs] = [*_USUAL_EXTRAS, [("telemetry.sdk.language", _s("python"))]]


@st.composite
def _resource(draw: st.DrawFn) -> _Attrs | None:
    usual = dict(_BASE_RESOURCE)
    usual["service.instance.id"] = "i-1"
    attrs: dict[str, Any] = {k: _s(v) for k, v in usual.items()}
    environment = draw(st.sampled_from(_ENVIRONMENTS[:4]))
    extras: _Attrs = draw(st.sampled_from(_RESOURCE_EXTRAS))
    edit = draw(st.integers(0, 39))
    if edit == 39:
        return None  # no Resource message
    if edit == 1:
        name = draw(st.sampled_from(_SERVICE_NAMES))
        if name == _ABSENT:
            del attrs["service.name"]
        else:
            attrs["service.name"] = name
    elif edit in (2, 3):
        environment = draw(st.sampled_from(_ENVIRONMENTS))
    elif edit == 4:
        field, value = draw(_RESOURCE_FIELD_EDIT)
        attrs.pop(field, None)
        if value != _ABSENT:
            attrs[field] = value
    elif edit in (5, 6):
        extras = extras + draw(_EXTRAS)
    pairs: _Attrs = list(attrs.items()) + environment + extras
    if edit == 7:
        pairs.append(("host.name", _s("again")))
    return pairs


_BODIES = [
    None,
    AnyValue(),
    *(_s(t) for t in ("", "é", "a\nb\x00", "x" * 4096, "x" * 4097, "x" * 16384, "x" * 16385)),
    _s("é" * 8192),
    _s("é" * 8193),
    AnyValue(int_value=1),
    AnyValue(bool_value=False),
    AnyValue(bytes_value=b"\x00\xff"),
    AnyValue(double_value=math.nan),
    any_value(["a", 1]),
    any_value({"k": "v"}),
    AnyValue(string_value_strindex=1),
]
_SHORT_TEXTS = ["", "INFO", "é", "a\nb", "\x7f", '"', "\u2028"]
_SIZED_TEXTS = [c * n for c, n in [("x", 16), ("x", 17), ("x", 64), ("x", 65)]]
_SIZED_TEXTS += [c * n for c, n in [("x", 256), ("x", 257), ("é", 32), ("é", 33)]]
_SIZED_TEXTS += [c * n for c, n in [("é", 128), ("é", 129), ("日", 21), ("日", 22)]]
_SIZED_TEXTS += [c * n for c, n in [("日", 85), ("日", 86), ("🙂", 16), ("🙂", 17)]]
_SIZED_TEXTS += [c * n for c, n in [("🙂", 64), ("🙂", 65)]]
_TEXTS = st.sampled_from(_SHORT_TEXTS + _SIZED_TEXTS)


@st.composite
def _mostly(draw: st.DrawFn, usual: st.SearchStrategy[Any], edges: st.SearchStrategy[Any]) -> Any:
    # Shrinks towards the usual value.
    return draw(edges) if draw(_PERCENT) >= 88 else draw(usual)


def _times(received_ns: int) -> list[int]:
    """Event and observed times around every limit relative to ``received_ns``."""
    midnight = received_ns - received_ns % _DAY
    return [
        0,
        received_ns,
        received_ns - _SKEW,
        received_ns - _SKEW - 1,
        received_ns + _SKEW,
        received_ns + _SKEW + 1,
        received_ns - 3 * _DAY,
        received_ns + _FUTURE,
        received_ns + _FUTURE + 1,
        received_ns + 10 * _FUTURE,
        midnight,
        midnight - 1,
        midnight + _DAY,
        _MIN_TIME - 1,
        _MIN_TIME,
        900_000_000 * _S,
        1,
        2**63,
        2**64 - 1,
    ]


_TRACE_IDS = _mostly(
    st.binary(min_size=16, max_size=16), st.sampled_from([b"", bytes(16), b"\x01" * 15])
)
_SPAN_IDS = _mostly(st.binary(min_size=8, max_size=8), st.sampled_from([b"", bytes(8), b"\x01"]))
_FLAGS = _mostly(st.sampled_from([0, 1]), st.sampled_from([0x1FF, 2**32 - 1, 2]))
_SEVERITY_TEXTS = _mostly(st.sampled_from(["INFO", "WARN"]), _TEXTS)
_EVENT_NAMES = _mostly(st.sampled_from(["invoice.update", ""]), _TEXTS)
_BODY = _mostly(st.just(_s("invoice updated")), st.sampled_from(_BODIES))


@st.composite
def _log_record(draw: st.DrawFn, received_ns: int) -> LogRecord:
    edge_times = st.sampled_from(_times(received_ns))
    usual_times = st.integers(0, 10 * _S).map(lambda d: received_ns - d)
    lr = LogRecord(
        time_unix_nano=draw(_mostly(usual_times, edge_times)),
        observed_time_unix_nano=draw(_mostly(st.just(received_ns), edge_times)),
        severity_number=SeverityNumber.SEVERITY_NUMBER_INFO,
        severity_text=draw(_SEVERITY_TEXTS),
        event_name=draw(_EVENT_NAMES),
        trace_id=draw(_TRACE_IDS),
        span_id=draw(_SPAN_IDS),
        flags=draw(_FLAGS),
    )
    body = draw(_BODY)
    if body is not None:
        lr.body.CopyFrom(body)
    lr.attributes.extend(_kvs(draw(_attributes())))
    return lr


_RECEIVED = st.one_of(
    st.sampled_from([_R, _R_MIDNIGHT, 1_700_000_000 * _S, _MIN_TIME + _DAY]),
    st.integers(1_600_000_000 * _S, 2_500_000_000 * _S),
)
_SCOPES = _mostly(st.just(("otel_audit", "0.1.0")), st.none() | st.tuples(_TEXTS, _TEXTS))


@st.composite
def _requests(draw: st.DrawFn) -> tuple[bytes, int]:
    received_ns = draw(_RECEIVED)
    request = ExportLogsServiceRequest()
    for _ in range(draw(st.integers(1, 3))):
        scopes = []
        for _ in range(draw(st.integers(1, 2))):
            records = draw(st.lists(_log_record(received_ns), min_size=1, max_size=3))
            scopes.append((draw(_SCOPES), records))
        _add_resource_logs(request, draw(_resource()), scopes)
    return request.SerializeToString(), received_ns


_OUTCOMES: Counter[str] = Counter()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(_requests())
def _prepared_as_python_prepares(request: tuple[bytes, int]) -> None:
    _OUTCOMES.update(check(*request))


def test_generated_requests_are_prepared_as_python_prepares_them() -> None:
    _OUTCOMES.clear()
    _prepared_as_python_prepares()
    # Both paths must have been exercised, or the property proved little.
    total = sum(_OUTCOMES.values())
    assert _OUTCOMES["prepared"] > total // 4, _OUTCOMES
    assert _OUTCOMES["python"] > total // 20, _OUTCOMES
    assert _OUTCOMES["rejected"] > total // 20, _OUTCOMES


# --- the nastiest cases, always covered ---------------------------------------------------
#
# Each case is one record edited from a realistic event, with what must come of it:
# "prepared" (the fast path must take it: receiver/ingest/prepare.py says it is plain),
# "python" (valid, but outside what the fast path may prepare), "rejected" (Python rejects
# it), or "either" (valid; the fast path may or may not take it). Whatever the native side
# does, check() holds it to the Python path.

_EITHER = ("prepared", "python")


def _case(
    expected: str,
    *,
    attrs: dict[str, Any] | None = None,
    extra: list[tuple[str, Any]] | None = None,
    resource: dict[str, Any] | None = None,
    no_resource: bool = False,
    resource_extra: list[tuple[str, Any]] | None = None,
    record: dict[str, Any] | None = None,
    scope: tuple[str, str] | None = ("otel_audit", "1.0"),
    received_ns: int = _R,
    id: str,
) -> Any:
    event = _base_attrs(1)
    for key, value in (attrs or {}).items():
        if value == _ABSENT:
            event.pop(key, None)
        else:
            event[key] = value
    pairs: list[tuple[str, Any]] = list(event.items()) + (extra or [])
    base_resource: dict[str, Any] = {**_BASE_RESOURCE, **(resource or {})}
    res: list[tuple[str, Any]] | None = None
    if not no_resource:
        res = [(k, v) for k, v in base_resource.items() if v != _ABSENT]
        res += resource_extra or []
    lr = _record(pairs, **(record or {}))
    wire_resource = None if res is None else [(k, None if v is None else _wire(v)) for k, v in res]
    body = _request([lr], wire_resource, scope).SerializeToString()
    return pytest.param(body, received_ns, expected, id=id)


_CASES = [
    _case("prepared", id="realistic"),
    # ECS event.type from the category, the action's verb and the outcome
    *(
        _case(
            "prepared",
            attrs={"audit.category": category, "audit.action": action, "audit.outcome": outcome},
            id=f"ecs_type_{category}_{action}_{outcome}",
        )
        for category, action, outcome in [
            ("data_change", "invoice.create", "success"),
            ("data_change", "invoice.line_item_delete", "success"),
            ("authorization", "invoice.approve", "denied"),
            ("authorization", "invoice.approve", "success"),
            ("authentication", "user.login", "failure"),
            ("integration", "webhook.create", "denied"),
            ("system", "job.unknownverb", "unknown"),
            ("permission_change", "role.grant", "success"),
        ]
    ),
    # actors ECS looks for elsewhere, and the target of a permission change
    *(
        _case(
            "prepared",
            attrs={"audit.actor.type": kind, "audit.actor.name": "Svc"},
            id=f"actor_copies_{kind}",
        )
        for kind in ("service", "agent", "system", "user")
    ),
    _case("prepared", attrs={"audit.actor.type": "service"}, id="actor_copies_no_name"),
    _case(
        "prepared",
        attrs={
            "audit.category": "permission_change",
            "audit.target.user.id": "u-2077",
            "audit.target.user.name": "Grace",
        },
        id="target_user",
    ),
    # the OTel semconv attributes: kept as extras beside the audit actor, Python's when they
    # stand in for it
    _case("prepared", extra=[("user.id", "u-9"), ("enduser.id", "e-1")], id="semconv_beside"),
    _case(
        "python",
        attrs={"audit.actor.id": _ABSENT, "audit.actor.type": _ABSENT},
        extra=[("user.id", "u-9")],
        id="semconv_user_id_alias",
    ),
    _case(
        "python",
        attrs={"audit.actor.id": _ABSENT, "audit.actor.type": _ABSENT},
        extra=[("enduser.id", "e-9")],
        id="semconv_enduser_id_alias",
    ),
    _case("prepared", extra=[("user.name", "Ada")], id="semconv_user_name_beside"),
    _case(
        "python",
        attrs={"audit.actor.name": _ABSENT},
        extra=[("user.name", "Ada")],
        id="semconv_user_name_alias",
    ),
    _case("python", extra=[("user.roles", ["admin"])], id="semconv_user_roles_alias"),
    _case("python", attrs={"audit.actor.roles": ["admin", "viewer"]}, id="actor_roles"),
    # extra attributes: scalars are plain, floats and containers are not
    *(
        _case("prepared", extra=[("v", value)], id=f"extra_int_{name}")
        for name, value in [
            ("max_safe", 2**53 - 1),
            ("min_safe", -(2**53 - 1)),
            ("2_53", 2**53),
            ("minus_2_53", -(2**53)),
            ("int64_max", 2**63 - 1),
            ("int64_min", -(2**63)),
        ]
    ),
    *(
        _case("python", extra=[("v", AnyValue(double_value=value))], id=f"extra_double_{name}")
        for name, value in [("nan", math.nan), ("inf", -math.inf), ("neg_zero", -0.0), ("one", 1.0)]
    ),
    _case("prepared", extra=[("v", True), ("w", False)], id="extra_bools"),
    _case("prepared", extra=[("v", b""), ("w", b"\x00\xff" * 10)], id="extra_bytes"),
    _case("prepared", extra=[("v", AnyValue()), ("w", None)], id="extra_unset"),
    _case("python", extra=[("v", ["a", 1])], id="extra_array"),
    _case("python", extra=[("v", {"a": "b"})], id="extra_kvlist"),
    _case("python", extra=[("v", [])], id="extra_empty_array"),
    _case("either", extra=[("v", AnyValue(string_value_strindex=3))], id="extra_strindex"),
    _case("python", extra=[("v", _nested(8))], id="extra_nested_8"),
    _case("rejected", extra=[("v", _nested(9))], id="extra_nested_9"),
    _case("prepared", extra=[("v", '\x00\x1f\x7f"\\/\n\t')], id="extra_control_chars"),
    _case("prepared", extra=[("v", ""), ("w", " ")], id="extra_blank"),
    _case("either", extra=[("v", "é\u2028🙂")], id="extra_non_ascii"),
    *(
        _case("prepared", extra=[("v", "x" * n)], id=f"extra_ascii_{n}")
        for n in (2047, 2048, 2049, 8192)
    ),
    _case("python", extra=[("v", "x" * 8193)], id="extra_ascii_8193"),
    _case("either", extra=[("v", "é" * 4096)], id="extra_8192_bytes_two_byte"),
    _case("python", extra=[("v", "é" * 4097)], id="extra_8194_bytes_two_byte"),
    # attribute keys
    _case("prepared", extra=[("k" * 256, 1)], id="key_256"),
    _case("rejected", extra=[("k" * 257, 1)], id="key_257"),
    _case("python", extra=[("é" * 128, 1)], id="key_256_bytes_non_ascii"),
    _case("rejected", extra=[("é" * 129, 1)], id="key_258_bytes_non_ascii"),
    _case("python", extra=[("ключ", 1)], id="key_non_ascii"),
    _case("prepared", extra=[("a b", 1), ("~", 2), ("a.b.c", 3), ("Z", 4)], id="key_plain_odd"),
    _case("prepared", extra=[("service.name", "x"), ("audit.extra", 1)], id="key_like_stored"),
    *(
        _case("rejected", extra=[(key, 1)], id=f"key_{name}")
        for name, key in [
            ("empty", ""),
            ("leading_dot", ".a"),
            ("trailing_dot", "a."),
            ("empty_segment", "a..b"),
            ("newline", "a\nb"),
            ("del", "a\x7f"),
        ]
    ),
    # repeated keys: the last value counts
    _case("either", extra=[("k", 1), ("k", "two")], id="duplicate_extra"),
    _case("either", extra=[("audit.actor.id", "u-2")], id="duplicate_field"),
    _case("rejected", extra=[("audit.action", "Bad")], id="duplicate_field_last_invalid"),
    _case("either", extra=[("k", 1.5), ("k", 2)], id="duplicate_double_replaced"),
    # the schema's fields
    _case("prepared", attrs={"audit.event.id": _uuid(9).upper()}, id="event_id_upper"),
    _case("prepared", attrs={"audit.event.id": _ABSENT}, id="event_id_derived"),
    _case("rejected", attrs={"audit.event.id": ""}, id="event_id_empty"),
    _case("rejected", attrs={"audit.event.id": "not-a-uuid"}, id="event_id_malformed"),
    _case("rejected", attrs={"audit.event.id": _uuid(9) + "\n"}, id="event_id_newline"),
    _case("rejected", attrs={"audit.event.id": 7}, id="event_id_int"),
    _case("prepared", attrs={"audit.action": "a." + "b" * 126}, id="action_128"),
    _case("rejected", attrs={"audit.action": "a." + "b" * 127}, id="action_129"),
    _case("rejected", attrs={"audit.action": "Invoice.update"}, id="action_upper"),
    _case("rejected", attrs={"audit.action": None}, id="action_no_value"),
    _case("rejected", attrs={"audit.action": AnyValue()}, id="action_unset"),
    _case("rejected", attrs={"audit.action": True}, id="action_bool"),
    _case("rejected", attrs={"audit.action": _ABSENT}, id="not_an_audit_event"),
    _case(
        "prepared",
        attrs={
            "audit.category": "authentication",
            "audit.resource.type": _ABSENT,
            "audit.resource.id": _ABSENT,
        },
        id="category_without_resource",
    ),
    _case("rejected", attrs={"audit.resource.type": _ABSENT}, id="category_needs_resource"),
    _case("rejected", attrs={"audit.resource.id": " "}, id="category_needs_resource_id"),
    _case("rejected", attrs={"audit.category": "other"}, id="category_not_in_enum"),
    _case("rejected", attrs={"audit.outcome": "SUCCESS"}, id="outcome_not_in_enum"),
    _case("rejected", attrs={"audit.actor.type": b"user"}, id="actor_type_bytes"),
    _case("prepared", attrs={"audit.actor.id": "x" * 256}, id="actor_id_256"),
    _case("rejected", attrs={"audit.actor.id": "x" * 257}, id="actor_id_257"),
    _case("rejected", attrs={"audit.actor.id": "a\nb"}, id="actor_id_newline"),
    _case("rejected", attrs={"audit.actor.id": "a\x7fb"}, id="actor_id_del"),
    _case("rejected", attrs={"audit.actor.id": " \t"}, id="actor_id_blank"),
    _case("rejected", attrs={"audit.actor.id": 1.5}, id="actor_id_double"),
    _case("python", attrs={"audit.actor.id": "José"}, id="actor_id_non_ascii"),
    _case("python", attrs={"audit.actor.id": "é" * 128}, id="actor_id_256_bytes_non_ascii"),
    _case("rejected", attrs={"audit.actor.id": "é" * 129}, id="actor_id_258_bytes_non_ascii"),
    _case("prepared", attrs={"audit.actor.name": "u-1"}, id="actor_name_same_as_id"),
    _case("prepared", attrs={"audit.actor.name": "x" * 256}, id="actor_name_256"),
    _case("python", attrs={"audit.actor.name": "x" * 257}, id="actor_name_257_cut"),
    _case("python", attrs={"audit.actor.name": "a\tb"}, id="actor_name_tab"),
    _case("python", attrs={"audit.actor.name": ""}, id="actor_name_empty"),
    _case("python", attrs={"audit.actor.name": " "}, id="actor_name_blank"),
    _case("rejected", attrs={"session.id": None}, id="session_id_no_value"),
    _case("rejected", attrs={"session.id": "s\n1"}, id="session_id_newline"),
    _case("prepared", attrs={"audit.correlation_id": "x" * 256}, id="correlation_id_256"),
    _case("rejected", attrs={"audit.correlation_id": "x" * 257}, id="correlation_id_257"),
    _case("prepared", attrs={"audit.reason": "x" * _REASON_MAX}, id="reason_at_limit"),
    _case("python", attrs={"audit.reason": "x" * (_REASON_MAX + 1)}, id="reason_over_limit_cut"),
    _case("python", attrs={"audit.reason": "line\nbreak"}, id="reason_newline"),
    _case("prepared", attrs={"user_agent.original": "x" * 1024}, id="user_agent_1024"),
    _case("python", attrs={"user_agent.original": "x" * 1025}, id="user_agent_1025_cut"),
    _case("prepared", attrs={"error.type": "x" * 256, "audit.tenant.id": "t" * 256}, id="at_256"),
    # IPv4 or not an address at all is decided here; anything that may be IPv6, or that
    # would be cut, is left to Python.
    *(
        _case(expected, attrs={"client.address": address}, id=f"client_{address}")
        for expected, addresses in [
            (
                "prepared",
                [
                    "1.2.3.4",
                    "[1.2.3.4]",
                    "[[1.2.3.4]]",
                    "1.2.3.4]",
                    "0.0.0.0",
                    "255.255.255.255",
                    "01.2.3.4",
                    "1.2.3.04",
                    "256.1.1.1",
                    "1.2.3",
                    "1.2.3.4.5",
                    "+1.2.3.4",
                    "1.2.3.4 ",
                    "garbage",
                    "[]",
                    "x" * 256,
                ],
            ),
            (
                "python",
                [
                    "::1",
                    "[::1]",
                    "2001:DB8::1",
                    "::ffff:1.2.3.4",
                    "fe80::1%eth0",
                    "1.2.3.4\n",
                    "x" * 257,
                ],
            ),
        ]
        for address in addresses
    ),
    # Not an address, but a colon may be IPv6: the fast path may leave it to Python.
    _case("either", attrs={"client.address": "host.example:8080"}, id="client_host_port"),
    _case(
        "prepared",
        extra=[(f"k{i}", i) for i in range(128 - len(_base_attrs()))],
        id="attributes_128",
    ),
    _case(
        "rejected",
        extra=[(f"k{i}", i) for i in range(129 - len(_base_attrs()))],
        id="attributes_129",
    ),
    # the resource
    _case("rejected", resource={"service.name": _ABSENT}, id="service_name_missing"),
    _case("rejected", resource={"service.name": ""}, id="service_name_empty"),
    _case("rejected", resource={"service.name": " "}, id="service_name_blank"),
    _case("rejected", resource={"service.name": 5}, id="service_name_int"),
    _case("rejected", resource={"service.name": None}, id="service_name_no_value"),
    _case("prepared", resource={"service.name": "s" * 256}, id="service_name_256"),
    _case("rejected", resource={"service.name": "s" * 257}, id="service_name_257"),
    _case("python", resource={"service.name": "sérvice"}, id="service_name_non_ascii"),
    _case("rejected", resource={"service.name": "a\nb"}, id="service_name_newline"),
    _case("prepared", resource={"service.name": "billing "}, id="service_name_trailing_space"),
    _case("rejected", resource={"host.name": "h" * 257}, id="host_name_257"),
    _case("prepared", resource={"host.name": ""}, id="host_name_empty"),
    _case("rejected", resource={"host.name": 1}, id="host_name_int"),
    _case("rejected", no_resource=True, id="no_resource"),
    _case("prepared", resource={"deployment.environment": "prod"}, id="environment_old_name"),
    _case("prepared", resource={"deployment.environment.name": "prod"}, id="environment"),
    _case(
        "prepared",
        resource={"deployment.environment.name": "prod", "deployment.environment": "old"},
        id="environment_both_names",
    ),
    _case(
        "prepared",
        resource={"deployment.environment.name": "", "deployment.environment": "old"},
        id="environment_empty_and_old",
    ),
    _case(
        "python",
        resource={"deployment.environment.name": None, "deployment.environment": "old"},
        id="environment_no_value_and_old",
    ),
    _case("prepared", resource={"deployment.environment": "a\nb"}, id="environment_old_newline"),
    _case("prepared", resource={"deployment.environment": 3}, id="environment_old_int"),
    _case("either", resource={"deployment.environment": "prød"}, id="environment_old_non_ascii"),
    _case("python", resource_extra=[("ratio", 0.5)], id="resource_double"),
    _case("python", resource_extra=[("tags", ["a"])], id="resource_array"),
    _case("prepared", resource_extra=[("n", 2**60), ("b", b"\x01")], id="resource_int_bytes"),
    _case("python", resource_extra=[("ключ", "v")], id="resource_key_non_ascii"),
    _case("rejected", resource_extra=[("a..b", "v")], id="resource_key_bad"),
    _case("either", resource_extra=[("host.name", "again")], id="resource_duplicate"),
    _case(
        "prepared",
        resource_extra=[(f"r{i}", "v") for i in range(128 - len(_BASE_RESOURCE))],
        id="resource_attributes_128",
    ),
    _case(
        "rejected",
        resource_extra=[(f"r{i}", "v") for i in range(129 - len(_BASE_RESOURCE))],
        id="resource_attributes_129",
    ),
    # the body
    _case("prepared", record={"body": None}, id="body_absent"),
    _case("prepared", record={"body": AnyValue()}, id="body_unset"),
    _case("prepared", record={"body": _s("")}, id="body_empty"),
    _case("prepared", record={"body": _s('a\nb\x00"')}, id="body_control_chars"),
    _case("prepared", record={"body": _s("x" * 16384)}, id="body_16384"),
    _case("python", record={"body": _s("x" * 16385)}, id="body_16385_cut"),
    _case("either", record={"body": _s("é")}, id="body_non_ascii"),
    _case("python", record={"body": _s("é" * 8193)}, id="body_16386_bytes_cut"),
    *(
        _case("either", record={"body": any_value(value)}, id=f"body_{type(value).__name__}")
        for value in (0, True, b"\x00")
    ),
    *(
        _case("python", record={"body": any_value(value)}, id=f"body_{type(value).__name__}")
        for value in (math.nan, ["a"], {"k": "v"})
    ),
    # the record's other strings: cut at 64 (level) and 256 bytes (names)
    *(
        _case("prepared", record={"severity_text": text}, id=f"level_{len(text.encode())}b")
        for text in ("x" * 64, "é" * 32, "🙂" * 16, "a\nb\x7f")
    ),
    *(
        _case("python", record={"severity_text": text}, id=f"level_{len(text.encode())}b")
        for text in ("x" * 65, "é" * 33, "🙂" * 17)
    ),
    *(
        _case("prepared", record={"event_name": text}, id=f"event_name_{len(text.encode())}b")
        for text in ("x" * 256, "日" * 85, "🙂" * 64, "\u2028\n")
    ),
    *(
        _case("python", record={"event_name": text}, id=f"event_name_{len(text.encode())}b")
        for text in ("x" * 257, "日" * 86, "🙂" * 65)
    ),
    _case("prepared", scope=("x" * 256, "é" * 128), id="scope_256"),
    _case("python", scope=("x" * 257, "1"), id="scope_name_257"),
    _case("python", scope=("n", "🙂" * 65), id="scope_version_260b"),
    _case("prepared", scope=("", "1.0"), id="scope_version_only"),
    _case("prepared", scope=("", ""), id="scope_empty"),
    _case("prepared", scope=None, id="scope_absent"),
    _case("prepared", scope=("a\nb", '\x7f"'), id="scope_control_chars"),
    # trace context
    _case("prepared", record={"trace_id": b""}, id="no_trace"),
    _case("prepared", record={"trace_id": bytes(16), "span_id": bytes(8)}, id="zero_ids"),
    _case("prepared", record={"trace_id": b"", "flags": 0x1FF}, id="span_without_trace"),
    _case("prepared", record={"flags": 0x1FF}, id="flags_0x1ff"),
    _case("prepared", record={"flags": 0}, id="flags_0"),
    _case("prepared", record={"flags": 2**32 - 1}, id="flags_max"),
    _case("prepared", attrs={"audit.correlation_id": "c-1"}, id="correlation_over_trace"),
    # times
    _case("prepared", record={"time_unix_nano": 0}, id="no_event_time"),
    _case("rejected", record={"time_unix_nano": 0, "observed_time_unix_nano": 0}, id="no_time"),
    _case("prepared", record={"observed_time_unix_nano": 0}, id="no_observed_time"),
    _case("rejected", record={"time_unix_nano": _MIN_TIME - 1}, id="before_2000"),
    _case("prepared", record={"time_unix_nano": _MIN_TIME}, id="at_2000"),
    _case("rejected", record={"time_unix_nano": 1}, id="time_1ns"),
    _case("prepared", record={"time_unix_nano": _R + _FUTURE}, id="future_at_limit"),
    _case("rejected", record={"time_unix_nano": _R + _FUTURE + 1}, id="future_over_limit"),
    _case("rejected", record={"time_unix_nano": 2**64 - 1}, id="time_max"),
    *(
        _case("prepared", record={"time_unix_nano": _R + delta}, id=f"skew_{delta}")
        for delta in (-_SKEW, -_SKEW - 1, _SKEW, _SKEW + 1, -_SKEW - 999_999, -_SKEW - 1_000_001)
    ),
    *(
        _case("prepared", record={"observed_time_unix_nano": t}, id=f"observed_{t}")
        for t in (2**63, 2**64 - 1, 1)
    ),
    _case(
        "rejected",
        record={"time_unix_nano": 0, "observed_time_unix_nano": 2**64 - 1},
        id="observed_max_as_time",
    ),
    _case(
        "prepared",
        record={"time_unix_nano": _R_MIDNIGHT + 60_000_000},
        received_ns=_R_MIDNIGHT,
        id="next_day_index",
    ),
    _case(
        "prepared",
        record={"time_unix_nano": _R_MIDNIGHT - _R_MIDNIGHT % _DAY},
        received_ns=_R_MIDNIGHT,
        id="at_midnight",
    ),
]


@pytest.mark.parametrize(("body", "received_ns", "expected"), _CASES)
def test_edge_cases(body: bytes, received_ns: int, expected: str) -> None:
    (outcome,) = check(body, received_ns)
    assert outcome in (_EITHER if expected == "either" else (expected,))


def test_stored_values_of_prepared_records() -> None:
    extra = [("big", 2**53), ("blob", b"\x00\xff"), ("none", None)]
    attrs = {"client.address": "[1.2.3.4]", "audit.event.id": _uuid(5).upper()}
    for address, ip in [("[1.2.3.4]", "1.2.3.4"), ("01.2.3.4", None)]:
        attrs["client.address"] = address
        lr = _record(list({**_base_attrs(1), **attrs}.items()) + extra, time_unix_nano=0)
        body = _request([lr], [(k, _s(v)) for k, v in _BASE_RESOURCE.items()]).SerializeToString()
        assert check(body, _R) == ["prepared"]
        (record,) = decode.decode_logs_protobuf(body, _PLAN_LEAF, _R).records
        index, event_id, encoded, source_at, _, leaf, _ = record.prepared
        doc = orjson.loads(encoded[source_at:-1])
        assert event_id == doc["event"]["id"] == _uuid(5) and index == "audit-events-2026.01.01"
        stored = {"big": "9007199254740992", "blob": "AP8=", "none": None}
        assert doc["audit"]["extra"] == {"http.response.status_code": 200, **stored}
        assert doc.get("client", {}).get("ip") == ip == doc.get("source", {}).get("ip")
        assert doc["audit"]["flags"] == ["no_event_time"] and type(leaf) is bytes


def test_a_plain_and_a_double_record_in_one_request() -> None:
    # The fast path must neither go silent nor take what it cannot do exactly.
    plain = _record(_base_attrs(1))
    with_double = _record([*_base_attrs(2).items(), ("ratio", 0.25)])
    resource = [(k, _s(v)) for k, v in _BASE_RESOURCE.items()]
    body = _request([plain, with_double], resource).SerializeToString()
    decoded = decode.decode_logs_protobuf(body, _PLAN_LEAF, _R)
    assert decoded.records[0].prepared is not None
    assert decoded.records[1].prepared is None
    assert check(body, _R) == ["prepared", "python"]


def test_bad_ids_are_rejected_unprepared() -> None:
    resource = [(k, _s(v)) for k, v in _BASE_RESOURCE.items()]
    records = [_record(_base_attrs(1), trace_id=b"\x01" * 15), _record(_base_attrs(2))]
    records.append(_record(_base_attrs(3), span_id=b"\x01" * 9))
    body = _request(records, resource).SerializeToString()
    assert check(body, _R) == ["prepared"]
    decoded = decode.decode_logs_protobuf(body, _PLAN_LEAF, _R)
    assert len(decoded.rejected) == 2 and all(r.prepared is None for r in decoded.rejected)


def test_each_resource_logs_is_judged_on_its_own() -> None:
    request = ExportLogsServiceRequest()
    good = [(k, _s(v)) for k, v in _BASE_RESOURCE.items()]
    for resource in (good[1:], good, [*good, ("ratio", AnyValue(double_value=0.5))], good):
        records = [_record(_base_attrs(i)) for i in range(2)]
        _add_resource_logs(request, resource, [(("otel_audit", "1.0"), records)])
    outcomes = check(request.SerializeToString(), _R)
    assert outcomes == ["rejected"] * 2 + ["prepared"] * 2 + ["python"] * 2 + ["prepared"] * 2


def test_a_realistic_batch_is_prepared_entirely() -> None:
    bodies = build_requests(4, 100, seed=11)
    received_ns = time.time_ns()
    for body in bodies:
        assert check(body, received_ns) == ["prepared"] * 100


def test_a_pattern_outside_the_shared_syntax_is_matched_by_python() -> None:
    # A lookahead is outside the syntax the regex crate and re read alike: the native plan
    # must ask the Python pattern, and agree with the Python path on both outcomes.
    import copy

    from otel_audit.schema import _parse

    raw = copy.deepcopy(_SCHEMA.raw)
    action = next(f for f in raw["fields"] if f["attribute"] == "audit.action")
    action["pattern"] = r"^(?!admin\.)[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
    schema = _parse(raw)
    plan = native_plan(schema, leaf=True)
    assert plan is not None
    records = [
        _record({**_base_attrs(1), "audit.action": "invoice.update"}),
        _record({**_base_attrs(2), "audit.action": "admin.reset"}),
        _record({**_base_attrs(3), "audit.action": "Invoice.Update"}),
    ]
    resource = [(k, _s(v)) for k, v in _BASE_RESOURCE.items()]
    body = _request(records, resource).SerializeToString()
    decoded = decode.decode_logs_protobuf(body, plan, _R)
    python = decode._decode_logs_protobuf_python(body).records
    expected = [reference(r, received_ns=_R, schema=schema, leaf=True) for r in python]
    assert expected[0] is not None and expected[1] is None and expected[2] is None
    assert [r.prepared for r in decoded.records] == expected


def test_a_prepared_record_reads_its_fields_from_the_request_again() -> None:
    # The decoder builds no field values for a prepared record; reading one decodes the
    # request again (once) and answers from the record at the same position.
    body = build_requests(1, 5)[0]
    lazy_records = decode.decode_logs_protobuf(body, _PLAN_NO_LEAF, time.time_ns()).records
    full_records = decode.decode_logs_protobuf(body).records
    sources: set[int] = set()
    for lazy, full in zip(lazy_records, full_records, strict=True):
        assert isinstance(lazy, decode.PreparedRecord)
        assert lazy.prepared is not None and full.prepared is None
        assert lazy.attributes == full.attributes
        assert lazy.resource == full.resource
        assert lazy.content_sha256 == full.content_sha256
        copy = dataclasses.replace(lazy, prepared=None)
        assert type(copy) is LogRecordData
        assert copy == full
        sources.add(id(lazy._source))
    assert len(sources) == 1  # one request, decoded a second time once


def _schema_storing(**stored: str) -> Any:
    import copy

    from otel_audit.schema import _parse

    raw = copy.deepcopy(_SCHEMA.raw)
    for field in raw["fields"]:
        if field["attribute"] in stored:
            field["stored"] = stored[field["attribute"]]
    return _parse(raw)


@pytest.mark.parametrize(
    ("stored", "collides"),
    [
        # Objects opened before and after every other key, and one inside `event`.
        ({"audit.reason": "aaa.first", "audit.tenant.id": "zzz.last.leaf"}, False),
        ({"audit.reason": "event.zz_reason", "audit.tenant.id": "audit.aa.tenant"}, False),
        # A value where the document already has one, or above or below one.
        ({"audit.reason": "event.kind"}, True),
        ({"audit.reason": "audit"}, True),
        ({"audit.reason": "related.extra"}, True),
        ({"audit.reason": "client.ip.inner"}, True),
        ({"audit.reason": "audit.content_hash"}, True),
        ({"audit.reason": "user.id"}, True),
    ],
)
def test_stored_paths_of_a_custom_schema(stored: dict[str, str], collides: bool) -> None:
    # The document layout is built per schema: values at fresh paths are written where
    # sorted keys put them, and a collision is left to Python (which decides it as it
    # always has), never written over.
    schema = _schema_storing(**stored)
    plan = native_plan(schema, leaf=True)
    assert plan is not None
    extra = {"audit.reason": "quota exceeded", "audit.tenant.id": "t-1"}
    with_ip = {"client.address": "10.1.2.3"}
    records = [
        _record({**_base_attrs(1), **extra, **with_ip}),
        _record({**_base_attrs(2), **with_ip}),
    ]
    resource = [(k, _s(v)) for k, v in _BASE_RESOURCE.items()]
    body = _request(records, resource).SerializeToString()
    decoded = decode.decode_logs_protobuf(body, plan, _R)
    python = decode._decode_logs_protobuf_python(body).records
    expected = [reference(r, received_ns=_R, schema=schema, leaf=True) for r in python]
    got = [r.prepared for r in decoded.records]
    # Without the moved fields nothing collides: prepared, as Python prepares it.
    assert got[1] is not None and got[1] == expected[1]
    if collides:
        assert got[0] is None
    else:
        assert got[0] is not None and got[0] == expected[0]
        document = orjson.loads(got[0][2][got[0][3] :])
        for attribute, path in stored.items():
            node = document
            for segment in path.split("."):
                node = node[segment]
            assert node == extra[attribute]


# --- the schema's paths and values by role ---------------------------------------------------


def _schema_with_roles(**changes: dict[str, Any]) -> Any:
    """The schema with the entries of the given roles changed as given."""
    import copy

    from otel_audit.schema import _parse

    raw = copy.deepcopy(_SCHEMA.raw)
    for entry in (*raw["fields"], *raw["record_fields"], *raw["derived_fields"]):
        entry.update(changes.get(entry.get("role", ""), {}))
    return _parse(raw)


def _values(**renamed: str) -> list[dict[str, str]]:
    return [{"role": role, "value": value, "description": "."} for role, value in renamed.items()]


def _stored(document: dict[str, Any], dotted: str) -> Any:
    node: Any = document
    for segment in dotted.split("."):
        node = node[segment]
    return node


@pytest.mark.parametrize(
    "changes",
    [
        {"dataset": {"stored": "labels.dataset", "value": "acme.audit"}},
        {"kind": {"value": "audit"}, "dataset": {"value": "acme.events"}},
        {
            "flags": {
                "stored": "labels.findings",
                "values": _values(clock_skew="skew", no_event_time="untimed", no_trace="untraced"),
            },
            "event_id_source": {"values": _values(emitter="sent", derived="made")},
        },
        {
            "related_user": {"stored": "audit.related.users"},
            "related_ip": {"stored": "audit.related.ips"},
            "origin": {"stored": "labels.origin.service"},
            "extra": {"stored": "labels.more"},
        },
        {
            "timestamp": {"stored": "time"},
            "event_id": {"stored": "audit.id"},
            "ingested": {"stored": "audit.received"},
            "trace_id": {"stored": "labels.trace"},
            "message": {"stored": "labels.text"},
            "scope_name": {"stored": "scope.name"},
        },
        {"log_level": {"max_bytes": 4}, "event_name": {"max_bytes": 16}},
    ],
    ids=["dataset_moved", "constants", "flag_values", "objects_moved", "record_moved", "limits"],
)
def test_paths_and_values_come_from_the_schema(changes: dict[str, dict[str, Any]]) -> None:
    # Neither side writes a stored name or literal of its own: a schema that moves a path or
    # changes a value gets the same document from the native plan as from Python.
    schema = _schema_with_roles(**changes)
    plan = native_plan(schema, leaf=True)
    assert plan is not None
    no_trace = {"trace_id": b"", "span_id": b"", "flags": 0}
    records = [
        _record({**_base_attrs(1), "audit.reason": "quota exceeded"}),
        _record({k: v for k, v in _base_attrs(2).items() if k != "audit.event.id"}),
        _record(_base_attrs(3), time_unix_nano=0, **no_trace),
        _record(_base_attrs(4), time_unix_nano=_R - 400 * _S, severity_text="WARN"),
        _record(_base_attrs(5), event_name="invoice.update.all", severity_text="VERBOSE"),
    ]
    resource = [(k, _s(v)) for k, v in {**_BASE_RESOURCE, "k8s.pod.name": "p-1"}.items()]
    body = _request(records, resource).SerializeToString()
    decoded = decode.decode_logs_protobuf(body, plan, _R)
    python = decode._decode_logs_protobuf_python(body).records
    expected = [reference(r, received_ns=_R, schema=schema, leaf=True) for r in python]
    got = [r.prepared for r in decoded.records]
    assert None not in expected
    # Only a value the schema's new limit cuts is left to Python.
    cut = changes.get("log_level", {}).get("max_bytes") == 4
    assert got == ([*expected[:4], None] if cut else expected)
    for prepared in got[:4]:
        assert prepared is not None
        document = orjson.loads(prepared[2][prepared[3] : -1])
        assert _stored(document, schema.path_of("timestamp")) == prepared[6]
        assert _stored(document, schema.path_of("event_id")) == prepared[1]
        assert _stored(document, schema.path_of("dataset")) == schema.constant("dataset")
        assert _stored(document, schema.path_of("kind")) == schema.constant("kind")
    flags = [orjson.loads(p[2][p[3] : -1]) for p in got[2:4] if p is not None]
    assert _stored(flags[0], schema.path_of("flags")) == [
        schema.constant("flags.no_event_time"),
        schema.constant("flags.no_trace"),
    ]
    assert _stored(flags[1], schema.path_of("flags")) == [schema.constant("flags.clock_skew")]


@pytest.mark.parametrize("table", ["paths", "attributes", "constants", "max_bytes"])
def test_a_plan_without_a_role_is_refused_naming_it(table: str) -> None:
    from receiver.ingest.prepare import _plan_settings

    ext = native.module()
    assert ext is not None
    settings = _plan_settings(_SCHEMA)
    role = {
        "paths": "dataset",
        "attributes": "action",
        "constants": "flags.no_trace",
        "max_bytes": "scope_version",
    }[table]
    del settings[table][role]
    with pytest.raises(ValueError, match=f"plan setting {table} has no role {role}$"):
        ext.Plan(settings, True)
    # A role whose members are not in one object is refused as well.
    settings = _plan_settings(_SCHEMA)
    settings["paths"]["related_ip"] = "client.related_ip"
    with pytest.raises(ValueError, match="related_user, related_ip are not in one object"):
        ext.Plan(settings, True)
