"""The native protobuf decoder (``otel_audit_native``) against the Python reference decoder.

Both must build equal records, rejected records and reasons from every valid message, share
one resource dict per ResourceLogs the same way, and refuse the same bad bodies with
InvalidRequest, never crashing the process.
"""

from __future__ import annotations

import math
import os
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from receiver import native as native_gate
from receiver.errors import InvalidRequest
from receiver.otlp import decode
from receiver.otlp.decode import DecodedLogs
from tests.support.front_harness import (
    array_value as _array,
)
from tests.support.front_harness import (
    comparable_record as _canon_record,
)
from tests.support.front_harness import (
    deeply_nested_logs_body,
    logs_request,
)
from tests.support.front_harness import (
    key_value as _kv,
)
from tests.support.front_harness import (
    kvlist_value as _kvlist,
)
from tests.support.front_harness import (
    length_delimited as _field,
)
from tests.support.front_harness import (
    varint as _varint,
)

# Without the extension every test here skips, and under CI=true the conftest turns each
# skip into a failure: CI always builds and exercises the native decoder.
pytestmark = pytest.mark.skipif(
    native_gate._native is None, reason=f"no native decoder: {native_gate._missing}"
)


def test_native_decoder_is_active_in_ci() -> None:
    # Installed is not enough: CI must also run it (no OTEL_AUDIT_NATIVE_DECODER=0 there).
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        assert decode.NATIVE_DECODER, decode.PROTOBUF_DECODER


def python(body: bytes) -> DecodedLogs:
    return decode._decode_logs_protobuf_python(body)


def native(body: bytes) -> DecodedLogs:
    return decode._decode_logs_protobuf_native(body)


# --- comparing results ---------------------------------------------------------------------


def _outcome(fn: Any, body: bytes) -> Any:
    """A comparable picture of what decoding ``body`` gives, or "invalid"."""
    try:
        decoded = fn(body)
    except InvalidRequest as exc:
        assert str(exc).startswith("body is not an ExportLogsServiceRequest: ")
        return "invalid"
    everything = decoded.records + decoded.rejected
    # Which records share one resource dict: the index of the first record sharing it.
    first_with: dict[int, int] = {}
    sharing = [first_with.setdefault(id(r.resource), i) for i, r in enumerate(everything)]
    return (
        [_canon_record(r) for r in decoded.records],
        [_canon_record(r) for r in decoded.rejected],
        decoded.reasons,
        sharing,
        [type(r).__name__ for r in everything],
    )


def assert_same(body: bytes) -> Any:
    expected = _outcome(python, body)
    assert _outcome(native, body) == expected
    return expected


# --- generated messages --------------------------------------------------------------------

_INT64 = st.integers(-(2**63), 2**63 - 1)
_INT32 = st.integers(-(2**31), 2**31 - 1)
_UINT32 = st.integers(0, 2**32 - 1)
_UINT64 = st.integers(0, 2**64 - 1)
_TEXT = st.one_of(st.just(""), st.text(max_size=8), st.sampled_from(["a", "é", "日本", "🙂"]))
# Few distinct keys, so repeated keys within one list are common.
_KEYS = st.one_of(st.sampled_from(["", "a", "b", "audit.action", "ключ"]), st.text(max_size=4))

_LEAVES = st.one_of(
    st.just(AnyValue()),  # no member set
    _TEXT.map(lambda s: AnyValue(string_value=s)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    _INT64.map(lambda i: AnyValue(int_value=i)),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda d: AnyValue(double_value=d)),
    st.binary(max_size=8).map(lambda b: AnyValue(bytes_value=b)),
    _INT32.map(lambda i: AnyValue(string_value_strindex=i)),
)


_ANY = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(_array),
        st.lists(st.builds(_kv, _KEYS, st.none() | inner), max_size=3).map(_kvlist),
    ),
    max_leaves=8,
)
_ATTRIBUTES = st.lists(st.builds(_kv, _KEYS, st.none() | _ANY), max_size=5)


@st.composite
def _ids(draw: st.DrawFn, size: int) -> bytes:
    length = draw(st.sampled_from([0, size, size, size]) | st.integers(0, 20))
    if draw(st.booleans()):
        return bytes(length)  # all-zero
    return draw(st.binary(min_size=length, max_size=length))


# The wire type of each LogRecord field; a field sent with another one is an unknown field.
_LOG_RECORD_WIRE_TYPES = {1: 1, 2: 0, 3: 2, 5: 2, 6: 2, 7: 0, 8: 5, 9: 2, 10: 2, 11: 1, 12: 2}


