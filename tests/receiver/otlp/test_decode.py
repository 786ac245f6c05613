"""Protobuf decoding of log export requests into LogRecordData."""

from __future__ import annotations

import math

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from receiver.errors import InvalidRequest
from receiver.otlp.decode import decode_logs_protobuf
from receiver.otlp.decode_traces import decode_traces_protobuf
from tests.support.front_harness import (
    SPAN_ID,
    TRACE_ID,
    any_value,
    audit_attributes,
    deeply_nested_logs_body,
    logs_request,
    traces_request,
)


def _decode_one(**attrs: object) -> dict[str, object]:
    body = logs_request([dict(attrs)]).SerializeToString()
    decoded = decode_logs_protobuf(body)
    assert len(decoded.records) == 1
    return decoded.records[0].attributes


def test_every_anyvalue_kind_becomes_a_plain_value() -> None:
    attrs = _decode_one(
        s="text",
        empty="",
        b=True,
        f=False,
        i=-(2**63),
        big=2**63 - 1,
        d=1.5,
        inf=math.inf,
        raw=b"\x00\xff",
        arr=["a", 1, [True, None]],
        kv={"k": "v", "nested": {"n": 2.0}, "e": ""},
    )
    assert attrs == {
        "s": "text",
        "empty": "",
        "b": True,
        "f": False,
        "i": -(2**63),
        "big": 2**63 - 1,
        "d": 1.5,
        "inf": math.inf,
        "raw": b"\x00\xff",
        "arr": ["a", 1, [True, None]],
        "kv": {"k": "v", "nested": {"n": 2.0}, "e": ""},
    }
    assert type(attrs["f"]) is bool and type(attrs["i"]) is int


def test_unset_anyvalue_is_none_and_zero_values_keep_their_type() -> None:
    request = logs_request([{}])
    lr = request.resource_logs[0].scope_logs[0].log_records[0]
    lr.attributes.add(key="unset")
    zero = lr.attributes.add(key="zero")
    zero.value.int_value = 0
    fz = lr.attributes.add(key="fzero")
    fz.value.double_value = 0.0
    empty_arr = lr.attributes.add(key="arr")
    empty_arr.value.array_value.SetInParent()
    lr.ClearField("body")
    record = decode_logs_protobuf(request.SerializeToString()).records[0]
    assert record.attributes == {"unset": None, "zero": 0, "fzero": 0.0, "arr": []}
    assert type(record.attributes["fzero"]) is float
    assert record.body is None


def test_record_fields_resource_and_scope() -> None:
    request = logs_request([audit_attributes(1)], resource={"service.name": "billing", "n": 3})
    lr = request.resource_logs[0].scope_logs[0].log_records[0]
    lr.body.CopyFrom(any_value({"msg": "hi", "list": [1, 2]}))
    lr.dropped_attributes_count = 4
    record = decode_logs_protobuf(request.SerializeToString()).records[0]
    assert record.resource == {"service.name": "billing", "n": 3}
    assert record.trace_id == TRACE_ID.hex() and record.span_id == SPAN_ID.hex()
    assert record.trace_id.islower()
    assert record.scope_name == "otel_audit" and record.scope_version == "1.0"
    assert record.severity_number == 9 and record.severity_text == "INFO"
    assert record.flags == 1 and record.event_name == "audit"
    assert record.body == {"msg": "hi", "list": [1, 2]}
    assert record.dropped_attributes_count == 4
    assert record.time_unix_nano > 0 and record.observed_time_unix_nano > 0


def test_repeated_key_keeps_last_value() -> None:
    request = logs_request([{"k": "first"}])
    lr = request.resource_logs[0].scope_logs[0].log_records[0]
    lr.attributes.add(key="k").value.string_value = "second"
    assert decode_logs_protobuf(request.SerializeToString()).records[0].attributes == {
        "k": "second"
    }


@pytest.mark.parametrize(
    ("trace_id", "span_id"),
    [(b"", b""), (bytes(16), bytes(8)), (TRACE_ID, b"")],
)
def test_absent_or_zero_ids_are_empty(trace_id: bytes, span_id: bytes) -> None:
    body = logs_request(1, trace_id=trace_id, span_id=span_id).SerializeToString()
    record = decode_logs_protobuf(body).records[0]
    assert record.trace_id == ("" if trace_id != TRACE_ID else TRACE_ID.hex())
    assert record.span_id == ""


