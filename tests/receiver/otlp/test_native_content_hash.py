"""The content hash the native decoder computes against ``otel_audit.document.content_hash``.

The stored hash must not depend on which decoder built the record: for every record the
native decoder hands over, its ``content_sha256`` is exactly what Python computes from the
record (and from the Python decoder's record of the same message), or ``None`` when the
record holds a double, or an object whose keys code point order and RFC 8785's UTF-16
order could sort differently: only Python hashes those (see docs/hashing.md).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_audit.document import content_hash
from otel_audit.record import LogRecordData
from receiver import native
from receiver.otlp import decode
from tests.support.front_harness import (
    array_value as _array,
)
from tests.support.front_harness import (
    comparable_record,
    deeply_nested_logs_body,
)
from tests.support.front_harness import (
    key_value as _kv,
)
from tests.support.front_harness import (
    kvlist_value as _kvlist,
)

# Without the extension every test here skips, and under CI=true the conftest turns each
# skip into a failure: CI always builds and exercises the native decoder.
pytestmark = pytest.mark.skipif(
    native._native is None, reason=f"no native decoder: {native._missing}"
)

# Characters whose JSON encoding is easy to get wrong: every control character, the
# escapes, DEL, the JavaScript line separators, a BOM, the last BMP character, astral ones.
_TRICKY = [chr(c) for c in range(0x20)] + list('"\\/\x7f\x80\xe9\u2028\u2029\ufeff\uffff')
_TRICKY += ["\U0001f642", "\U0010ffff", "日"]
_CHARS = st.one_of(st.sampled_from(_TRICKY), st.characters(exclude_categories=["Cs"]))
_TEXT = st.one_of(st.just(""), st.text(_CHARS, max_size=10))
# Few distinct keys, so repeated keys and keys sorting around non-ASCII ones are common.
_KEYS = st.one_of(
    st.sampled_from(["", "a", "b", "B", "a\x00", "é", "z", "\uffff", "\U0001f642", "ключ"]),
    st.text(_CHARS, max_size=3),
)
_INT64 = st.one_of(st.sampled_from([-(2**63), -1, 0, 2**63 - 1]), st.integers(-(2**63), 2**63 - 1))
_UINT64 = st.one_of(st.sampled_from([0, 2**64 - 1]), st.integers(0, 2**64 - 1))
_INT32 = st.integers(-(2**31), 2**31 - 1)
_UINT32 = st.integers(0, 2**32 - 1)


def _leaves(doubles: bool) -> st.SearchStrategy[AnyValue]:
    leaves = [
        st.just(AnyValue()),  # no member set
        _TEXT.map(lambda s: AnyValue(string_value=s)),
        st.booleans().map(lambda b: AnyValue(bool_value=b)),
        _INT64.map(lambda i: AnyValue(int_value=i)),
        st.binary(max_size=7).map(lambda b: AnyValue(bytes_value=b)),
        _INT32.map(lambda i: AnyValue(string_value_strindex=i)),
    ]
    if doubles:
        leaves.append(st.floats().map(lambda d: AnyValue(double_value=d)))
    return st.one_of(leaves)


def _any(doubles: bool) -> st.SearchStrategy[AnyValue]:
    return st.recursive(
        _leaves(doubles),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(_array),
            st.lists(st.builds(_kv, _KEYS, st.none() | inner), max_size=4).map(_kvlist),
        ),
        max_leaves=10,
    )


def _attributes(doubles: bool) -> st.SearchStrategy[list[KeyValue]]:
    return st.lists(st.builds(_kv, _KEYS, st.none() | _any(doubles)), max_size=6)


@st.composite
def _log_record(draw: st.DrawFn, doubles: bool) -> LogRecord:
    record = LogRecord(
        time_unix_nano=draw(_UINT64),
        observed_time_unix_nano=draw(_UINT64),
        severity_number=draw(_INT32),  # type: ignore[arg-type]  # an open enum
        severity_text=draw(_TEXT),
        dropped_attributes_count=draw(_UINT32),
        flags=draw(_UINT32),
        # Wrong lengths too: rejected records carry a hash as well.
        trace_id=draw(st.sampled_from([b"", bytes(16), bytes(range(16)), b"\x01\x02"])),
        span_id=draw(st.sampled_from([b"", bytes(8), bytes(range(8)), b"\xff"])),
        event_name=draw(_TEXT),
    )
    body = draw(st.none() | _any(doubles))
    if body is not None:
        record.body.CopyFrom(body)  # an empty AnyValue still marks the body present
    record.attributes.extend(draw(_attributes(doubles)))
    return record


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    doubles = draw(st.booleans())
    request = ExportLogsServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        rl = request.resource_logs.add()
        if draw(st.booleans()):
            rl.resource.attributes.extend(draw(_attributes(doubles)))
        for _ in range(draw(st.integers(0, 2))):
            sl = rl.scope_logs.add()
            if draw(st.booleans()):
                sl.scope.name = draw(_TEXT)
                sl.scope.version = draw(_TEXT)
            sl.log_records.extend(draw(st.lists(_log_record(doubles), max_size=3)))
    return bytes(request.SerializeToString())


def _has_float(value: Any, nan_only: bool = False) -> bool:
    """Whether ``value`` holds a float anywhere (with ``nan_only``: a NaN)."""
    if isinstance(value, float):
        return value != value if nan_only else True
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return False
    return any(_has_float(v, nan_only) for v in value)


def _has_nan(value: Any) -> bool:
    return _has_float(value, nan_only=True)


def _keys_may_sort_differently(value: Any) -> bool:
    """Whether an object in ``value`` has keys with characters above U+FFFF and keys with
    characters in U+E000..U+FFFF (code point and UTF-16 order can then disagree)."""
    if isinstance(value, dict):
        joined = "".join(value)
        if any(c > "\uffff" for c in joined) and any("\ue000" <= c <= "\uffff" for c in joined):
            return True
        value = value.values()
    elif not isinstance(value, list):
        return False
    return any(_keys_may_sort_differently(v) for v in value)


def _python_hash(record: LogRecordData) -> str:
    return content_hash(dataclasses.replace(record, content_sha256=None))


def check(body: bytes) -> list[LogRecordData]:
    """Every native record's hash is Python's (or None for doubles); returns the records."""
    native = decode._decode_logs_protobuf_native(body)
    python = decode._decode_logs_protobuf_python(body)
    records = native.records + native.rejected
    assert records == python.records + python.rejected or any(  # the hash is no part of equality
        _has_nan(r.body) or _has_nan(r.attributes) or _has_nan(r.resource) for r in records
    )
    assert [comparable_record(r) for r in records] == [
        comparable_record(r) for r in python.records + python.rejected
    ]
    for record, reference in zip(records, python.records + python.rejected, strict=True):
        assert reference.content_sha256 is None
        wire = record.as_wire_dict()
        if _has_float(wire) or _keys_may_sort_differently(wire):
            assert record.content_sha256 is None
        else:
            assert record.content_sha256 is not None
            assert record.content_sha256 == _python_hash(record) == content_hash(reference)
        assert content_hash(record) == content_hash(reference)
    return records


@given(_requests())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_native_hash_is_python_content_hash(body: bytes) -> None:
    check(body)


def _request(
    attributes: list[KeyValue],
    *,
    resource: list[KeyValue] | None = None,
    body: AnyValue | None = None,
    records: int = 1,
) -> bytes:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    if resource is not None:
        rl.resource.attributes.extend(resource)
    sl = rl.scope_logs.add()
    sl.scope.name = "scope\u2028"
    sl.scope.version = "1\x7f"
    for _ in range(records):
        lr = sl.log_records.add(time_unix_nano=2**64 - 1, severity_number=-5)
        lr.attributes.extend(attributes)
        if body is not None:
            lr.body.CopyFrom(body)
    return bytes(request.SerializeToString())


def test_tricky_strings_keys_and_values() -> None:
    text = "".join(_TRICKY)
    bmp = "".join(c for c in text if c <= "\uffff")
    attributes = [
        _kv(bmp, AnyValue(string_value=text)),
        _kv("z", AnyValue(int_value=-(2**63))),
        _kv("é", AnyValue(bytes_value=b"\x00\xff\xfe")),
        _kv("a", AnyValue(bool_value=False)),
        _kv("z", AnyValue(int_value=2**63 - 1)),  # a repeated key keeps its last value
        _kv("\uffff", _kvlist([_kv("b", AnyValue()), _kv("B", _array([]))])),
        _kv("", AnyValue(bytes_value=b"")),
        # Above U+FFFF, but in another object than the keys in U+E000..U+FFFF.
        _kv("m", _kvlist([_kv("\U0001f642", None), _kv("\U0010ffff", AnyValue())])),
    ]
    (record,) = check(_request(attributes, resource=attributes[::-1], body=_array([])))
    # Spelled out once more, independently of content_hash.
    wire = orjson.dumps(record.as_wire_dict(), option=orjson.OPT_SORT_KEYS, default=_bytes)
    assert record.content_sha256 == hashlib.sha256(wire).hexdigest()


@pytest.mark.parametrize(
    "keys",
    [["\ue000", "\U0001f642"], ["a\uffff\U00010000"], ["\U0010ffff", "x", "\ufeff"]],
)
def test_keys_whose_orders_may_differ_leave_the_hash_to_python(keys: list[str]) -> None:
    # Code point order puts U+E000..U+FFFF before U+10000 and above; RFC 8785's UTF-16
    # order puts them after. The native decoder sorts by code point, so it declines.
    attributes = [_kv(k, AnyValue(int_value=i)) for i, k in enumerate(keys)]
    for body in (_request(attributes), _request([], body=_kvlist(attributes))):
        (record,) = check(body)
        assert record.content_sha256 is None
    records = check(_request([], resource=attributes, records=2))
    assert [r.content_sha256 for r in records] == [None, None]


def _bytes(value: bytes) -> dict[str, str]:
    return {"$bytes": base64.b64encode(value).decode("ascii")}


@pytest.mark.parametrize(
    "body",
    [
        None,
        AnyValue(),
        AnyValue(string_value="line\nbreak"),
        AnyValue(bool_value=True),
        AnyValue(int_value=-1),
        AnyValue(bytes_value=b"\x01\x02\x03\x04"),
        AnyValue(string_value_strindex=7),
        _array([AnyValue(string_value="a"), _array([AnyValue(int_value=1)])]),
        _kvlist([_kv("b", AnyValue(int_value=1)), _kv("a", AnyValue(string_value="x"))]),
    ],
    ids=["absent", "empty", "string", "bool", "int", "bytes", "strindex", "array", "kvlist"],
)
def test_every_body_kind(body: AnyValue | None) -> None:
    (record,) = check(_request([_kv("k", AnyValue(string_value="v"))], body=body))
    assert record.content_sha256 is not None


def test_a_double_anywhere_leaves_the_hash_to_python() -> None:
    double = AnyValue(double_value=1.5)
    nested = _kvlist([_kv("x", _array([AnyValue(int_value=1), double]))])
    for body in (_request([_kv("d", double)]), _request([], body=nested)):
        (record,) = check(body)
        assert record.content_sha256 is None
    # In the shared resource: every record of that resource.
    records = check(_request([], resource=[_kv("r", nested)], records=2))
    assert [r.content_sha256 for r in records] == [None, None]


def test_the_records_of_one_resource_differ_only_where_they_differ() -> None:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.append(_kv("service.name", AnyValue(string_value="svc")))
    sl = rl.scope_logs.add()
    sl.log_records.add(attributes=[_kv("k", AnyValue(double_value=0.5))])
    sl.log_records.add(attributes=[_kv("k", AnyValue(int_value=0))])
    sl.log_records.add(attributes=[_kv("k", AnyValue(int_value=1))])
    hashes = [r.content_sha256 for r in check(request.SerializeToString())]
    assert hashes[0] is None
    assert None not in hashes[1:] and hashes[1] != hashes[2]


def test_deep_nesting() -> None:
    (record,) = check(deeply_nested_logs_body(45))
    assert record.content_sha256 is not None


def test_content_hash_uses_the_decoders_hash() -> None:
    record = LogRecordData(attributes={"a": 1}, content_sha256="0" * 64)
    assert content_hash(record) == "0" * 64
    assert record == LogRecordData(attributes={"a": 1})
    assert "content_sha256" not in record.as_wire_dict()