@st.composite
def _unknown_field(draw: st.DrawFn) -> bytes:
    """A field LogRecord does not declare, or a declared one sent with the wrong wire type."""
    number = draw(st.integers(1, 40) | st.integers(1, 2**29 - 1))
    wire_types = [w for w in (0, 1, 2, 3, 5) if _LOG_RECORD_WIRE_TYPES.get(number) != w]
    wire_type = draw(st.sampled_from(wire_types))
    key = _varint(number << 3 | wire_type)
    if wire_type == 0:
        return key + _varint(draw(_UINT64))
    if wire_type == 1:
        return key + draw(st.binary(min_size=8, max_size=8))
    if wire_type == 5:
        return key + draw(st.binary(min_size=4, max_size=4))
    if wire_type == 2:
        payload = draw(st.binary(max_size=6))  # not parsed, so any bytes (bad UTF-8 too)
        return key + _varint(len(payload)) + payload
    inner = _varint(7 << 3) + _varint(draw(_UINT64))  # a group holding a varint
    return key + inner + _varint(number << 3 | 4)


@st.composite
def _log_record(draw: st.DrawFn) -> LogRecord:
    record = LogRecord(
        time_unix_nano=draw(_UINT64),
        observed_time_unix_nano=draw(_UINT64),
        severity_number=draw(_INT32),
        severity_text=draw(_TEXT),
        dropped_attributes_count=draw(_UINT32),
        flags=draw(_UINT32),
        trace_id=draw(_ids(16)),
        span_id=draw(_ids(8)),
        event_name=draw(_TEXT),
    )
    body = draw(st.none() | _ANY)
    if body is not None:
        record.body.CopyFrom(body)  # an empty AnyValue still marks the body present
    record.attributes.extend(draw(_ATTRIBUTES))
    extra = b"".join(draw(st.lists(_unknown_field(), max_size=2)))
    if extra:
        # protobuf keeps unknown fields and writes them back: they reach the decoders.
        record.MergeFromString(extra)
    return record


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    request = ExportLogsServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        rl = request.resource_logs.add()
        if draw(st.booleans()):
            rl.resource.attributes.extend(draw(_ATTRIBUTES))
        rl.schema_url = draw(_TEXT)
        for _ in range(draw(st.integers(0, 2))):
            sl = rl.scope_logs.add()
            if draw(st.booleans()):
                sl.scope.name = draw(_TEXT)
                sl.scope.version = draw(_TEXT)
                sl.scope.attributes.extend(draw(_ATTRIBUTES))
            sl.log_records.extend(draw(st.lists(_log_record(), max_size=3)))
    body = request.SerializeToString()
    # An unknown top-level field, as a newer protocol version might send.
    return body + draw(st.sampled_from([b"", b"\x10\x01", b"\x7a\x02hi", b"\x7b\x7c"]))


_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(_requests())
def test_generated_requests_decode_the_same(body: bytes) -> None:
    assert_same(body)


def test_a_realistic_batch_decodes_the_same() -> None:
    request = logs_request(20)
    record = request.resource_logs[0].scope_logs[0].log_records[3]
    record.trace_id = b"\x01" * 15  # rejected, with its reason
    second = request.resource_logs.add()
    second.CopyFrom(request.resource_logs[0])
    records, rejected, reasons, sharing, _ = assert_same(request.SerializeToString())
    assert len(records) == 38 and len(rejected) == 2
    assert reasons == ["trace_id must be 16 bytes, got 15"] * 2
    # Two ResourceLogs: two shared resource dicts, equal but distinct.
    assert sorted(set(sharing)) == [0, 19]


def test_special_values_keep_their_type() -> None:
    request = logs_request(1)
    attrs = request.resource_logs[0].scope_logs[0].log_records[0].attributes
    for key, value in [
        ("nan", AnyValue(double_value=math.nan)),
        ("neg_zero", AnyValue(double_value=-0.0)),
        ("inf", AnyValue(double_value=-math.inf)),
        ("min", AnyValue(int_value=-(2**63))),
        ("true", AnyValue(bool_value=True)),
        ("one", AnyValue(int_value=1)),
        ("strindex", AnyValue(string_value_strindex=-5)),
        ("dup", AnyValue(string_value="first")),
        ("unset", AnyValue()),
        ("dup", AnyValue(int_value=2)),
    ]:
        attrs.append(KeyValue(key=key, value=value))
    attrs.append(KeyValue(key="no_value"))
    decoded = native(request.SerializeToString())
    got = decoded.records[0].attributes
    assert math.isnan(got["nan"]) and math.copysign(1.0, got["neg_zero"]) == -1.0
    assert got["true"] is True and type(got["one"]) is int and got["strindex"] == -5
    assert got["unset"] is None and got["no_value"] is None
    # A repeated key keeps its last value at the position of its first occurrence.
    keys = list(got)
    assert got["dup"] == 2 and keys.index("dup") < keys.index("unset")
    assert_same(request.SerializeToString())