@pytest.mark.parametrize(
    ("trace_id", "span_id", "reason"),
    [
        (b"\x01" * 5, SPAN_ID, "trace_id must be 16 bytes, got 5"),
        (TRACE_ID, b"\x01" * 9, "span_id must be 8 bytes, got 9"),
        (b"\x01" * 32, b"\x02", "trace_id must be 16 bytes, got 32"),
    ],
)
def test_wrong_length_ids_reject_only_that_record(
    trace_id: bytes, span_id: bytes, reason: str
) -> None:
    request = logs_request(3)
    bad = request.resource_logs[0].scope_logs[0].log_records[1]
    bad.trace_id = trace_id
    bad.span_id = span_id
    decoded = decode_logs_protobuf(request.SerializeToString())
    assert len(decoded.records) == 2
    assert len(decoded.rejected) == 1
    assert decoded.reasons == [reason]
    assert decoded.rejected[0].attributes["audit.actor.id"] == "user-1"
    assert decoded.total == 3


def test_records_of_one_resource_share_its_attributes_and_resources_are_separate() -> None:
    request = logs_request(2)
    other = request.resource_logs.add()
    other.resource.attributes.add(key="service.name").value.string_value = "auth"
    other.scope_logs.add().log_records.add().attributes.add(key="a").value.string_value = "b"
    records = decode_logs_protobuf(request.SerializeToString()).records
    assert [r.resource["service.name"] for r in records] == ["billing", "billing", "auth"]
    assert records[2].scope_name == ""


def test_empty_request_decodes_to_nothing() -> None:
    assert decode_logs_protobuf(b"").total == 0
    assert decode_logs_protobuf(ExportLogsServiceRequest().SerializeToString()).total == 0


@pytest.mark.parametrize("body", [b"\xff\xff\xff", b"\x0a\x05abc", b"garbage that is not proto"])
def test_garbage_and_truncated_bodies_are_invalid(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="not an ExportLogsServiceRequest"):
        decode_logs_protobuf(body)


def test_truncated_real_request_is_invalid() -> None:
    body = logs_request(5).SerializeToString()
    with pytest.raises(InvalidRequest):
        decode_logs_protobuf(body[: len(body) // 2])


def _nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def test_moderate_nesting_decodes_for_the_validator_to_judge() -> None:
    attrs = _decode_one(deep=_nested(20))
    value = attrs["deep"]
    for _ in range(20):
        assert isinstance(value, list)
        value = value[0]
    assert value == "leaf"


def test_nesting_beyond_protobufs_recursion_limit_is_invalid_not_a_crash() -> None:
    with pytest.raises(InvalidRequest):
        decode_logs_protobuf(deeply_nested_logs_body(300))
    assert decode_logs_protobuf(deeply_nested_logs_body(25)).records


def test_spans_decode_with_ids_status_and_resource() -> None:
    decoded = decode_traces_protobuf(traces_request(2).SerializeToString())
    assert len(decoded.spans) == 2 and not decoded.rejected
    root, child = decoded.spans
    assert root.trace_id == TRACE_ID.hex() and root.parent_span_id == ""
    assert child.parent_span_id == SPAN_ID.hex()
    assert child.span_id == "0000000000000002"
    assert (child.kind, child.status_code, child.status_message) == (2, 2, "boom")
    assert child.attributes == {"http.route": "/invoices"}
    assert child.resource == {"service.name": "billing"} and child.scope_name == "tracer"
    assert child.end_time_unix_nano - child.start_time_unix_nano == 100_000_000


def test_spans_with_bad_ids_are_rejected_per_span() -> None:
    request = traces_request(3)
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x01"
    request.resource_spans[0].scope_spans[0].spans[2].span_id = bytes(8)
    decoded = decode_traces_protobuf(request.SerializeToString())
    assert len(decoded.spans) == 1 and len(decoded.rejected) == 2
    assert "trace_id" in decoded.reasons[0] and "span_id" in decoded.reasons[1]


def test_garbage_trace_request_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="ExportTraceServiceRequest"):
        decode_traces_protobuf(b"\xff\xff")