def test_bodies_absent_empty_and_set() -> None:
    request = logs_request(3)
    records = request.resource_logs[0].scope_logs[0].log_records
    records[0].ClearField("body")
    records[1].body.CopyFrom(AnyValue())
    records[2].body.CopyFrom(AnyValue(string_value=""))
    decoded = native(request.SerializeToString())
    assert [r.body for r in decoded.records] == [None, None, ""]
    assert_same(request.SerializeToString())


# --- hostile bodies --------------------------------------------------------------------------


@_SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_give_the_same_outcome(body: bytes) -> None:
    assert_same(body)


def test_every_truncation_of_a_valid_request() -> None:
    request = logs_request(2)
    attrs = request.resource_logs[0].scope_logs[0].log_records[0].attributes
    attrs.append(KeyValue(key="deep", value=_array([_kvlist([_kv("k", AnyValue(int_value=-1))])])))
    body = request.SerializeToString()
    invalid = 0
    for end in range(len(body)):
        invalid += assert_same(body[:end]) == "invalid"
    assert invalid > len(body) // 2


def _in_record(record: bytes) -> bytes:
    return _field(0x0A, _field(0x12, _field(0x12, record)))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_in_record(_field(0x32, _field(0x0A, b"\xff"))), id="key"),
        pytest.param(
            _in_record(_field(0x32, _field(0x12, _field(0x0A, b"\xc3\x28")))), id="string_value"
        ),
        pytest.param(_in_record(_field(0x1A, b"\xed\xa0\x80")), id="surrogate_severity_text"),
        pytest.param(_in_record(_field(0x62, b"\xc0\xaf")), id="overlong_event_name"),
        pytest.param(_field(0x0A, _field(0x12, _field(0x0A, _field(0x0A, b"\xff")))), id="scope"),
        pytest.param(_field(0x0A, _field(0x1A, b"\x80")), id="schema_url"),
        pytest.param(
            _field(0x0A, _field(0x0A, _field(0x1A, _field(0x1A, b"\xfe")))), id="entity_ref"
        ),
        pytest.param(_in_record(_field(0x1A, b"\xff") + _field(0x1A, b"ok")), id="replaced_later"),
        pytest.param(
            _in_record(_field(0x2A, _field(0x0A, b"\xff") + b"\x18\x01")), id="replaced_in_oneof"
        ),
    ],
)
def test_invalid_utf8_in_any_string_field_is_invalid(body: bytes) -> None:
    assert assert_same(body) == "invalid"
    with pytest.raises(InvalidRequest, match="UTF-8"):
        native(body)


def test_invalid_utf8_in_bytes_and_unknown_fields_is_fine() -> None:
    body = _in_record(_field(0x4A, b"\xff" * 16) + _field(0x7A, b"\xff"))
    assert assert_same(body) != "invalid"


@pytest.mark.parametrize("depth", [0, 20, 47, 48, 200])
def test_nesting_up_to_the_recursion_limit(depth: int) -> None:
    # An attribute's AnyValue sits 5 messages deep and each array level adds 2: 47 levels
    # nest 99 messages, 48 levels 101, over protobuf's limit of 100.
    outcome = assert_same(deeply_nested_logs_body(depth))
    assert (outcome == "invalid") == (depth > 47)


@pytest.mark.parametrize("depth", [48, 49])
def test_nesting_exactly_at_the_recursion_limit(depth: int) -> None:
    # The body's AnyValue sits 4 deep: 48 array levels nest exactly 100 messages.
    value = b""
    for _ in range(depth):
        value = _field(0x2A, _field(0x0A, value))
    outcome = assert_same(_in_record(_field(0x2A, value)))
    assert (outcome == "invalid") == (depth > 48)


def test_unknown_fields_in_the_deepest_message() -> None:
    value = b"\x78\x01"  # AnyValue field 15 (unknown), 100 messages deep
    for _ in range(48):
        value = _field(0x2A, _field(0x0A, value))
    assert assert_same(_in_record(_field(0x2A, value))) != "invalid"


def _groups(levels: int, inner: bytes = b"") -> bytes:
    return b"\x7b" * levels + inner + b"\x7c" * levels  # field 15, start / end group


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        pytest.param(_groups(100), True, id="top_100"),
        pytest.param(_groups(101), False, id="top_101"),
        pytest.param(_in_record(_groups(97, b"\x08\x01")), True, id="record_97_holding_a_field"),
        pytest.param(_in_record(_groups(98)), False, id="record_98"),
        pytest.param(_groups(1, b"\x00\x01"), True, id="holding_field_number_0"),
        pytest.param(_groups(1, b"\x84\x01"), False, id="ended_by_another_field"),
        pytest.param(_groups(1)[:-1], False, id="unterminated"),
        pytest.param(b"\x7c", False, id="end_without_start"),
    ],
)
def test_unknown_groups(body: bytes, valid: bool) -> None:
    assert (assert_same(body) != "invalid") == valid


def test_wrong_wire_types_are_skipped_as_unknown_fields() -> None:
    record = (
        b"\x08\x05"  # time_unix_nano (fixed64) as a varint
        + b"\x1d\x01\x02\x03\x04"  # severity_text (string) as fixed32
        + b"\x2b\x7b\x7c\x2c"  # body (message) as a group holding an empty group
        + b"\x11"  # severity_number (int32) as fixed64
        + struct.pack("<q", -1)
        + b"\x1a\x02ok"  # and one well-formed field
    )
    assert assert_same(_in_record(record)) != "invalid"
    (got,) = native(_in_record(record)).records
    assert (got.time_unix_nano, got.severity_number, got.body) == (0, 0, None)
    assert got.severity_text == "ok"


def test_ten_byte_varints_keep_their_low_64_bits() -> None:
    # The 10th byte carries bits past 64: upb drops them, and so does the native decoder.
    overflowing = b"\xff" * 9 + b"\x7f"
    body = _in_record(b"\x10" + overflowing + b"\x78" + overflowing)  # severity, unknown 15
    assert assert_same(body) != "invalid"
    assert native(body).records[0].severity_number == -1


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\x7a\x80\x80\x80\x80\x80\x00", id="unknown_field"),
        pytest.param(_in_record(b"\x1a\x80\x80\x80\x80\x80\x00"), id="string"),
        pytest.param(b"\x0a\x80\x80\x80\x80\x80\x00", id="message"),
        pytest.param(b"\x7b\x7a\x80\x80\x80\x80\x80\x00\x7c", id="in_a_group"),
        pytest.param(b"\x7b\xf8\x80\x80\x80\x80\x00\x01\x7c", id="key_in_a_group"),
    ],
)
def test_lengths_padded_past_5_bytes_are_invalid(body: bytes) -> None:
    assert assert_same(body) == "invalid"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\x88\x80\x80\x80\x80\x00\x01", id="first_key"),
        pytest.param(b"\x0a\x00\x8a\x80\x80\x80\x80\x00\x00", id="later_key"),
        pytest.param(b"\x0a\x07\x8a\x80\x80\x80\x80\x00\x00", id="nested_first_key"),
        pytest.param(b"\x0a\x09\x0a\x00\x8a\x80\x80\x80\x80\x00\x00", id="nested_later_key"),
    ],
)
def test_keys_padded_past_5_bytes_are_invalid(body: bytes) -> None:
    # No encoder pads a varint, but prost alone would read such a key (upb refuses it).
    assert assert_same(body) == "invalid"
    assert assert_same(b"\x88\x80\x80\x80\x00\x01") != "invalid"  # 5 bytes: fine


def test_a_bytes_like_body_is_accepted() -> None:
    body = logs_request(2).SerializeToString()
    assert native(bytearray(body)) == native(body) == python(body)


# --- choosing the decoder ------------------------------------------------------------------


def test_the_environment_can_force_the_python_decoder() -> None:
    env = {native_gate.ENV_NATIVE_DECODER: "0"}
    assert (
        native_gate.describe(env, native_gate._native, "") == "python (OTEL_AUDIT_NATIVE_DECODER=0)"
    )
    assert native_gate.describe({}, native_gate._native, "").startswith(
        "native (otel_audit_native "
    )
    assert native_gate.describe({}, None, "why") == "python (why)"


def test_a_stale_extension_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    assert native_gate._native is not None
    monkeypatch.setattr(native_gate._native, "__version__", "0.0.0")
    module, why = native_gate._import()
    assert module is None and "0.0.0 is installed" in why
